"""A pretend GPU for the CPU test suite: tensors that say they live on ``fakegpu:0`` and
fail, as CUDA does, when an operation mixes them with CPU tensors.

Why: no GPU runs this suite, yet the CUDA path's bugs are device bugs -- labels left on
the CPU, an accumulator made without ``device=``, a reading of the loss every epoch that
stalls the GPU. On a CPU those are invisible (every tensor is on the CPU); here they fail
the way they would on the first GPU.

How: torch's PrivateUse1 backend slot is registered from Python under the name
``fakegpu`` (its device guard is what autograd needs to run backward on a non-CPU
device); a tensor on it is a wrapper subclass (:class:`OnFakeGPU`) around a CPU tensor.
While :func:`fake_gpu` is active, a dispatch mode sees every ATen operation:

* an op that creates a tensor on fakegpu (``torch.zeros(..., device=...)``, ``.to(...)``)
  creates it on the CPU and tags it; an op on tagged tensors computes on their CPU data
  and tags what it returns; ``.cpu()`` / ``.to("cpu")`` returns an ordinary tensor;
* an op that mixes a tagged tensor with an untagged one raises CUDA's error ("Expected all
  tensors to be on the same device") unless CUDA allows that mix: a 0-dim CPU tensor read
  as a scalar (never written), CPU index tensors into a device tensor, and copies between
  devices;
* an op that CUDA runs only with atomics, and so refuses under ``train.deterministic`` (on by
  default there), raises too (a mean cross-entropy over a [batch, classes, k] input, ``cumsum``
  of floats, a weighted ``bincount``, ...);
* every device -> host transfer is counted in :attr:`FakeGPU.syncs` (``.item()``,
  ``float()``, ``bool()``, ``.tolist()``, ``.cpu()``, and boolean-mask indexing or
  ``nonzero``, whose output size the host must wait for), so a test can say how often a
  loop stops the device.

Numbers are the CPU's bit for bit (the same kernels run on the same data), so a job on
fakegpu must write exactly what the same job writes on the CPU. What this cannot see:
kernels that exist on the CPU but not on CUDA, CUDA's own rounding, and memory.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from typing import Any, Iterator, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

NAME = "fakegpu"

aten = torch.ops.aten

#: ops that may take tensors on two devices (they move data between them)
_CROSS_DEVICE = {
    aten._to_copy.default,
    aten.copy_.default,
    aten.copy.default,
    aten._copy_from.default,
    aten._copy_from_and_resize.default,
    aten.lift_fresh.default,
    aten.lift_fresh_copy.default,
}
#: advanced indexing: CUDA accepts CPU index tensors into a CUDA tensor (not the reverse)
_INDEXING = {
    aten.index.Tensor,
    aten._unsafe_index.Tensor,
    aten.index_put.default,
    aten.index_put_.default,
    aten._index_put_impl_.default,
    aten._unsafe_index_put.default,
}
#: ops whose output size depends on the data: on a GPU the host waits for it
_DATA_DEPENDENT = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
                   aten.unique_consecutive.default}  # fmt: skip


_kernels: List[torch.library.Library] = []


#: ops that CUDA runs only nondeterministically, so that under torch.use_deterministic_algorithms
#: (``train.deterministic``, on by default on CUDA) they raise; with the argument test that makes them so
_NONDETERMINISTIC_ON_CUDA = {
    aten.nll_loss2d_forward.default: lambda a, k: (a[3] if len(a) > 3 else k.get("reduction", 1)) != 0,
    aten.bincount.default: lambda a, k: (a[1] if len(a) > 1 else k.get("weights")) is not None,
    aten.cumsum.default: lambda a, k: a[0].is_floating_point(),
    aten.histc.default: lambda a, k: True,
    aten.kthvalue.default: lambda a, k: True,
    aten.median.dim: lambda a, k: True,
    aten.put_.default: lambda a, k: True,
}


def register() -> None:
    """Name PrivateUse1 ``fakegpu`` (once per process; torch allows one name), with the three
    kernels that paths bypassing the dispatch mode need (``torch.tensor(..., device=)``
    allocates and copies below it): they allocate and copy on the CPU and tag the result."""
    if torch._C._get_privateuse1_backend_name() == NAME:
        return
    from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

    _setup_privateuseone_for_python_backend(rename=NAME)
    lib = torch.library.Library("aten", "IMPL")
    lib.impl("empty_strided", _empty_strided, "PrivateUse1")
    lib.impl("empty.memory_format", _empty, "PrivateUse1")
    lib.impl("_copy_from", _copy_from, "PrivateUse1")
    _kernels.append(lib)


def _empty_strided(size, stride, dtype=None, layout=None, device=None, pin_memory=None):
    return OnFakeGPU(torch.empty_strided(size, stride, dtype=dtype, layout=layout, device="cpu"))


def _empty(size, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    return OnFakeGPU(torch.empty(size, dtype=dtype, layout=layout, device="cpu", memory_format=memory_format))


def _copy_from(src, dst, non_blocking=False):
    inner = lambda t: t.elem if isinstance(t, OnFakeGPU) else t  # noqa: E731
    inner(dst).copy_(inner(src))
    return dst


register()
FAKE = torch.device(NAME, 0)


class OnFakeGPU(torch.Tensor):
    """A CPU tensor (``elem``) that reports ``device == fakegpu:0``."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> "OnFakeGPU":
        assert type(elem) is torch.Tensor and elem.device.type == "cpu", type(elem)
        out = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=FAKE, requires_grad=elem.requires_grad,
        )  # fmt: skip
        out.elem = elem
        return out

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        return f"OnFakeGPU({self.elem!r})"

    def __tensor_flatten__(self):  # nn.Module.to swaps parameters through these
        return ["elem"], None

    @staticmethod
    def __tensor_unflatten__(inner: dict, meta: Any, outer_size: Any, outer_stride: Any) -> "OnFakeGPU":
        return OnFakeGPU(inner["elem"])

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.tolist:  # torch refuses subclasses here; CUDA copies to the host
            return args[0].cpu().tolist()
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        # outside fake_gpu() (a test inspecting results afterwards): the same rules, not counted
        return _run(None, func, args, kwargs or {})


class DeviceMixError(RuntimeError):
    """What CUDA raises when an op mixes devices (the message starts as CUDA's does)."""


def _is_fake(device: Any) -> bool:
    return device is not None and torch.device(device).type == NAME


def _mutated(func, args, kwargs) -> List[torch.Tensor]:
    """The tensors ``func`` writes into (in-place and out= arguments)."""
    out: List[torch.Tensor] = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = args[i] if i < len(args) else kwargs.get(arg.name)
        out += [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]
    return out


def _check_devices(func, args, kwargs, flat: List[Any]) -> None:
    if func in _CROSS_DEVICE:
        return
    plain = [t for t in flat if isinstance(t, torch.Tensor) and not isinstance(t, OnFakeGPU)]
    if not plain:
        return
    if func in _INDEXING:
        if not isinstance(args[0], OnFakeGPU):
            raise DeviceMixError(
                f"indices should be either on cpu or on the same device as the indexed tensor (cpu) ({func})"
            )
        indices = {id(t) for t in tree_flatten(args[1])[0] if isinstance(t, torch.Tensor)}
        plain = [t for t in plain if id(t) not in indices]
    written = {id(t) for t in _mutated(func, args, kwargs)}
    for t in plain:
        if t.dim() == 0 and id(t) not in written:
            continue  # a CPU scalar tensor: CUDA reads it as a number
        raise DeviceMixError(
            f"Expected all tensors to be on the same device, but found at least two devices, {FAKE} and cpu! "
            f"({func}: a cpu tensor of shape {list(t.shape)}{' is written' if id(t) in written else ''})"
        )


def _syncs(func, args, kwargs, flat: List[Any], tagged: bool) -> Optional[str]:
    """Whether this op makes the host wait for the device, and which kind."""
    if not tagged:
        return None
    if func is aten._local_scalar_dense.default:
        return "item"
    if func is aten._to_copy.default and kwargs.get("device") is not None and not _is_fake(kwargs["device"]):
        return "to_cpu"
    if func in (aten.copy_.default, aten._copy_from.default) and not isinstance(args[0], OnFakeGPU):
        return "to_cpu"
    if func in _DATA_DEPENDENT:
        return "data_dependent"
    if func in _INDEXING:
        index_dtypes = [t.dtype for t in tree_flatten(args[1])[0] if isinstance(t, torch.Tensor)]
        if any(d in (torch.bool, torch.uint8) for d in index_dtypes):
            return "bool_mask"
    return None


def _run(mode: Optional["FakeGPU"], func, args, kwargs):
    device = kwargs.get("device")
    to_fake = _is_fake(device)
    flat = tree_flatten((args, kwargs))[0]
    tagged = any(isinstance(t, OnFakeGPU) for t in flat)
    if tagged:
        _check_devices(func, args, kwargs, flat)
        if func in _NONDETERMINISTIC_ON_CUDA and _NONDETERMINISTIC_ON_CUDA[func](args, kwargs):
            raise DeviceMixError(f"{func} does not have a deterministic implementation on CUDA, but "
                                 "train.deterministic (torch.use_deterministic_algorithms) is on there by default")
    kind = _syncs(func, args, kwargs, flat, tagged)
    if mode is not None and kind is not None:
        mode.record(kind, func, sum(t.numel() * t.element_size() for t in flat if isinstance(t, OnFakeGPU)))
    if to_fake:
        kwargs = {**kwargs, "device": torch.device("cpu")}
    flat, spec = tree_flatten((args, kwargs))
    inner = [t.elem if isinstance(t, OnFakeGPU) else t for t in flat]
    inner_args, inner_kwargs = tree_unflatten(inner, spec)
    result = func(*inner_args, **inner_kwargs)
    tag = to_fake if device is not None else tagged
    originals = {id(e): o for e, o in zip(inner, flat) if isinstance(e, torch.Tensor)}

    def wrap(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        if id(x) in originals:  # in-place and out= ops return their argument itself
            return originals[id(x)]
        return OnFakeGPU(x) if tag else x

    return tree_map(wrap, result)


class FakeGPU(TorchDispatchMode):
    """The dispatch mode of :func:`fake_gpu`; ``syncs`` counts device -> host transfers by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: Counter = Counter()
        self.where: Counter = Counter()  # (kind, op, caller) -> count: what a failing sync test prints
        self.bytes_read = 0  # size of the device tensors the host waited for (an upper bound of what crossed)

    def record(self, kind: str, func, nbytes: int = 0) -> None:
        self.syncs[kind] += 1
        self.bytes_read += nbytes
        frame = sys._getframe(3)
        while frame is not None and ("torch/" in frame.f_code.co_filename or frame.f_code.co_filename == __file__):
            frame = frame.f_back
        caller = f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno}" if frame is not None else "?"
        self.where[(kind, str(func), caller)] += 1

    @property
    def total(self) -> int:
        return sum(self.syncs.values())

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The block runs without the mode: a CPU reference run at the CPU's speed, not counted."""
        with _disable_current_modes():
            yield

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(self, func, args, kwargs or {})


@contextlib.contextmanager
def fake_gpu() -> Iterator[FakeGPU]:
    """Run the block with ``fakegpu:0`` available (see the module docstring)."""
    mode = FakeGPU()
    with mode:
        yield mode


def on_fake(t: torch.Tensor) -> bool:
    return isinstance(t, OnFakeGPU)

"""``addend + x @ W`` over a member axis, on oneDNN's fp32 GEMM when running on CPU.

Why this exists: on CPU, PyTorch sends float32 matrix products to the BLAS it was
built with (MKL in the official wheels). MKL picks its fast AVX-512 kernels only on
Intel processors; on an AMD EPYC it runs a generic path. oneDNN, which the same
wheels ship for convolutions and inference, dispatches on the instruction set
instead. Measured on this project's 2-core AMD EPYC (one thread, the p = 113 shapes
of the fast path, e.g. [3831, 128] @ [128, 512]): MKL 6.2 ms (~80 GFLOP/s), oneDNN
2.6 ms (~190 GFLOP/s). The products of the training step are all of that kind, so
the step time roughly halves (``benchmarks/bench_trainer.py`` prints both).

That ~2x held on a CPU with AVX-512. On the same family of CPU with AVX2 only, the two
trade places within the noise (bench_trainer: 0.115 / 0.133 s/epoch on oneDNN against
0.106 / 0.139 on BLAS). So the default, ``train.cpu_gemm=auto``, measures: the first
time a process multiplies a product shape (per member: rows, k, n, bias or residual,
ReLU, with or without a backward), it times that product forward and backward on both
libraries (best of 7, alternating, on the thread's CPU clock: about a tenth of a second)
and keeps the faster -- BLAS only when it is more than 2% faster (:data:`TIE_MARGIN`): many
shapes are within a few percent, and a tie decided by timing noise gives a fresh cache on
the same machine other float rounding, hence other numbers for the same config. The choice
is cached per CPU model, instruction set, thread count and torch version in
``$GROKTRANSFER_CACHE_DIR/cpu_gemm.v3.json`` (default ``~/.cache/groktransfer``), under a
file lock, so every job of a sweep on this machine -- and a resumed job -- uses the same
library for the same product, and only the first one measures. The shape is taken per
member, so an ensemble chooses what its members would choose alone.

The result is the same product in float32 with a different blocking of the sums, so
the last bits differ from MKL's (as between two CPUs); it is deterministic for a
given machine and thread count. ``train.cpu_gemm=onednn`` or ``blas`` fixes the library.

Only the fast last-position path (:mod:`groktransfer.model.lastpos`) uses this; each
member's product is its own 2-D GEMM, so an ensemble member computes exactly what a
single model computes.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from groktransfer.config.schema import CpuGemm

_backend = CpuGemm.auto


def _linear_pointwise():
    """oneDNN's linear op as PyTorch registers it (``None`` in builds without it)."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        _ = op.binary  # the residual-fused overload this module also uses
        return op
    except (AttributeError, RuntimeError):
        return None


_ONEDNN = _linear_pointwise() if torch.backends.mkldnn.is_available() else None


def set_cpu_gemm(backend: CpuGemm) -> None:
    """Process-wide choice (a job sets it from ``train.cpu_gemm``, like its thread count)."""
    global _backend
    _backend = CpuGemm(backend)


def onednn_available() -> bool:
    return _ONEDNN is not None


def _use_onednn(addend: torch.Tensor, x: torch.Tensor, W: torch.Tensor, relu: bool) -> bool:
    if _backend == CpuGemm.blas or _ONEDNN is None:
        return False
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (addend, x, W)):
        return False
    if x.shape[1] == 0:  # no rows (a one-position input's positions 1..): oneDNN refuses an empty product
        return False
    return _backend == CpuGemm.onednn or _auto_choice(addend, x, W, relu) == CpuGemm.onednn


# --- train.cpu_gemm=auto: the faster library per product shape, measured once per machine ---

_choices: dict[str, CpuGemm] = {}  # this process's decisions, by shape key
_REPEATS = 7
#: BLAS is chosen only when faster than oneDNN by more than this fraction (the 2% that
#: auto may lose against the better library). Measured on the 2-core AMD EPYC: 9 product
#: shapes of the quickstart and p = 113 jobs, each timed 4 times AVX2-capped and 4 times
#: native; in 5 of those 18 series the BLAS/oneDNN ratio crossed 1.0 (one series ran from
#: 0.91 to 1.16), so "the faster wins" flipped choices between fresh caches. A 2% margin
#: settles only 1 of the 5 (these timings are that noisy); it keeps the loss within what the
#: backend choice may cost. The cache, not the margin, is what keeps one machine's numbers fixed.
TIE_MARGIN = 0.02
# Bump when the way a choice is measured changes: choices measured the old way are not reused.
# v2: the two libraries alternate, timed on the thread's CPU clock (v1 timed one after the other, in wall time).
# v3: ties (BLAS faster by at most TIE_MARGIN) go to oneDNN.
_METHOD_VERSION = 3


def cache_path() -> Path:
    """Where the auto choices are kept (``$GROKTRANSFER_CACHE_DIR``, else ``~/.cache/groktransfer``)."""
    root = os.environ.get("GROKTRANSFER_CACHE_DIR") or Path.home() / ".cache" / "groktransfer"
    return Path(root) / f"cpu_gemm.v{_METHOD_VERSION}.json"


def machine_key(threads: int | None = None) -> str:
    """CPU model, instruction set (and the env settings that cap it), threads (default: this
    process's torch threads), torch version."""
    model, flags = platform.processor() or "unknown cpu", set()
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        info = []
    names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    flag_lines = [line.split(":", 1)[1].split() for line in info if line.startswith("flags")]
    model = names[0] if names else model
    flags = set(flag_lines[0]) if flag_lines else flags
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "baseline"
    caps = ",".join(
        f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if os.environ.get(k)
    )
    return f"{model} | {isa}{' ' + caps if caps else ''} | threads={threads or torch.get_num_threads()} | torch {torch.__version__}"


def _shape_key(addend: torch.Tensor, x: torch.Tensor, W: torch.Tensor, relu: bool) -> tuple[str, bool]:
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (addend, x, W))
    kind = "bias" if addend.shape[1] == 1 else "residual"
    return (
        f"{x.shape[1]}x{x.shape[2]}x{W.shape[2]} {kind}{' relu' if relu else ''} {'fwd+bwd' if grad else 'fwd'}",
        grad,
    )


def _time_both(rows: int, k: int, n: int, residual: bool, relu: bool, grad: bool) -> dict[CpuGemm, float]:
    """Best of ``_REPEATS`` CPU seconds of this thread for one member's product (and its
    backward) on each library.

    Why interleaved and on the thread's CPU clock: a choice is cached for good, so it must not
    be decided by the machine's load. Wall time would count the moments another process holds
    the core, and timing one library's repeats after the other's would let a change of load
    between them pick the library; alternating them, the best of each sees the same machine.
    """
    gen = torch.Generator().manual_seed(0)
    x, W = torch.randn(1, rows, k, generator=gen), torch.randn(1, k, n, generator=gen) / k**0.5
    addend = torch.randn(1, rows if residual else 1, n, generator=gen)
    for t in (x, W, addend):
        t.requires_grad_(grad)

    def run(backend: CpuGemm) -> float:
        t0 = time.thread_time()
        with torch.enable_grad() if grad else torch.no_grad():
            if backend == CpuGemm.onednn:
                out = _OneDnnAddmm.apply(addend, x, W, relu)
            else:
                out = torch.baddbmm(addend, x, W)
                out = torch.relu(out) if relu else out
            if grad:
                out.backward(torch.ones_like(out))
        return time.thread_time() - t0

    best = {CpuGemm.onednn: float("inf"), CpuGemm.blas: float("inf")}
    for i in range(_REPEATS + 1):
        for backend in best:
            seconds = run(backend)
            if i:  # round 0 warms both libraries up
                best[backend] = min(best[backend], seconds)
    return best


def _decide(times: dict[CpuGemm, float]) -> CpuGemm:
    """oneDNN unless BLAS is faster by more than :data:`TIE_MARGIN` (a tie goes one fixed way)."""
    return CpuGemm.blas if times[CpuGemm.blas] < (1.0 - TIE_MARGIN) * times[CpuGemm.onednn] else CpuGemm.onednn


def _auto_choice(addend: torch.Tensor, x: torch.Tensor, W: torch.Tensor, relu: bool) -> CpuGemm:
    key, grad = _shape_key(addend, x, W, relu)
    if key in _choices:
        return _choices[key]
    import fcntl  # POSIX; this path runs on CPU only

    path, machine = cache_path(), machine_key()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a+")
    except OSError:  # no writable cache: decide for this process only
        lock = None
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        cache = _read_cache(path)
        known = cache.get(machine, {}).get(key)
        if known in (CpuGemm.onednn.value, CpuGemm.blas.value):
            choice = CpuGemm(known)
        else:
            rows, k, n = x.shape[1], x.shape[2], W.shape[2]
            choice = _decide(_time_both(rows, k, n, addend.shape[1] != 1, relu, grad))
            cache.setdefault(machine, {})[key] = choice.value
            if lock is not None:
                from groktransfer.utils.atomic import write_text

                write_text(path, json.dumps(cache, indent=1, sort_keys=True), fsync=False)
    finally:
        if lock is not None:
            lock.close()  # releases the lock
    _choices[key] = choice
    return choice


def _read_cache(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def auto_choices() -> dict[str, str]:
    """This process's auto decisions so far (shape key -> library), for benchmarks and logs."""
    return {k: v.value for k, v in _choices.items()}


def member_addmm(addend: torch.Tensor, x: torch.Tensor, W: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """``addend + x @ W`` for every member, then ReLU if asked: [member, batch, k] @ [member, k, n] -> [member, batch, n].

    ``addend`` is a bias [member, 1, n] (broadcast over the batch) or, without ``relu``,
    a residual [member, batch, n]. Same values as ``torch.baddbmm(addend, x, W)`` (and
    ``.relu()``) up to float rounding; differentiable in all three.
    """
    if not _use_onednn(addend, x, W, relu):
        out = member_baddbmm(addend, x, W)
        return torch.relu_(out) if relu else out  # baddbmm's backward does not need its output
    assert not relu or addend.shape[1] == 1, "ReLU is fused with a bias addend only"
    return _OneDnnAddmm.apply(addend, x, W, relu)


def member_baddbmm(addend: torch.Tensor, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``torch.baddbmm`` over members, on CPU one member at a time: MKL multiplies a batch of several
    matrices with other kernels than a batch of one (measured: a [1, 11, 24] @ [1, 24, 24]
    product differs in the last bits from the same member's inside a batch of 3), so an
    ensemble member would not compute what the model computes alone. On a GPU one batched call."""
    if x.shape[0] == 1 or x.device.type != "cpu":
        return torch.baddbmm(addend, x, W)
    return torch.cat(
        [
            torch.baddbmm(addend[m : m + 1] if addend.shape[0] > 1 else addend, x[m : m + 1], W[m : m + 1])
            for m in range(x.shape[0])
        ]
    )


def _onednn_mm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, attr: str = "none") -> torch.Tensor:
    """``a @ b (+ bias)``, then ``attr`` (``none`` | ``relu``): ``a`` [..., m, k] @ ``b`` [k, n], either may be a transposed view."""
    # oneDNN's linear computes a @ weight.T with weight [n, k]
    return _ONEDNN(a, b.t(), bias, attr, [None], "")


def _transposed_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a^T @ b`` for ``a`` [batch, k], ``b`` [batch, n]: a weight gradient, summed over the batch.

    oneDNN's linear copies a non-contiguous *input* but reads a transposed *weight*
    in place, so the narrower operand is the one transposed into the input slot
    (measured at p = 113: post^T as input cost a 4.4 ms copy per step, grad^T 0.5 ms).
    """
    if a.shape[1] <= b.shape[1]:
        return _onednn_mm(a.t(), b)
    return _onednn_mm(b.t(), a).t().contiguous()


def _per_member(parts: list) -> torch.Tensor:
    """Join per-member [1, ...] results; one member is returned as is (no copy, no view)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _OneDnnAddmm(torch.autograd.Function):
    """Each member's product is one oneDNN GEMM on [1, batch, k] (a fresh [1, batch, n] result)."""

    @staticmethod
    def forward(ctx, addend: torch.Tensor, x: torch.Tensor, W: torch.Tensor, relu: bool) -> torch.Tensor:
        assert x.ndim == 3 and W.ndim == 3 and addend.ndim == 3, (x.shape, W.shape, addend.shape)
        members = range(x.shape[0])
        per_row_bias = addend.shape[1] == 1
        if per_row_bias:
            attr = "relu" if relu else "none"
            out = _per_member([_onednn_mm(x[m : m + 1], W[m], addend[m, 0], attr) for m in members])
        else:  # a residual addend: fused into the GEMM's output as a binary post-op
            out = _per_member([_ONEDNN.binary(x[m : m + 1], addend[m : m + 1], W[m].t(), None, "add") for m in members])
        ctx.save_for_backward(x, W, out if relu else None)
        ctx.per_row_bias, ctx.relu = per_row_bias, relu
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, W, out = ctx.saved_tensors
        if ctx.relu:
            grad = torch.ops.aten.threshold_backward(grad, out, 0)
        grad = grad.contiguous()
        members = range(x.shape[0])
        need_addend, need_x, need_W, _ = ctx.needs_input_grad
        grad_addend = grad_x = grad_W = None
        if need_addend:
            grad_addend = grad.sum(dim=1, keepdim=True) if ctx.per_row_bias else grad
        if need_x:  # grad @ W^T
            grad_x = _per_member([_onednn_mm(grad[m : m + 1], W[m].t()) for m in members])
        if need_W:  # x^T @ grad
            grad_W = _per_member([_transposed_product(x[m], grad[m]).unsqueeze(0) for m in members])  # no copy for one
        return grad_addend, grad_x, grad_W, None

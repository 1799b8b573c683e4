"""Which device a job trains on, checked before anything is written, and how it is made deterministic.

``train.device`` is ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu``, ``cuda``,
``cuda:N`` or ``mps``. A device that is not there is a user error: one readable line,
exit code 2, before any directory is touched.

Everything a job writes is device-independent: checkpoints, resume states and source
optimizer states are moved to CPU before saving (:func:`to_cpu`), so a run killed on a
GPU resumes on a laptop and the analysis (which runs on CPU) reads any run.

Determinism. On CPU the same config gives the same numbers, as before (no setting is
needed). On CUDA, :func:`configure_determinism` (``train.deterministic``, on by default)
sets ``torch.use_deterministic_algorithms(True)``, disables cuDNN autotuning, and sets
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS otherwise may pick reduction orders that vary
between runs). What it costs: cuBLAS keeps a fixed 4 MiB workspace per stream and
PyTorch picks its deterministic kernels (for the embedding-gather backward of the fast
path, a sort-based reduction instead of atomics); the model here is a handful of GEMMs,
so the cost is expected to be small, but it was not measured (no GPU was available when
this was written). ``train.deterministic=false`` switches it off. CPU and CUDA results
agree to float32 rounding, not bit for bit.

MPS has no float64: the loss there is taken in float32 (a one-line warning says so),
which is not the paper's precision.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from groktransfer.utils.errors import UserError

log = logging.getLogger(__name__)

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N | mps"


class DeviceError(UserError, ValueError):
    """train.device names a device this machine does not have (exit 2, nothing written)."""


def resolve_device(spec: str) -> torch.device:
    """``train.device`` -> a torch.device that exists here, or a DeviceError saying why not."""
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise DeviceError(f"train.device={spec!r} is not a device; choose {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise DeviceError(
                f"train.device={spec}: CUDA is not available here ({why}; torch {torch.__version__}); "
                "use train.device=cpu or train.device=auto"
            )
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"train.device={spec}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0.."
                f"cuda:{torch.cuda.device_count() - 1})"
            )
        return torch.device("cuda", index)
    if device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError(f"train.device={spec}: MPS (Apple GPU) is not available here; use cpu or auto")
        return device
    raise DeviceError(f"train.device={spec!r}: unsupported device type; choose {DEVICE_CHOICES}")


def configure_determinism(device: torch.device, deterministic: bool) -> None:
    """Make CUDA runs repeatable (see the module docstring for what it costs). No-op on CPU."""
    if device.type != "cuda" or not deterministic:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def loss_dtype(device: torch.device) -> torch.dtype:
    """float64 cross-entropy (the paper's precision) wherever the device has float64."""
    if device.type == "mps":
        return torch.float32
    return torch.float64


def to_cpu(obj: Any) -> Any:
    """A copy of a (nested) state with every tensor on CPU: what is saved is device-independent."""
    if torch.is_tensor(obj):
        return obj.detach().cpu() if obj.device.type != "cpu" else obj
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v) for v in obj)
    return obj

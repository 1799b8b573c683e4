"""Which device a job trains on, checked before anything is written, and how it is made deterministic.

``train.device`` is ``auto`` (CUDA when torch can use a GPU, else CPU), ``cpu``, ``cuda``,
``cuda:N`` or ``mps``. A device that is not there is a user error: one readable line that
says why (a CPU build of torch, no GPU, a driver too old for this torch's CUDA), exit code
2, before any directory is touched. ``auto`` says on one line which device it chose and why
(:func:`training_device`), so a GPU machine that trains on the CPU says so.

GPUs per process. On a machine with several GPUs, ``cuda`` and ``auto`` (no index) take
the GPU that the fewest groktransfer processes on this machine hold (a slot lock per
process, :func:`claim_gpu`): separate jobs, joblib's workers and the ensemble launcher's
workers spread over the GPUs, sharing one only when there are more processes than GPUs.
``cuda:N`` always means GPU N. The ensemble launcher's spawned workers see one GPU each
(``CUDA_VISIBLE_DEVICES``), so they need no slot.

Everything a job writes is device-independent: checkpoints, resume states and source
optimizer states are moved to CPU before saving (:func:`to_cpu`), so a run killed on a
GPU resumes on a laptop and the analysis (which runs on CPU) reads any run.

Determinism. On CPU the same config gives the same numbers, as before (no setting is
needed). On CUDA, :func:`configure_determinism` (``train.deterministic``, on by default)
sets ``torch.use_deterministic_algorithms(True)``, disables cuDNN autotuning, and sets
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS otherwise may pick reduction orders that vary
between runs). What it costs: cuBLAS keeps 8 workspaces of 4096 KiB (32 MiB) per stream
and PyTorch picks its deterministic kernels (for the embedding-gather backward of the fast
path, a sort-based reduction instead of atomics); the model here is a handful of GEMMs,
so the cost is expected to be small, but it was not measured (no GPU was available when
this was written; ``benchmarks/gpu_check.sh`` measures it). ``train.deterministic=false``
switches it off. CPU and CUDA results agree to float32 rounding, not bit for bit.

MPS has no float64: the loss is taken in float32 there, which is not the paper's precision.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from groktransfer.utils.errors import UserError

log = logging.getLogger(__name__)

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N | mps"


class DeviceError(UserError, ValueError):
    """train.device names a device this machine does not have (exit 2, nothing written)."""


def resolve_device(spec: str) -> torch.device:
    """``train.device`` -> a torch.device that exists here, or a DeviceError saying why not.

    A check: it takes no GPU slot and says nothing (planning and the launchers call it);
    the process that trains calls :func:`training_device`.
    """
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise DeviceError(f"train.device={spec!r} is not a device; choose {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"train.device={spec}: CUDA is not available here ({cuda_unavailable_reason()}); "
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


def training_device(spec: str) -> torch.device:
    """The device this process trains on: :func:`resolve_device`, a GPU slot for ``cuda`` and
    ``auto`` on a machine with several GPUs, and for ``auto`` one line saying what it chose and why."""
    device = resolve_device(spec)
    text = str(spec).strip().lower()
    if device.type == "cuda" and text in ("auto", "cuda") and torch.cuda.device_count() > 1:
        device = torch.device("cuda", claim_gpu())
    if text == "auto":
        _announce(f"train.device=auto: {device} ({_why(device)})", warn=device.type == "cpu" and _nvidia_gpus() > 0)
    return device


_announced: set = set()


def _announce(line: str, warn: bool) -> None:
    if line not in _announced:  # once per process: a sweep's jobs in one process need not repeat it
        _announced.add(line)
        log.log(logging.WARNING if warn else logging.INFO, "%s", line)


def _why(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        n = torch.cuda.device_count()
        return f"{name}; {n} CUDA GPU{'s' if n > 1 else ''} visible, torch {torch.__version__}"
    return cuda_unavailable_reason()


def cuda_unavailable_reason() -> str:
    """Why torch cannot use CUDA here, in words a user can act on."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    gpus = _nvidia_gpus()
    if gpus == 0:
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        if hidden is not None and not hidden.strip():
            return "CUDA_VISIBLE_DEVICES is empty"
        return "no NVIDIA GPU is visible (nvidia-smi lists none)"
    driver = _driver_cuda_version()
    return (
        f"nvidia-smi lists {gpus} GPU(s), but this torch ({torch.__version__}) is built for CUDA {torch.version.cuda} "
        f"and the driver supports CUDA {driver or 'unknown'}: update the driver or install a torch built for "
        "CUDA <= the driver's (scripts/setup_env.sh chooses one; docs/how-to/gpus.md)"
    )


def _nvidia_smi(*args: str) -> str:
    try:
        out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout if out.returncode == 0 else ""


@functools.lru_cache(maxsize=1)
def _nvidia_gpus() -> int:
    """GPUs the NVIDIA driver lists (0 without a driver): what the machine has, whatever torch can use."""
    return sum(1 for line in _nvidia_smi("-L").splitlines() if line.startswith("GPU "))


@functools.lru_cache(maxsize=1)
def _driver_cuda_version() -> str | None:
    """The newest CUDA version the installed driver supports (nvidia-smi's banner), or None."""
    match = re.search(r"CUDA Version:\s*([0-9.]+)", _nvidia_smi())
    return match.group(1) if match else None


# --------------------------------------------------------------------------- a GPU per process
_claimed: list[Any] = []  # (index, lock) of this process's slot: held until the process ends


def visible_gpus() -> list[str]:
    """The GPUs this process may use, named as the driver names them: the entries of
    ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs) or, without it, their indices."""
    n = torch.cuda.device_count()
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return [str(i) for i in range(n)]
    return [e.strip() for e in mask.split(",") if e.strip()][:n]


def claim_gpu() -> int:
    """The index (into :func:`visible_gpus`) of the GPU this process trains on: the first GPU
    with the fewest groktransfer processes on this machine, claimed by a lock file held until
    the process ends (so a crashed process frees its slot). Claimed once per process."""
    if _claimed:
        return _claimed[0][0]
    from filelock import FileLock, Timeout

    gpus = visible_gpus()
    folder = Path(tempfile.gettempdir()) / f"groktransfer-gpu-slots-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for level in range(1024):  # level k: the (k+1)-th process on a GPU
        for index, gpu in enumerate(gpus):
            lock = FileLock(str(folder / f"{host}-gpu{gpu}-{level}.lock"), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                continue
            _claimed.append((index, lock))
            log.info(
                "GPU slot: %s of %d visible (%s process%s on it)", gpu, len(gpus), level + 1, "" if level == 0 else "es"
            )
            return index
    raise DeviceError("no GPU slot left (1024 groktransfer processes per GPU?)")


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

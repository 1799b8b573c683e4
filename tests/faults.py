"""Fault injection for the resilience tests: a trainer callback the tests attach.

Production code knows nothing about faults; a test passes ``FaultInjection(...)`` to
``conftest.run_in`` (which hands it to ``run_job``) and the trainer calls it after
every step like any other callback.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from groktransfer.training.trainer import TrainerCallback


@dataclass
class FaultInjection(TrainerCallback):
    """``nan_at_epoch``: the step taken from that epoch has a non-finite loss (weights set to NaN);
    ``raise_at_epoch``: an unexpected exception once that epoch is reached;
    ``sleep_per_epoch``: seconds of sleep after every step (a slow job, for timeouts);
    ``raise_at_start``: an exception before the first checkpoint (a plugin that crashes at once);
    ``die_at_epoch``: the process ends at once, recording nothing (as if killed)."""

    nan_at_epoch: Optional[int] = None
    raise_at_epoch: Optional[int] = None
    sleep_per_epoch: float = 0.0
    raise_at_start: bool = False
    die_at_epoch: Optional[int] = None

    def on_fit_start(self, trainer) -> None:
        if self.raise_at_start:
            raise RuntimeError("injected failure before the first checkpoint")

    def on_epoch_end(self, trainer, loss: torch.Tensor) -> None:
        if self.nan_at_epoch is not None and trainer.epoch == self.nan_at_epoch:
            with torch.no_grad():
                trainer.model.unembed.W_U.fill_(float("nan"))
        if self.raise_at_epoch is not None and trainer.epoch == self.raise_at_epoch:
            raise RuntimeError(f"injected failure at epoch {trainer.epoch}")
        if self.sleep_per_epoch:
            time.sleep(self.sleep_per_epoch)
        if self.die_at_epoch is not None and trainer.epoch == self.die_at_epoch:
            os._exit(137)


def status_now(run_dir: Path) -> dict:
    """status.json of a job that may be running or just killed: {} while it is not there yet or
    is being replaced (the kill-and-resume tests poll it)."""
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


# --------------------------------------------------------------------------- damaged files
def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its length (a torn write, a copy that ran out of space)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def digests(directory: Path) -> dict:
    """{path relative to ``directory``: sha256} of every file under it: "nothing was altered" is equality."""
    import hashlib

    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(directory).rglob("*")) if p.is_file()
    }  # fmt: skip


def small_disk_available() -> bool:
    """Whether a private tmpfs can be mounted (``unshare``: root, or unprivileged user namespaces)."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"],  # /tmp of a private namespace
        capture_output=True, timeout=30,
    )  # fmt: skip
    return probe.returncode == 0


def on_small_disk(mountpoint: Path, size: str, script: str, timeout: float = 300):
    """Run the shell ``script`` with a tmpfs of ``size`` at ``mountpoint``, in a private mount
    namespace (nothing leaks to the machine); copy what the test reads out of it in ``script``."""
    import subprocess

    from conftest import REPO, script_env

    Path(mountpoint).mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {mountpoint} && {script}"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip

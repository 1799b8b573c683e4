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
    ``die_at_epoch``: the process ends at once, recording nothing (as if killed)."""

    nan_at_epoch: Optional[int] = None
    raise_at_epoch: Optional[int] = None
    sleep_per_epoch: float = 0.0
    die_at_epoch: Optional[int] = None

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

"""The torch profiler around the first epochs of a run (``train.profile_epochs``, ``debug=profile``).

Why a callback: profiling is a question asked of a real run (which operators, which
share of an epoch goes to evaluation and checkpoints), so it wraps the ordinary loop
instead of a separate benchmark. The trace and a summary table land in the run
directory, next to the numbers they explain.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from groktransfer.runs.rundir import PROFILE_SUMMARY, PROFILE_TRACE
from groktransfer.training.trainer import Trainer, TrainerCallback

log = logging.getLogger(__name__)


class ProfilerCallback(TrainerCallback):
    """Profile from the start of ``fit`` until ``epochs`` steps have run, then write the files."""

    def __init__(self, out_dir: Path, epochs: int) -> None:
        assert epochs > 0, epochs
        self.out_dir = Path(out_dir)
        self.epochs = epochs
        self._steps = 0
        self._profiler: profile | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self._profiler = profile(activities=activities, record_shapes=True)
        self._profiler.start()

    def on_epoch_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self._steps += 1
        if self._steps == self.epochs:
            self._finish()

    def on_fit_end(self, trainer: Trainer) -> None:
        self._finish()  # the loop ended inside the window (short run, early stop, failure)

    def _finish(self) -> None:
        if self._profiler is None:
            return
        prof, self._profiler = self._profiler, None
        prof.stop()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.out_dir / PROFILE_TRACE))
        table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=40)
        (self.out_dir / PROFILE_SUMMARY).write_text(f"torch profiler, first {self._steps} epoch(s)\n\n{table}\n")
        log.info("profiler trace of %d epoch(s) written to %s", self._steps, self.out_dir)

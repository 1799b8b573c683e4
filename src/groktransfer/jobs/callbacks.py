"""The trainer callback that writes a run directory, and the resume state it leaves.

At every checkpoint ``RunDirCallbacks`` writes, in this order: the checkpoint file
(and, for source runs, the optimizer state), the progress measures, the tables
(flushed by the sinks), the resume state, then the status record. A job killed at any
instant therefore leaves tables that cover every epoch its resume state restarts from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from groktransfer.utils.atomic import atomic_open
from groktransfer.model.checkpoint import save_checkpoint
from groktransfer.utils.errors import JobError
from groktransfer.measures.registry import measure_checkpoint
from groktransfer.runs.rundir import RunDir
from groktransfer.sinks import SinkGroup
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import EvalResult, Trainer, TrainerCallback
from groktransfer.transfer.components import named_optimizer_state


class WallClock:
    """Wall time of a job, including time spent before a resume."""

    def __init__(self, already_spent: float = 0.0) -> None:
        self._start = time.monotonic()
        self._before = already_spent

    @property
    def seconds(self) -> float:
        return self._before + (time.monotonic() - self._start)


def load_resume_state(run_dir: RunDir) -> Dict[str, Any]:
    """The last checkpointed training state; a torn or corrupt file is reported, not trusted."""
    try:
        return torch.load(run_dir.resume_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise JobError(
            f"cannot resume {run_dir.path}: {run_dir.resume_path.name} is unreadable ({exc}); "
            "rerun with force=true to start this run over"
        ) from exc


class RunDirCallbacks(TrainerCallback):
    """Connects the trainer to the run directory: tables, checkpoints, measures, status."""

    def __init__(
        self,
        run_dir: RunDir,
        task: Task,
        sinks: SinkGroup,
        measures_enabled: bool,
        key_freq_threshold: float,
        keep_checkpoints: bool,
        save_optimizer_states: bool,
        clock: WallClock,
    ) -> None:
        self.run_dir = run_dir
        self.task = task
        self.sinks = sinks
        self.measures_enabled = measures_enabled
        self.key_freq_threshold = key_freq_threshold
        self.keep_checkpoints = keep_checkpoints
        self.save_optimizer_states = save_optimizer_states
        self.clock = clock
        self.last_measures: Dict[str, Any] = {}
        self._previous_checkpoint: Optional[Path] = None

    def on_eval(self, trainer: Trainer, result: EvalResult) -> None:
        self.sinks.log_metrics(result.epoch, result.as_dict())

    def measure(self, model: torch.nn.Module, epoch: int) -> Dict[str, Any]:
        """The progress measures the task's family registered (``measures.registry``), on all examples."""
        measured = measure_checkpoint(self.task, model, self.key_freq_threshold)
        if measured is None:
            return {}
        scalars, rows = measured
        self.sinks.log_measures(epoch, scalars, rows)
        return scalars

    def on_checkpoint(self, trainer: Trainer, result: EvalResult) -> None:
        path = self.run_dir.checkpoint_path(result.epoch)
        save_checkpoint(path, trainer.model, result.epoch, result.as_dict())
        if self.save_optimizer_states:
            with atomic_open(self.run_dir.optimizer_state_path(result.epoch), "wb") as f:
                torch.save(named_optimizer_state(trainer.optimizer, trainer.model), f)
        if not self.keep_checkpoints and self._previous_checkpoint is not None:
            self._previous_checkpoint.unlink(missing_ok=True)
        self._previous_checkpoint = path
        if self.measures_enabled:
            self.last_measures = self.measure(trainer.model, result.epoch)
        self.sinks.log_checkpoint(path, result.epoch, final=False)  # flushes the tables first
        state = trainer.state_dict()
        state["wall_time_s"] = self.clock.seconds
        state["last_measures"] = dict(self.last_measures)
        with atomic_open(self.run_dir.resume_path, "wb") as f:
            torch.save(state, f)
        self.run_dir.update_status(
            epoch=result.epoch,
            thresholds=trainer.thresholds.as_record(),
            last_eval=result.as_dict(),
            wall_time_s=round(self.clock.seconds, 2),
        )

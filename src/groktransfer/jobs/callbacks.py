"""The trainer callback that writes a run directory, and the resume state it leaves.

At every checkpoint ``RunDirCallbacks`` writes, in this order: the checkpoint file
(and, for source runs, the optimizer state), the progress measures, the tables
(flushed by the sinks), the resume state, the checksums of the new files
(``manifest.json``), then the status record; only then is the previous checkpoint
deleted (``train.keep_checkpoints=false``). A job killed at any instant therefore
leaves tables that cover every epoch its resume state restarts from, and a checkpoint
of the epoch it restarts from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from groktransfer.measures.registry import measure_checkpoint
from groktransfer.model.checkpoint import save_checkpoint
from groktransfer.runs.integrity import Manifest, checkpoint_epoch
from groktransfer.runs.rundir import FINAL_CHECKPOINT, RunDir
from groktransfer.sinks import SinkGroup
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import EvalResult, Trainer, TrainerCallback
from groktransfer.transfer.components import named_optimizer_state
from groktransfer.utils.atomic import atomic_open
from groktransfer.utils.errors import JobError


class WallClock:
    """Wall time of a job, including time spent before a resume."""

    def __init__(self, already_spent: float = 0.0) -> None:
        self._start = time.monotonic()
        self._before = already_spent

    @property
    def seconds(self) -> float:
        return self._before + (time.monotonic() - self._start)


def load_resume_state(run_dir: RunDir) -> dict[str, Any]:
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
        self.last_measures: dict[str, Any] = {}
        self._previous_checkpoint: Path | None = None
        self.manifest = Manifest(run_dir)

    def on_eval(self, trainer: Trainer, result: EvalResult) -> None:
        self.sinks.log_metrics(result.epoch, result.as_dict())

    def measure(self, model: torch.nn.Module, epoch: int) -> dict[str, Any]:
        """The progress measures the task's family registered (``measures.registry``), on all examples."""
        measured = measure_checkpoint(self.task, model, self.key_freq_threshold)
        if measured is None:
            return {}
        scalars, rows = measured
        self.sinks.log_measures(epoch, scalars, rows)
        return scalars

    def _save_model_files(self, trainer: Trainer, result: EvalResult) -> list:
        """The checkpoint of ``result.epoch`` (and a source run's optimizer state); returns their paths."""
        path = self.run_dir.checkpoint_path(result.epoch)
        save_checkpoint(path, trainer.model, result.epoch, result.as_dict())
        written = [path]
        if self.save_optimizer_states:
            written.append(self.run_dir.optimizer_state_path(result.epoch))
            with atomic_open(written[-1], "wb") as f:
                torch.save(named_optimizer_state(trainer.optimizer, trainer.model), f)
        return written

    def on_checkpoint(self, trainer: Trainer, result: EvalResult) -> None:
        written = self._save_model_files(trainer, result)
        if self.measures_enabled:
            self.last_measures = self.measure(trainer.model, result.epoch)
        self.sinks.log_checkpoint(written[0], result.epoch, final=False)  # flushes the tables first
        state = trainer.state_dict()
        state["wall_time_s"] = self.clock.seconds
        state["last_measures"] = dict(self.last_measures)
        with atomic_open(self.run_dir.resume_path, "wb") as f:
            torch.save(state, f)
        previous, self._previous_checkpoint = self._previous_checkpoint, written[0]
        if self.keep_checkpoints or previous == written[0]:
            previous = None
        if previous is not None:
            self.manifest.entries.pop(self.manifest.name(previous), None)
        self.manifest.record(*written, self.run_dir.resume_path)
        self.run_dir.update_status(
            epoch=result.epoch,
            thresholds=trainer.thresholds.as_record(),
            last_eval=result.as_dict(),
            wall_time_s=round(self.clock.seconds, 2),
        )
        if previous is not None:  # only once the new checkpoint is the one a resume starts from
            previous.unlink(missing_ok=True)

    def on_resume(self, trainer: Trainer) -> None:
        """A resumed run's checkpoints: the one of its resume epoch (written again if it was left
        out as damaged), and those carried over without a checksum (vetted by loading), recorded."""
        epoch = trainer.epoch
        path = self.run_dir.checkpoint_path(epoch)
        if not path.exists() or (self.save_optimizer_states and not self.run_dir.optimizer_state_path(epoch).exists()):
            assert trainer.last_eval is not None
            self._save_model_files(trainer, trainer.last_eval)
        entries = self.manifest.entries
        for name in [n for n in entries if not (self.run_dir.path / n).exists()]:
            del entries[name]  # left out of the resumed run: written again when training gets there
        carried = [
            p
            for p in sorted(self.run_dir.checkpoint_dir.glob("*.pt"))
            if self.manifest.name(p) not in entries
            and (checkpoint_epoch(p.name) or 0) <= epoch
            and p.name != FINAL_CHECKPOINT
        ]
        self.manifest.record(*carried)
        if not self.keep_checkpoints:
            self._previous_checkpoint = path

    def record_final(self, final_checkpoint: Path, tables: list) -> None:
        """A completed run's last files: ``final.pt`` and the tables, now final; ``resume.pt`` goes."""
        self.manifest.entries.pop(self.run_dir.resume_path.name, None)
        self.manifest.record(final_checkpoint, *tables)

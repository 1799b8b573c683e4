"""Training inside a run directory: one function for target jobs and source runs alike.

``train_in_run_dir`` opens the sinks, attaches ``RunDirCallbacks`` (and any extra
trainer callbacks), continues from the resume state if there is one, trains, and
writes the final checkpoint and the final status record. What differs between a
target job and a cached source run is only the ``TrainingPlan`` the caller fills in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from groktransfer.config.schema import (
    GradFilterConfig,
    LoggerConfig,
    MeasuresConfig,
    ModelConfig,
    OptimizerConfig,
    TrainConfig,
    TrainJobConfig,
    to_typed,
)
from groktransfer.jobs.callbacks import RunDirCallbacks, WallClock, load_resume_state
from groktransfer.measures.digits import final_summary_keys
from groktransfer.model.checkpoint import save_checkpoint
from groktransfer.model.registry import build_model, model_class
from groktransfer.runs.rundir import (
    FINAL_MEASURES,
    TABLE_FILES,
    FailureKind,
    RunDir,
    RunKind,
    Status,
    StatusRecord,
    library_versions,
    utc_now,
)
from groktransfer.sinks import RunMeta, make_sinks
from groktransfer.tasks.modular import Task
from groktransfer.tasks.registry import make_task, typed_task
from groktransfer.training.device import configure_determinism, training_device
from groktransfer.training.profiling import ProfilerCallback
from groktransfer.training.trainer import Trainer, TrainerCallback, TrainingFailure, TrainOutcome
from groktransfer.transfer.components import carry_optimizer_state
from groktransfer.transfer.source_runs import SourceSpec
from groktransfer.utils.errors import JobError

log = logging.getLogger(__name__)


@dataclass
class TrainingPlan:
    """Everything ``train_in_run_dir`` needs: what to train, how, and where it logs."""

    task: Task
    model: torch.nn.Module
    optimizer: OptimizerConfig
    train: TrainConfig
    measures: MeasuresConfig
    meta: RunMeta
    config: dict[str, Any]  # the plain config handed to the sinks
    logger: LoggerConfig | None = None  # None: the run directory's files only
    resume_state: dict[str, Any] | None = None
    optimizer_state: dict[str, Any] | None = None  # carried from the source (reset_optimizer=false)
    copied: list[str] = field(default_factory=list)
    save_optimizer_states: bool = False
    callbacks: Sequence[TrainerCallback] = ()  # extra trainer callbacks (the profiler; tests' fault injection)
    gradfilter: GradFilterConfig | None = None  # None: no gradient filter


def train_in_run_dir(run_dir: RunDir, plan: TrainingPlan) -> StatusRecord:
    """Train ``plan.model`` (or continue ``plan.resume_state``), writing every artefact of the run.

    Returns the final status record: ``completed``, or ``failed`` for a failure that
    is a property of the run (non-finite loss, timeout). Anything else is recorded
    (``failed`` with the exception, ``stopped`` on Ctrl-C or SLURM pre-emption) and re-raised.
    """
    training = RunDirTraining(run_dir, plan)
    try:
        outcome = training.open().fit()  # a device that fails to start is recorded too, not left "running"
    except BaseException as exc:
        record = training.fail(exc)
        if not isinstance(exc, TrainingFailure):
            raise
        return record
    return training.finish(outcome)


class RunDirTraining:
    """One run directory being trained, in the three steps ``train_in_run_dir`` takes.

    ``open`` starts the sinks, attaches the run-directory writer, builds the trainer and
    restores the resume state (or the carried AdamW moments); ``finish`` writes the
    final checkpoint, summary and status; ``fail`` records how the loop ended otherwise.
    A separate job runs them around ``trainer.fit()``. A seed ensemble opens one per
    member, trains the members' trainers together and finishes each member when it
    stops -- so a member's directory is written by exactly this code.
    """

    def __init__(self, run_dir: RunDir, plan: TrainingPlan) -> None:
        self.run_dir = run_dir
        self.plan = plan
        self.trainer: Trainer | None = None
        self._exits = contextlib.ExitStack()

    def open(self) -> Trainer:
        plan, run_dir, resume = self.plan, self.run_dir, self.plan.resume_state
        meta = dataclasses.replace(
            plan.meta, resume=resume is not None, resume_epoch=int(resume["epoch"]) if resume is not None else None
        )
        self.clock = WallClock(float(resume["wall_time_s"]) if resume else 0.0)
        device = training_device(plan.train.device)
        configure_determinism(device, plan.train.deterministic)
        plan.model.to(device)  # before the trainer builds its optimizer: AdamW must own the device's tensors
        self.sinks = self._exits.enter_context(make_sinks(plan.logger))
        self.sinks.start(run_dir.path, plan.config, meta)
        self.writer = RunDirCallbacks(
            run_dir,
            plan.task,
            self.sinks,
            measures_enabled=plan.measures.enabled,
            key_freq_threshold=plan.measures.key_freq_threshold,
            keep_checkpoints=plan.train.keep_checkpoints,
            save_optimizer_states=plan.save_optimizer_states,
            clock=self.clock,
        )
        callbacks: list[TrainerCallback] = [self.writer, *plan.callbacks]
        if plan.train.profile_epochs > 0:
            callbacks.append(ProfilerCallback(run_dir.profile_dir, plan.train.profile_epochs))
        trainer = Trainer(
            plan.model, plan.task, plan.optimizer, plan.train, callbacks=callbacks, gradfilter_cfg=plan.gradfilter
        )
        if resume is not None:
            trainer.load_state_dict(resume)
            self.writer.last_measures = dict(resume.get("last_measures", {}))
            self.writer.on_resume(trainer)
            log.info("resumed at epoch %d", trainer.epoch)
        elif plan.optimizer_state and plan.copied:
            n = carry_optimizer_state(trainer.optimizer, plan.model, plan.optimizer_state, plan.copied)
            log.info("carried Adam moments of %d source parameters over", n)
        self.trainer = trainer
        return trainer

    def fail(self, exc: BaseException) -> StatusRecord:
        """Record a loop that did not finish: ``failed`` (TrainingFailure: deterministic; any other
        exception: a crash, retried by a rerun) or ``stopped`` (Ctrl-C, pre-emption)."""
        run_dir = self.run_dir
        if isinstance(exc, TrainingFailure):
            self.sinks.finish(Status.FAILED)
            self._exits.close()
            return run_dir.update_status(
                status=Status.FAILED, reason=exc.reason, failed_epoch=exc.epoch, failure_kind=FailureKind.DETERMINISTIC
            )
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            # Ctrl-C, or submitit's exit after a SLURM pre-emption (the job is already requeued)
            previous = run_dir.read_status()
            epoch = previous.epoch if previous is not None and previous.epoch is not None else 0
            record = run_dir.update_status(
                status=Status.STOPPED,
                reason=f"interrupted ({type(exc).__name__}); resumes from its last checkpoint, "
                f"epoch {epoch}, when requeued or rerun",
            )
        else:
            record = record_crash(run_dir, exc)
        try:
            self._exits.__exit__(type(exc), exc, exc.__traceback__)  # the sinks see the exception
        except OSError as closing:  # a full disk: the sinks' last writes fail too; the crash is what counts
            log.error("could not finish the run's files after the failure: %s", closing)
        return record

    def finish(self, outcome: TrainOutcome) -> StatusRecord:
        """The final checkpoint, summary and ``completed`` status of a loop that ended normally."""
        plan, run_dir, trainer, writer = self.plan, self.run_dir, self.trainer, self.writer
        assert trainer is not None
        final = outcome.last_eval
        with self._exits:
            if final.epoch % plan.train.checkpoint_every != 0:  # the loop's last eval was not a checkpoint
                writer.on_checkpoint(trainer, final)
            save_checkpoint(run_dir.final_checkpoint_path, plan.model, final.epoch, final.as_dict())
            keep = (*FINAL_MEASURES, *final_summary_keys(writer.last_measures))  # digit tasks: their own measures
            measures = {k: writer.last_measures[k] for k in keep if k in writer.last_measures}
            summary = {
                "epoch": final.epoch,
                "stop_reason": outcome.stop_reason,
                "thresholds": trainer.thresholds.as_record(),
                "final": {**final.as_dict(), **measures},
                "wall_time_s": round(self.clock.seconds, 2),
                "train_seconds": round(outcome.train_seconds, 2),
                "seconds_per_epoch": round(outcome.train_seconds / max(outcome.epochs_trained, 1), 5),
            }
            self.sinks.log_checkpoint(run_dir.final_checkpoint_path, final.epoch, final=True)
            self.sinks.log_summary(summary)
        writer.record_final(
            run_dir.final_checkpoint_path, [t for t in map(run_dir.path.joinpath, TABLE_FILES) if t.is_file()]
        )
        record = run_dir.update_status(status=Status.COMPLETED, reason=None, finished_at=utc_now(), **summary)
        run_dir.resume_path.unlink(missing_ok=True)  # finished: nothing left to resume
        return record


def record_crash(run_dir: RunDir, exc: BaseException) -> StatusRecord:
    """Record an exception as a ``crash`` failure (a rerun retries it), at the last checkpointed epoch.

    On a full disk the record itself may not be writable: then it says so in the log and
    returns the record as it would have been, and the run stays ``running`` on disk --
    which a rerun resumes all the same.
    """
    previous = run_dir.read_status()
    failed_epoch = previous.epoch if previous is not None and previous.epoch is not None else 0
    fields = dict(
        status=Status.FAILED,
        reason=f"{type(exc).__name__}: {exc}",
        failed_epoch=failed_epoch,
        failure_kind=FailureKind.CRASH,
    )
    try:
        return run_dir.update_status(**fields)
    except OSError as writing:
        log.error("could not record the failure in %s: %s", run_dir.status_path, writing)
        return dataclasses.replace(previous or StatusRecord(), **fields)


# ---------------------------------------------------------------------------
# source runs
# ---------------------------------------------------------------------------
def train_source_run(run_dir: RunDir, spec: SourceSpec, job: TrainJobConfig) -> None:
    """Train a source run into the cache (local files only, every checkpoint and optimizer state kept)."""
    task = make_task(typed_task(spec.task_config()), spec.task["data_seed"])
    model_cfg = resolved_model_config(to_typed(ModelConfig, {**spec.model, "model_seed": spec.model_seed}), task)
    train_cfg = dataclasses.replace(job.train, **spec.train, keep_checkpoints=True, profile_epochs=0)
    resume_state = load_resume_state(run_dir) if run_dir.resume_path.exists() else None
    run_dir.update_status(
        status=Status.RUNNING,
        reason=None,
        kind=RunKind.SOURCE,
        task=task.name,
        p=getattr(task, "p", None),
        condition=RunKind.SOURCE.value,
        seed=spec.model_seed,
        max_epochs=train_cfg.max_epochs,
        started_at=utc_now(),
        versions=library_versions(),
        spec=spec.as_dict(),
    )
    plan = TrainingPlan(
        task=task,
        model=build_model(model_cfg, spec.model_seed),
        optimizer=to_typed(OptimizerConfig, spec.optimizer),
        gradfilter=to_typed(GradFilterConfig, spec.gradfilter),
        train=train_cfg,
        measures=MeasuresConfig(enabled=True, key_freq_threshold=job.measures.key_freq_threshold),
        meta=RunMeta(
            run_id=f"source-{spec.content_hash}",
            experiment=RunKind.SOURCE.value,
            task=task.name,
            condition=RunKind.SOURCE.value,
            seed=spec.model_seed,
        ),
        config=spec.as_dict(),
        resume_state=resume_state,
        save_optimizer_states=True,
    )
    record = train_in_run_dir(run_dir, plan)
    if record.status == Status.FAILED:
        raise JobError(f"the source run {run_dir.path} failed: {record.reason} at epoch {record.failed_epoch}")


def resolved_model_config(model_cfg: ModelConfig, task: Task) -> ModelConfig:
    """``model_cfg`` with what the task implies filled in (the model protocol's ``resolve_config``:
    the transformer's vocab sizes and, for ``n_ctx: null``, the sequence length)."""
    return model_class(model_cfg).resolve_config(model_cfg, task.d_vocab, task.d_vocab_out, task.seq_len)

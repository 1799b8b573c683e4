"""One job end to end: validate, decide (fresh / resume / reuse), build the start, train.

``run_job`` is what ``scripts/train.py`` calls for every Hydra job (single run or one
job of a multirun). The order matters: the config is checked before anything is
written; the status record says ``running`` before the first epoch and ``completed`` /
``failed`` / ``stopped`` (with the reason and epoch) at the end, so a reader never
mistakes a half-finished directory for a result. The pieces live in their own
modules: the starting point (``starting_point``), training inside a run directory
for target and source runs alike (``training``), what gets written at each checkpoint
(``callbacks``), and the file formats (``rundir``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from groktransfer.config.conditions import needs_source
from groktransfer.config.schema import CpuGemm, TrainJobConfig, to_plain
from groktransfer.config.validate import ResolvedSeeds, resolve_seeds, validate_job_config
from groktransfer.jobs.train_run_dir import TrainingPlan, resolved_model_config, train_in_run_dir, train_source_run
from groktransfer.model.gemm import set_cpu_gemm
from groktransfer.model.registry import MODELS
from groktransfer.runs.identity import run_identity  # noqa: F401  (callers import it from here too)
from groktransfer.runs.index import Decision, RunIndex, transplant
from groktransfer.runs.integrity import ResumeCheck, check_completed, check_resumable, damage_line, status_damage
from groktransfer.runs.rundir import (
    RUN_DIRS,
    RUN_FILES,
    FailureKind,
    RunDir,
    Status,
    StatusRecord,
    library_versions,
    utc_now,
)
from groktransfer.sinks import RunMeta
from groktransfer.tasks.modular import Task
from groktransfer.tasks.registry import make_task
from groktransfer.training.allocator import keep_freed_memory
from groktransfer.training.device import resolve_device
from groktransfer.training.memory import check_memory
from groktransfer.training.optimizers import check_registered
from groktransfer.training.trainer import TrainerCallback
from groktransfer.transfer.source_runs import SourceCache, SourceSpec, source_spec_from_config
from groktransfer.transfer.starting_point import StartingPoint, build_starting_point, model_for_resume
from groktransfer.utils.atomic import write_json, write_text
from groktransfer.utils.errors import JobError, UserError

log = logging.getLogger(__name__)

__all__ = ["JobError", "JobPaths", "JobResult", "Launch", "PlannedJob", "plan_job", "run_job"]


@dataclass(frozen=True)
class Launch:
    """Hydra's runtime facts for one job, passed in by ``scripts/train.py``.

    ``sweep_dir`` is set for a job of a multirun (it names the W&B group).
    """

    run_dir: Path
    cwd: Path
    sweep_dir: Path | None = None
    # the dotted config keys set on the command line (Hydra's task overrides), for validation
    given: frozenset[str] = frozenset()
    # called with the run directory once the job goes ahead, before it writes there (Hydra's
    # provenance files and the job's log: ``scripts/train.py``); a refused job writes nothing
    claim: Callable[[Path], None] | None = None


@dataclass(frozen=True)
class JobPaths:
    """Absolute locations shared by the jobs of a sweep (resolved against the launch directory)."""

    root: Path
    source_cache: Path
    run_index: Path

    @classmethod
    def from_config(cls, job: TrainJobConfig, cwd: Path) -> JobPaths:
        def absolute(value: str) -> Path:
            path = Path(value).expanduser()
            return path if path.is_absolute() else (cwd / path).resolve()

        return cls(absolute(job.paths.root), absolute(job.paths.source_cache), absolute(job.paths.run_index))


@dataclass
class JobResult:
    run_dir: Path
    status: Status
    record: StatusRecord
    skipped: str | None = None

    def one_line(self) -> str:
        r = self.record
        if self.skipped:
            return f"[{r.task} {r.condition} s{r.seed}] skipped: {self.skipped}"
        if self.status != Status.COMPLETED:
            return f"[{r.condition} s{r.seed}] {self.status}: {r.reason} -> {self.run_dir}"
        thr = " ".join(f"{k}@{v['epoch'] if v['epoch'] is not None else '—'}" for k, v in r.thresholds.items())
        f = r.final
        return (
            f"[{r.task} {r.condition} s{r.seed}] epochs to test acc {thr} | "
            f"final train {f['train_acc']:.4f} test {f['test_acc']:.4f} at epoch {r.epoch} -> {self.run_dir}"
        )


# ---------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------
def configure_torch(threads: int, flush_denormal: bool, cpu_gemm: CpuGemm = CpuGemm.auto) -> None:
    """Process-wide numerics and threading for a job.

    Threads are pinned because two 1-thread jobs beat one 2-thread job on 2 cores;
    denormals are flushed because long weight-decayed runs otherwise crawl on CPUs;
    the fast path's CPU products go to ``cpu_gemm`` (groktransfer.model.gemm); freed
    activations stay in the process (groktransfer.training.allocator).
    """
    torch.set_flush_denormal(flush_denormal)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process (sequential multirun)
        pass
    set_cpu_gemm(cpu_gemm)
    keep_freed_memory()


def run_job(job: TrainJobConfig, launch: Launch, callbacks: Sequence[TrainerCallback] = ()) -> JobResult:
    """Run one configured job in ``launch.run_dir``: fresh, resumed, or reused from an earlier launch.

    ``callbacks`` are extra trainer callbacks (the tests' fault injection).
    """
    with contextlib.ExitStack() as held:
        planned = plan_job(job, launch, held, callbacks)
        if isinstance(planned, JobResult):
            return planned
        return planned.result(train_in_run_dir(planned.run_dir, planned.plan))


@dataclass(frozen=True)
class SourceToTrain:
    """A source run that planning a sweep's jobs would train, and the first job that asks for it."""

    cache: SourceCache
    spec: SourceSpec
    job: TrainJobConfig

    def train(self) -> None:
        """Train it into the cache (as :func:`plan_job` would: the job's threads, once across processes)."""
        configure_torch(self.job.train.threads, self.job.train.flush_denormal, self.job.train.cpu_gemm)
        self.cache.get_or_train(self.spec, lambda run_dir, spec: train_source_run(run_dir, spec, self.job))


def sources_to_train(jobs: Sequence[TrainJobConfig], cwd: Path) -> list[SourceToTrain]:
    """The uncached source runs these jobs need, each once, in sweep order.

    Mirrors :func:`plan_job`'s decisions without taking its locks: jobs that start at
    random or from a file need none, and a job the run index already knows (it will be
    reused or resumed) starts from no source. A guess that goes stale (another process
    trains the source meanwhile) costs nothing: the cache's lock trains each run once.
    """
    found: dict[tuple[Path, str], SourceToTrain] = {}
    for job in jobs:
        if not needs_source(job.transfer.name) or job.transfer.source.path is not None:
            continue
        try:
            validate_job_config(job)
            seeds = resolve_seeds(job)
        except UserError:  # planning refuses this job, with the reason
            continue
        paths = JobPaths.from_config(job, cwd)
        if not job.force and RunIndex(paths.run_index).lookup(run_identity(job)) is not None:
            continue
        spec = source_spec_from_config(job, seeds.source_seed)
        cache = SourceCache(paths.source_cache)
        if not cache.run_dir(spec).is_completed:
            found.setdefault((paths.source_cache, spec.label), SourceToTrain(cache, spec, job))
    return list(found.values())


@dataclass
class PlannedJob:
    """A job that will train: its run directory (status ``running``) and its training plan.

    ``run_job`` trains it at once; the ensemble launcher trains several together.
    """

    job: TrainJobConfig
    run_dir: RunDir
    plan: TrainingPlan

    def result(self, record: StatusRecord) -> JobResult:
        if record.status == Status.FAILED:
            # a property of the run (NaN, time budget), not an accident: rerunning is a choice (force=true)
            self.run_dir.resume_path.unlink(missing_ok=True)
        return JobResult(self.run_dir.path, Status(record.status), record)


def given_keys(overrides: Iterable[str]) -> frozenset[str]:
    """The dotted keys of Hydra command-line overrides (``task.n_train=500`` -> ``task.n_train``)."""
    return frozenset(o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o)


def plan_job(
    job: TrainJobConfig, launch: Launch, held: contextlib.ExitStack, callbacks: Sequence[TrainerCallback] = ()
) -> JobResult | PlannedJob:
    """Everything before the first epoch: checks, the run-index decision, the starting point.

    Returns the result of a job that trains nothing (reused or skipped), else the planned
    job. The run identity's lock is entered into ``held``: keep it open until the job
    has trained, so two identical jobs never train at once.

    Nothing is written until the job is known to go ahead: bad input -- a config, a run
    directory holding another run, a source checkpoint that does not fit or qualify --
    raises a ``UserError`` with the run directory untouched. Only then is the directory
    taken (``launch.claim``), so a crash while building the start is recorded as ``failed``.
    """
    validate_job_config(job, launch.given)
    MODELS.get(job.model.architecture)  # an unknown name: one line listing the registered ones, exit 2
    check_registered(job)  # optimizer and gradient filter names (the source's too): the same
    device = resolve_device(job.train.device)  # a device that is not there: one line, exit 2, nothing written
    check_memory(job, device)  # a job (or its source run) that cannot fit: one line, exit 2, nothing written
    seeds = resolve_seeds(job)
    configure_torch(job.train.threads, job.train.flush_denormal, job.train.cpu_gemm)
    paths = JobPaths.from_config(job, launch.cwd)
    run_dir = RunDir(launch.run_dir)
    run_id = run_identity(job)
    index = RunIndex(paths.run_index)
    _writable(paths.run_index, "paths.run_index")
    if needs_source(job.transfer.name) and job.transfer.source.path is None:
        _writable(paths.source_cache, "paths.source_cache")
    held.enter_context(index.lock(run_id))
    decision = index.decide(run_id, run_dir.path, force=job.force)
    occupied = _holds_another_run(run_dir, run_id, index)
    if occupied and not job.force:
        raise JobError(f"{run_dir.path} already holds {occupied}; pass force=true to overwrite it on purpose")
    if decision.action == "reuse":
        assert decision.previous is not None
        damaged = check_completed(RunDir(decision.previous))
        if damaged:
            log.warning("training from the start: %s", damage_line(decision.previous, damaged))
            decision = Decision("fresh")
    if decision.action in ("reuse", "skip_failed"):
        assert decision.previous is not None
        _claim(launch, run_dir)
        transplant(decision.previous, run_dir.path)
        record = run_dir.update_status(reused_from=str(decision.previous))
        log.info("skipped (%s)", decision.reason)
        return JobResult(run_dir.path, Status(record.status), record, skipped=decision.reason)
    resume: ResumeCheck | None = None
    if decision.action == "resume":
        assert decision.previous is not None
        previous = RunDir(decision.previous)
        resume = check_resumable(previous, None if decision.torn_status else previous.read_status())
        if resume.state is None:
            log.warning("training from the start: %s", damage_line(previous.path, resume.damaged))
            resume = None
        else:
            for note in resume.notes:
                log.warning("%s", note)
            log.info("%s", decision.reason + (f": from epoch {resume.epoch}" if decision.torn_status else ""))
    elif decision.reason and decision.action == "fresh" and decision.previous is not None:
        log.info("%s", decision.reason)
    return _plan_target(job, launch, run_dir, paths, seeds, run_id, index, decision.previous, resume, callbacks)


def _writable(path: Path, key: str) -> None:
    """A directory the job shares with others (run index, source cache): created if need be, or one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(f"{key}={path}: cannot create it ({exc.strerror or exc})") from None


def _holds_another_run(run_dir: RunDir, run_id: str, index: RunIndex) -> str | None:
    """What in ``run_dir`` belongs to a run other than ``run_id`` (None: nothing, or this run's own files)."""
    if status_damage(run_dir) is not None:
        known = index.lookup(run_id)
        mine = known is not None and known.resolve() == run_dir.path.resolve()
        return None if mine else f"a run whose {run_dir.status_path.name} is damaged"
    existing = run_dir.read_status()
    if existing is not None and existing.run_id != run_id:
        return "a different run"
    return None


def _claim(launch: Launch, run_dir: RunDir) -> None:
    """Take the run directory: from here on the job writes into it (Hydra's files and log first)."""
    run_dir.path.mkdir(parents=True, exist_ok=True)
    if launch.claim is not None:
        launch.claim(run_dir.path)


def _plan_target(
    job: TrainJobConfig,
    launch: Launch,
    run_dir: RunDir,
    paths: JobPaths,
    seeds: ResolvedSeeds,
    run_id: str,
    index: RunIndex,
    previous: Path | None,
    resume: ResumeCheck | None,
    callbacks: Sequence[TrainerCallback],
) -> PlannedJob:
    task = make_task(job.task, seeds.data_seed)
    model_cfg = resolved_model_config(job.model, task)
    identity = dict(
        run_id=run_id,
        experiment=job.experiment_name,
        task=task.name,
        p=getattr(task, "p", None),
        condition=str(job.transfer.name),
        seed=job.seed,
        data_seed=seeds.data_seed,
        model_seed=seeds.model_seed,
        source_seed=seeds.source_seed if needs_source(job.transfer.name) else None,
        max_epochs=job.train.max_epochs,
        threads=job.train.threads,
        versions=library_versions(),
    )
    config = to_plain(job)
    if resume is None:
        try:
            start = build_starting_point(
                job, model_cfg, seeds, paths.source_cache, lambda rd, spec: train_source_run(rd, spec, job)
            )
        except UserError:
            raise  # wrong from the start: nothing written, exit 2
        except Exception as exc:
            _take(launch, run_dir, index, run_id, config, fresh=True)
            run_dir.update_status(
                status=Status.FAILED,
                reason=f"could not build the starting model: {type(exc).__name__}: {exc}",
                failure_kind=FailureKind.CRASH,
                failed_epoch=0,
                started_at=utc_now(),
                epoch=0,
                **identity,
            )
            raise
        _take(launch, run_dir, index, run_id, config, fresh=True)
        run_dir.update_status(status=Status.RUNNING, reason=None, started_at=utc_now(), epoch=0, **identity)
        if start.record is not None:
            write_json(run_dir.source_path, start.record)
            run_dir.update_status(source=start.record.get("chosen") or {"path": start.record.get("source_path")})
        resume_state = None
    else:
        assert previous is not None and resume.state is not None
        _take(launch, run_dir, index, run_id, config, fresh=False)
        if previous.resolve() == run_dir.path.resolve():
            for name in resume.leave_out:  # resumed in place: what it writes again goes first
                (run_dir.path / name).unlink(missing_ok=True)
        else:
            transplant(previous, run_dir.path, leave_out=resume.leave_out)
        run_dir.update_status(
            status=Status.RUNNING, reason=None, failure_kind=None, resumed_at=utc_now(), epoch=resume.epoch, **identity
        )
        resume_state = resume.state
        start = model_for_resume(job, model_cfg, seeds, resume_state["model"])
    plan = _target_plan(job, launch, task, start, run_id, config, resume_state, callbacks)
    return PlannedJob(job, run_dir, plan)


def _take(launch: Launch, run_dir: RunDir, index: RunIndex, run_id: str, config: dict[str, Any], fresh: bool) -> None:
    """Claim the run directory and record it: a fresh run first clears what ``force=true`` overwrites."""
    _claim(launch, run_dir)
    if fresh:
        _clear_run_files(run_dir)
    write_text(run_dir.config_path, OmegaConf.to_yaml(config))
    index.record(run_id, run_dir.path)


def _target_plan(
    job: TrainJobConfig,
    launch: Launch,
    task: Task,
    start: StartingPoint,
    run_id: str,
    config: dict[str, Any],
    resume_state: dict[str, Any] | None,
    callbacks: Sequence[TrainerCallback],
) -> TrainingPlan:
    group = f"{job.experiment_name}/{launch.sweep_dir.name}" if launch.sweep_dir is not None else job.experiment_name
    meta = RunMeta(
        run_id=run_id,
        experiment=job.experiment_name,
        task=task.name,
        condition=str(job.transfer.name),
        seed=job.seed,
        group=group,
    )
    return TrainingPlan(
        task=task,
        model=start.model,
        optimizer=job.optimizer,
        gradfilter=job.gradfilter,
        train=job.train,
        measures=job.measures,
        meta=meta,
        config=config,
        logger=job.logger,
        resume_state=resume_state,
        optimizer_state=start.optimizer_state,
        copied=start.copied,
        callbacks=callbacks,
    )


def _clear_run_files(run_dir: RunDir) -> None:
    """A fresh start: remove a previous run's artefacts (force=true; not Hydra's own files)."""
    for name in RUN_FILES:
        (run_dir.path / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        shutil.rmtree(run_dir.path / name, ignore_errors=True)

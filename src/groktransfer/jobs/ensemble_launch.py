"""The engine behind ``hydra/launcher=ensemble``: group a sweep's jobs and train each group as one ensemble.

1. Every job goes through Hydra's own ``run_job`` -- its directory, ``.hydra/`` files
   and log file are made exactly as under any launcher -- with a task function that
   *plans* the job (:func:`groktransfer.jobs.run_job.plan_job`): the config checks, the run-index
   decision (reuse / resume / fresh) and the starting point (which trains the shared
   source run when it is not cached yet). Jobs that train nothing print their one line
   at once; a job with bad input logs its one-line error and the sweep goes on.
   With worker processes (below), the source runs missing from the cache are trained
   first, in parallel (:func:`train_sources`), so planning finds them cached.
2. Planned jobs are grouped by what an ensemble shares (:func:`batch_key`: everything
   except seed, data_seed, model_seed, the transfer condition, learning rate and weight
   decay, plus the epoch they start from), in even chunks of at most ``max_members``.
3. Each group trains as one :class:`~groktransfer.training.ensemble.EnsembleTrainer`,
   in this process or, with more than one worker, in worker processes (on a CPU an
   ensemble member runs at a separate job's speed on one thread, and two 1-thread
   processes beat one 2-thread process, so a CPU sweep spreads its groups over one
   worker per core, as ``hydra/launcher=joblib`` spreads jobs). Workers are spawned, never
   forked: a process that has touched CUDA (even ``torch.cuda.is_available()``) cannot fork
   a child that uses it, and once this process has run a backward pass with an accelerator
   present (a source run trained while planning), autograd refuses to run in a forked
   child even on the CPU. On CUDA each worker sees only its own GPU, ``jobs_per_gpu``
   workers per GPU (:func:`worker_plan`).
   If the members' trainers turn out incompatible (a frozen component, carried AdamW
   state, a profiler, a model without the fast path...), they train one at a time
   instead, after a one-line notice -- never a wrong result. Either way every member's
   run directory is opened and finished by :class:`~groktransfer.jobs.train_run_dir.RunDirTraining`,
   the code a separate job uses, and a member is finished as soon as it stops.

While a group trains, each member's ``train.log`` (where Hydra put its planning
messages) receives what a separate job would log there: the lines of its own run
directory's opening and finishing, and every line of the shared training loop.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import ctypes
import functools
import logging
import math
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, run_job
from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict, read_write

from groktransfer.config.schema import TrainJobConfig, to_typed
from groktransfer.jobs.hydra_files import hydra_claim
from groktransfer.jobs.run_job import (
    JobResult,
    Launch,
    PlannedJob,
    SourceToTrain,
    configure_torch,
    given_keys,
    plan_job,
    run_identity,
    sources_to_train,
)
from groktransfer.jobs.train_run_dir import RunDirTraining
from groktransfer.model.gemm import set_cpu_gemm
from groktransfer.runs.identity import Role, ensemble_key, fields_with
from groktransfer.runs.job_log import discard_job_log
from groktransfer.runs.rundir import LOG_FILE, STATUS_FILE, record_lost_job
from groktransfer.training.device import resolve_device, visible_gpus
from groktransfer.training.ensemble import EnsembleTrainer, MemberResult, incompatibility
from groktransfer.training.trainer import TrainingFailure, TrainOutcome
from groktransfer.utils.cores import usable_cores
from groktransfer.utils.errors import UserError

log = logging.getLogger("groktransfer")

#: Fields that may differ between the members of one ensemble (declared in groktransfer.runs.identity).
BATCHABLE = fields_with(Role.BATCHABLE)


def batch_key(job: TrainJobConfig, start_epoch: int) -> str:
    """Jobs with equal keys can share an ensemble (:func:`groktransfer.runs.identity.ensemble_key`)."""
    return ensemble_key(job, start_epoch)


def start_epoch(planned: PlannedJob) -> int:
    resume = planned.plan.resume_state
    return int(resume["epoch"]) if resume is not None else 0


def launch_sweep(
    hydra_context: HydraContext,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    max_members: int,
    threads: int,
    n_jobs: int = 1,
    jobs_per_gpu: int = 1,
) -> list[JobReturn]:
    """Plan every job through Hydra's ``run_job``, then train the planned ones in ensembles.

    With several workers, the source runs the jobs need are trained first, in parallel
    (planning would train them one after another in this process). Twins of an earlier
    job are planned in a later round (:func:`first_of_each_identity`).
    """
    sweep_configs = []
    for n, overrides in enumerate(job_overrides):
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = initial_job_idx + n
            sweep_config.hydra.job.num = initial_job_idx + n
        sweep_configs.append(sweep_config)
    jobs = [_typed_job(c) for c in sweep_configs]
    valid = [job for job in jobs if job is not None]
    with contextlib.suppress(UserError):  # a device that is not there: planning refuses those jobs, one line each
        workers = worker_count(n_jobs, valid[0].train.device, jobs_per_gpu) if valid else 1
        if workers > 1:
            plan = worker_plan(valid[0].train.device, workers)
            train_sources(sources_to_train(valid, Path(config.hydra.runtime.cwd)), workers, plan)
    returns: dict[int, JobReturn] = {}
    pending = list(range(len(sweep_configs)))
    while pending:
        now, pending = first_of_each_identity(pending, jobs)
        planned: list[PlannedJob] = []
        with contextlib.ExitStack() as held:  # each planned job's run-index lock, until it has trained
            for i in now:
                box: dict[str, PlannedJob] = {}
                returns[i] = run_job(
                    hydra_context=hydra_context,
                    task_function=functools.partial(_plan_in_hydra_job, held=held, box=box),
                    config=sweep_configs[i],
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
                if "planned" in box:
                    planned.append(box["planned"])
            configure_log(config.hydra.hydra_logging, config.hydra.verbose)
            train_planned(planned, max_members, n_jobs=n_jobs, threads=threads, jobs_per_gpu=jobs_per_gpu)
    return [returns[i] for i in sorted(returns)]


def first_of_each_identity(
    indices: Sequence[int], jobs: Sequence[TrainJobConfig | None]
) -> tuple[list[int], list[int]]:
    """Split jobs into those planned now and twins of an earlier one (the same run identity).

    A planned job holds its identity's run-index lock until it has trained, so a twin in
    the same sweep (e.g. the random start along a task matrix's source axis) waits for
    the next round, where it finds the run completed and reuses it, as it would under
    any other launcher.
    """
    seen, now, later = set(), [], []
    for i in indices:
        identity = _identity(jobs[i])
        if identity is not None and identity in seen:
            later.append(i)
        else:
            seen.add(identity)
            now.append(i)
    return now, later


def _identity(job: TrainJobConfig | None) -> str | None:
    if job is None:
        return None
    try:
        return run_identity(job)
    except UserError:  # planning refuses it, with the reason
        return None


def _typed_job(sweep_config: DictConfig) -> TrainJobConfig | None:
    """A job's typed config as its task function will see it (None if it does not validate: planning says why)."""
    cfg = copy.deepcopy(sweep_config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    try:
        return to_typed(TrainJobConfig, cfg)
    except Exception:
        return None


def _plan_in_hydra_job(cfg: DictConfig, held: contextlib.ExitStack, box: dict[str, PlannedJob]) -> JobResult | None:
    """Hydra's task function for one job: plan it (as ``scripts/train.py`` would run it)."""
    hydra_cfg = HydraConfig.get()
    launch = Launch(
        run_dir=Path(hydra_cfg.runtime.output_dir),
        cwd=Path(hydra_cfg.runtime.cwd),
        sweep_dir=Path(hydra_cfg.sweep.dir),
        given=given_keys(hydra_cfg.overrides.task),
        claim=hydra_claim(cfg),
    )
    try:
        planned = plan_job(to_typed(TrainJobConfig, cfg), launch, held)
    except UserError as exc:
        discard_job_log()  # a refused job writes nothing
        log.error("%s", exc)  # one readable line; the other jobs go on
        return None
    except Exception:
        log.exception("job failed (recorded in %s/%s); the sweep goes on", launch.run_dir, STATUS_FILE)
        return None
    if isinstance(planned, JobResult):
        print(planned.one_line(), flush=True)
        return planned
    box["planned"] = planned
    return None


#: Ensemble size cap when the launcher's ``max_members`` is 0, by device type. On one CPU
#: thread at p=113 a member runs at 0.93-1.04x a separate job's speed for K = 1..16 (each
#: member's products are its own GEMMs), so the CPU cap only bounds memory (~120 MiB a
#: member); a GPU keeps gaining with K (not measured here: no GPU was available).
AUTO_MAX_MEMBERS = {"cpu": 4, "cuda": 64, "mps": 16}


def member_cap(max_members: int, job: TrainJobConfig) -> int:
    """``max_members``, or for 0 the cap of the device the job trains on."""
    if max_members > 0:
        return max_members
    return AUTO_MAX_MEMBERS.get(resolve_device(job.train.device).type, 4)


def worker_count(n_jobs: int, device: str, jobs_per_gpu: int = 1) -> int:
    """``n_jobs``, or for 0: one worker per core on a CPU; ``jobs_per_gpu`` per GPU on CUDA (per
    visible GPU when the jobs let the launcher choose, ``auto`` or ``cuda``; on the one GPU
    ``cuda:N`` names otherwise); this process alone on MPS."""
    if n_jobs > 0:
        return n_jobs
    resolved = resolve_device(device)
    if resolved.type == "cpu":
        return usable_cores()
    if resolved.type == "cuda":
        return jobs_per_gpu * (len(visible_gpus()) if _launcher_chooses_gpu(device) else 1)
    return 1


def _launcher_chooses_gpu(device: str) -> bool:
    return str(device).strip().lower() in ("auto", "cuda")


@dataclass(frozen=True)
class WorkerPlan:
    """Which GPU each worker process sees: per worker, its ``CUDA_VISIBLE_DEVICES`` (None:
    what this process sees -- the CPU, MPS, or the one GPU ``cuda:N`` names)."""

    gpus: tuple[str | None, ...]

    def describe(self) -> str:
        named = [g for g in self.gpus if g is not None]
        if not named:
            return ""
        per_gpu = max(named.count(g) for g in set(named))
        return f", on GPU {', '.join(dict.fromkeys(named))} ({per_gpu} per GPU)"


def worker_plan(device: str, workers: int) -> WorkerPlan:
    """On CUDA, when the jobs let the launcher choose (``auto``/``cuda``), the visible GPUs
    dealt out to the workers round-robin (they spread before they share); else no mask."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and _launcher_chooses_gpu(device):
        gpus = visible_gpus()
        return WorkerPlan(tuple(gpus[i % len(gpus)] for i in range(workers)))
    return WorkerPlan((None,) * workers)


def chunk_groups(planned: Sequence[PlannedJob], max_members: int, workers: int = 1) -> list[list[PlannedJob]]:
    """The ensembles to train: compatible jobs (equal :func:`batch_key`), in sweep order, split evenly.

    A group of N jobs becomes ceil(N / cap) ensembles, rounded up to a multiple of
    ``workers`` (at most N) so parallel workers get equal shares; sizes differ by at most
    one. On a CPU the split costs nothing (a member's speed does not depend on K).
    """
    groups: dict[str, list[PlannedJob]] = {}
    for job in planned:
        groups.setdefault(batch_key(job.job, start_epoch(job)), []).append(job)
    chunks: list[list[PlannedJob]] = []
    for members in groups.values():
        n = len(members)
        count = math.ceil(n / member_cap(max_members, members[0].job))
        if workers > 1:
            count = min(n, math.ceil(count / workers) * workers)
        size, extra = divmod(n, count)  # the first `extra` ensembles take one more member
        start = 0
        for k in range(count):
            stop = start + size + (k < extra)
            chunks.append(list(members[start:stop]))
            start = stop
    return chunks


def train_planned(
    planned: Sequence[PlannedJob], max_members: int, n_jobs: int = 1, threads: int = 0, jobs_per_gpu: int = 1
) -> list[JobResult]:
    """Train planned jobs in ensembles of compatible jobs (at most ``max_members`` each; 0: by device).

    ``n_jobs`` worker processes (0: by device, see :func:`worker_count`) train the
    ensembles in parallel, each with ``threads`` torch threads (0: the cores shared out).
    """
    device = planned[0].job.train.device if planned else "cpu"
    workers = worker_count(n_jobs, device, jobs_per_gpu)
    chunks = chunk_groups(planned, max_members, workers)
    workers = min(workers, len(chunks))
    if threads <= 0:
        threads = max(1, usable_cores() // max(workers, 1))
    if workers <= 1:
        torch.set_num_threads(threads)
        return [result for chunk in chunks for result in train_group(chunk)]
    return _train_in_workers(chunks, workers, threads, worker_plan(device, workers))


def train_sources(sources: Sequence[SourceToTrain], workers: int, plan: WorkerPlan | None = None) -> None:
    """Train source runs in parallel worker processes (one each, with its job's threads).

    A source that fails here is left to planning, which trains it again for the jobs
    that need it and records the failure in their status.
    """
    if len(sources) < 2:  # one source gains nothing from a worker: planning trains it
        return
    workers = min(workers, len(sources))
    names = ", ".join(s.spec.label for s in sources)
    print(
        f"ensemble launcher: {len(sources)} source runs train first, on {workers} worker processes: {names}", flush=True
    )
    plan = plan if plan is not None else WorkerPlan((None,) * workers)
    _in_workers([functools.partial(_train_source, s) for s in sources], workers, [s.spec.label for s in sources], plan)


def _train_source(source: SourceToTrain) -> list[JobResult]:
    source.train()
    return []


def _train_in_workers(chunks: list[list[PlannedJob]], workers: int, threads: int, plan: WorkerPlan) -> list[JobResult]:
    """Train each ensemble in one of ``workers`` spawned processes (``plan``: their GPUs).

    A worker that dies (killed, out of memory) cannot record its members: the launcher
    records each unfinished one as ``failed`` with the reason (:func:`record_lost_job`),
    keeping its ``resume.pt``, so a rerun of the sweep resumes it. Ctrl-C stops every
    worker (each records the interruption).
    """
    print(
        f"ensemble launcher: {len(chunks)} ensembles on {workers} worker processes, {threads} thread(s) each"
        f"{plan.describe()}",
        flush=True,
    )
    tasks = [functools.partial(_train_chunk, chunk, threads) for chunk in chunks]

    def lost(index: int, exc: BaseException) -> None:
        for member in chunks[index]:
            record_lost_job(member.run_dir.path, f"its ensemble's worker process died ({type(exc).__name__}: {exc})")

    return _in_workers(tasks, workers, [", ".join(m.run_dir.path.name for m in chunk) for chunk in chunks], plan, lost)


def _train_chunk(chunk: list[PlannedJob], threads: int) -> list[JobResult]:
    job = chunk[0].job.train  # what planning set in the launcher; a spawned worker sets it again
    configure_torch(threads, job.flush_denormal, job.cpu_gemm)
    return train_group(chunk)


def _run_pickled(blob: bytes) -> list[JobResult]:
    """A worker's task, pickled by cloudpickle: planned jobs hold models, tasks (whose label
    functions are lambdas) and callbacks. Results come back by plain pickle."""
    try:
        results = cloudpickle.loads(blob)()
    except KeyboardInterrupt:
        results = None
        if not _launcher_gone:
            raise
    # The launcher died: nobody to hand a result to, and idle, this process would wait for work
    # forever. Checked after the task too, because a task that records the interruption itself
    # (its members "stopped") returns normally.
    if _launcher_gone:
        os._exit(130)
    return results


def _in_workers(
    tasks: list[Callable[[], list[JobResult]]],
    workers: int,
    names: list[str],
    plan: WorkerPlan,
    lost: Callable[[int, BaseException], None] | None = None,
) -> list[JobResult]:
    """Run ``tasks`` in ``workers`` spawned processes (``plan``: their GPUs); their results in task order.

    ``lost(i, exc)`` runs here for a task whose worker died or whose result could not come back.
    """
    workers = min(workers, len(tasks))
    context = multiprocessing.get_context("spawn")
    gpus = context.Queue()  # each worker takes one entry as it starts: its GPU (or None)
    for gpu in plan.gpus[:workers]:
        gpus.put(gpu)
    results: list[JobResult] = []
    blobs = [cloudpickle.dumps(task) for task in tasks]
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_worker_setup,
        initargs=(os.getpid(), gpus, logging.getLogger().getEffectiveLevel()),
    )
    try:
        futures = [pool.submit(_run_pickled, blob) for blob in blobs]
        for i, (name, future) in enumerate(zip(names, futures)):
            try:
                results += future.result()
            except Exception as exc:  # the worker process died, or the result could not come back
                if lost is not None:
                    lost(i, exc)
                then = "recorded as failed: rerun the sweep to resume" if lost is not None else "left to planning"
                log.error("a worker failed (%s: %s); %s %s", type(exc).__name__, exc, name, then)
    except BaseException:  # Ctrl-C (or SystemExit) in the launcher: interrupt the workers as Ctrl-C would
        for process in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


_launcher_gone = False  # in a worker: set when its launcher has died
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _worker_setup(launcher_pid: int, gpus: Any, log_level: int) -> None:
    """A worker sees its own GPU, is interrupted once, as by Ctrl-C, and never outlives its launcher.

    ``gpus``: a queue of ``CUDA_VISIBLE_DEVICES`` values, one per worker (None: unchanged),
    set before anything in this process starts CUDA. The first SIGINT raises
    KeyboardInterrupt (the members record ``stopped``); later ones are ignored, so
    recording it is not cut short. On Linux the launcher's death sends a SIGHUP
    (``PR_SET_PDEATHSIG``) that does the same and then ends the worker: the launcher's
    run-index locks, which keep a rerun from training the same jobs, died with it.
    """
    gpu = gpus.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    if not logging.getLogger().handlers:  # a fresh process, without the launcher's console logging
        logging.basicConfig(level=log_level, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGHUP, _launcher_died)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != launcher_pid:  # it died before the line above
        os._exit(130)


def _interrupt_once(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise KeyboardInterrupt


def _launcher_died(signum: int, frame: Any) -> None:
    global _launcher_gone
    _launcher_gone = True
    _interrupt_once(signum, frame)


def train_group(members: Sequence[PlannedJob]) -> list[JobResult]:
    """One ensemble (or, if its members' trainers are incompatible, one job at a time)."""
    results: dict[int, JobResult] = {}
    set_cpu_gemm(members[0].job.train.cpu_gemm)  # one value per group: cpu_gemm is part of batch_key
    with concurrent_wandb_runs(), member_logs(members):
        trainings = [RunDirTraining(m.run_dir, m.plan) for m in members]
        trainers = []
        try:
            for i, training in enumerate(trainings):
                with speaking_for(i):
                    trainers.append(training.open())
        except BaseException as exc:  # e.g. the device cannot start: every member records it
            _crashed(members, trainings, exc)
            return []
        reason = incompatibility(trainers) if len(trainers) > 1 else None
        if len(trainers) == 1 or reason is not None:
            if reason is not None:
                print(f"ensemble launcher: {len(members)} jobs train one at a time ({reason})", flush=True)
            for i, (training, trainer) in enumerate(zip(trainings, trainers)):
                try:
                    with speaking_for(i):
                        outcome: MemberResult = trainer.fit()
                except TrainingFailure as exc:
                    outcome = exc
                except BaseException as exc:
                    _crashed(members[i:], trainings[i:], exc)
                    break
                with speaking_for(i):
                    results[i] = _finish(members[i], training, outcome)
            return [results[i] for i in sorted(results)]

        names = ", ".join(m.run_dir.path.name for m in members)
        print(f"ensemble launcher: {len(members)} jobs train as one ensemble: {names}", flush=True)
        ensemble = EnsembleTrainer(
            trainers, on_done=lambda i, outcome: results.__setitem__(i, _finish_as(i, members, trainings, outcome))
        )
        try:
            ensemble.fit()
        except BaseException as exc:
            left = [i for i in range(len(members)) if i not in results]
            _crashed([members[i] for i in left], [trainings[i] for i in left], exc)
    return [results[i] for i in sorted(results)]


def _finish_as(
    i: int, members: Sequence[PlannedJob], trainings: Sequence[RunDirTraining], outcome: MemberResult
) -> JobResult:
    with speaking_for(i):
        return _finish(members[i], trainings[i], outcome)


#: Which member the current log lines belong to (None: the group as a whole).
_speaker: contextvars.ContextVar[int | None] = contextvars.ContextVar("ensemble_member", default=None)


@contextlib.contextmanager
def speaking_for(member: int) -> Iterator[None]:
    token = _speaker.set(member)
    try:
        yield
    finally:
        _speaker.reset(token)


class _MemberFilter(logging.Filter):
    def __init__(self, member: int) -> None:
        super().__init__()
        self.member = member

    def filter(self, record: logging.LogRecord) -> bool:
        return _speaker.get() in (None, self.member)


@contextlib.contextmanager
def member_logs(members: Sequence[PlannedJob]) -> Iterator[None]:
    """Append each member's lines (and the group's) to its ``train.log``, in Hydra's format."""
    root = logging.getLogger()
    formatter = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    handlers = []
    for i, member in enumerate(members):
        handler = logging.FileHandler(member.run_dir.path / LOG_FILE, mode="a", delay=True)
        handler.setFormatter(formatter)
        handler.addFilter(_MemberFilter(i))
        root.addHandler(handler)
        handlers.append(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


def _finish(member: PlannedJob, training: RunDirTraining, outcome: MemberResult) -> JobResult:
    record = training.finish(outcome) if isinstance(outcome, TrainOutcome) else training.fail(outcome)
    result = member.result(record)
    print(result.one_line(), flush=True)
    return result


def _crashed(members: Sequence[PlannedJob], trainings: Sequence[RunDirTraining], exc: BaseException) -> None:
    """An unexpected exception: every unfinished member records it; Ctrl-C (or SystemExit) stops the sweep, anything else does not."""
    for training in trainings:
        training.fail(exc)
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise exc
    log.error(
        "training failed: %s: %s (recorded in the status of %s); the sweep goes on",
        type(exc).__name__,
        exc,
        ", ".join(m.run_dir.path.name for m in members),
        exc_info=exc,
    )


@contextlib.contextmanager
def concurrent_wandb_runs() -> Iterator[None]:
    """Members' W&B runs are open at once: let wandb create each instead of finishing the previous."""
    from groktransfer.sinks.wandb_sink import WandbSink

    before = WandbSink.reinit
    WandbSink.reinit = "create_new"
    try:
        yield
    finally:
        WandbSink.reinit = before

"""One job end to end: validate, build the starting model, train, record.

``run_job`` is what ``scripts/train.py`` calls for every Hydra job (single run or
one job of a multirun). The order matters: the config is checked before anything
is written; the run directory's status record says ``running`` before the first
epoch and ``completed`` / ``failed`` (with the reason and epoch) at the end, so a
reader never mistakes a half-finished directory for a result.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from groktransfer.atomic import atomic_open, write_json, write_text
from groktransfer.checkpoint import save_checkpoint
from groktransfer.config.schema import ModelConfig, OptimizerConfig, TrainConfig
from groktransfer.config.validate import ResolvedSeeds, resolve_seeds, validate_job_config
from groktransfer.measures import compute_progress_measures
from groktransfer.model import HookedGrokTransformer
from groktransfer.rundir import COMPLETED, FAILED, RUNNING, STOPPED, RunDir, WallClock, library_versions, utc_now
from groktransfer.runindex import RunIndex, transplant
from groktransfer.sinks import RunMeta, SinkGroup, make_sinks
from groktransfer.source import SourceCache, SourceSpec, select_checkpoint, source_spec_from_config
from groktransfer.tasks import Task
from groktransfer.trainer import EvalResult, Trainer, TrainingFailure, TrainOutcome
from groktransfer.transfer import (
    TransferPlan,
    adapt_paper_unembed,
    apply_transfer,
    carry_optimizer_state,
    load_source_weights,
    named_optimizer_state,
)

log = logging.getLogger(__name__)

# Config keys that do not change a job's numbers: excluded from its run identity.
_NON_IDENTITY_KEYS = ("logger", "paths", "force", "debug", "experiment_name")
_NON_IDENTITY_TRAIN_KEYS = ("threads", "progress_bar", "timeout_minutes")


class JobError(RuntimeError):
    """A job that cannot run as configured; the message is meant for the user."""


@dataclass
class JobResult:
    run_dir: Path
    status: str
    summary: Dict[str, Any]
    skipped: Optional[str] = None

    def one_line(self) -> str:
        s = self.summary
        if self.skipped:
            return f"[{s.get('task')} {s.get('condition')} s{s.get('seed')}] skipped: {self.skipped}"
        if self.status != COMPLETED:
            return f"[{s.get('condition')} s{s.get('seed')}] {self.status}: {s.get('reason')} -> {self.run_dir}"
        thr = " ".join(
            f"{k}@{v['epoch'] if v['epoch'] is not None else '—'}" for k, v in s["thresholds"].items()
        )
        f = s["final"]
        return (
            f"[{s['task']} {s['condition']} s{s['seed']}] epochs to test acc {thr} | "
            f"final train {f['train_acc']:.4f} test {f['test_acc']:.4f} at epoch {s['epoch']} -> {self.run_dir}"
        )


# ---------------------------------------------------------------------------
# config helpers
# ---------------------------------------------------------------------------
def resolved_model_config(model_cfg: Any, task: Task) -> ModelConfig:
    """ModelConfig with the vocab sizes filled in from the task."""
    data = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    assert isinstance(data, dict)
    data["d_vocab"] = int(data.get("d_vocab") or task.d_vocab)
    data["d_vocab_out"] = int(data.get("d_vocab_out") or task.d_vocab_out)
    return ModelConfig(**data)


def run_identity(cfg: DictConfig) -> str:
    """Hash of everything that determines a job's numbers (not where it logs or how many threads)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    for key in _NON_IDENTITY_KEYS:
        data.pop(key, None)
    for key in _NON_IDENTITY_TRAIN_KEYS:
        data.get("train", {}).pop(key, None)
    seeds = resolve_seeds(cfg)
    data["resolved_seeds"] = seeds.__dict__
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def configure_torch(threads: int, flush_denormal: bool) -> None:
    """Process-wide numerics and threading for a job.

    Threads are pinned because two 1-thread jobs beat one 2-thread job on 2 cores;
    denormals are flushed because long weight-decayed runs otherwise crawl on CPUs.
    """
    torch.set_flush_denormal(bool(flush_denormal))
    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process (sequential multirun)
        pass


# ---------------------------------------------------------------------------
# training inside a run directory (shared by target jobs and source runs)
# ---------------------------------------------------------------------------
class RunDirCallbacks:
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
        """Progress measures on all pairs, in the task's own Fourier basis."""
        n_layers = int(model.config.n_layers)
        hook = f"blocks.{n_layers - 1}.mlp.hook_post"
        with torch.no_grad():
            logits, cache = model.run_with_cache(self.task.tokens, names_filter=lambda name: name == hook)
        measures = compute_progress_measures(
            self.task,
            logits[:, -1].detach(),
            cache[hook][:, -1],
            {k: v.detach() for k, v in model.state_dict().items()},
            key_freq_threshold=self.key_freq_threshold,
        )
        scalars = measures.scalars()
        self.sinks.log_measures(epoch, scalars, measures.per_frequency_rows())
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


def train_in_run_dir(
    run_dir: RunDir,
    *,
    task: Task,
    model: torch.nn.Module,
    optimizer_cfg: OptimizerConfig,
    train_cfg: TrainConfig,
    sinks: SinkGroup,
    measures_enabled: bool,
    key_freq_threshold: float,
    save_optimizer_states: bool = False,
    optimizer_state: Optional[Dict[str, Any]] = None,
    copied_names: Optional[List[str]] = None,
    debug: Optional[Dict[str, Any]] = None,
    resume_state: Optional[Dict[str, Any]] = None,
) -> TrainOutcome:
    """Train ``model`` (or continue ``resume_state``) and write every artefact of the run directory."""
    clock = WallClock(float(resume_state["wall_time_s"]) if resume_state else 0.0)
    callbacks = RunDirCallbacks(
        run_dir,
        task,
        sinks,
        measures_enabled=measures_enabled,
        key_freq_threshold=key_freq_threshold,
        keep_checkpoints=bool(train_cfg.keep_checkpoints),
        save_optimizer_states=save_optimizer_states,
        clock=clock,
    )
    trainer = Trainer(model, task, optimizer_cfg, train_cfg, callbacks=[callbacks], debug=debug)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
        callbacks.last_measures = dict(resume_state.get("last_measures", {}))
        log.info("resumed at epoch %d", trainer.epoch)
    elif optimizer_state and copied_names:
        n = carry_optimizer_state(trainer.optimizer, model, optimizer_state, copied_names)
        log.info("carried AdamW state of %d source parameters over", n)
    outcome = trainer.fit()
    final = outcome.last_eval
    if final.epoch % int(train_cfg.checkpoint_every) != 0:  # the loop's last eval was not a checkpoint
        callbacks.on_checkpoint(trainer, final)
    save_checkpoint(run_dir.final_checkpoint_path, model, final.epoch, final.as_dict())
    summary = {
        "epoch": final.epoch,
        "stop_reason": outcome.stop_reason,
        "thresholds": trainer.thresholds.as_record(),
        "final": {**final.as_dict(), **_final_measures(callbacks.last_measures)},
        "wall_time_s": round(clock.seconds, 2),
        "train_seconds": round(outcome.train_seconds, 2),
        "seconds_per_epoch": round(outcome.train_seconds / max(outcome.epochs_trained, 1), 5),
    }
    sinks.log_checkpoint(run_dir.final_checkpoint_path, final.epoch, final=True)
    sinks.log_summary(summary)
    run_dir.update_status(status=COMPLETED, reason=None, finished_at=utc_now(), **summary)
    run_dir.resume_path.unlink(missing_ok=True)  # finished: nothing left to resume
    return outcome


def _final_measures(measures: Dict[str, Any]) -> Dict[str, Any]:
    keep = ("restricted_loss", "excluded_loss", "n_key_freqs", "key_freqs", "gini_W_E", "gini_W_L", "weight_norm_total")
    return {k: measures[k] for k in keep if k in measures}


# ---------------------------------------------------------------------------
# source runs
# ---------------------------------------------------------------------------
def train_source_run(run_dir: RunDir, spec: SourceSpec, base_cfg: DictConfig) -> None:
    """Train a source run into the cache (local files only, all checkpoints kept)."""
    task = Task(spec.task["name"], spec.task["p"], spec.task["frac_train"], spec.task["data_seed"])
    model_cfg = resolved_model_config({**spec.model, "model_seed": spec.model_seed}, task)
    model = HookedGrokTransformer(model_cfg, seed=spec.model_seed)
    train_cfg = TrainConfig(
        **{**OmegaConf.to_container(base_cfg.train, resolve=True), **spec.train, "keep_checkpoints": True}  # type: ignore[arg-type]
    )
    optimizer_cfg = OptimizerConfig(**spec.optimizer)
    run_dir.update_status(
        status=RUNNING,
        kind="source",
        task=task.name,
        p=task.p,
        condition="source",
        seed=spec.model_seed,
        max_epochs=train_cfg.max_epochs,
        started_at=utc_now(),
        versions=library_versions(),
        spec=spec.as_dict(),
    )
    resume_state = load_resume_state(run_dir) if run_dir.resume_path.exists() else None
    sinks = make_sinks({"name": "none"})
    meta = RunMeta(
        run_id=f"source-{spec.content_hash}",
        experiment="source",
        task=task.name,
        condition="source",
        seed=spec.model_seed,
        resume=resume_state is not None,
        resume_epoch=int(resume_state["epoch"]) if resume_state is not None else None,
    )
    with sinks:
        sinks.start(run_dir.path, spec.as_dict(), meta)
        try:
            train_in_run_dir(
                run_dir,
                task=task,
                model=model,
                optimizer_cfg=optimizer_cfg,
                train_cfg=train_cfg,
                sinks=sinks,
                measures_enabled=True,
                key_freq_threshold=float(base_cfg.measures.key_freq_threshold),
                save_optimizer_states=True,
                resume_state=resume_state,
            )
        except TrainingFailure as exc:
            run_dir.update_status(status=FAILED, reason=exc.reason, failed_epoch=exc.epoch)
            raise JobError(f"the source run {run_dir.path} failed: {exc.reason} at epoch {exc.epoch}") from exc


# ---------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------
@dataclass
class StartingPoint:
    model: torch.nn.Module
    record: Optional[Dict[str, Any]]
    optimizer_state: Optional[Dict[str, Any]]
    copied: List[str]


@dataclass(frozen=True)
class JobPaths:
    """Absolute locations shared by the jobs of a sweep (resolved against the launch directory)."""

    root: Path
    source_cache: Path
    run_index: Path

    @classmethod
    def from_config(cls, cfg: DictConfig, cwd: Path) -> "JobPaths":
        def absolute(value: str) -> Path:
            path = Path(str(value)).expanduser()
            return path if path.is_absolute() else (cwd / path).resolve()

        return cls(absolute(cfg.paths.root), absolute(cfg.paths.source_cache), absolute(cfg.paths.run_index))


def build_starting_point(
    cfg: DictConfig, task: Task, model_cfg: ModelConfig, seeds: ResolvedSeeds, paths: JobPaths
) -> StartingPoint:
    """The target's initial model for its transfer condition."""
    model = HookedGrokTransformer(model_cfg, seed=seeds.model_seed)
    condition = str(cfg.transfer.name)
    if condition == "random":
        return StartingPoint(model, None, None, [])

    tr = cfg.transfer
    components = {k: str(v) for k, v in tr.components.items()}
    record: Dict[str, Any] = {"condition": condition}
    optimizer_state = None
    if tr.source.path is not None:
        path = Path(str(tr.source.path)).expanduser().resolve()
        weights = load_source_weights(path)
        record.update(source_path=str(path), source_format=weights["format"], epoch=weights["epoch"], metrics=weights["metrics"])
        source_state = weights["state_dict"]
    else:
        spec = source_spec_from_config(cfg, seeds.source_seed)
        cache = SourceCache(paths.source_cache)
        source_dir = cache.get_or_train(spec, lambda rd, sp: train_source_run(rd, sp, cfg))
        criteria = OmegaConf.to_container(tr[condition], resolve=True)
        assert isinstance(criteria, dict)
        chosen = select_checkpoint(source_dir, condition, criteria)
        weights = load_source_weights(chosen.path)
        source_state = weights["state_dict"]
        record.update(source_hash=spec.content_hash, source_run_dir=str(source_dir.path), spec=spec.as_dict(), chosen=chosen.as_record())
        if not bool(tr.reset_optimizer):
            if chosen.optimizer_path is None:
                raise JobError(f"reset_optimizer=false but the source has no optimizer state at epoch {chosen.epoch}")
            optimizer_state = torch.load(chosen.optimizer_path, map_location="cpu", weights_only=True)
    plan = TransferPlan()
    source_state = adapt_paper_unembed(source_state, model.state_dict(), plan)
    applied = apply_transfer(model, source_state, components)
    applied.notes = plan.notes + applied.notes
    record["components"] = components
    record["reset_optimizer"] = bool(tr.reset_optimizer)
    record["plan"] = applied.as_record()
    return StartingPoint(model, record, optimizer_state, applied.copied)


def _freeze_only(model: torch.nn.Module, components: Dict[str, str]) -> None:
    """Re-apply a transfer's freeze flags to a model whose weights come from a resume state."""
    from groktransfer.transfer import component_of

    for name, param in model.named_parameters():
        if components.get(component_of(name)) == "freeze":
            param.requires_grad_(False)


def _clear_run_files(run_dir: RunDir) -> None:
    """force=true: remove a previous run's artefacts (not Hydra's own files) before starting over."""
    import shutil

    for name in ("metrics.csv", "measures.csv", "measures_freqs.csv", "resume.pt", "source.json", "status.json"):
        (run_dir.path / name).unlink(missing_ok=True)
    for name in ("checkpoints", "wandb"):
        shutil.rmtree(run_dir.path / name, ignore_errors=True)


def run_job(cfg: DictConfig, run_dir_path: Path, paths: JobPaths) -> JobResult:
    """Run one configured job in ``run_dir_path``: fresh, resumed, or reused from an earlier launch."""
    validate_job_config(cfg)
    seeds = resolve_seeds(cfg)
    configure_torch(int(cfg.train.threads), bool(cfg.train.flush_denormal))
    task = Task.from_config(cfg.task, seeds.data_seed)
    model_cfg = resolved_model_config(cfg.model, task)
    run_dir = RunDir(run_dir_path)
    run_id = run_identity(cfg)
    index = RunIndex(paths.run_index)
    with index.lock(run_id):
        decision = index.decide(run_id, run_dir.path, force=bool(cfg.force))
        if decision.action in ("reuse", "skip_failed"):
            assert decision.previous is not None
            transplant(decision.previous, run_dir.path, link=True)
            record = run_dir.update_status(reused_from=str(decision.previous))
            log.info("skipped (%s)", decision.reason)
            status = COMPLETED if decision.action == "reuse" else FAILED
            return JobResult(run_dir.path, status, record, skipped=decision.reason)
        if decision.action == "fresh" and run_dir.read_status() is not None:
            if not bool(cfg.force) and (run_dir.read_status() or {}).get("run_id") != run_id:
                raise JobError(
                    f"{run_dir.path} already holds a different run; pass force=true to overwrite it on purpose"
                )
            _clear_run_files(run_dir)
        resume_state: Optional[Dict[str, Any]] = None
        if decision.action == "resume":
            assert decision.previous is not None
            transplant(decision.previous, run_dir.path, link=False)
            resume_state = load_resume_state(run_dir)
            log.info("%s", decision.reason)
        index.record(run_id, run_dir.path)
        return _train_job(cfg, run_dir, paths, task, model_cfg, seeds, run_id, resume_state)


def load_resume_state(run_dir: RunDir) -> Dict[str, Any]:
    """The last checkpointed training state; a torn or corrupt file is reported, not trusted."""
    try:
        return torch.load(run_dir.resume_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise JobError(
            f"cannot resume {run_dir.path}: {run_dir.resume_path.name} is unreadable ({exc}); "
            "rerun with force=true to start this run over"
        ) from exc


def _train_job(
    cfg: DictConfig,
    run_dir: RunDir,
    paths: JobPaths,
    task: Task,
    model_cfg: ModelConfig,
    seeds: ResolvedSeeds,
    run_id: str,
    resume_state: Optional[Dict[str, Any]],
) -> JobResult:
    condition = str(cfg.transfer.name)
    base_record = {
        "run_id": run_id,
        "experiment": str(cfg.experiment_name),
        "task": task.name,
        "p": task.p,
        "condition": condition,
        "seed": int(cfg.seed),
        "data_seed": seeds.data_seed,
        "model_seed": seeds.model_seed,
        "source_seed": seeds.source_seed if condition != "random" else None,
        "max_epochs": int(cfg.train.max_epochs),
        "threads": int(cfg.train.threads),
        "versions": library_versions(),
    }
    run_dir.path.mkdir(parents=True, exist_ok=True)
    write_text(run_dir.config_path, OmegaConf.to_yaml(cfg, resolve=True))
    if resume_state is None:
        run_dir.update_status(status=RUNNING, reason=None, started_at=utc_now(), epoch=0, **base_record)
        try:
            start = build_starting_point(cfg, task, model_cfg, seeds, paths)
        except Exception as exc:
            run_dir.update_status(status=FAILED, reason=f"could not build the starting model: {exc}", failed_epoch=0)
            raise
        model = start.model
        if start.record is not None:
            write_json(run_dir.source_path, start.record)
            run_dir.update_status(source=start.record.get("chosen") or {"path": start.record.get("source_path")})
    else:
        run_dir.update_status(status=RUNNING, reason=None, resumed_at=utc_now(), **base_record)
        model = HookedGrokTransformer(model_cfg, seed=seeds.model_seed)
        if condition != "random":
            _freeze_only(model, {k: str(v) for k, v in cfg.transfer.components.items()})
        start = StartingPoint(model, None, None, [])

    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    sinks = make_sinks(cfg.logger)
    meta = RunMeta(
        run_id=run_id,
        experiment=str(cfg.experiment_name),
        task=task.name,
        condition=condition,
        seed=int(cfg.seed),
        group=_sweep_group(cfg),
        resume=resume_state is not None,
        resume_epoch=int(resume_state["epoch"]) if resume_state is not None else None,
    )
    train_cfg = TrainConfig(**OmegaConf.to_container(cfg.train, resolve=True))  # type: ignore[arg-type]
    optimizer_cfg = OptimizerConfig(**OmegaConf.to_container(cfg.optimizer, resolve=True))  # type: ignore[arg-type]
    with sinks:
        sinks.start(run_dir.path, resolved, meta)
        try:
            train_in_run_dir(
                run_dir,
                task=task,
                model=model,
                optimizer_cfg=optimizer_cfg,
                train_cfg=train_cfg,
                sinks=sinks,
                measures_enabled=bool(cfg.measures.enabled),
                key_freq_threshold=float(cfg.measures.key_freq_threshold),
                optimizer_state=start.optimizer_state,
                copied_names=start.copied,
                debug=dict(cfg.debug),
                resume_state=resume_state,
            )
        except TrainingFailure as exc:
            # a property of the run (NaN, time budget), not an accident: rerunning is a choice (force=true)
            record = run_dir.update_status(status=FAILED, reason=exc.reason, failed_epoch=exc.epoch)
            run_dir.resume_path.unlink(missing_ok=True)
            sinks.finish("failed")
            return JobResult(run_dir.path, FAILED, record)
        except KeyboardInterrupt:
            run_dir.update_status(status=STOPPED, reason="interrupted (resumable from the last checkpoint)")
            raise
        except Exception as exc:
            status = run_dir.read_status() or {}
            run_dir.update_status(
                status=FAILED, reason=f"{type(exc).__name__}: {exc}", failed_epoch=status.get("epoch", 0)
            )
            raise
    record = run_dir.read_status() or {}
    return JobResult(run_dir.path, COMPLETED, record)


def _sweep_group(cfg: DictConfig) -> str:
    """W&B group: the experiment name plus the sweep's timestamp directory when in a sweep."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        if hc.mode is not None and hc.mode.name == "MULTIRUN":
            return f"{cfg.experiment_name}/{Path(hc.sweep.dir).name}"
    except Exception:
        pass
    return str(cfg.experiment_name)

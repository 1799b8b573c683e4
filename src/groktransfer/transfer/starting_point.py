"""The target job's initial model, built from its transfer condition.

``random``: a fresh model from ``model_seed``. ``grokked`` / ``memorized`` /
``checkpoint`` / ``embedding``: the same fresh model, then the components are copied /
kept fresh / frozen from a source checkpoint -- an explicit file
(``transfer.source.path``) or the checkpoint of the cached source run that meets the
condition's criteria, or is nearest ``transfer.source.epoch`` (trained first if
missing). With ``transfer.embed_map`` the embedding arrives as source W_E @ W_map.
A resumed job rebuilds only the model's shape and freeze flags: its weights come
from the resume state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from groktransfer.config.conditions import needs_source
from groktransfer.config.resolve import ResolvedSeeds
from groktransfer.config.schema import ComponentAction, ModelConfig, TrainJobConfig, to_plain
from groktransfer.measures.registry import CHECKPOINT_MEASURES
from groktransfer.model.checkpoint import LoadedCheckpoint, load_checkpoint
from groktransfer.model.registry import build_model, model_class
from groktransfer.runs.rundir import RunDir
from groktransfer.tasks.registry import family_of, make_task, typed_task
from groktransfer.transfer.components import apply_embedding_map, apply_transfer, freeze_components
from groktransfer.transfer.source_runs import (
    SourceCache,
    SourceSpec,
    choose_source_checkpoint,
    source_spec_from_config,
    start_measures,
)
from groktransfer.utils.errors import JobError

log = logging.getLogger(__name__)

#: Trains a source run into a run directory (``run.train_source_run``).
TrainSource = Callable[[RunDir, SourceSpec], None]


@dataclass
class StartingPoint:
    """The model to train, what it was built from (the source record), carried optimizer state."""

    model: torch.nn.Module
    record: dict[str, Any] | None = None
    optimizer_state: dict[str, Any] | None = None
    copied: list[str] = field(default_factory=list)


def build_starting_point(
    job: TrainJobConfig,
    model_cfg: ModelConfig,
    seeds: ResolvedSeeds,
    source_cache: Path,
    train_source: TrainSource,
) -> StartingPoint:
    """The target's initial model for its transfer condition."""
    model = build_model(model_cfg, seeds.model_seed)
    tr = job.transfer
    if not needs_source(tr.name):
        return StartingPoint(model)

    record: dict[str, Any] = {"condition": str(tr.name)}
    optimizer_state = None
    if tr.source.path is not None:
        path = Path(tr.source.path).expanduser().resolve()
        loaded = load_checkpoint(path, model_config=model_cfg)  # the shape of a bare TransformerLens state dict
        record.update(
            source_path=str(path), source_format=loaded.source_format, epoch=loaded.epoch, metrics=loaded.metrics
        )
        record.update(file_start_measures(job, seeds, loaded))
        source_state = loaded.state_dict
    else:
        spec = source_spec_from_config(job, seeds.source_seed)
        source_dir = SourceCache(source_cache).get_or_train(spec, train_source)
        chance = family_of(spec.task["name"]).chance_accuracy(typed_task(spec.task_config()))
        chosen = choose_source_checkpoint(source_dir, to_plain(tr), str(tr.name), chance)
        source_state = load_checkpoint(chosen.path).state_dict
        record.update(
            source_hash=spec.content_hash,
            source_run_dir=str(source_dir.path),
            spec=spec.as_dict(),
            chosen=chosen.as_record(),
        )
        if not tr.reset_optimizer:
            if chosen.optimizer_path is None:
                raise JobError(f"reset_optimizer=false but the source has no optimizer state at epoch {chosen.epoch}")
            optimizer_state = torch.load(chosen.optimizer_path, map_location="cpu", weights_only=True)
    components = {str(c): ComponentAction(a) for c, a in tr.components.items()}
    if tr.embed_map:  # the embedding goes through the map below; everything else as configured
        applied = apply_transfer(model, source_state, {**components, "embed": ComponentAction.reinit})
        applied.reinitialised = [n for n in applied.reinitialised if model.component_of(n) != "embed"]
        apply_embedding_map(
            model, source_state, components.get("embed", ComponentAction.copy), seeds.model_seed, applied
        )
    else:
        applied = apply_transfer(model, source_state, components)
    record["components"] = {c: str(a) for c, a in components.items()}
    record["embed_map"] = bool(tr.embed_map)
    record["reset_optimizer"] = bool(tr.reset_optimizer)
    record["plan"] = applied.as_record()
    return StartingPoint(model, record, optimizer_state, applied.copied)


def file_start_measures(job: TrainJobConfig, seeds: ResolvedSeeds, loaded: LoadedCheckpoint) -> dict[str, Any]:
    """A checkpoint file's progress measures, as a cached source start records them (``source.start_measures``).

    A file carries no measures table, so they are computed here, on the task that
    ``transfer.source`` describes (task, p, frac_train; split seed = the source seed):
    ``measured_on`` says which. Train/test accuracies then refer to *that* split, which
    is the file's own only when the file was trained on it; restricted/excluded
    loss, key frequencies and Gini read the model's weights and are split-independent
    in what they show. Not measured (``measures_note`` says why): digit tasks, and a model
    whose vocabulary does not fit the task.
    """
    task_cfg = typed_task(source_spec_from_config(job, seeds.source_seed).task_config())
    measured_on = {k: getattr(task_cfg, k) for k in ("name", "p", "frac_train", "data_seed") if hasattr(task_cfg, k)}
    task = make_task(task_cfg, int(task_cfg.data_seed))
    family_measures = CHECKPOINT_MEASURES.find(task.family)
    if family_measures is None or not family_measures.on_file_starts:
        note = (
            family_measures.file_start_note if family_measures else f"{task.family} source task: no progress measures"
        )
        return {"measures": {}, "measured_on": measured_on, "measures_note": note}
    cls = model_class(loaded.model_config)
    shape = family_of(task_cfg.name).task_shape(task_cfg)
    unreadable = cls.task_problems(loaded.model_config, shape) if shape is not None else ["malformed task"]
    if unreadable:
        note = f"the file's model does not read {task.describe()} ({'; '.join(unreadable)}): not measured"
        return {"measures": {}, "measured_on": measured_on, "measures_note": note}
    model = loaded.build_model()
    scalars, _ = family_measures.measure(task, model, job.measures.key_freq_threshold)
    return {"measures": start_measures(scalars, loaded.epoch), "measured_on": measured_on}


def model_for_resume(
    job: TrainJobConfig, model_cfg: ModelConfig, seeds: ResolvedSeeds, saved_state: dict[str, Any] | None = None
) -> StartingPoint:
    """The model a resumed job loads its state into: the right shape and freeze flags.

    An embedding-map run (``transfer.embed_map``) gets its map back first, shaped from
    the saved ``embed.W_source``; the saved state then fills in the map's weights.
    """
    model = build_model(model_cfg, seeds.model_seed)
    if needs_source(job.transfer.name) and job.transfer.embed_map and saved_state is not None:
        embed_action = ComponentAction(job.transfer.components.get("embed", ComponentAction.copy))
        model.attach_embedding_map(saved_state, seeds.model_seed, trainable=embed_action != ComponentAction.freeze)
    if needs_source(job.transfer.name):
        freeze_components(model, job.transfer.components)
    return StartingPoint(model)

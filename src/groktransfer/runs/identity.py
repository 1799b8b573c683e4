"""What an experiment *is*: one declaration, from which every identity hash is derived.

Three keys are made of a job's config:

* the **run identity** (:func:`run_identity`): the run index finds an earlier run of the
  same experiment by it (reuse / resume);
* the **source-cache key** (:func:`source_parts`, hashed by ``SourceSpec.content_hash``):
  the directory a source run is trained into once and found again;
* the **ensemble key** (:func:`ensemble_key`): jobs with equal keys can train together.

All three read the same tables below. The rule that keeps identities stable as the schema
grows: a field listed in :data:`RECORDED_FIELDS` (the fields hashed when identities were
first recorded, ``tests/data/identities_main.json``) is hashed as it always was; **any other
field is hashed only when it differs from its schema default**, so adding a field with a
default keeps every existing identity, and nothing needs editing here when one is added.
A field that never changes a job's numbers is declared once in :data:`ROLES`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from omegaconf import OmegaConf

from groktransfer.config.conditions import needs_source
from groktransfer.config.schema import (
    CheckpointCriteria,
    GradFilterConfig,
    MeasuresConfig,
    ModelConfig,
    OptimizerConfig,
    SourceConfig,
    TaskConfig,
    TrainConfig,
    TrainJobConfig,
    TransferConfig,
    source_gradfilter,
    source_optimizer,
    to_typed,
)
from groktransfer.config.validate import resolve_seeds, source_model_config, source_task_config
from groktransfer.tasks.registry import task_seq_len

__all__ = [
    "RECORDED_FIELDS",
    "ROLES",
    "Role",
    "digest",
    "ensemble_key",
    "fields_with",
    "run_identity",
    "source_parts",
]


class Role(enum.Enum):
    """What a field is to the keys, for the fields that are not plain identity."""

    #: names and logging: in no key
    COSMETIC = "cosmetic"
    #: how and where a job runs (threads, device, float rounding, output paths): not part of the
    #: experiment (a run finished on a GPU is reused on CPU), but one ensemble shares one process
    EXECUTION = "execution"
    #: part of the identity, and free to differ between the members of one ensemble
    BATCHABLE = "batchable"


# =========================================================================== the declaration
#: Every field that is not plain identity, by dotted path (a block's path covers all of it).
ROLES: Mapping[str, Role] = {
    "logger": Role.COSMETIC,
    "force": Role.COSMETIC,
    "experiment_name": Role.COSMETIC,
    "debug": Role.COSMETIC,
    "paths": Role.EXECUTION,
    "train.threads": Role.EXECUTION,
    "train.progress_bar": Role.EXECUTION,
    "train.timeout_minutes": Role.EXECUTION,
    "train.profile_epochs": Role.EXECUTION,
    "train.device": Role.EXECUTION,
    "train.deterministic": Role.EXECUTION,
    "train.cpu_gemm": Role.EXECUTION,
    "seed": Role.BATCHABLE,
    "task.data_seed": Role.BATCHABLE,
    "model.model_seed": Role.BATCHABLE,
    "transfer": Role.BATCHABLE,
    "optimizer.lr": Role.BATCHABLE,
    "optimizer.weight_decay": Role.BATCHABLE,
}

#: The fields of each schema that are hashed whatever their value: those identities hashed when
#: they were first recorded (main c00aa81). Fields added since -- ``model.attn_only``,
#: ``train.batch_size``, ``optimizer.schedule`` / ``final_lr_frac``, ``transfer.source.n_train`` /
#: ``n_test`` -- and every field added from now on are not listed: hashed only when they differ
#: from their default. Looked up along the class's MRO, so a subclass inherits its base's list; a
#: schema outside this layer (a task family's, an architecture's) declares its own list as the
#: class attribute ``RECORDED_FIELDS`` (the modular and digit families' and the transformer's
#: hold what the single TaskConfig / ModelConfig of c00aa81 hashed for them).
RECORDED_FIELDS: Mapping[type, tuple[str, ...]] = {
    TrainJobConfig: ("task", "model", "optimizer", "transfer", "train", "measures", "seed"),
    TaskConfig: ("name", "data_seed"),
    ModelConfig: ("name", "model_seed"),
    OptimizerConfig: ("name", "lr", "weight_decay", "betas", "eps", "warmup_steps"),
    TrainConfig: (
        "max_epochs",
        "eval_every",
        "checkpoint_every",
        "thresholds",
        "patience",
        "flush_denormal",
        "fast_path",
        "keep_checkpoints",
    ),
    MeasuresConfig: ("enabled", "key_freq_threshold"),
    TransferConfig: (
        "name",
        "source",
        "grokked",
        "memorized",
        "checkpoint",
        "embedding",
        "embed_map",
        "components",
        "reset_optimizer",
    ),
    SourceConfig: (
        "task",
        "p",
        "frac_train",
        "source_seed",
        "max_epochs",
        "optimizer",
        "path",
        "path_index",
        "epoch",
        "model",
    ),
    CheckpointCriteria: (
        "min_train_acc",
        "min_test_acc",
        "max_test_acc",
        "held_for",
        "pick",
        "max_restricted_test_gap",
        "max_n_key_freqs",
    ),
}

#: Later fields whose meaning depends on another: hashed exactly when that one is
#: (``final_lr_frac`` only means something under a non-constant schedule).
HASHED_WITH: Mapping[str, str] = {"optimizer.final_lr_frac": "optimizer.schedule"}

#: Configs that name one of several choices (``name``) and hold one block of parameters per
#: choice (``optimizer.sgd``, ``gradfilter.ema``): only the chosen one's block is hashed (the
#: others do not touch the numbers), and only where it differs from its defaults.
CHOICE_BLOCKS: tuple[type, ...] = (OptimizerConfig, GradFilterConfig)

#: Fields of the target's config that a source run does not share: a display name, the target's
#: init seed (the source uses ``source_seed``), and whether the target keeps every checkpoint.
SOURCE_OMITS: tuple[str, ...] = ("model.name", "model.model_seed", "train.keep_checkpoints")


# =========================================================================== choice-specific facts
def _transfer_identity(job: TrainJobConfig, projected: dict[str, Any]) -> dict[str, Any]:
    """A random start has no source: a sweep's copies along the source axis are one run."""
    if not needs_source(job.transfer.name):
        return {"name": str(job.transfer.name)}
    return projected


# =========================================================================== derived keys
def digest(data: Any, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``data`` as canonical JSON."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def fields_with(role: Role) -> tuple[str, ...]:
    """The dotted paths :data:`ROLES` gives ``role``."""
    return tuple(path for path, r in ROLES.items() if r is role)


def run_identity(job: TrainJobConfig) -> str:
    """Hash of everything that determines a job's numbers (not where it logs or how many threads)."""
    job = to_typed(TrainJobConfig, job)  # a composed DictConfig too
    data = _project(job, _plain(job), "", job.task)
    data["transfer"] = _transfer_identity(job, data["transfer"])
    data["resolved_seeds"] = resolve_seeds(job).__dict__
    return digest(data, 20)


def source_parts(cfg: TrainJobConfig, source_seed: int) -> dict[str, dict[str, Any]]:
    """The task, model, optimizer and train blocks that determine a target's source run.

    The source shares the target's model shape, optimizer and cadence, with what
    ``transfer.source`` overrides; each block is hashed by the same rules as a run identity.
    Selection criteria are not part of it: the grokked and memorized conditions share one run.
    """
    cfg = to_typed(TrainJobConfig, cfg)
    task = source_task_config(cfg, source_seed)
    model = source_model_config(cfg)
    optimizer, gradfilter = source_optimizer(cfg), source_gradfilter(cfg)
    train = {**_plain(cfg.train), "max_epochs": int(cfg.transfer.source.max_epochs)}
    parts = {
        "task": _project(task, _plain(task), "task.", task),
        "model": _project(model, _plain(model), "model.", task),
        "optimizer": _project(optimizer, _plain(optimizer), "optimizer.", task),
        "train": _project(cfg.train, train, "train.", task),
    }
    filtered = _project(gradfilter, _plain(gradfilter), "gradfilter.", task)
    if filtered:  # a source trained with a gradient filter; without one the key is what it always was
        parts["gradfilter"] = filtered
    for dotted in SOURCE_OMITS:
        block, key = dotted.split(".")
        parts[block].pop(key, None)
    return parts


def ensemble_key(job: TrainJobConfig, start_epoch: int) -> str:
    """Jobs with equal keys can share an ensemble: the whole config but its batchable and cosmetic
    fields (execution settings too must agree: the members share one process), and the start epoch."""
    data: dict[str, Any] = _plain(to_typed(TrainJobConfig, job))
    for dotted in fields_with(Role.BATCHABLE) + fields_with(Role.COSMETIC):
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.get(key, {})
        node.pop(leaf, None)
    data["start_epoch"] = start_epoch
    return json.dumps(data, sort_keys=True, default=str)


# =========================================================================== the walk
def _project(
    obj: Any, plain: dict[str, Any], prefix: str, task: TaskConfig, declared: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``plain`` (the config ``obj`` as plain data, possibly with extra keys) as it is hashed.

    A field's default is the one its block declares (``declared``: a nested block's default as
    its parent's default factory builds it, so ``transfer.memorized`` keeps its own defaults),
    else its class's.
    """
    schema = type(obj)
    recorded = _recorded(schema)
    defaults = declared if isinstance(declared, dict) else _plain_defaults(schema)
    defaults = {**defaults, **getattr(schema, "IDENTITY_DEFAULTS", {})}
    field_names = {f.name for f in dataclasses.fields(schema)}
    resolved = getattr(schema, "RESOLVED_FROM_TASK", ())  # None = "the task's sequence length"
    out: dict[str, Any] = {}
    for key, value in plain.items():
        path = prefix + key
        if ROLES.get(path) in (Role.COSMETIC, Role.EXECUTION):
            continue
        if key not in field_names:  # free-form entries (transfer.source.optimizer's overrides)
            out[key] = value
            continue
        if key in resolved and value is None:
            value = task_seq_len(task)
        child = getattr(obj, key)
        if isinstance(obj, CHOICE_BLOCKS) and dataclasses.is_dataclass(child) and key != str(obj.name):
            continue  # the parameters of an optimizer / filter this job does not use
        if dataclasses.is_dataclass(child) and isinstance(value, dict):
            value = _project(child, value, path + ".", task, defaults.get(key))
            if key not in recorded and not value:  # a later block with every field at its default
                continue
        elif key not in recorded and (path in HASHED_WITH or value == defaults.get(key)):
            continue
        out[key] = value
    for path, leader in HASHED_WITH.items():
        key = path[len(prefix) :]
        if path.startswith(prefix) and "." not in key and key in plain and leader[len(prefix) :] in out:
            out[key] = plain[key]
    return out


def _recorded(schema: type) -> tuple[str, ...]:
    for cls in schema.__mro__:
        if "RECORDED_FIELDS" in vars(cls):
            return tuple(vars(cls)["RECORDED_FIELDS"])
        if cls in RECORDED_FIELDS:
            return RECORDED_FIELDS[cls]
    return ()


def _plain(value: Any) -> Any:
    """A typed config as plain data, as ``to_plain`` gives it (choices as their names), without
    OmegaConf's round trip (a hundred times faster; equal on every recorded config)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@cache
def _plain_defaults(schema: type[Any]) -> dict[str, Any]:
    data = OmegaConf.to_container(OmegaConf.structured(schema), resolve=False, enum_to_str=True)
    assert isinstance(data, dict)
    return data

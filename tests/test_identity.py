"""Run identities, source-cache keys and ensemble keys (groktransfer.runs.identity).

``tests/data/identities_main.json`` holds what main's code (c00aa81, before the identity
module) computed for 113 composed configs (``scripts/record_identities.py``); every key must
come out the same, or earlier sweeps would no longer be recognised and cached source runs
would be trained again. New fields must be identity-neutral at their defaults.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import pytest
from omegaconf import MISSING

from groktransfer.config.schema import CpuGemm, OptimizerConfig, TrainConfig, TrainJobConfig, to_typed
from groktransfer.config.validate import resolve_seeds
from groktransfer.jobs.ensemble_launch import batch_key
from groktransfer.jobs.run_job import run_identity
from groktransfer.runs import identity
from groktransfer.transfer.source_runs import source_spec_from_config

def per_family(config: Dict[str, Any]) -> Dict[str, Any]:
    """A config recorded when one TaskConfig held every family's keys, as today's schemas hold
    it: the task block keeps the keys its family declares (the others were never hashed)."""
    config = json.loads(json.dumps(config))
    from groktransfer.tasks.registry import family_of

    declared = {f.name for f in dataclasses.fields(family_of(config["task"]["name"]).config_class)}
    config["task"] = {k: v for k, v in config["task"].items() if k in declared}
    return config


RECORDED = [
    {**e, "config": per_family(e["config"])}
    for e in json.loads((Path(__file__).parent / "data" / "identities_main.json").read_text())["entries"]
]


def typed(schema: Any, data: Any, base: Any = None) -> Any:
    """A composed (already type-checked) config as its dataclass, without OmegaConf's merge
    (0.15 s a config); checked equal to ``to_typed`` below. A key the data leaves out keeps the
    default its block declares (``base``: the parent's default for this block), as a merge onto
    the schema does (a field added after the recording, e.g. ``memorized.relative_to_chance``)."""
    schema = schema.schema_for(data) if hasattr(schema, "schema_for") else schema
    if not isinstance(base, schema):
        base = schema() if all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                               for f in dataclasses.fields(schema)) else None  # fmt: skip
    hints = typing.get_type_hints(schema)
    values = {}
    for f in dataclasses.fields(schema):
        if f.name in data:
            values[f.name] = _typed_value(hints[f.name], data[f.name], getattr(base, f.name, None))
    return dataclasses.replace(base, **values) if base is not None else schema(**values)


def _typed_value(hint: Any, value: Any, base: Any = None) -> Any:
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return _typed_value(args[0], value, base)
    if origin in (dict, Dict):
        return {_typed_value(args[0], k): _typed_value(args[1], v) for k, v in value.items()}
    if origin in (list, List):
        return [_typed_value(args[0], v) for v in value]
    if dataclasses.is_dataclass(hint):
        return typed(hint, value, base)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint[value]
    return value


def keys_of(job: TrainJobConfig) -> Dict[str, str]:
    # The ensemble key is recorded too but not compared: it is never stored (it only groups
    # the jobs of one sweep), and it is the whole config, so every new field changes it.
    out = {"run_identity": run_identity(job)}
    if job.transfer.name != "random":
        spec = source_spec_from_config(job, resolve_seeds(job).source_seed)
        out.update(source_hash=spec.content_hash, source_label=spec.label)
    return out


def recorded_keys(entry: Dict[str, Any]) -> Dict[str, str]:
    return {k: entry[k] for k in ("run_identity", "source_hash", "source_label") if k in entry}


def test_the_fast_typed_config_is_to_typed() -> None:
    for entry in RECORDED[::25] + [e for e in RECORDED if "transfer.components.attn=freeze" in e["overrides"]]:
        assert typed(TrainJobConfig, entry["config"]) == to_typed(TrainJobConfig, entry["config"]), entry["overrides"]


def test_every_key_equals_the_one_recorded_on_main() -> None:
    assert len(RECORDED) == 113
    different = [e["overrides"] for e in RECORDED if keys_of(typed(TrainJobConfig, e["config"])) != recorded_keys(e)]
    assert different == []
    # the fixture is broad: transfer jobs with their own source hashes, and distinct identities
    assert len({e["run_identity"] for e in RECORDED}) > 80
    assert len({e["source_hash"] for e in RECORDED if "source_hash" in e}) > 20


# --------------------------------------------------------------------------- fields added later
@dataclass
class FilteredOptimizer(OptimizerConfig):
    """The optimizer schema as another branch may grow it: a gradient filter, off by default."""

    grad_filter: str = "none"
    grad_filter_alpha: float = 0.98


@dataclass
class NoiseConfig:
    scale: float = 0.0
    every: int = 1


@dataclass
class TrainWithNoise(TrainConfig):
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # a whole new block


@dataclass
class GrownJob(TrainJobConfig):
    optimizer: FilteredOptimizer = MISSING
    train: TrainWithNoise = field(default_factory=TrainWithNoise)


SAMPLE = [e for e in RECORDED if e["overrides"] and e["overrides"][0].startswith(("transfer=", "optimizer.", "task=digit"))]


def grown(entry: Dict[str, Any], optimizer: Dict[str, Any] = {}, train: Dict[str, Any] = {}) -> GrownJob:
    config = json.loads(json.dumps(entry["config"]))
    config["optimizer"].update(optimizer)
    config["train"].update(train)
    return typed(GrownJob, config)


def test_fields_added_at_their_defaults_keep_every_identity() -> None:
    assert len(SAMPLE) > 30
    for entry in SAMPLE:
        job = grown(entry)
        assert isinstance(job.optimizer, FilteredOptimizer) and isinstance(job.train.noise, NoiseConfig)
        # the stored keys stay; the ensemble key (never stored, compared within one sweep) holds the whole config
        stored = {k: v for k, v in keys_of(job).items() if k != "batch_key_sha256"}
        assert stored == {k: v for k, v in recorded_keys(entry).items() if k != "batch_key_sha256"}, entry["overrides"]


@pytest.mark.parametrize(
    "optimizer, train",
    [({"grad_filter": "ema"}, {}), ({"grad_filter_alpha": 0.5}, {}), ({}, {"noise": {"scale": 0.1, "every": 1}})],
)
def test_fields_added_away_from_their_defaults_change_identities(optimizer, train) -> None:
    for entry in SAMPLE[:: max(1, len(SAMPLE) // 6)]:
        job = grown(entry, optimizer, train)
        keys = keys_of(job)
        assert keys["run_identity"] != entry["run_identity"], entry["overrides"]
        if "source_hash" in entry:  # the source shares the target's optimizer and cadence
            assert keys["source_hash"] != entry["source_hash"], entry["overrides"]
        assert batch_key(job, 0) != batch_key(typed(TrainJobConfig, entry["config"]), 0)  # members must agree on it


NON_IDENTITY_CHANGES = {
    "train.threads": 3, "train.progress_bar": False, "train.timeout_minutes": 5.0, "train.profile_epochs": 2,
    "train.device": "cpu", "train.deterministic": False, "train.cpu_gemm": CpuGemm.blas,
    "force": True, "experiment_name": "elsewhere",
}


def test_non_identity_fields_change_no_identity_and_execution_ones_keep_ensembles_apart() -> None:
    declared = identity.fields_with(identity.Role.EXECUTION) + identity.fields_with(identity.Role.COSMETIC)
    assert set(declared) - {"paths", "logger", "debug"} == set(NON_IDENTITY_CHANGES)  # (those three: the fixture)
    entry = next(e for e in RECORDED if not e["overrides"])
    base = typed(TrainJobConfig, entry["config"])
    for path, value in NON_IDENTITY_CHANGES.items():
        if path.startswith("train."):
            job = dataclasses.replace(base, train=dataclasses.replace(base.train, **{path[6:]: value}))
        else:
            job = dataclasses.replace(base, **{path: value})
        assert run_identity(job) == entry["run_identity"], path
        execution = identity.ROLES[path] is identity.Role.EXECUTION  # one ensemble shares one process
        assert (batch_key(job, 0) != batch_key(base, 0)) == execution, path
    moved = dataclasses.replace(base, train=dataclasses.replace(base.train, max_epochs=10))
    assert run_identity(moved) != entry["run_identity"] and batch_key(moved, 0) != batch_key(base, 0)


def test_the_declaration_names_real_fields() -> None:
    from groktransfer.model.registry import MODELS
    from groktransfer.tasks.registry import TASK_FAMILIES

    for schema, names in identity.RECORDED_FIELDS.items():
        assert set(names) <= {f.name for f in dataclasses.fields(schema)}, schema.__name__
    # the schemas of the families and architectures declare theirs beside their fields
    own = [TASK_FAMILIES.get(n).config_class for n in TASK_FAMILIES.names()] + [MODELS.get(n).config_class for n in MODELS.names()]
    for schema in own:
        fields = {f.name for f in dataclasses.fields(schema)}
        assert set(getattr(schema, "RECORDED_FIELDS", ())) <= fields, schema.__name__
        assert set(getattr(schema, "RESOLVED_FROM_TASK", ())) <= fields, schema.__name__
    hints = typing.get_type_hints(TrainJobConfig)
    paths = list(identity.ROLES) + list(identity.HASHED_WITH) + list(identity.HASHED_WITH.values())
    paths += list(identity.SOURCE_OMITS)
    for path in paths:
        if path == "debug":  # a Hydra group (conf/debug/) that sets other fields; no field of its own
            continue
        block, _, key = path.partition(".")
        assert block in hints, path
        if key:
            assert key in {f.name for f in dataclasses.fields(hints[block])}, path

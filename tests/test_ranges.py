"""Every numeric config value is checked against the range declared beside its field.

The bad values are *derived* from the schema: every numeric field of every block of a job
(the training job's blocks, every registered task family's and model architecture's own
schema, the source run's overrides) gets NaN, +-inf, a value just outside each bound, and for
integers 2**70, and validation must refuse each, naming the key -- so the suite grows with the
schema. A numeric field without a declared range fails the first test. A sample goes through
``scripts/train.py`` end to end: exit 2, one line, nothing written.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import subprocess
import typing
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest

from conftest import PYTHON, REPO, compose_job, script_env
from groktransfer.config.ranges import Range, field_range, numeric_fields
from groktransfer.config.schema import ConfigError, TrainJobConfig, to_typed
from groktransfer.config.validate import validate_job_config


def schema_classes() -> List[type]:
    """Every config dataclass a job can hold: the job's blocks, each family's and architecture's schema."""
    from groktransfer.model.registry import MODELS
    from groktransfer.tasks.registry import TASK_FAMILIES

    seen: List[type] = []

    def walk(schema: type) -> None:
        if schema in seen:
            return
        seen.append(schema)
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            tp = hints[f.name]
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp
            if dataclasses.is_dataclass(tp):
                walk(tp)

    from hydra_plugins.groktransfer_ensemble_launcher.config import EnsembleLauncherConf

    walk(TrainJobConfig)
    walk(EnsembleLauncherConf)
    for name in TASK_FAMILIES.names():
        walk(TASK_FAMILIES.get(name).config_class)
    for name in MODELS.names():
        walk(MODELS.get(name).config_class)
    return seen


def test_every_numeric_field_declares_its_range() -> None:
    missing = [f"{cls.__name__}.{name}" for cls in schema_classes() for name, f in numeric_fields(cls).items() if field_range(f) is None]
    assert missing == [], "declare a range with groktransfer.config.ranges.bounded(...)"


def numeric_paths(obj: Any, prefix: str = "") -> Iterator[Tuple[str, Range, bool, Any]]:
    """(dotted key, range, integer?, current value) of every numeric field in a typed job."""
    hints = typing.get_type_hints(type(obj))
    numeric = numeric_fields(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from numeric_paths(value, f"{prefix}{f.name}.")
        elif f.name in numeric:
            tp = hints[f.name]
            integer = "int" in str(tp) and "float" not in str(tp)
            yield f"{prefix}{f.name}", field_range(f), integer, value


def bad_values(bounds: Range, integer: bool) -> List[Any]:
    """What each field must refuse: non-finite numbers, each bound crossed, a huge integer."""
    out: List[Any] = [] if integer else [math.nan, math.inf]
    step = 1 if integer else 1e-9
    if bounds.ge is not None:
        out.append(bounds.ge - step if integer else bounds.ge - max(step, abs(bounds.ge) * 1e-9))
    if bounds.gt is not None:
        out.append(bounds.gt)
    if bounds.le is not None:
        out.append(bounds.le + step if integer else bounds.le + max(step, abs(bounds.le) * 1e-9))
    if bounds.lt is not None:
        out.append(bounds.lt)
    if integer:
        out.append(2**70)
    return out


def with_value(job: Any, path: str, value: Any) -> Any:
    job = copy.deepcopy(job)
    *parents, leaf = path.split(".")
    node = job
    for key in parents:
        node = getattr(node, key)
    current = getattr(node, leaf)
    setattr(node, leaf, [value, *current[1:]] if isinstance(current, list) else value)
    return job


#: jobs whose blocks hold every built-in schema: the modular family and the transformer with a
#: source run (its overrides set), the digit family, and every filter and optimizer block
JOBS = {
    "modular": ["transfer=grokked", "transfer.source.p=113", "transfer.source.frac_train=0.5", "transfer.source.source_seed=1",
                "transfer.source.epoch=10", "transfer.source.path_index=0", "transfer.grokked.max_restricted_test_gap=0.1",
                "transfer.grokked.max_n_key_freqs=5", "train.batch_size=64", "train.timeout_minutes=5", "model.n_ctx=3",
                "model.d_vocab=114", "model.d_vocab_out=113", "task.data_seed=1", "model.model_seed=1",
                "optimizer.muon.lr=1e-3", "optimizer.muon.weight_decay=0.1"],
    "digit": ["task=digit_add", "task.n_digits=3", "task.n_train=100", "task.n_test=50", "transfer.source.n_train=100", "transfer.source.n_test=50"],
}  # fmt: skip


def cases() -> Iterator[Any]:
    for name, overrides in JOBS.items():
        job = to_typed(TrainJobConfig, compose_job(overrides))
        for path, bounds, integer, value in numeric_paths(job):
            if value is None and path.startswith(("transfer.source.", "train.")) and name != "modular":
                continue
            for bad in bad_values(bounds, integer):
                yield pytest.param(name, path, bad, id=f"{name}:{path}={bad!r}")


CASES = list(cases())


@functools.lru_cache(maxsize=None)
def base_job(name: str) -> Any:
    return to_typed(TrainJobConfig, compose_job(JOBS[name]))


@pytest.mark.parametrize("name", list(JOBS))
def test_the_base_jobs_are_valid(name: str) -> None:
    validate_job_config(base_job(name))  # so that each refusal below is the bad value's


def test_the_generated_cases_cover_every_field() -> None:
    fields = {(c.values[0], c.values[1]) for c in CASES}
    modular = {p for j, p in fields if j == "modular"}
    assert len(CASES) > 300 and len(modular) >= 60
    assert {"seed", "optimizer.lr", "optimizer.betas", "gradfilter.ma.window", "model.d_model", "task.p",
            "transfer.source.frac_train", "transfer.memorized.max_test_acc", "train.threads"} <= modular  # fmt: skip


@pytest.mark.parametrize("job_name, path, bad", CASES)
def test_a_value_outside_its_range_is_refused_naming_the_key(job_name: str, path: str, bad: Any) -> None:
    job = with_value(base_job(job_name), path, bad)
    with pytest.raises(ConfigError) as info:
        validate_job_config(job)
    message = str(info.value)
    assert "\n" not in message and path.split(".")[-1] in message, message


@pytest.mark.parametrize(
    "overrides, line",
    [
        (["optimizer.lr=nan"], "invalid config: optimizer.lr=nan: must be finite"),
        (["optimizer.weight_decay=inf"], "invalid config: optimizer.weight_decay=inf: must be finite"),
        (["seed=1180591620717411303424"], "seed=1180591620717411303424: must fit a signed 64-bit integer"),
        (["optimizer=sgd", "optimizer.sgd.momentum=1.5"], "optimizer.sgd.momentum=1.5: must be <= 1"),
        (["gradfilter=ma", "gradfilter.ma.window=1000000000"], "needs about"),
        (["transfer=grokked", "transfer.grokked.held_for=-5"], "transfer.grokked.held_for=-5: must be >= 0"),
    ],
)
def test_train_py_refuses_in_one_line_and_writes_nothing(overrides: List[str], line: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, "scripts/train.py", "debug=smoke", f"paths.root={tmp_path}", "logger=none", *overrides],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(out) == 1 and line in out[0], out
    assert not any(tmp_path.rglob("*")), "a refused job wrote something"

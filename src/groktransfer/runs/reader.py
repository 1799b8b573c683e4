"""The run-directory reader: one run's files read once, checked, and handed on as objects.

Everything after training -- the sweep report, the circuit analysis, the interpretability
section, the single-checkpoint command -- reads run directories through :func:`read_run`,
never by opening ``config.yaml`` or ``source.json`` itself. What a file holds is checked
against what it must hold (a status record of a known schema, a config that is a mapping of
the right types, a source record whose ``chosen`` start has an epoch, tables with an
``epoch`` column); a file that is damaged or unreadable is recorded as a
:class:`FileProblem` -- path and what is wrong -- which the report names. A missing file is
not a problem where the format allows it (a random start has no ``source.json``; a job that
crashed before training has no status record); a damaged one always is.

File names are ``groktransfer.runs.rundir``'s; this module only reads.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from groktransfer.runs.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FINAL_CHECKPOINT,
    HYDRA_DIR,
    MEASURES_FILE,
    METRICS_FILE,
    SOURCE_FILE,
    STATUS_FILE,
    SchemaVersionError,
    StatusRecord,
    read_status_file,
)

__all__ = [
    "ChosenStart",
    "FileProblem",
    "RunConfig",
    "RunContents",
    "SchemaVersionError",
    "SourceRecord",
    "read_run",
    "read_table",
]


@dataclass(frozen=True)
class FileProblem:
    """A file of a run directory that could not be read as what it must be."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class _Invalid(ValueError):
    """A field of a record does not have the type the format gives it."""


# --------------------------------------------------------------------------- typed fields
def _get(data: Mapping[str, Any], *keys: str) -> Any:
    """Nested lookup; None where a level is missing (an absent key is the format's default)."""
    node: Any = data
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _int(data: Mapping[str, Any], *keys: str) -> int | None:
    value = _get(data, *keys)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise _Invalid(f"{'.'.join(keys)}={value!r} is not an integer")
    return int(value)


def _float(data: Mapping[str, Any], *keys: str) -> float | None:
    value = _get(data, *keys)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"{'.'.join(keys)}={value!r} is not a number")
    return float(value)


def _str(data: Mapping[str, Any], *keys: str) -> str | None:
    value = _get(data, *keys)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise _Invalid(f"{'.'.join(keys)} is a {type(value).__name__}, not a name")
    return str(value)


def _mapping(data: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    value = _get(data, *keys)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Invalid(f"{'.'.join(keys)} is not a mapping")
    return dict(value)


# --------------------------------------------------------------------------- status.json
#: status-record fields the analysis computes with, and their types
_STATUS_INTS = ("seed", "data_seed", "model_seed", "source_seed", "epoch", "failed_epoch", "max_epochs", "p")
_STATUS_FLOATS = ("wall_time_s",)
_STATUS_MAPPINGS = ("thresholds", "final")


def check_status(record: StatusRecord) -> StatusRecord:
    """``record`` if the fields the analysis reads have their types (else ``ValueError`` naming one)."""
    data = record.as_dict()
    for key in _STATUS_INTS:
        _int(data, key)
    for key in _STATUS_FLOATS:
        _float(data, key)
    for key in _STATUS_MAPPINGS:
        _mapping(data, key)
    for entry in record.thresholds.values():  # {epoch, held}, or a bare epoch (older records)
        _int(entry if isinstance(entry, Mapping) else {"epoch": entry}, "epoch")
    return record


# --------------------------------------------------------------------------- config.yaml
@dataclass(frozen=True)
class RunConfig:
    """What the analysis reads of a run's resolved config (``config.yaml``).

    The task and model blocks stay plain mappings: they are their family's and architecture's
    own schemas (``tasks.registry.typed_task`` types a task block). ``raw`` is the whole file.
    """

    experiment: str | None = None
    seed: int | None = None
    task: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    transfer: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    weight_decay: float | None = None
    max_epochs: int | None = None
    logger_group: str | None = None
    key_freq_threshold: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """The typed view of a config mapping; a field of the wrong type raises ``ValueError``."""
        return cls(
            experiment=_str(data, "experiment_name"),
            seed=_int(data, "seed"),
            task=_mapping(data, "task"),
            model=_mapping(data, "model"),
            transfer=_mapping(data, "transfer"),
            lr=_float(data, "optimizer", "lr"),
            weight_decay=_float(data, "optimizer", "weight_decay"),
            max_epochs=_int(data, "train", "max_epochs"),
            logger_group=_str(data, "logger", "group"),
            key_freq_threshold=_float(data, "measures", "key_freq_threshold"),
            raw=dict(data),
        )

    def value(self, *keys: str) -> Any:
        """Any key of the config by its path (``value("optimizer", "name")``); None where a level is missing."""
        return _get(self.raw, *keys)

    @property
    def task_name(self) -> str | None:
        return _str(self.task, "name")

    @property
    def condition(self) -> str | None:
        return _str(self.transfer, "name")

    @property
    def source(self) -> dict[str, Any]:
        """``transfer.source``: the source task and seed a transfer run asks for."""
        return _mapping(self.transfer, "source")

    @property
    def source_task(self) -> str | None:
        return _str(self.transfer, "source", "task")

    def criteria(self, condition: str) -> dict[str, Any] | None:
        """``transfer.<condition>``: a fixed condition's checkpoint criteria, if the config has them."""
        value = self.transfer.get(condition)
        return dict(value) if isinstance(value, Mapping) else None


# --------------------------------------------------------------------------- source.json
@dataclass(frozen=True)
class ChosenStart:
    """The checkpoint a transfer run started from, with the measures recorded at the start.

    From a cached source run: its ``chosen`` record; from a checkpoint file
    (``transfer.source.path``): the file's epoch and the measures computed on it.
    """

    epoch: int | None
    checkpoint: str | None = None
    condition: str | None = None
    requested_epoch: int | None = None
    train_acc: float | None = None
    test_acc: float | None = None
    measures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceRecord:
    """``source.json``: where a transfer run's initial weights came from."""

    condition: str | None
    start: ChosenStart | None
    source_run_dir: str | None = None  # a cached source run
    source_path: str | None = None  # or an explicit checkpoint file
    source_format: str | None = None
    spec_task: dict[str, Any] = field(default_factory=dict)  # the source run's task block
    spec_model_seed: int | None = None
    components: dict[str, str] = field(default_factory=dict)
    copied: tuple[str, ...] | None = None  # parameter names copied from the source (plan.copied)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> SourceRecord:
        """The typed record; a record that is not a mapping or has a field of the wrong type raises ``ValueError``."""
        if not isinstance(data, Mapping):
            raise _Invalid("not a JSON object")
        chosen = _mapping(data, "chosen")
        start: ChosenStart | None = None
        if chosen:
            start = ChosenStart(
                epoch=_int(chosen, "epoch"),
                checkpoint=_str(chosen, "checkpoint"),
                condition=_str(chosen, "condition"),
                requested_epoch=_int(chosen, "requested_epoch"),
                train_acc=_float(chosen, "train_acc"),
                test_acc=_float(chosen, "test_acc"),
                measures=_mapping(chosen, "measures"),
            )
        elif _get(data, "source_path") is not None:
            start = ChosenStart(
                epoch=_int(data, "epoch"), checkpoint=_str(data, "source_path"), measures=_mapping(data, "measures")
            )
        copied = _get(data, "plan", "copied")
        if copied is not None and not isinstance(copied, list):
            raise _Invalid("plan.copied is not a list")
        return cls(
            condition=_str(data, "condition"),
            start=start,
            source_run_dir=_str(data, "source_run_dir"),
            source_path=_str(data, "source_path"),
            source_format=_str(data, "source_format"),
            spec_task=_mapping(data, "spec", "task"),
            spec_model_seed=_int(data, "spec", "model_seed"),
            components={str(k): str(v) for k, v in _mapping(data, "components").items()},
            copied=None if copied is None else tuple(str(x) for x in copied),
            raw=dict(data),
        )

    @property
    def copies_mlp(self) -> bool:
        """Whether the target's MLP started as the source's (copied or frozen): shared neuron lineage."""
        if self.copied is not None:
            return any(".mlp." in name for name in self.copied)
        return self.components.get("mlp", "copy") in ("copy", "freeze")


# --------------------------------------------------------------------------- tables
def read_table(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """(table, problem) of a metrics or measures CSV; (None, None) when the file is absent or empty.

    Rows are sorted by epoch and a repeated epoch keeps its last row (a resumed run may append
    an epoch it had written before the interruption). Lines that do not parse are skipped and
    counted in the problem, so a torn table is named in the report instead of read silently.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return None, None
    skipped: list[Any] = []
    try:
        text = path.read_text(encoding="utf-8")
        df = pd.read_csv(io.StringIO(text), on_bad_lines=skipped.append, engine="python", index_col=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        return None, f"unreadable: {type(exc).__name__}: {exc}"
    if "epoch" not in df.columns:
        return None, "no epoch column"
    epochs = pd.to_numeric(df["epoch"], errors="coerce")
    bad_epochs = int(epochs.isna().sum())
    df = df.assign(epoch=epochs).dropna(subset=["epoch"]).sort_values("epoch", kind="stable")
    df = df.drop_duplicates("epoch", keep="last").reset_index(drop=True)
    problems = []
    if skipped:
        problems.append(f"{len(skipped)} malformed line(s) skipped")
    if bad_epochs:
        problems.append(f"{bad_epochs} row(s) without a numeric epoch skipped")
    return (df if len(df) else None), ("; ".join(problems) or None)


# --------------------------------------------------------------------------- one run directory
class RunContents:
    """One run directory as read: its status record, config, source record and tables.

    The status record, config and source record are read when the object is made; the two
    tables when first asked for, once. ``problems`` lists every damaged or unreadable file met.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.problems: list[FileProblem] = []
        self.status: StatusRecord | None = None
        self.status_present = (self.path / STATUS_FILE).exists()
        self.config = RunConfig()
        self.source: SourceRecord | None = None
        self._read_status()
        self._read_config()
        self._read_source()

    def __repr__(self) -> str:
        return f"RunContents({str(self.path)!r})"

    def _problem(self, name: str, what: str) -> None:
        self.problems.append(FileProblem(self.path / name, what))

    def _read_status(self) -> None:
        if not self.status_present:
            return
        try:
            record = read_status_file(self.path / STATUS_FILE)
            self.status = None if record is None else check_status(record)
        except SchemaVersionError:
            raise  # a newer format: the caller stops with the message, nothing is misread
        except (OSError, ValueError, TypeError) as exc:
            self._problem(STATUS_FILE, f"not a status record: {exc}")
            return
        if record is None:
            self._problem(STATUS_FILE, "not complete JSON")

    def _read_config(self) -> None:
        for name in (CONFIG_FILE, f"{HYDRA_DIR}/{CONFIG_FILE}"):
            path = self.path / name
            if not path.is_file():
                continue
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
                if not isinstance(data, Mapping):
                    raise _Invalid("not a YAML mapping")
                self.config = RunConfig.from_dict(data)
                return
            except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as exc:
                self._problem(name, f"unreadable config: {exc}")

    def _read_source(self) -> None:
        path = self.path / SOURCE_FILE
        if not path.is_file():
            return
        try:
            self.source = SourceRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self._problem(SOURCE_FILE, f"not a source record: {exc}")

    def _table(self, name: str) -> pd.DataFrame | None:
        df, problem = read_table(self.path / name)
        if problem:
            self._problem(name, problem)
        return df

    @cached_property
    def metrics(self) -> pd.DataFrame | None:
        """``metrics.csv`` (sorted by epoch), or None when absent, empty or unreadable."""
        return self._table(METRICS_FILE)

    @cached_property
    def measures(self) -> pd.DataFrame | None:
        """``measures.csv`` (sorted by epoch), or None when absent, empty or unreadable."""
        return self._table(MEASURES_FILE)

    @property
    def final_checkpoint(self) -> Path | None:
        """``checkpoints/final.pt`` if the run wrote it."""
        path = self.path / CHECKPOINT_DIR / FINAL_CHECKPOINT
        return path if path.is_file() else None

    def data_seed(self) -> int:
        """The split seed the run used: the status record's, else the config's, else the job seed (0 if none)."""
        for value in (
            self.status.data_seed if self.status else None,
            _get(self.config.task, "data_seed"),
            self.config.seed,
            self.status.seed if self.status else None,
        ):
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and not (isinstance(value, float) and math.isnan(value))
            ):
                return int(value)
        return 0


def read_run(path: Path | str) -> RunContents:
    """Read one run directory (see :class:`RunContents`); a status record of a newer schema raises
    ``SchemaVersionError``, every other damage is recorded in ``problems``."""
    return RunContents(path)


def problems_of(runs: Sequence[RunContents]) -> list[FileProblem]:
    """Every problem of ``runs``, in order."""
    return [p for r in runs for p in r.problems]

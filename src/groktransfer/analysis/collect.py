"""Find run directories under sweep directories and read their status records.

The run-directory contract (``groktransfer.runs.rundir``) is the analysis job's only
input; each run's files are read once, by ``groktransfer.runs.reader``. A run dir is any directory holding a status record; a job dir that has
Hydra's ``.hydra/`` but no status record crashed before the trainer wrote
anything and is still *listed* (as "no status"), because a sweep report that
silently drops crashed jobs overstates how well the sweep went. A status record
written by a newer schema stops the analysis with one clear message.
"""

from __future__ import annotations

import csv
import glob
import io
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from groktransfer.runs.integrity import MISMATCH, read_manifest, sha256
from groktransfer.runs.reader import RunContents, SchemaVersionError, read_run
from groktransfer.runs.rundir import (
    CHECKPOINT_DIR,
    HYDRA_DIR,
    METRICS_FILE,
    PROFILE_DIR,
    STATUS_FILE,
    WANDB_DIR,
    RunDir,
    Status,
    StatusRecord,
)
from groktransfer.utils.errors import UserError

# Directories that never hold a sweep's job dirs (source cache, run index, our own output,
# W&B files, checkpoints) -- pruned from the recursive search.
SKIP_DIRS = frozenset(
    {"analysis", ".sources", ".index", WANDB_DIR, CHECKPOINT_DIR, PROFILE_DIR, HYDRA_DIR, "__pycache__"}
)

NO_STATUS = "no status"
UNREADABLE = "unreadable"
GLOB_CHARS = set("*?[")


class SweepInputError(UserError, ValueError):
    """Input the analysis cannot start from: sweep dir(s) missing or without runs, an unknown
    section name. Raised before anything is written (``scripts/analyze.py``: one line, exit 2)."""


@dataclass
class RunRecord:
    """One job of a sweep as the analysis sees it: its status record plus where it lives."""

    sweep: Path
    run_dir: Path
    status: str
    reason: str | None = None
    run_id: str | None = None
    experiment: str | None = None
    task: str | None = None
    condition: str | None = None
    seed: int | None = None
    epoch: int | None = None
    failed_epoch: int | None = None
    stop_reason: str | None = None
    max_epochs: int | None = None
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float | None = None
    updated_at: str | None = None
    stale: bool = False
    logger_group: str | None = None
    # transfer axes: which source task, and which source epoch the start came from (status.json
    # "source" record, else the config); the optimizer settings, for fair-baseline checks
    source_task: str | None = None
    source_epoch: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    reused_from: str | None = None
    # the run directory's files as read (config, source record, tables); None for a record made by hand
    contents: RunContents | None = field(default=None, repr=False, compare=False)

    @property
    def completed(self) -> bool:
        """Only completed runs enter the statistics (as reached or censored)."""
        return self.status == Status.COMPLETED

    @property
    def status_label(self) -> str:
        """Status as shown to a reader: a running run nobody updates is flagged stale."""
        return f"{Status.RUNNING}/stale" if self.status == Status.RUNNING and self.stale else self.status

    @property
    def name(self) -> str:
        """Path of the run dir relative to its sweep dir (``.`` if the sweep dir is the run)."""
        try:
            return str(self.run_dir.relative_to(self.sweep)) or "."
        except ValueError:
            return str(self.run_dir)


# --------------------------------------------------------------------------- sweep dirs


def resolve_sweep_dirs(spec: str | os.PathLike | Iterable[str | os.PathLike] | None) -> list[Path]:
    """Expand ``sweep_dir`` (a path, a glob, or a list of either) into existing directories.

    An explicit path must exist; a glob must match at least one directory. Both fail
    with one clear message *before* anything is written.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise SweepInputError("sweep_dir is required, e.g. sweep_dir=multirun/quickstart/<date>_<time>")
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise SweepInputError("sweep_dir is an empty list")
    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if GLOB_CHARS & set(text):
            matches = [Path(m) for m in sorted(glob.glob(text)) if Path(m).is_dir()]
            matches = [m for m in matches if m.name not in SKIP_DIRS]
            if not matches:
                raise SweepInputError(f"sweep_dir pattern matches no directory: {text}")
            # a pattern may also match dirs that are not sweeps (a README dir, an empty dir):
            # drop those, but keep the error if nothing with runs is left
            matches = [m for m in matches if any(find_run_dirs(m))]
            if not matches:
                raise SweepInputError(f"sweep_dir pattern matches no directory with runs: {text}")
            out.extend(matches)
        else:
            path = Path(text)
            if not path.is_dir():
                raise SweepInputError(f"sweep_dir does not exist or is not a directory: {text}")
            out.append(path)
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def find_run_dirs(sweep_dir: Path) -> tuple[list[Path], list[Path]]:
    """Return (dirs with a status record, job dirs with ``.hydra/`` but none), sorted.

    The search is recursive because sweeps nest (``multirun/<exp>/<date>/<job>``) and
    job names are not part of the contract; it does not descend into a run dir.
    """
    runs: list[Path] = []
    crashed: list[Path] = []
    for root, dirs, files in os.walk(sweep_dir):
        here = Path(root)
        if STATUS_FILE in files:
            runs.append(here)
            dirs[:] = []
            continue
        if HYDRA_DIR in dirs:
            crashed.append(here)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
    return sorted(runs), sorted(crashed)


# --------------------------------------------------------------------------- reading


def _timestamp(value: Any, fallback: float) -> float:
    """Seconds since the epoch from an ISO string or a number; ``fallback`` if unparsable."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        if dt.tzinfo is None:  # naive: written in the machine's local time
            return dt.timestamp()
        return dt.astimezone(timezone.utc).timestamp()
    return fallback


def _finite(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def load_run(run_dir: Path, sweep: Path, stale_after_s: float, now: float | None = None) -> RunRecord:
    """Read one run dir (status record present or not) into a ``RunRecord``.

    The files are read once, by ``groktransfer.runs.reader``; the record keeps them
    (``contents``) for the sections. Metadata missing from the status record (condition,
    seed, task) is taken from the run's config so crashed jobs can still be attributed to a
    condition. A record of a newer schema raises ``SweepInputError``.
    """
    now = time.time() if now is None else now
    try:
        contents = read_run(run_dir)
    except SchemaVersionError as exc:
        raise SweepInputError(str(exc)) from None
    cfg = contents.config
    st = contents.status
    rec = RunRecord(sweep=sweep, run_dir=run_dir, status=NO_STATUS, contents=contents)
    if st is not None:
        rec.status = str(st.status or UNREADABLE)
        rec.reason = st.reason
        rec.run_id = st.run_id
        rec.experiment = st.experiment
        rec.task = st.task
        rec.condition = st.condition
        rec.seed = st.seed
        rec.epoch = st.epoch
        rec.failed_epoch = st.failed_epoch
        rec.stop_reason = st.stop_reason
        rec.max_epochs = st.max_epochs
        rec.thresholds = st.thresholds or {}
        rec.final = st.final or {}
        rec.wall_time_s = _finite(st.wall_time_s)
        rec.updated_at = st.updated_at
        rec.reused_from = st.reused_from
    elif contents.status_present:
        rec.status = UNREADABLE
        rec.reason = "; ".join(p.problem for p in contents.problems if p.path.name == STATUS_FILE)
        rec.reason = f"{STATUS_FILE} unreadable: {rec.reason}"
    else:
        rec.reason = f"no {STATUS_FILE} (crashed before start?)"
    rec.experiment = rec.experiment or cfg.experiment
    rec.task = rec.task or cfg.task_name
    rec.condition = rec.condition or cfg.condition or "unknown"
    rec.seed = rec.seed if rec.seed is not None else cfg.seed
    rec.max_epochs = rec.max_epochs if rec.max_epochs is not None else cfg.max_epochs
    rec.logger_group = cfg.logger_group
    if rec.condition != "random":
        rec.source_task = cfg.source_task
        source_epoch = (st.source or {}).get("epoch") if st is not None and isinstance(st.source, dict) else None
        rec.source_epoch = int(source_epoch) if isinstance(source_epoch, (int, float)) else None
        if rec.condition == "checkpoint" and rec.source_epoch is not None:
            rec.condition = f"checkpoint@{rec.source_epoch}"  # one condition per source epoch in every table
    rec.lr = cfg.lr
    rec.weight_decay = cfg.weight_decay
    if st is not None and rec.status == Status.COMPLETED:
        problem = result_problem(run_dir, st)
        if problem is not None:  # a completed run whose result cannot be read is not counted
            rec.status, rec.reason = UNREADABLE, problem
    if rec.status == Status.RUNNING:
        mtime = (run_dir / STATUS_FILE).stat().st_mtime
        rec.stale = now - _timestamp(rec.updated_at, mtime) > stale_after_s
    return rec


def _as_int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError, OverflowError):
        return None


def _as_float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def result_problem(run_dir: Path, st: StatusRecord) -> str | None:
    """Why a run whose status says completed cannot be read as a result (None: it can)."""
    for key in ("train_acc", "test_acc"):
        value = (st.final or {}).get(key)
        number = _as_float(value) if not isinstance(value, bool) else None
        if number is None or not 0.0 <= number <= 1.0:
            return f"{STATUS_FILE}: final {key} is not an accuracy ({value!r})"
    if _as_int(st.epoch) is None:
        return f"{STATUS_FILE}: epoch is not a number ({st.epoch!r})"
    for key, entry in (st.thresholds or {}).items():
        epoch = entry.get("epoch") if isinstance(entry, dict) else entry
        if not isinstance(entry, dict) or (epoch is not None and (isinstance(epoch, bool) or _as_int(epoch) is None)):
            return f"{STATUS_FILE}: threshold {key} has no readable epoch ({entry!r})"
    # metrics.csv carries the curves and the threshold epochs: a damaged one keeps the run out of
    # the statistics; a damaged measures.csv is named by the reader and the run still counts
    recorded = read_manifest(RunDir(run_dir)) or {}
    return table_problem(run_dir, METRICS_FILE, recorded, last_epoch=_as_int(st.epoch))


def table_problem(run_dir: Path, name: str, manifest: dict[str, str], last_epoch: int | None = None) -> str | None:
    """Why a run's CSV table cannot be read in full (None: it can, or it is absent and was never recorded).

    It must match its checksum where ``manifest`` records one, be UTF-8 text with a header
    naming ``epoch``, have whole rows (a half-written file ends in a short one) with numeric
    epochs, and -- for ``metrics.csv`` of a completed run -- end at the run's last epoch.
    """
    path = run_dir / name
    recorded = manifest.get(name)
    if not path.is_file():
        return f"{name} is missing" if recorded is not None else None
    try:
        if recorded is not None and sha256(path) != recorded:
            return f"{name} {MISMATCH}"
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return f"{name} is not text (binary data)"
    except OSError as exc:
        return f"{name} cannot be read ({exc.strerror or exc})"
    if not text.strip():
        return f"{name} is empty"
    if "\0" in text:
        return f"{name} is not text (binary data)"
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], [r for r in rows[1:] if r]
    if "epoch" not in header:
        return f"{name} has no epoch column (header {','.join(header)[:80]!r})"
    if not body:
        return f"{name} has a header but no rows"
    col = header.index("epoch")
    for n, row in enumerate(body, start=2):
        if len(row) != len(header):
            return f"{name} row {n} has {len(row)} of {len(header)} fields (half-written?)"
        if _as_int(_as_float(row[col])) is None:
            return f"{name} row {n} has no numeric epoch ({row[col]!r})"
    if not text.endswith("\n"):
        return f"{name} ends mid-line (half-written?)"
    final = int(float(body[-1][col]))
    if last_epoch is not None and final != last_epoch:
        return f"{name} ends at epoch {final} but the run ended at epoch {last_epoch} (truncated?)"
    return None


def collect_runs(sweep_dirs: list[Path], stale_after_s: float = 3600.0) -> list[RunRecord]:
    """All runs of all sweeps (deduplicated by real path), in a stable order.

    Raises ``SweepInputError`` if an explicitly given sweep dir holds no job at all,
    so a typo'd or still-empty sweep is a clear error rather than an empty report.
    """
    seen: set[Path] = set()
    records: list[RunRecord] = []
    now = time.time()
    for sweep in sweep_dirs:
        runs, crashed = find_run_dirs(sweep)
        if not runs and not crashed:
            raise SweepInputError(f"no run directories ({STATUS_FILE} or {HYDRA_DIR}/) under {sweep}")
        for d in runs + crashed:
            key = d.resolve()
            if key in seen:
                continue
            seen.add(key)
            records.append(load_run(d, sweep, stale_after_s, now))
    records = drop_reused_copies(records)
    records.sort(key=lambda r: (str(r.sweep), r.condition or "", r.seed if r.seed is not None else -1, str(r.run_dir)))
    return records


def drop_reused_copies(records: list[RunRecord]) -> list[RunRecord]:
    """One record per run identity: a reused copy (``reused_from``) of a run already present is dropped.

    A sweep reuses a completed run instead of retraining it (a rerun sweep, or a matrix /
    trajectory sweep whose random jobs do not depend on the source axis); counting each
    copy would multiply that run's weight in every statistic.
    """
    originals = {r.run_id for r in records if r.run_id and not r.reused_from}
    kept: list[RunRecord] = []
    seen: set[str] = set()
    for r in records:
        if r.run_id and r.reused_from:
            if r.run_id in originals or r.run_id in seen:
                continue
            seen.add(r.run_id)
        kept.append(r)
    return kept

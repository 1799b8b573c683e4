"""The local sink: the run directory's CSV files, the analysis' source of truth.

Files (names and columns: ``groktransfer.runs.rundir``)::

    METRICS_FILE   METRIC_COLUMNS [+ extra keys...]
    MEASURES_FILE  epoch + scalar measures (union of every key seen, stable order)
    FREQS_FILE     long format: epoch + the keys of each per-frequency row

Why rewrite instead of append: an appended CSV is torn by a SIGKILL mid-line, and its
header cannot grow when a new measure shows up. So every table is held in memory and
the *whole* file is replaced atomically (``groktransfer.utils.atomic``); a reader (pandas,
the analysis job) always sees a complete file. The files stay small (a few MB at most
for 25k epochs), and each row is rendered to its CSV line once and cached, so a
rewrite is a join plus one write.

When the files are written -- the flush policy:

* ``log_metrics`` (every eval, ~every 10 epochs) only buffers; the metrics table is
  rewritten when at least ``flush_interval_s`` (default 5 s) has passed since its last
  write. There is no background thread: between calls nothing happens, which is fine
  because nothing new exists between calls either. These timed rewrites skip fsync
  (a rewrite is ~1 ms instead of ~10 ms): atomicity towards readers and against a
  SIGKILL only needs ``os.replace``; fsync only matters for a machine crash.
* ``log_measures``, ``log_checkpoint``, ``log_summary`` and ``finish`` rewrite every
  table that changed, fsynced. The trainer should call them *before* it saves
  the resume state for that epoch, so the files on disk always cover the epoch a resumed
  job restarts from.

Resume: with ``meta.resume`` the existing files are loaded and rows with
``epoch > meta.resume_epoch`` are dropped (they will be replayed), so the resumed run
ends with exactly the rows an uninterrupted run would have. ``resume_epoch=None``
means there was no saved state: the run restarts from scratch and all rows go.
Without resume, existing files raise ``RunDirExistsError`` -- the caller decides
(``force`` deletes the run directory first).

Logging the same epoch twice in a row updates that row instead of duplicating it, so
an eval repeated at the resume epoch, or extra keys logged in a second call, are safe.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from groktransfer.runs.rundir import METRIC_COLUMNS, METRICS_FILE, RESUME_FILE, RunDir
from groktransfer.sinks.base import RunMeta
from groktransfer.utils import atomic

log = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL_S = 5.0


class RunDirExistsError(FileExistsError):
    """The run directory already holds local run files and this is not a resume."""


def format_cell(value: Any) -> str:
    """One CSV cell: lossless for floats (``repr``), empty for missing values.

    numpy/torch scalars are unwrapped first (numpy 2's ``repr`` would otherwise write
    ``np.float32(0.5)``); lists are joined with spaces, the convention for
    ``key_freqs``.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (list, tuple)):
        try:
            value = item()
        except (ValueError, RuntimeError):  # a non-scalar array: fall through to str
            pass
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)  # nan, inf, -inf
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return " ".join(format_cell(v) for v in value)
    return str(value)


def _parse_epoch(text: str, path: Path) -> int:
    try:
        return int(float(text))
    except ValueError:
        raise ValueError(f"{path}: cannot parse epoch {text!r}; the file is not a run table") from None


class CsvTable:
    """One CSV file held in memory, with a growing column set, rewritten atomically.

    Cells are stored already formatted, so rows loaded from disk on resume are
    written back byte-identical. Each row's CSV line is cached for the current
    columns and re-rendered only when a new column appears.
    """

    def __init__(self, path: Path, base_columns: Sequence[str] = ("epoch",)) -> None:
        self.path = path
        self.columns: list[str] = list(base_columns)
        self._known = set(self.columns)
        self._epochs: list[int] = []
        self._rows: list[dict[str, str]] = []
        self._lines: list[str] = []
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf, lineterminator="\n")
        self.dirty = True

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def last_epoch(self) -> int | None:
        return self._epochs[-1] if self._epochs else None

    def _render(self, cells: Iterable[str]) -> str:
        self._buf.seek(0)
        self._buf.truncate()
        self._writer.writerow(list(cells))
        return self._buf.getvalue()

    def _line(self, row: Mapping[str, str]) -> str:
        return self._render(row.get(c, "") for c in self.columns)

    def _add_columns(self, keys: Iterable[str]) -> None:
        new = [k for k in keys if k not in self._known]
        if new:
            self.columns.extend(new)
            self._known.update(new)
            self._lines = [self._line(r) for r in self._rows]

    def load(self, keep_through: int | None) -> int:
        """Read the file back (resume); keep rows with epoch <= ``keep_through``.

        ``keep_through=None`` keeps nothing. Returns the number of rows dropped.
        """
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            records = list(reader)
        if not header:
            return 0
        if "epoch" not in header:
            raise ValueError(f"{self.path}: no 'epoch' column; refusing to resume from it")
        self._add_columns(header)
        dropped = 0
        for record in records:
            row = dict(zip(header, record))
            epoch = _parse_epoch(row["epoch"], self.path)
            if keep_through is None or epoch > keep_through:
                dropped += 1
                continue
            self._append(epoch, row)
        self.dirty = True
        return dropped

    def _append(self, epoch: int, row: dict[str, str]) -> None:
        self._epochs.append(epoch)
        self._rows.append(row)
        self._lines.append(self._line(row))

    def upsert(self, epoch: int, values: Mapping[str, Any]) -> None:
        """Append a row, or merge into the last row when it has the same epoch."""
        cells = {"epoch": str(int(epoch))}
        cells.update((str(k), format_cell(v)) for k, v in values.items() if k != "epoch")
        self._add_columns(cells)
        if self._epochs and self._epochs[-1] == epoch:
            self._rows[-1].update(cells)
            self._lines[-1] = self._line(self._rows[-1])
        else:
            self._append(epoch, cells)
        self.dirty = True

    def replace_epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append several rows for one epoch, replacing that epoch if it is the last one."""
        while self._epochs and self._epochs[-1] == epoch:
            self._epochs.pop()
            self._rows.pop()
            self._lines.pop()
        for values in rows:
            cells = {str(k): format_cell(v) for k, v in values.items() if k != "epoch"}
            cells["epoch"] = str(int(epoch))
            self._add_columns(cells)
            self._append(epoch, cells)
        self.dirty = True

    def text(self) -> str:
        return self._render(self.columns) + "".join(self._lines)

    def flush(self, fsync: bool = True) -> bool:
        """Rewrite the file if anything changed; returns whether it wrote."""
        if not self.dirty:
            return False
        atomic.write_text(self.path, self.text(), fsync=fsync)
        self.dirty = False
        return True


class LocalSink:
    """Writes the metrics, measures and per-frequency tables (see module doc)."""

    def __init__(
        self,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self._metrics: CsvTable | None = None
        self._measures: CsvTable | None = None
        self._freqs: CsvTable | None = None
        self._last_metrics_flush = 0.0
        self._finished = False

    @property
    def tables(self) -> tuple[CsvTable, ...]:
        return tuple(t for t in (self._metrics, self._measures, self._freqs) if t is not None)

    def start(self, run_dir: Path, config: Mapping[str, Any], meta: RunMeta) -> None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        paths = RunDir(run_dir)
        metrics = CsvTable(paths.metrics_path, METRIC_COLUMNS)
        measures = CsvTable(paths.measures_path)
        freqs = CsvTable(paths.freqs_path)
        tables = (metrics, measures, freqs)
        existing = [t.path.name for t in tables if t.path.exists()]
        if existing and not meta.resume:
            raise RunDirExistsError(
                f"{run_dir} already holds {', '.join(existing)} from an earlier run; "
                "resume it, or rerun with force=true to start over (this sink never "
                "overwrites run files silently)"
            )
        for t in tables:
            atomic.remove_stale_temps(run_dir, t.path.name)
        if meta.resume:
            for t in tables:
                if t.path.exists():
                    dropped = t.load(meta.resume_epoch)
                    if dropped:
                        log.info(
                            "resume: dropped %d rows after epoch %s from %s", dropped, meta.resume_epoch, t.path.name
                        )
            last = metrics.last_epoch
            if meta.resume_epoch is not None and (last is None or last < meta.resume_epoch):
                log.warning(
                    "resume from epoch %s but %s ends at epoch %s: rows in between were "
                    "never flushed and will be missing (save %s after logging)",
                    meta.resume_epoch,
                    METRICS_FILE,
                    last,
                    RESUME_FILE,
                )
        self._metrics, self._measures, self._freqs = tables
        self._finished = False
        self.flush()

    def _check_open(self) -> None:
        if self._metrics is None:
            raise RuntimeError("LocalSink used before start()")
        if self._finished:
            raise RuntimeError("LocalSink used after finish()")

    def flush(self) -> None:
        """Rewrite every changed table; a failure leaves the rows in memory to retry.

        All tables are attempted even if one fails, then the first error is raised.
        """
        error: BaseException | None = None
        for t in self.tables:
            try:
                if t.flush() and t is self._metrics:
                    self._last_metrics_flush = self._clock()
            except Exception as exc:  # noqa: BLE001 -- re-raised below
                error = error or exc
        if error is not None:
            raise error

    def log_metrics(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self._check_open()
        assert self._metrics is not None
        self._metrics.upsert(epoch, metrics)
        if self._clock() - self._last_metrics_flush >= self.flush_interval_s:
            # atomic but not fsynced: enough for live readers and for a SIGKILL (the
            # page cache survives the process); durability points are the checkpoints
            self._metrics.flush(fsync=False)
            self._last_metrics_flush = self._clock()

    def log_measures(self, epoch: int, scalars: Mapping[str, Any], freq_rows: Sequence[Mapping[str, Any]]) -> None:
        self._check_open()
        assert self._measures is not None and self._freqs is not None
        self._measures.upsert(epoch, scalars)
        self._freqs.replace_epoch(epoch, freq_rows)
        self.flush()

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Flush only: thresholds and final values live in the status record (run.py)."""
        self._check_open()
        self.flush()

    def log_checkpoint(self, path: Path, epoch: int, final: bool) -> None:
        """Flush, so the CSVs cover every epoch up to the checkpoint just written."""
        self._check_open()
        self.flush()

    def finish(self, status: str) -> None:
        if self._finished or self._metrics is None:
            self._finished = True
            return
        self._finished = True
        self.flush()

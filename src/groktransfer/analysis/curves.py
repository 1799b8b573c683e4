"""Per-run training curves and their aggregation across seeds (median + inter-quartile band).

Why a common grid: seeds of one condition are evaluated at the same cadence but
stop at different epochs (early stop after the last threshold held, or
``max_epochs``), and several sweeps may mix cadences. Each run is linearly
interpolated onto the union of its condition's eval epochs (thinned to at most
``max_points``, half evenly spaced and half log-spaced so both the early and the
late phase keep detail). After a run's last eval it either holds its last value
(``after_end="hold"``, default: a run that stopped early stopped *because* the
last threshold held, so its accuracy stays there) or stops contributing
(``"drop"``); the per-point count ``n`` records how many runs each point used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from groktransfer.runs import reader
from groktransfer.runs.rundir import (
    MEASURE_BASE_COLUMNS,
    MEASURE_FOURIER_COLUMNS,
    MEASURE_INPUT_FOURIER_COLUMNS,
    MEASURES_FILE,
    METRICS_FILE,
)

from .collect import RunRecord


def read_table(run_dir: Path, filename: str) -> pd.DataFrame | None:
    """A run's metrics or measures table as ``groktransfer.runs.reader`` reads it (sorted by
    epoch, resumed epochs once); None when absent, empty or unreadable."""
    return reader.read_table(Path(run_dir) / filename)[0]


def run_table(run: RunRecord, filename: str) -> pd.DataFrame | None:
    """The run's table, read once (``RunRecord.contents``; a damaged file is named in its problems)."""
    if run.contents is None:
        return read_table(run.run_dir, filename)
    if filename == METRICS_FILE:
        return run.contents.metrics
    if filename == MEASURES_FILE:
        return run.contents.measures
    raise ValueError(f"{filename}: not a table of the run directory")


def load_tables(runs: Sequence[RunRecord], filename: str, statuses: Sequence[str]) -> dict[str, list[pd.DataFrame]]:
    """``{condition: [table per run]}`` for runs whose status is in ``statuses``."""
    out: dict[str, list[pd.DataFrame]] = {}
    for r in runs:
        if r.status not in statuses:
            continue
        df = run_table(r, filename)
        if df is not None:
            out.setdefault(r.condition or "unknown", []).append(df)
    return out


def numeric_columns(tables: dict[str, list[pd.DataFrame]], wanted: Sequence[str]) -> list[str]:
    """Those of ``wanted`` that exist with at least one finite number in some run, in order.

    A measure a task does not have (e.g. Fourier measures of a structureless task) is
    absent rather than drawn as an empty panel.
    """
    present = []
    for col in wanted:
        for dfs in tables.values():
            if any(col in df.columns and np.isfinite(pd.to_numeric(df[col], errors="coerce")).any() for df in dfs):
                present.append(col)
                break
    return present


#: panels of the default progress figure, at most (the rest are named under it)
MAX_DEFAULT_PANELS = 9
#: measures.csv columns of the run-directory format that are not drawn by default: the losses and
#: accuracies (their own figures), the per-component weight norms and the bookkeeping columns
STANDARD_COLUMNS = (
    frozenset(MEASURE_BASE_COLUMNS) | frozenset(MEASURE_FOURIER_COLUMNS) | frozenset(MEASURE_INPUT_FOURIER_COLUMNS)
)


def measure_columns(
    tables: dict[str, list[pd.DataFrame]], configured: Sequence[str] | None, preferred: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """(measures drawn in the progress figure, measures recorded but left out of it).

    ``configured`` (``analysis.measures``) draws exactly those that have a finite number. By
    default: ``preferred`` first (the modular family's restricted/excluded loss, weight norm,
    key frequencies and Ginis, where recorded), then every other numeric column the runs
    recorded that is not one of the format's standard columns -- a plugin family's own
    measures -- up to ``MAX_DEFAULT_PANELS`` panels.
    """
    if configured is not None:
        return numeric_columns(tables, configured), []
    seen = list(dict.fromkeys(c for dfs in tables.values() for df in dfs for c in df.columns))
    extra = [
        c for c in seen if c not in STANDARD_COLUMNS and c not in preferred and not c.startswith("n_") and c != "epoch"
    ]
    present = numeric_columns(tables, [*preferred, *extra])
    return present[:MAX_DEFAULT_PANELS], present[MAX_DEFAULT_PANELS:]


def common_grid(epoch_arrays: Sequence[np.ndarray], max_points: int) -> np.ndarray:
    """Union of eval epochs, thinned to ~``max_points`` (half linear, half log spaced)."""
    union = (
        np.unique(np.concatenate([np.asarray(e, dtype=float) for e in epoch_arrays])) if epoch_arrays else np.array([])
    )
    if union.size <= max_points:
        return union
    lo, hi = union[0], union[-1]
    pos = union[union > 0]
    targets = [np.linspace(lo, hi, max_points // 2)]
    if pos.size:
        targets.append(np.geomspace(pos[0], hi, max_points - max_points // 2))
    idx = np.searchsorted(union, np.concatenate(targets)).clip(0, union.size - 1)
    return np.unique(np.concatenate([union[idx], [lo, hi]]))


def interpolated(
    dfs: Sequence[pd.DataFrame], column: str, after_end: str = "hold", max_points: int = 400
) -> pd.DataFrame:
    """Every run's ``column`` on the common epoch grid, long: ``epoch``, ``run`` (index into
    ``dfs``), ``value``; after a run's last eval it holds its last value or is absent (``drop``)."""
    series = []
    for i, df in enumerate(dfs):
        if column not in df.columns:
            continue
        y = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
        x = df["epoch"].to_numpy(dtype=float)
        ok = np.isfinite(y)
        if ok.any():
            series.append((i, x[ok], y[ok]))
    if not series:
        return pd.DataFrame(columns=["epoch", "run", "value"])
    grid = common_grid([x for _, x, _ in series], max_points)
    frames = []
    for i, x, y in series:
        vals = np.interp(grid, x, y, left=np.nan, right=np.nan)
        if after_end == "hold":
            vals[grid > x[-1]] = y[-1]
        keep = np.isfinite(vals)
        frames.append(pd.DataFrame({"epoch": grid[keep], "run": i, "value": vals[keep]}))
    return pd.concat(frames, ignore_index=True)


def aggregate(dfs: Sequence[pd.DataFrame], column: str, after_end: str = "hold", max_points: int = 400) -> pd.DataFrame:
    """Median, quartiles and count of ``column`` across runs on a common epoch grid."""
    long = interpolated(dfs, column, after_end, max_points)
    cols = ["epoch", "median", "q25", "q75", "n"]
    if long.empty:
        return pd.DataFrame(columns=cols)
    g = long.groupby("epoch", sort=True)["value"]
    df = pd.DataFrame({"median": g.median(), "q25": g.quantile(0.25), "q75": g.quantile(0.75), "n": g.size()})
    return df.reset_index()[cols]

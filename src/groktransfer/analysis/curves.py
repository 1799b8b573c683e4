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

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .collect import RunRecord


def read_table(run_dir: Path, filename: str) -> pd.DataFrame | None:
    """Read a run's metrics or measures table tolerantly; None when absent or empty.

    Rows are sorted by epoch and duplicated epochs keep the last row, because a
    resumed run may append an epoch it had already written before the interruption.
    """
    path = run_dir / filename
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        df = pd.read_csv(path, on_bad_lines="skip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    if "epoch" not in df.columns:
        return None
    df["epoch"] = pd.to_numeric(df["epoch"], errors="coerce")
    df = df.dropna(subset=["epoch"]).sort_values("epoch", kind="stable")
    df = df.drop_duplicates("epoch", keep="last").reset_index(drop=True)
    return df if len(df) else None


def load_tables(runs: Sequence[RunRecord], filename: str, statuses: Sequence[str]) -> dict[str, list[pd.DataFrame]]:
    """``{condition: [table per run]}`` for runs whose status is in ``statuses``."""
    out: dict[str, list[pd.DataFrame]] = {}
    for r in runs:
        if r.status not in statuses:
            continue
        df = read_table(r.run_dir, filename)
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


def common_grid(epoch_arrays: Sequence[np.ndarray], max_points: int) -> np.ndarray:
    """Union of eval epochs, thinned to ~``max_points`` (half linear, half log spaced)."""
    union = np.unique(np.concatenate([np.asarray(e, dtype=float) for e in epoch_arrays])) if epoch_arrays else np.array([])
    if union.size <= max_points:
        return union
    lo, hi = union[0], union[-1]
    pos = union[union > 0]
    targets = [np.linspace(lo, hi, max_points // 2)]
    if pos.size:
        targets.append(np.geomspace(pos[0], hi, max_points - max_points // 2))
    idx = np.searchsorted(union, np.concatenate(targets)).clip(0, union.size - 1)
    return np.unique(np.concatenate([union[idx], [lo, hi]]))


def aggregate(dfs: Sequence[pd.DataFrame], column: str, after_end: str = "hold", max_points: int = 400) -> pd.DataFrame:
    """Median, quartiles and count of ``column`` across runs on a common epoch grid."""
    series = []
    for df in dfs:
        if column not in df.columns:
            continue
        y = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
        x = df["epoch"].to_numpy(dtype=float)
        ok = np.isfinite(y)
        if ok.any():
            series.append((x[ok], y[ok]))
    cols = ["epoch", "median", "q25", "q75", "n"]
    if not series:
        return pd.DataFrame(columns=cols)
    grid = common_grid([x for x, _ in series], max_points)
    stack = np.full((len(series), grid.size), np.nan)
    for i, (x, y) in enumerate(series):
        vals = np.interp(grid, x, y, left=np.nan, right=np.nan)
        if after_end == "hold":
            vals[grid > x[-1]] = y[-1]
        stack[i] = vals
    n = np.isfinite(stack).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN, on purpose
        med = np.nanmedian(stack, axis=0)
        q25, q75 = np.nanpercentile(stack, [25, 75], axis=0)
    df = pd.DataFrame({"epoch": grid, "median": med, "q25": q25, "q75": q75, "n": n})
    return df[df.n > 0].reset_index(drop=True)

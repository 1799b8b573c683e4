"""Tables derived from the runs: the per-run CSV and reader-facing versions of the stats.

Why separate from ``stats``: the CSVs keep raw numbers for re-analysis, while the
report wants formatted strings ("≥ 1,200", "2.4× [1.9, 3.1]"); keeping both here
means the report module only lays things out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from groktransfer.runs.rundir import Status

from .collect import NO_STATUS, UNREADABLE, RunRecord
from .stats import format_epochs, format_ratio, observe, threshold_key

FINAL_KEYS = ("train_loss", "test_loss", "train_acc", "test_acc")


def runs_frame(runs: Sequence[RunRecord], thresholds: Sequence[float]) -> pd.DataFrame:
    """One row per run, *including* failed / running / crashed ones with status and reason.

    ``epochs_to_<t>`` is blank and ``censored_<t>`` is NA for runs that do not enter
    the statistics (``in_stats`` False), so the CSV cannot be mis-aggregated.
    """
    rows = []
    for r in runs:
        row: dict[str, Any] = {
            "sweep": str(r.sweep),
            "run_dir": str(r.run_dir),
            "experiment": r.experiment,
            "task": r.task,
            "condition": r.condition,
            "seed": r.seed,
            "status": r.status,
            "status_label": r.status_label,
            "stale": r.stale,
            "reason": r.reason,
            "in_stats": r.completed,
            "last_epoch": r.epoch,
            "failed_epoch": r.failed_epoch,
            "max_epochs": r.max_epochs,
            "stop_reason": r.stop_reason,
        }
        for t in thresholds:
            obs = observe(r, t)
            k = threshold_key(t)
            row[f"epochs_to_{k}"] = None if obs is None else obs.value
            row[f"censored_{k}"] = None if obs is None else obs.censored
            row[f"held_{k}"] = None if obs is None else obs.held
        for key in FINAL_KEYS:
            row[f"final_{key}"] = r.final.get(key)
        row["wall_time_s"] = r.wall_time_s
        row["run_id"] = r.run_id
        row["updated_at"] = r.updated_at
        rows.append(row)
    df = pd.DataFrame(rows)
    for t in thresholds:
        k = threshold_key(t)
        df[f"epochs_to_{k}"] = pd.array(df[f"epochs_to_{k}"], dtype="Int64")
        df[f"censored_{k}"] = pd.array(df[f"censored_{k}"], dtype="boolean")
        df[f"held_{k}"] = pd.array(df[f"held_{k}"], dtype="boolean")
    for col in ("seed", "last_epoch", "failed_epoch", "max_epochs"):
        df[col] = pd.array(df[col], dtype="Int64")
    return df


def status_counts(runs: Sequence[RunRecord], conditions: Sequence[str]) -> pd.DataFrame:
    """Condition × status label counts (with a total column), for the report's overview."""
    df = pd.DataFrame({"condition": [r.condition for r in runs], "status": [r.status_label for r in runs]})
    table = pd.crosstab(df.condition, df.status)
    order = [c for c in conditions if c in table.index] + [c for c in table.index if c not in conditions]
    statuses = (Status.COMPLETED, Status.RUNNING, f"{Status.RUNNING}/stale", Status.STOPPED, Status.FAILED)
    preferred = [str(s) for s in statuses] + [NO_STATUS, UNREADABLE]
    cols = [c for c in preferred if c in table.columns] + sorted(c for c in table.columns if c not in preferred)
    table = table.loc[order, cols]
    table["total"] = table.sum(axis=1)
    table.columns.name = None  # else to_html draws a stray "status" header cell
    return table.reset_index()


def summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary table as a reader sees it: bounds marked inline, numbers rounded."""
    out = pd.DataFrame(
        {
            "condition": summary.condition,
            "threshold": summary.threshold.map(threshold_key),
            "n (completed)": summary.n_runs,
            "reached": summary.n_reached,
            "censored": summary.n_censored,
            "excluded": summary.n_excluded,
            "median": summary.median_display,
            "mean": [format_epochs(m, lb) for m, lb in zip(summary["mean"], summary.mean_lower_bound)],
            "std": [format_epochs(s) for s in summary["std"]],
            "range": [
                "–" if np.isnan(a) else f"{format_epochs(a)} – {format_epochs(b)}"
                for a, b in zip(summary["min"], summary["max"])
            ],
        }
    )
    return out


def ci_label(confidence: float) -> str:
    """``95% CI`` from 0.95."""
    return f"{100 * confidence:g}% CI"


def speedup_display(speedup: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Speed-ups as ``ratio× [lo, hi]`` strings with the bound direction spelt out."""
    return pd.DataFrame(
        {
            "condition": speedup.condition,
            "vs": speedup.baseline,
            "threshold": speedup.threshold.map(threshold_key),
            f"speed-up [{ci_label(confidence)}]": [
                format_ratio(r, lo, hi, b)
                for r, lo, hi, b in zip(speedup.ratio, speedup.ci_low, speedup.ci_high, speedup.bound)
            ],
            "bound": speedup.bound,
            "median (condition)": [
                format_epochs(m, lb) for m, lb in zip(speedup.median_condition, speedup.median_condition_lower_bound)
            ],
            "median (baseline)": [
                format_epochs(m, lb) for m, lb in zip(speedup.median_baseline, speedup.median_baseline_lower_bound)
            ],
            "n": speedup.n,
            "n baseline": speedup.n_baseline,
        }
    )


def incomplete_frame(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """Every run that is *not* in the statistics, with why -- never silently skipped."""
    rows = [
        {
            "run": r.name,
            "condition": r.condition,
            "seed": r.seed,
            "status": r.status_label,
            "last epoch": r.epoch,
            "failed at": r.failed_epoch,
            "reason": r.reason or "",
            "sweep": str(r.sweep),
        }
        for r in runs
        if not r.completed
    ]
    cols = ["run", "condition", "seed", "status", "last epoch", "failed at", "reason", "sweep"]
    df = pd.DataFrame(rows, columns=cols)
    for col in ("seed", "last epoch", "failed at"):
        df[col] = pd.array(df[col], dtype="Int64")
    return df

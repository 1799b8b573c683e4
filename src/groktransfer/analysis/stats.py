"""Censored epochs-to-threshold statistics and bootstrap speed-up ratios.

Why not drop runs that never reach a threshold: the conditions that learn slowly
are exactly the ones that hit ``max_epochs`` first, so dropping them would make
the slow condition look fast. A completed run that never reached threshold t is
*censored at its last epoch*: its value is that epoch, known to be a lower bound
of the true epochs-to-t. Everything below propagates that "lower bound" honestly
instead of hiding it. Runs that are not completed (failed, running, stopped, no
status) are neither reached nor censored: they are excluded here and listed by
the report.

Pure functions over ``RunRecord`` lists and pandas frames; no file I/O.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from groktransfer.runs.rundir import threshold_key

from .collect import RunRecord

METHOD_TEXT = """\
Epochs to threshold t is the first evaluated epoch at which test accuracy reached t \
(from each run's status record). Only completed runs enter the statistics. A completed run \
that never reached t is censored: its value is its last completed epoch, which is a lower \
bound of its true epochs-to-t; censored runs are counted (n censored) and never dropped. \
Failed, stopped, still-running and crashed jobs are neither reached nor censored: they are \
excluded from n and listed under "Failed / incomplete jobs".

Median: the ordinary sample median of the values with censored runs at their last epoch. \
It is exact when every censored value lies strictly above the upper middle order statistic \
(sorted position floor(n/2)+1, 1-based), because then no censored run can move the middle \
of the sample; otherwise it is shown as "≥ X", a lower bound. Mean: computed the same way, \
so it is a lower bound whenever a run is censored. Std: the spread of the same values; with \
censored runs it is not a bound in either direction and should be read as indicative only.

Speed-up of a condition over the baseline = median(baseline) / median(condition) of epochs \
to t (> 1 = the condition reaches t in fewer epochs). Because censored values are lower \
bounds, a censored baseline median makes the ratio a lower bound (true speed-up ≥ ratio), \
a censored condition median makes it an upper bound (true speed-up ≤ ratio), and both make \
its direction indeterminate; the "bound" column says which applies. A condition whose median \
is 0 epochs (already at t when training starts) has an infinite speed-up. {pct:g}% confidence \
interval: percentile bootstrap with {B} resamples (runs resampled with replacement within each \
condition independently, ratio of medians recomputed on each resample; quantiles \
{lo_q:g}% and {hi_q:g}%), numpy default_rng seeded with ({seed}, CRC32 of \
"condition|threshold") so the interval is reproducible and independent of row order. The \
resamples use the same censored-as-last-epoch values, so the interval carries the same \
bound direction as the point estimate. With few seeds per condition the bootstrap \
distribution of a median is coarse; read the interval as a rough range, not an exact {pct:g}%.\
"""


def method_text(n_resamples: int, confidence: float, seed: int) -> str:
    """The statistics method statement, with the actual bootstrap settings filled in."""
    alpha = (1.0 - confidence) / 2.0
    return METHOD_TEXT.format(B=n_resamples, pct=100 * confidence, lo_q=100 * alpha, hi_q=100 * (1 - alpha), seed=seed)


def thresholds_in(runs: Iterable[RunRecord]) -> list[float]:
    """Every threshold that any run recorded, ascending."""
    found: set[float] = set()
    for r in runs:
        for k in r.thresholds:
            try:
                found.add(round(float(k), 9))
            except ValueError:
                continue
    return sorted(found)


@dataclass(frozen=True)
class Observation:
    """Epochs-to-threshold of one completed run: the value and whether it is censored."""

    value: float
    censored: bool
    held: bool | None = None


def _threshold_entry(run: RunRecord, t: float) -> dict | None:
    """The run's record for threshold t, matching keys numerically ("0.90" == "0.9")."""
    for k, v in run.thresholds.items():
        try:
            if math.isclose(float(k), t, rel_tol=0, abs_tol=1e-9):
                return v if isinstance(v, dict) else {"epoch": v}
        except ValueError:
            continue
    return None


def observe(run: RunRecord, t: float) -> Observation | None:
    """Epochs to t for one run, or None if the run does not enter the statistics.

    None for any run that is not completed, and for a completed run that did not
    record threshold t at all (we cannot tell reached from censored).
    """
    if not run.completed:
        return None
    entry = _threshold_entry(run, t)
    if entry is None:
        return None
    held = entry.get("held")
    if entry.get("epoch") is not None:
        return Observation(float(entry["epoch"]), False, None if held is None else bool(held))
    if run.epoch is None:
        return None
    return Observation(float(run.epoch), True, False)


def observations_frame(runs: Sequence[RunRecord], thresholds: Sequence[float]) -> pd.DataFrame:
    """Long table: one row per (run, threshold) with value / censored / included."""
    rows = []
    for i, r in enumerate(runs):
        for t in thresholds:
            obs = observe(r, t)
            rows.append(
                {
                    "run": i,
                    "condition": r.condition,
                    "seed": r.seed,
                    "threshold": t,
                    "included": obs is not None,
                    "value": np.nan if obs is None else obs.value,
                    "censored": None if obs is None else obs.censored,
                    "held": None if obs is None else obs.held,
                }
            )
    return pd.DataFrame(
        rows, columns=["run", "condition", "seed", "threshold", "included", "value", "censored", "held"]
    )


# --------------------------------------------------------------------------- median & summary


def median_with_bound(values: ArrayLike, censored: ArrayLike) -> tuple[float, bool]:
    """Sample median with censored values at their last epoch, and whether it is only a lower bound.

    Rule (documented in METHOD_TEXT): exact iff every censored value is strictly above
    the upper middle order statistic ``sorted(values)[n // 2]``. For odd n that is the
    median itself; for even n it is the larger of the two averaged values -- a censored
    run sitting there could still push the average up.
    """
    v = np.asarray(values, dtype=float)
    c = np.asarray(censored, dtype=bool)
    if v.size == 0:
        return math.nan, False
    med = float(np.median(v))
    upper_mid = float(np.sort(v)[v.size // 2])
    return med, bool(np.any(v[c] <= upper_mid))


def summarize(values: ArrayLike, censored: ArrayLike) -> dict:
    """Counts and location/spread of one (condition, threshold) group."""
    v = np.asarray(values, dtype=float)
    c = np.asarray(censored, dtype=bool)
    med, lower = median_with_bound(v, c)
    n = int(v.size)
    return {
        "n_runs": n,
        "n_reached": int(n - c.sum()),
        "n_censored": int(c.sum()),
        "median": med,
        "median_lower_bound": lower,
        "median_display": format_epochs(med, lower),
        "mean": float(v.mean()) if n else math.nan,
        "mean_lower_bound": bool(c.any()),
        "std": float(v.std(ddof=1)) if n > 1 else math.nan,
        "min": float(v.min()) if n else math.nan,
        "max": float(v.max()) if n else math.nan,
    }


def format_epochs(value: float, lower_bound: bool = False) -> str:
    """``1,234`` or ``≥ 1,234`` (blank dash for NaN) -- the report's number style."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    return f"≥ {text}" if lower_bound else text


def condition_order(conditions: Iterable[str], preferred: Sequence[str] = ()) -> list[str]:
    """``preferred`` first (in that order, if present), then the rest alphabetically."""
    present = list(dict.fromkeys(c for c in conditions if c is not None))
    head = [c for c in dict.fromkeys(preferred) if c in present]
    return head + sorted(c for c in present if c not in head)


def summary_table(
    runs: Sequence[RunRecord],
    thresholds: Sequence[float],
    conditions: Sequence[str],
) -> pd.DataFrame:
    """Condition × threshold table of counts, median (with bound flag), mean, std, range."""
    obs = observations_frame(runs, thresholds)
    rows = []
    for cond in conditions:
        n_all = sum(1 for r in runs if r.condition == cond)
        for t in thresholds:
            g = obs[(obs.condition == cond) & (obs.threshold == t) & obs.included]
            s = summarize(g.value.to_numpy(), g.censored.to_numpy(dtype=bool))
            rows.append({"condition": cond, "threshold": t, "n_excluded": n_all - s["n_runs"], **s})
    cols = [
        "condition",
        "threshold",
        "n_runs",
        "n_reached",
        "n_censored",
        "n_excluded",
        "median",
        "median_lower_bound",
        "median_display",
        "mean",
        "mean_lower_bound",
        "std",
        "min",
        "max",
    ]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- speed-up


def _quantiles(samples: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Linear-interpolated quantiles that survive infinite samples (inf between infs = inf)."""
    finite = samples[~np.isnan(samples)]
    if finite.size == 0:
        return [math.nan for _ in qs]
    with np.errstate(invalid="ignore"):
        out = np.quantile(finite, qs)
    return [math.inf if math.isnan(x) else float(x) for x in out]


def ratio_of_medians(baseline: np.ndarray, condition: np.ndarray) -> float:
    """median(baseline) / median(condition); inf if only the condition's median is 0."""
    mb, mc = float(np.median(baseline)), float(np.median(condition))
    if mc == 0:
        return math.nan if mb == 0 else math.inf
    return mb / mc


def bootstrap_ratio_ci(
    baseline: ArrayLike,
    condition: ArrayLike,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of median(baseline)/median(condition).

    Runs are resampled with replacement within each condition independently (the
    two groups are independent seeds, so a paired resample would be wrong).
    """
    b = np.asarray(baseline, dtype=float)
    c = np.asarray(condition, dtype=float)
    if b.size == 0 or c.size == 0:
        return math.nan, math.nan
    rng = rng if rng is not None else np.random.default_rng(0)
    mb = np.median(b[rng.integers(0, b.size, size=(n_resamples, b.size))], axis=1)
    mc = np.median(c[rng.integers(0, c.size, size=(n_resamples, c.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(mc == 0, np.where(mb == 0, np.nan, np.inf), mb / np.where(mc == 0, 1, mc))
    alpha = (1.0 - confidence) / 2.0
    lo, hi = _quantiles(ratios, [alpha, 1.0 - alpha])
    return lo, hi


def row_rng(seed: int, condition: str, threshold: float) -> np.random.Generator:
    """RNG for one speed-up row: reproducible and independent of which other rows exist."""
    tag = zlib.crc32(f"{condition}|{threshold_key(threshold)}".encode())
    return np.random.default_rng([int(seed), tag])


def bound_direction(baseline_lower: bool, condition_lower: bool) -> str:
    """Which way a ratio of two possibly-lower-bound medians can be wrong."""
    if baseline_lower and condition_lower:
        return "indeterminate"
    if baseline_lower:
        return "lower bound"
    if condition_lower:
        return "upper bound"
    return "exact"


def speedup_table(
    runs: Sequence[RunRecord],
    thresholds: Sequence[float],
    baseline: str,
    compare: Sequence[str],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Speed-up of each compared condition over the baseline, per threshold, with CI.

    A row is written for every compared condition that has runs, even when one
    side has no completed run (ratio NaN, n = 0), so a missing comparison is visible.
    """
    obs = observations_frame(runs, thresholds)
    obs = obs[obs.included]
    present = {r.condition for r in runs}
    rows = []
    for cond in [c for c in compare if c in present and c != baseline]:
        for t in thresholds:
            gb = obs[(obs.condition == baseline) & (obs.threshold == t)]
            gc = obs[(obs.condition == cond) & (obs.threshold == t)]
            b, c = gb.value.to_numpy(), gc.value.to_numpy()
            row = {
                "condition": cond,
                "baseline": baseline,
                "threshold": t,
                "ratio": math.nan,
                "ci_low": math.nan,
                "ci_high": math.nan,
                "bound": "",
                "n": int(c.size),
                "n_baseline": int(b.size),
                "median_condition": math.nan,
                "median_baseline": math.nan,
                "median_condition_lower_bound": False,
                "median_baseline_lower_bound": False,
                "n_resamples": n_resamples,
                "confidence": confidence,
                "seed": seed,
            }
            if b.size and c.size:
                mb, lb = median_with_bound(b, gb.censored.to_numpy(dtype=bool))
                mc, lc = median_with_bound(c, gc.censored.to_numpy(dtype=bool))
                lo, hi = bootstrap_ratio_ci(b, c, n_resamples, confidence, row_rng(seed, cond, t))
                row.update(
                    ratio=ratio_of_medians(b, c),
                    ci_low=lo,
                    ci_high=hi,
                    bound=bound_direction(lb, lc),
                    median_condition=mc,
                    median_baseline=mb,
                    median_condition_lower_bound=lc,
                    median_baseline_lower_bound=lb,
                )
            rows.append(row)
    cols = [
        "condition",
        "baseline",
        "threshold",
        "ratio",
        "ci_low",
        "ci_high",
        "bound",
        "n",
        "n_baseline",
        "median_condition",
        "median_baseline",
        "median_condition_lower_bound",
        "median_baseline_lower_bound",
        "n_resamples",
        "confidence",
        "seed",
    ]
    return pd.DataFrame(rows, columns=cols)


def format_ratio(ratio: float, lo: float, hi: float, bound: str = "") -> str:
    """``2.41× [1.90, 3.05]`` with ``≥``/``≤``/``~`` marking a bound direction."""
    if ratio is None or math.isnan(ratio):
        return "–"
    mark = {"lower bound": "≥ ", "upper bound": "≤ ", "indeterminate": "~ "}.get(bound, "")

    def f(x: float) -> str:
        return "inf" if math.isinf(x) else ("–" if math.isnan(x) else f"{x:.2f}")

    return f"{mark}{f(ratio)}× [{f(lo)}, {f(hi)}]"

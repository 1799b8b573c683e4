"""Speed-up of one group of runs over a baseline group, for the trajectory and matrix analyses.

Why a separate helper: the standard report compares *conditions*; the transfer axes
compare groups cut along another axis (source epoch; source task x target task).
Both need the same censoring-aware numbers as ``stats.speedup_table`` -- median with
its bound flag, ratio of medians, percentile-bootstrap CI with a per-row seeded RNG --
so this module only regroups and calls those functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .collect import RunRecord
from .settings import BootstrapSettings
from .stats import bootstrap_ratio_ci, bound_direction, median_with_bound, observe, ratio_of_medians, row_rng

# fewer runs than this on either side: the CI is reported but never read as excluding 1
MIN_RUNS_TO_JUDGE = 2


def observations(runs: Sequence[RunRecord], t: float) -> tuple[np.ndarray, np.ndarray]:
    """(values, censored) of the completed runs that recorded threshold t."""
    obs = [o for o in (observe(r, t) for r in runs) if o is not None]
    return np.array([o.value for o in obs], dtype=float), np.array([o.censored for o in obs], dtype=bool)


def compare_groups(
    baseline: Sequence[RunRecord], group: Sequence[RunRecord], t: float, tag: str, b: BootstrapSettings
) -> dict[str, Any]:
    """Counts, medians, spread and the speed-up median(baseline)/median(group) with its CI.

    ``tag`` names the group in the bootstrap RNG seed, so a row's interval does not
    depend on which other rows exist. ``excludes_one`` is +1 when the whole CI lies
    above 1 (the group is faster), -1 when below, 0 otherwise or when undefined --
    and 0 whenever either side has fewer than ``MIN_RUNS_TO_JUDGE`` runs: a bootstrap
    of one run is a single point, whose "interval" excludes 1 by construction.
    """
    bv, bc = observations(baseline, t)
    gv, gc = observations(group, t)
    row: dict[str, Any] = {
        "threshold": t,
        "n": int(gv.size),
        "n_censored": int(gc.sum()),
        "median": math.nan,
        "median_lower_bound": False,
        "min": math.nan,
        "max": math.nan,
        "n_baseline": int(bv.size),
        "n_baseline_censored": int(bc.sum()),
        "median_baseline": math.nan,
        "median_baseline_lower_bound": False,
        "ratio": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "bound": "",
        "excludes_one": 0,
    }
    if gv.size:
        row["median"], row["median_lower_bound"] = median_with_bound(gv, gc)
        row["min"], row["max"] = float(gv.min()), float(gv.max())
    if bv.size:
        row["median_baseline"], row["median_baseline_lower_bound"] = median_with_bound(bv, bc)
    if gv.size and bv.size:
        lo, hi = bootstrap_ratio_ci(bv, gv, b.n_resamples, b.confidence, row_rng(b.seed, tag, t))
        row.update(
            ratio=ratio_of_medians(bv, gv),
            ci_low=lo,
            ci_high=hi,
            bound=bound_direction(row["median_baseline_lower_bound"], row["median_lower_bound"]),
            excludes_one=0 if min(gv.size, bv.size) < MIN_RUNS_TO_JUDGE else (1 if lo > 1 else (-1 if hi < 1 else 0)),
        )
    return row


def pick_threshold(runs: Sequence[RunRecord], wanted: float) -> float | None:
    """``wanted`` if the runs recorded it, else the highest recorded threshold."""
    from .stats import thresholds_in

    found = thresholds_in(runs)
    if not found:
        return None
    close = [x for x in found if math.isclose(x, wanted, abs_tol=1e-9)]
    return close[0] if close else max(found)

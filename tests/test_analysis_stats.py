"""Known-answer tests of the analysis statistics on hand-made run directories.

Every expected number below is worked out by hand from the fabricated
status.json files, so a change in the censoring or bootstrap rules shows up here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fixtures_rundirs import make_sweep, write_crashed, write_status
from groktransfer.analysis.collect import SweepInputError, collect_runs, resolve_sweep_dirs
from groktransfer.analysis.curves import aggregate, read_table
from groktransfer.analysis.stats import (
    bootstrap_ratio_ci,
    bound_direction,
    median_with_bound,
    observe,
    speedup_table,
    summary_table,
    thresholds_in,
)
from groktransfer.render import FIXED_COLORS, condition_colors
from groktransfer.analysis.tables import runs_frame

CONDS = ["grokked", "memorized", "random"]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Thresholds 0.9 and 0.99; every run's epoch-to-t is spelt out here.

    random:    0.9 -> 400, 600, 800          0.99 -> 1000c, 900, 1000c   (c = censored at last epoch)
    grokked:   0.9 -> 100, 200, 300          0.99 -> 200, 300, 400       (+ a failed run: excluded)
    memorized: 0.9 -> 300, 500               0.99 -> 500c, 700
    """
    root = tmp_path / "sweep"
    spec = {
        ("random", 0): ({0.9: 400, 0.99: None}, 1000),
        ("random", 1): ({0.9: 600, 0.99: 900}, 1000),
        ("random", 2): ({0.9: 800, 0.99: None}, 1000),
        ("grokked", 0): ({0.9: 100, 0.99: 200}, 700),
        ("grokked", 1): ({0.9: 200, 0.99: 300}, 800),
        ("grokked", 2): ({0.9: 300, 0.99: 400}, 900),
        ("memorized", 0): ({0.9: 300, 0.99: None}, 500),
        ("memorized", 1): ({0.9: 500, 0.99: 700}, 1000),
    }
    for i, ((cond, seed), (th, last)) in enumerate(spec.items()):
        write_status(root / f"{i}_{cond}_s{seed}", condition=cond, seed=seed, epoch=last, thresholds=th)
    write_status(
        root / "8_grokked_s3", condition="grokked", seed=3, status="failed", epoch=50,
        thresholds={0.9: 50, 0.99: None}, reason="RuntimeError: boom",
    )  # fmt: skip
    return root


def _runs(root: Path):
    return collect_runs(resolve_sweep_dirs(root))


def _row(df: pd.DataFrame, cond: str, t: float) -> pd.Series:
    return df[(df.condition == cond) & (df.threshold == t)].iloc[0]


# --------------------------------------------------------------------------- counts & medians


def test_summary_counts_medians_and_censoring(sweep: Path) -> None:
    runs = _runs(sweep)
    assert thresholds_in(runs) == [0.9, 0.99]
    s = summary_table(runs, [0.9, 0.99], CONDS)

    r = _row(s, "random", 0.9)
    assert (r.n_runs, r.n_reached, r.n_censored, r.n_excluded) == (3, 3, 0, 0)
    assert r["median"] == 600 and r["mean"] == 600 and r["std"] == pytest.approx(200)
    assert not r.median_lower_bound and r.median_display == "600"

    r = _row(s, "random", 0.99)  # values 1000c, 900, 1000c -> median 1000 sits on a censored value
    assert (r.n_runs, r.n_reached, r.n_censored) == (3, 1, 2)
    assert r["median"] == 1000 and r.median_lower_bound and r.median_display == "≥ 1,000"
    assert r["mean"] == pytest.approx(2900 / 3) and r.mean_lower_bound

    r = _row(s, "grokked", 0.9)  # the failed run (reached 0.9 at 50!) must not count
    assert (r.n_runs, r.n_reached, r.n_censored, r.n_excluded) == (3, 3, 0, 1)
    assert r["median"] == 200 and r["min"] == 100

    r = _row(s, "memorized", 0.99)  # 500c, 700 -> median 600; censored 500 <= upper middle 700
    assert (r.n_runs, r.n_censored, r["median"], r.median_lower_bound) == (2, 1, 600, True)


@pytest.mark.parametrize(
    "values, censored, median, lower",
    [
        ([100, 200, 300, 400, 500], [0, 0, 0, 1, 0], 300, False),  # censored above the median: exact
        ([100, 200, 300, 400, 500], [0, 0, 1, 0, 0], 300, True),  # censored at the median
        ([100, 200, 300, 400], [0, 0, 0, 1], 250, False),  # even n: 400 > upper middle 300
        ([100, 200, 300, 400], [0, 0, 1, 0], 250, True),  # even n: censored upper middle moves the mean
        ([100, 200, 300], [1, 0, 0], 200, True),  # censored below the median
        ([], [], math.nan, False),
    ],
)
def test_median_bound_rule(values, censored, median, lower) -> None:
    m, lb = median_with_bound(values, [bool(c) for c in censored])
    assert (math.isnan(m) and math.isnan(median)) or m == median
    assert lb is lower


def test_observe_matches_threshold_keys_numerically(tmp_path: Path) -> None:
    d = write_status(tmp_path / "s" / "r", condition="random", seed=0, epoch=500, thresholds={})
    st = d / "status.json"
    st.write_text(st.read_text().replace('"thresholds": {}', '"thresholds": {"0.90": {"epoch": 120, "held": false}}'))
    (run,) = _runs(tmp_path / "s")
    obs = observe(run, 0.9)
    assert obs.value == 120 and not obs.censored and obs.held is False
    assert observe(run, 0.99) is None  # not recorded: neither reached nor censored


# --------------------------------------------------------------------------- speed-up


def test_speedup_ratios_bounds_and_ci(sweep: Path) -> None:
    runs = _runs(sweep)
    sp = speedup_table(runs, [0.9, 0.99], "random", ["grokked", "memorized"], n_resamples=500, seed=1)
    assert len(sp) == 4
    g9, g99 = _row(sp, "grokked", 0.9), _row(sp, "grokked", 0.99)
    assert g9.ratio == pytest.approx(600 / 200) and g9.bound == "exact" and (g9.n, g9.n_baseline) == (3, 3)
    assert g99.ratio == pytest.approx(1000 / 300) and g99.bound == "lower bound"
    m99 = _row(sp, "memorized", 0.99)
    assert m99.ratio == pytest.approx(1000 / 600) and m99.bound == "indeterminate"
    m9 = _row(sp, "memorized", 0.9)
    assert m9.ratio == pytest.approx(600 / 400)
    for _, r in sp.iterrows():
        assert r.ci_low <= r.ratio <= r.ci_high


def test_bootstrap_is_deterministic_given_seed(sweep: Path) -> None:
    runs = _runs(sweep)
    a = speedup_table(runs, [0.9, 0.99], "random", ["grokked", "memorized"], n_resamples=300, seed=7)
    b = speedup_table(runs, [0.9, 0.99], "random", ["grokked", "memorized"], n_resamples=300, seed=7)
    pd.testing.assert_frame_equal(a, b)
    # a row's interval does not depend on which other rows exist
    only = speedup_table(runs, [0.99], "random", ["memorized"], n_resamples=300, seed=7)
    assert only.iloc[0].ci_low == _row(a, "memorized", 0.99).ci_low


def test_bootstrap_known_cases() -> None:
    rng = np.random.default_rng(0)
    # no spread: every resample gives the point estimate
    assert bootstrap_ratio_ci([600, 600, 600], [200, 200], 200, 0.95, rng) == (3.0, 3.0)
    lo, hi = bootstrap_ratio_ci([400, 600, 800], [100, 200, 300], 2000, 0.95, np.random.default_rng(0))
    # ratio of medians of resamples lies in [min(b)/max(c), max(b)/min(c)] = [4/3, 8]
    assert 4 / 3 <= lo < 3.0 < hi <= 8.0
    assert all(math.isnan(x) for x in bootstrap_ratio_ci([], [1.0], 10))


def test_bound_direction() -> None:
    assert bound_direction(False, False) == "exact"
    assert bound_direction(True, False) == "lower bound"
    assert bound_direction(False, True) == "upper bound"
    assert bound_direction(True, True) == "indeterminate"


def test_speedup_with_missing_baseline_has_no_rows(sweep: Path) -> None:
    runs = [r for r in _runs(sweep) if r.condition != "random"]
    sp = speedup_table(runs, [0.9], "random", ["grokked"], n_resamples=50)
    assert len(sp) == 1 and math.isnan(sp.iloc[0].ratio) and sp.iloc[0].n_baseline == 0


# --------------------------------------------------------------------------- runs listing


def test_failed_crashed_and_stale_runs_are_listed_not_counted(sweep: Path) -> None:
    write_crashed(sweep / "9_random_s9", condition="random", seed=9)
    write_status(
        sweep / "10_memorized_s9", condition="memorized", seed=9, status="running", epoch=40,
        thresholds={0.9: None, 0.99: None}, updated_at="2020-01-01T00:00:00+00:00",
    )  # fmt: skip
    runs = _runs(sweep)
    df = runs_frame(runs, [0.9, 0.99])
    failed = df[df.status == "failed"].iloc[0]
    assert failed.reason == "RuntimeError: boom" and not failed.in_stats
    assert pd.isna(failed["epochs_to_0.9"]) and pd.isna(failed["censored_0.9"])
    crashed = df[df.status == "no status"].iloc[0]
    assert crashed.condition == "random" and crashed.seed == 9 and "crashed" in crashed.reason
    stale = df[df.status == "running"].iloc[0]
    assert bool(stale.stale)
    assert [r.status_label for r in runs if r.status == "running"] == ["running/stale"]
    s = summary_table(runs, [0.9, 0.99], CONDS)
    assert _row(s, "random", 0.9).n_runs == 3 and _row(s, "random", 0.9).n_excluded == 1
    assert _row(s, "memorized", 0.9).n_runs == 2
    reached = df[df.in_stats]
    assert reached["censored_0.99"].sum() == 3  # random x2 + memorized x1


def test_sweep_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(SweepInputError, match="does not exist"):
        resolve_sweep_dirs(tmp_path / "nope")
    with pytest.raises(SweepInputError, match="matches no directory"):
        resolve_sweep_dirs(str(tmp_path / "nope*"))
    with pytest.raises(SweepInputError, match="required"):
        resolve_sweep_dirs(None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepInputError, match="no run directories"):
        collect_runs(resolve_sweep_dirs(tmp_path / "empty"))


def test_search_skips_analysis_and_source_cache(sweep: Path) -> None:
    write_status(sweep / "analysis" / "x", condition="random", seed=99)
    write_status(sweep / ".sources" / "abc", condition="random", seed=98)
    write_status(sweep / "nested" / "deeper" / "job", condition="random", seed=97)
    seeds = {r.seed for r in _runs(sweep)}
    assert 97 in seeds and not {98, 99} & seeds


# --------------------------------------------------------------------------- curves & colours


def test_aggregate_hold_versus_drop() -> None:
    a = pd.DataFrame({"epoch": [0, 10, 20, 30], "test_acc": [0.0, 0.2, 0.4, 0.6]})
    b = pd.DataFrame({"epoch": [0, 10], "test_acc": [0.0, 1.0]})  # stopped early at 10
    hold = aggregate([a, b], "test_acc", "hold").set_index("epoch")
    drop = aggregate([a, b], "test_acc", "drop").set_index("epoch")
    assert hold.loc[10, "median"] == pytest.approx(0.6)
    assert hold.loc[30, "median"] == pytest.approx(0.8) and hold.loc[30, "n"] == 2
    assert drop.loc[30, "median"] == pytest.approx(0.6) and drop.loc[30, "n"] == 1
    assert hold.loc[30, "q25"] == pytest.approx(0.7) and hold.loc[30, "q75"] == pytest.approx(0.9)


def test_read_table_dedupes_resumed_epochs(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,test_acc\n0,0.1\n10,0.2\n20,0.3\n10,0.25\n20,0.35\n")
    df = read_table(tmp_path, "metrics.csv")
    assert df.epoch.tolist() == [0, 10, 20] and df.test_acc.tolist() == [0.1, 0.25, 0.35]


def test_condition_colours_fixed_and_fallback() -> None:
    c = condition_colors(["random", "zeta", "grokked", "alpha"])
    assert c["random"] == FIXED_COLORS["random"] and c["grokked"] == FIXED_COLORS["grokked"]
    assert c["alpha"] != c["zeta"] and c["alpha"] not in FIXED_COLORS.values()
    assert condition_colors(["zeta", "alpha"]) == {k: v for k, v in c.items() if k in ("alpha", "zeta")}


def test_realistic_sweep_thresholds_agree_with_metrics(tmp_path: Path) -> None:
    """The fabricated realistic sweep is self-consistent (status.json vs metrics.csv)."""
    from fixtures_rundirs import first_epoch

    root = make_sweep(tmp_path / "sw", n_seeds=2, max_epochs=3000, failed=False)
    for run in _runs(root):
        m = read_table(run.run_dir, "metrics.csv")
        for t in (0.9, 0.999):
            o = observe(run, t)
            assert (first_epoch(m, t) is None) == o.censored

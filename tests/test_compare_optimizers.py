"""scripts/compare_optimizers.py on fabricated sweeps with a known answer: groups by optimizer x
filter, censored runs counted, speed-up per epoch and per second (from the runs or a benchmark)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import compare_optimizers as co  # noqa: E402
from fixtures_rundirs import write_status  # noqa: E402

from groktransfer.analysis.settings import BootstrapSettings  # noqa: E402

# epochs to 0.999 (None = censored at the 3,000-epoch cap); adamw median 1,200, ma median 600
RUNS = {
    ("adamw", "none"): [1000, 1200, 1400],
    ("adamw", "ma"): [400, 600, None],
}
SECONDS = {("adamw", "none"): 0.05, ("adamw", "ma"): 0.06}


def _sweep(root: Path) -> Path:
    for (opt, filt), epochs in RUNS.items():
        for seed, e in enumerate(epochs):
            run = root / f"{opt}_{filt}_s{seed}"
            write_status(run, condition="random", seed=seed, epoch=3000 if e is None else e + 100, max_epochs=3000,
                         thresholds={0.999: e}, experiment="opt")
            for name in ("config.yaml", ".hydra/config.yaml"):
                path = run / name
                path.write_text(path.read_text() + f"optimizer:\n  name: {opt}\ngradfilter:\n  name: {filt}\n")
            status = json.loads((run / "status.json").read_text())
            status["seconds_per_epoch"] = SECONDS[(opt, filt)]
            (run / "status.json").write_text(json.dumps(status))
    return root


def _rows(root: Path, costs=None) -> dict:
    rows = co.compare([root], 0.999, "adamw/none", BootstrapSettings(n_resamples=200), costs)
    return {r["group"]: r for r in rows}


def test_groups_medians_censoring_and_speed_up_per_epoch_and_per_second(tmp_path: Path) -> None:
    rows = _rows(_sweep(tmp_path / "sweep"))
    assert set(rows) == {"adamw/none", "adamw/ma"}
    base, ma = rows["adamw/none"], rows["adamw/ma"]
    assert base["median"] == 1200 and ma["median"] == 600 and not ma["median_lower_bound"]
    assert (ma["n"], ma["n_censored"]) == (3, 1) and ma["epochs"] == [400.0, 600.0, 3000.0]
    assert ma["ratio"] == pytest.approx(2.0)
    # per second: each run's epochs x its own seconds per epoch -> 1200*0.05 / (600*0.06)
    assert ma["speedup_per_second"] == pytest.approx(2.0 * 0.05 / 0.06)
    assert ma["seconds_per_epoch_source"] == "runs"


def test_per_second_from_the_benchmark_file(tmp_path: Path) -> None:
    bench = tmp_path / "bench_gradfilter.json"
    rows = [{"variant": "adamw", "seconds_per_epoch": 0.04}, {"variant": "adamw + ma", "seconds_per_epoch": 0.05}]
    bench.write_text(json.dumps({"format_version": 1, "machines": {"some cpu | avx2": {"rows": rows}}}))
    costs = co.bench_costs(bench)  # not this machine's key: the only entry is taken
    assert costs == {"adamw/none": 0.04, "adamw/ma": 0.05}
    ma = _rows(_sweep(tmp_path / "sweep"), costs)["adamw/ma"]
    assert ma["seconds_per_epoch_median"] == 0.05 and ma["seconds_per_epoch_source"] == "bench_gradfilter"
    assert ma["speedup_per_second"] == pytest.approx(2.0 * 0.04 / 0.05)
    assert co.group_cost("grokked: adamw/ma (source none)", costs) == 0.05
    assert co.group_cost("muon/none (muon lr 0.003)", costs) != co.group_cost("muon/none (muon lr 0.003)", costs)  # NaN

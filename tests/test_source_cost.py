"""analysis/source_cost.py: the source's cost against what a start saves per target, on
fabricated run directories with a known answer."""

from __future__ import annotations

import json
from pathlib import Path

from fixtures_rundirs import write_status

from groktransfer.analysis import run_analysis


def _with_seconds(run_dir: Path, seconds_per_epoch: float) -> None:
    status = json.loads((run_dir / "status.json").read_text())
    status["seconds_per_epoch"] = seconds_per_epoch
    (run_dir / "status.json").write_text(json.dumps(status))


def _sweep(tmp_path: Path, grokked_epochs, random_epochs, source_epoch: int = 2000) -> Path:
    sweep = tmp_path / "sweep"
    source = tmp_path / "sources" / "add_s0"
    write_status(source, condition="source", seed=0, epoch=3000, max_epochs=3000, hydra=False)
    _with_seconds(source, 0.5)  # 2,000 epochs to its grokked checkpoint = 1,000 s
    for i, e in enumerate(random_epochs):
        run = write_status(sweep / f"r{i}", condition="random", seed=i, epoch=e or 9000, max_epochs=9000,
                           thresholds={0.999: e})  # fmt: skip
        _with_seconds(run, 0.1)
    for i, e in enumerate(grokked_epochs):
        run = write_status(sweep / f"g{i}", condition="grokked", seed=i, epoch=e or 9000, max_epochs=9000,
                           thresholds={0.999: e})  # fmt: skip
        _with_seconds(run, 0.1)
        (run / "source.json").write_text(json.dumps({"condition": "grokked", "source_run_dir": str(source),
                                                     "chosen": {"epoch": source_epoch}}))  # fmt: skip
    return sweep


def test_break_even_is_source_seconds_over_seconds_saved_per_target(tmp_path: Path) -> None:
    # random median 4,000, grokked median 1,500: 2,500 epochs x 0.1 s = 250 s saved per target;
    # the source's 2,000 epochs x 0.5 s = 1,000 s: paid back after 4 targets
    sweep = _sweep(tmp_path, grokked_epochs=[1000, 1500, 2000], random_epochs=[3000, 4000, 5000])
    result = run_analysis(sweep, tmp_path / "out", {"analysis": {"thresholds": [0.999], "headline_threshold": 0.999}})
    data = json.loads(result.files["source_cost_json"].read_text())
    (cost,) = data["conditions"]
    assert (cost["source_epochs"], cost["source_seconds"]) == (2000.0, 1000.0)
    assert (cost["saving_epochs"], cost["saving_seconds"], cost["saving_bound"]) == (2500.0, 250.0, "exact")
    assert cost["break_even_targets"] == 4
    report = result.files["report_md"].read_text()
    assert "Is the source worth its cost?" in report and "pays for itself after 4 targets" in report


def test_no_saving_never_pays_off_and_a_censored_start_is_not_determinable(tmp_path: Path) -> None:
    slower = _sweep(tmp_path / "a", grokked_epochs=[5000, 6000, 7000], random_epochs=[3000, 4000, 5000])
    (cost,) = json.loads(run_analysis(slower, tmp_path / "a" / "out", {"analysis": {"thresholds": [0.999]}})
                         .files["source_cost_json"].read_text())["conditions"]  # fmt: skip
    assert cost["break_even_targets"] is None and "never pays off" in cost["sentence"]
    censored = _sweep(tmp_path / "b", grokked_epochs=[None, None, 2000], random_epochs=[3000, 4000, 5000])
    (cost,) = json.loads(run_analysis(censored, tmp_path / "b" / "out", {"analysis": {"thresholds": [0.999]}})
                         .files["source_cost_json"].read_text())["conditions"]  # fmt: skip
    assert cost["saving_bound"] == "indeterminate" and cost["break_even_targets"] is None

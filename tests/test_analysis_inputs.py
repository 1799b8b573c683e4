"""``scripts/analyze.py`` speaks like ``train.py``: bad input is exit status 2 and one line,
nothing written; runs it cannot read are named, with why, and never counted."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, TINY, run_in, script_env
from faults import truncate

FAST = ["analysis.interp.enabled=false", "analysis.extra_sections=[]"]


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("one_run")
    return run_in(root, "run", TINY + ["train.max_epochs=40"]).run_dir


def _sweep(tmp_path: Path, run: Path, names) -> Path:
    sweep = tmp_path / "sweep"
    for name in names:
        shutil.copytree(run, sweep / name)
    return sweep


def _analyze(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "scripts/analyze.py", *FAST, *overrides],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_runs_the_analysis_cannot_read_are_named_and_not_counted(tmp_path: Path, completed_run: Path) -> None:
    sweep = _sweep(tmp_path, completed_run, ["intact", "half", "binary", "empty", "not_a_number", "altered"])
    for name in ("half", "binary", "empty", "not_a_number"):
        (sweep / name / "manifest.json").unlink()  # as written before runs had one: the file itself is read
    truncate(sweep / "half" / "metrics.csv", 0.6)
    (sweep / "binary" / "metrics.csv").write_bytes(bytes(range(256)) * 4)
    (sweep / "empty" / "metrics.csv").write_text("")
    status = json.loads((sweep / "not_a_number" / "status.json").read_text())
    status["final"]["test_acc"] = "n/a"
    (sweep / "not_a_number" / "status.json").write_text(json.dumps(status))
    with open(sweep / "altered" / "metrics.csv", "a") as f:
        f.write("50,0.1,0.2,1.0,1.0,0.003\n")  # well-formed, but not what the run wrote

    proc = _analyze(f"sweep_dir={sweep}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Analysed 6 job(s) from 1 sweep dir(s); 1 completed, 5 not in the statistics." in out
    expected = {
        "half": "metrics.csv row ",  # the cut row: "row N has k of 6 fields (half-written?)"
        "binary": "metrics.csv is not text (binary data)",
        "empty": "metrics.csv is empty",
        "not_a_number": "status.json: final test_acc is not an accuracy ('n/a')",
        "altered": "metrics.csv does not match its checksum in manifest.json",
    }
    assert "Could not read 5 run(s):" in out
    for name, why in expected.items():
        assert f"  {sweep / name}: {why}" in out
    assert "(half-written?)" in out
    report = (sweep / "analysis" / "report.md").read_text()
    for name, why in expected.items():
        assert why.replace("'", "") in report.replace("'", "") and name in report
    assert report.count("unreadable") >= 5


def test_bad_analysis_input_is_exit_2_and_one_line_with_nothing_written(tmp_path: Path, completed_run: Path) -> None:
    sweep = _sweep(tmp_path, completed_run, ["a"])
    cases = {
        "analysis.bootstrap.n_resample=5": "n_resample",  # does not compose (a misspelt key)
        "analysis.bootstrap.confidence=1.5": "analyze: error: invalid analysis settings: "
        "analysis.bootstrap.confidence=1.5: must be < 1",
        "analysis.out_dir=/proc/groktransfer_analysis": "analyze: error: cannot write the analysis to /proc/groktransfer_analysis",
    }
    for override, message in cases.items():
        proc = _analyze(f"sweep_dir={sweep}", override)
        assert proc.returncode == 2, (override, proc.stdout + proc.stderr)
        assert message in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr
        if message.startswith("analyze:"):
            assert proc.stderr.strip() == message or proc.stderr.strip().startswith(message)
            assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in sweep.iterdir()) == ["a"]  # no analysis/ written


def test_every_setting_and_condition_is_checked_before_anything_is_written(tmp_path: Path, completed_run: Path) -> None:
    from groktransfer.analysis import run_analysis
    from groktransfer.analysis.collect import SweepInputError
    from groktransfer.analysis.settings import SettingsError

    sweep = _sweep(tmp_path, completed_run, ["a"])
    (tmp_path / "a_file").write_text("x")
    bad = {
        "bootstrap": {"confidence": math.nan},
        "thresholds": [0.5, 1.5],
        "headline_threshold": 0.0,
        "dpi": 100_000,
        "stale_after_s": math.inf,
        "curves": {"max_points": 1, "include_statuses": ["done"]},
        "baseline": "nonexistent",
    }
    for key, value in bad.items():
        with pytest.raises(SettingsError, match=key):
            run_analysis(sweep, cfg={"analysis": {key: value}})
    with pytest.raises(SettingsError, match="analysis.baseline='nonexistent' is no condition of the sweep"):
        run_analysis(sweep, cfg={"analysis": {"baseline": "nonexistent"}})
    with pytest.raises(SettingsError, match="analysis.compare='grokd'"):
        run_analysis(sweep, cfg={"analysis": {"compare": ["grokd"]}})
    with pytest.raises(SweepInputError, match=f"cannot write the analysis to {tmp_path / 'a_file'}"):
        run_analysis(sweep, tmp_path / "a_file", cfg={"analysis": {"extra_sections": []}})
    assert sorted(p.name for p in sweep.iterdir()) == ["a"]
    # a registered condition without runs in the sweep is no typo: the report says it has none
    result = run_analysis(sweep, cfg={"analysis": {"extra_sections": [], "interp": {"enabled": False}, "compare": ["grokked"]}})
    assert result.runs and all(r.completed for r in result.runs)

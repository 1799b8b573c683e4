"""Slow end-to-end checks (minutes): run with `bash scripts/run_tests.sh -m slow`.

The default suite runs the same code paths on a tiny problem; these run the real
presets a user runs, and check the science comes out as documented.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import PYTHON, REPO, script_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(7200)]


def test_quickstart_sweep_and_report(tmp_path: Path) -> None:
    """The README's main job: grokked and random starts reach 99.9% in most seeds, grokked first.

    Memorised starts may not reach it within the preset's 3,000 epochs: they are censored
    there (a finding, not a failure), and the report says so."""
    sweep = tmp_path / "multirun" / "quickstart" / "sweep"
    train = subprocess.run(
        [PYTHON, "scripts/train.py", "-m", "experiment=quickstart", "seed=0,1,2",
         "transfer=grokked,random,memorized", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         "train.progress_bar=false", f"paths.root={tmp_path / 'multirun'}", f"hydra.sweep.dir={sweep}"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=3600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    analyze = subprocess.run([PYTHON, "scripts/analyze.py", f"sweep_dir={sweep}"], cwd=REPO, env=script_env(),
                             capture_output=True, text=True, timeout=600)
    assert analyze.returncode == 0, analyze.stderr[-3000:]
    runs = pd.read_csv(sweep / "analysis" / "runs.csv")
    assert (runs["status"] == "completed").all() and len(runs) == 9
    reached = runs.groupby("condition")["censored_0.999"].apply(lambda s: (~s.astype(bool)).sum())
    assert reached["grokked"] >= 2 and reached["random"] >= 2  # "most seeds"
    medians = runs.groupby("condition")["epochs_to_0.999"].median()
    assert medians["grokked"] < medians["random"]
    report = (sweep / "analysis" / "report.md").read_text()
    assert report.index("## Answer") < report.index("Circuits") and (sweep / "analysis" / "circuits" / "circuits_runs.csv").exists()


def test_nanda_p113_groks_addition(tmp_path: Path) -> None:
    """The paper's exact setup groks: test accuracy >= 99.9% (about 8-10k epochs, ~10 min)."""
    run_dir = tmp_path / "nanda"
    proc = subprocess.run(
        [PYTHON, "scripts/train.py", "experiment=nanda_p113", "train.progress_bar=false", "logger=none",
         f"paths.root={tmp_path}", f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=5400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["final"]["test_acc"] >= 0.999 and status["thresholds"]["0.999"]["epoch"] is not None

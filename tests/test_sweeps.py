"""Real multirun sweeps through Hydra's launcher plugins, their analysis, and reruns.

These are the user's main job in miniature: 3 conditions x 2 seeds on a tiny problem,
launched as a subprocess exactly as the README says, then analysed, then launched again
(which must train nothing).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import List

import pandas as pd
import pytest

from conftest import PYTHON, REPO, TINY, script_env

SWEEP = TINY + [
    "experiment_name=tiny_sweep",
    "task=subtract",
    "train.max_epochs=200",
    "transfer.source.source_seed=0",
    "seed=0,1",
    "transfer=grokked,random,memorized",
]
ANALYSIS_FILES = [
    "runs.csv",
    "summary_table.csv",
    "speedup.csv",
    "epochs_to_threshold.png",
    "test_accuracy.png",
    "test_loss.png",
    "progress_measures.png",
    "report.md",
    "report.html",
]


def _sweep(root: Path, sweep_dir: Path, launcher: List[str]) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "scripts/train.py", "-m", *SWEEP, *launcher, f"paths.root={root}", f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _job_statuses(sweep_dir: Path) -> dict:
    out = {}
    for status in sweep_dir.glob("*/status.json"):
        s = json.loads(status.read_text())
        out[(s["condition"], s["seed"])] = s
    return out


def _check_sweep(sweep_dir: Path) -> None:
    statuses = _job_statuses(sweep_dir)
    assert set(statuses) == {(c, s) for c in ("grokked", "random", "memorized") for s in (0, 1)}
    assert all(s["status"] == "completed" for s in statuses.values())
    names = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and (p / "status.json").exists())
    assert all(("_s0" in n or "_s1" in n) and any(c in n for c in ("grokked", "random", "memorized")) for n in names)
    hashes = {json.loads(p.read_text())["source_hash"] for p in sweep_dir.glob("*/source.json")}
    assert len(hashes) == 1  # one shared source run


@pytest.mark.parametrize(
    "launcher",
    [
        # the default suite runs one real launcher end to end (the README's parallel sweep);
        # the basic launcher (jobs one after another in one process) and submitit are slow
        pytest.param([], id="basic", marks=[pytest.mark.slow, pytest.mark.timeout(1800)]),
        pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], id="joblib"),
        pytest.param(
            ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"],
            id="submitit_local",
            marks=[pytest.mark.slow, pytest.mark.timeout(1800)],
        ),
    ],
)
def test_sweep_through_launcher_then_analysis_then_idempotent_rerun(tmp_path: Path, launcher: List[str]) -> None:
    root = tmp_path / "multirun"
    first = root / "tiny_sweep" / "first"
    _sweep(root, first, launcher)
    _check_sweep(first)
    sources = [p for p in (root / ".sources").iterdir() if p.is_dir()]
    assert len(sources) == 1  # six jobs, two in parallel, one source training

    proc = subprocess.run(
        [PYTHON, "scripts/analyze.py", f"sweep_dir={first}"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ANALYSIS_FILES:
        path = first / "analysis" / name
        assert path.exists() and path.stat().st_size > 0, name
    runs = pd.read_csv(first / "analysis" / "runs.csv")
    assert len(runs) == 6 and set(runs["condition"]) == {"grokked", "random", "memorized"}
    assert "data:image/png;base64," in (first / "analysis" / "report.html").read_text()

    # the same sweep command again: every job is recognised by its run identity and skipped
    second = root / "tiny_sweep" / "second"
    _sweep(root, second, launcher)
    statuses = _job_statuses(second)
    assert len(statuses) == 6
    assert all(str(first) in s["reused_from"] for s in statuses.values())
    for job in second.iterdir():
        if (job / "metrics.csv").exists():
            assert (job / "metrics.csv").stat().st_nlink > 1  # shared bytes, nothing retrained

"""A tiny trajectory sweep and a 2x2 task matrix, launched as the README says, then analysed.

Tiny on purpose (p = 23, a 60-epoch source, 20-epoch targets): what is checked is the
plumbing a user relies on -- one source run per source task, one checkpoint per
requested epoch, random jobs reused rather than retrained across the source axis,
and the analysis finding all of it and writing its figure, table and sentence.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd

from conftest import PYTHON, REPO, TINY, script_env
from groktransfer.analysis import run_analysis

SHORT = TINY + ["transfer.source.max_epochs=60", "train.max_epochs=20", "transfer.source.source_seed=0"]
PROVIDERS = {"analysis": {"extra_sections": [
    "groktransfer.analysis.starts:start_sections",
    "groktransfer.analysis.trajectory:trajectory_sections",
    "groktransfer.analysis.matrix:matrix_sections",
]}}  # fmt: skip


def _sweep(root: Path, sweep_dir: Path, overrides: list[str]) -> str:
    cmd = [PYTHON, "scripts/train.py", "-m", *overrides, f"paths.root={root}", f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _statuses(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/status.json"))]


def test_tiny_trajectory_sweep_and_its_analysis(tmp_path: Path) -> None:
    root, sweep = tmp_path / "multirun", tmp_path / "multirun" / "trajectory" / "s"
    _sweep(root, sweep, SHORT + ["experiment_name=trajectory", "task=subtract", "transfer.source.epoch=20,45",
                                 "seed=0,1", "transfer=random,checkpoint"])  # fmt: skip
    statuses = _statuses(sweep)
    assert all(s["status"] == "completed" for s in statuses) and len(statuses) == 8
    chosen = sorted((s["seed"], s["source"]["epoch"]) for s in statuses if s["condition"] == "checkpoint")
    assert chosen == [(0, 20), (0, 40), (1, 20), (1, 40)]  # checkpoints every 20: 45 -> 40
    randoms = [s for s in statuses if s["condition"] == "random"]
    assert sum(bool(s.get("reused_from")) for s in randoms) == 2  # the epoch axis repeats them: trained once
    assert len(list((root / ".sources").glob("*/status.json"))) == 1

    result = run_analysis(sweep, cfg=PROVIDERS)
    table = pd.read_csv(result.out_dir / "trajectory.csv")
    assert sorted(table.source_epoch.unique()) == [20, 40] and (table.n == 2).all() and (table.n_baseline == 2).all()
    report = (result.out_dir / "report.md").read_text()
    assert "## Transfer along the source's training" in report and "Source epochs tried: 20, 40." in report
    assert "## Fair baselines" in report and "## Transfer starts" in report
    assert (result.out_dir / "trajectory.png").exists()
    assert sorted(result.conditions) == ["checkpoint@20", "checkpoint@40", "random"]


def test_two_by_two_matrix_sweep_and_its_analysis(tmp_path: Path) -> None:
    root, sweep = tmp_path / "multirun", tmp_path / "multirun" / "matrix" / "s"
    relaxed = ["transfer.grokked.min_train_acc=0", "transfer.grokked.min_test_acc=0", "transfer.grokked.held_for=0"]
    _sweep(root, sweep, SHORT + relaxed + ["experiment_name=matrix", "transfer.source.task=add,subtract",
                                           "task=add,subtract", "seed=0", "transfer=random,grokked"])  # fmt: skip
    statuses = _statuses(sweep)
    assert len(statuses) == 8 and all(s["status"] == "completed" for s in statuses)
    sources = {json.loads(p.read_text())["spec"]["task"]["name"] for p in sweep.glob("*/source.json")}
    assert sources == {"add", "subtract"} and len(list((root / ".sources").glob("*/status.json"))) == 2

    result = run_analysis(sweep, cfg=PROVIDERS)
    table = pd.read_csv(result.out_dir / "matrix.csv")
    pairs = set(zip(table.source_task, table.target_task))
    assert pairs == {("add", "add"), ("add", "subtract"), ("subtract", "add"), ("subtract", "subtract")}
    assert (table.condition == "grokked").all() and (table.n == 1).all() and (table.n_baseline == 1).all()
    assert "## Task × task transfer matrix" in (result.out_dir / "report.md").read_text()
    assert (result.out_dir / "matrix_speedup.png").exists()

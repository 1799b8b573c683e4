"""The run-directory contract: old directories still read, newer schemas are refused.

``tests/data/rundirs_v0`` was written by the code on main *before* the contract
module existed (a two-job TINY sweep, grokked and random, plus its cached source
run; periodic checkpoints stripped, ``final.pt`` kept). It stands for every run
directory users already have on disk.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from groktransfer.analysis import run_analysis

V0 = Path(__file__).parent / "data" / "rundirs_v0"
FAST = {"analysis": {"bootstrap": {"n_resamples": 50}, "dpi": 40, "extra_sections": []}}


@pytest.fixture()
def v0_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "rundirs_v0"
    shutil.copytree(V0, dest)
    return dest


def test_pre_contract_sweep_still_analyses(v0_copy: Path) -> None:
    result = run_analysis([v0_copy / "sweep"], None, FAST)
    assert [r.status for r in result.runs] == ["completed", "completed"]
    by_condition = {r.condition: r for r in result.runs}
    assert by_condition["random"].thresholds["0.999"]["epoch"] == 1120
    assert by_condition["grokked"].thresholds["0.999"]["epoch"] == 0
    assert set(result.conditions) == {"grokked", "random"}
    assert (result.out_dir / "report.md").is_file()

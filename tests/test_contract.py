"""The run-directory contract: old directories still read, newer schemas are refused.

``tests/data/rundirs_v0`` was written by the code on main *before* the contract
module existed (a two-job TINY sweep, grokked and random, plus its cached source
run; periodic checkpoints stripped, ``final.pt`` kept). It stands for every run
directory users already have on disk.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, TINY, script_env
from groktransfer.runs import rundir
from groktransfer.analysis import SweepInputError, run_analysis
from groktransfer.runs.rundir import (
    SCHEMA_VERSION,
    STATUS_FILE,
    RunDir,
    RunKind,
    SchemaVersionError,
    Status,
    threshold_key,
)

V0 = Path(__file__).parent / "data" / "rundirs_v0"
FAST = {"analysis": {"bootstrap": {"n_resamples": 50}, "dpi": 40, "extra_sections": []}}
CIRCUITS = {"analysis": {**FAST["analysis"], "extra_sections": ["groktransfer.analysis.circuits:circuit_sections"]}}


@pytest.fixture()
def v0_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "rundirs_v0"
    shutil.copytree(V0, dest)
    return dest


def test_pre_contract_sweep_still_analyses(v0_copy: Path) -> None:
    """The sweep statistics and the circuit analysis both read a directory written before the contract."""
    result = run_analysis([v0_copy / "sweep"], None, CIRCUITS)
    assert [r.status for r in result.runs] == ["completed", "completed"]
    by_condition = {r.condition: r for r in result.runs}
    assert by_condition["random"].thresholds["0.999"]["epoch"] == 1120
    assert by_condition["grokked"].thresholds["0.999"]["epoch"] == 0
    assert set(result.conditions) == {"grokked", "random"}
    assert (result.out_dir / "report.md").is_file()
    circuit_runs = (result.out_dir / "circuits" / "circuits_runs.csv").read_text()
    assert "grokked" in circuit_runs and "random" in circuit_runs


# --------------------------------------------------------------------------- the record
def test_status_record_round_trips_and_keeps_unknown_keys(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "r")
    run_dir.update_status(status=Status.RUNNING, epoch=0, thresholds={threshold_key(0.999): {"epoch": None, "held": False}})
    data = json.loads(run_dir.status_path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["status"] == "running" and "0.999" in data["thresholds"]
    data["added_by_a_newer_minor"] = [1, 2]
    run_dir.status_path.write_text(json.dumps(data))
    record = run_dir.update_status(status=Status.COMPLETED)
    assert record.completed and record.extra == {"added_by_a_newer_minor": [1, 2]}
    assert json.loads(run_dir.status_path.read_text())["added_by_a_newer_minor"] == [1, 2]
    with pytest.raises(TypeError):
        run_dir.update_status(stauts=Status.FAILED)  # a misspelt field is an error, not a new key


def test_pre_contract_record_reads_as_version_0() -> None:
    record = RunDir(V0 / "sweep" / "1_add_random_s0").read_status()
    assert record is not None and record.schema_version == 0
    assert record.status == Status.COMPLETED and record.run_id == "c20b076a75869adbc90c"
    assert record.kind == RunKind.TARGET
    source = RunDir(V0 / ".sources" / "add_p23_s0_805df51ab0755ea9").read_status()
    assert source is not None and source.kind == RunKind.SOURCE and source.spec["version"] == 1


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "sweep" / "job")
    run_dir.update_status(status=Status.COMPLETED, condition="random", seed=0)
    data = json.loads(run_dir.status_path.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    run_dir.status_path.write_text(json.dumps(data))
    with pytest.raises(SchemaVersionError, match="upgrade groktransfer"):
        run_dir.read_status()
    with pytest.raises(SweepInputError, match=f"schema_version {SCHEMA_VERSION + 1}"):
        run_analysis([tmp_path / "sweep"], None, FAST)
    assert not (tmp_path / "sweep" / "analysis").exists()


def test_a_newer_schema_stops_training_with_exit_2(tmp_path: Path) -> None:
    """The run index meets a newer record where a job would resume: one message, exit status 2."""
    run_dir = tmp_path / "job"
    RunDir(run_dir).update_status(status=Status.RUNNING)
    data = json.loads((run_dir / STATUS_FILE).read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    (run_dir / STATUS_FILE).write_text(json.dumps(data))
    proc = subprocess.run(
        [PYTHON, "scripts/train.py", *TINY, f"paths.root={tmp_path}", f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "upgrade groktransfer" in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- one place for names
CONTRACT_NAMES = [
    rundir.STATUS_FILE, rundir.CONFIG_FILE, rundir.METRICS_FILE, rundir.MEASURES_FILE, rundir.FREQS_FILE,
    rundir.SOURCE_FILE, rundir.RESUME_FILE, rundir.FINAL_CHECKPOINT, rundir.SOURCE_SPEC_FILE, rundir.MANIFEST_FILE,
    rundir.PROFILE_TRACE,
]  # fmt: skip


def _string_literals(path: Path):
    """Every string constant of a module that is not a docstring or a bare comment-string."""
    tree = ast.parse(path.read_text())
    bare = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare:
            yield node.lineno, node.value


def test_run_file_names_and_statuses_are_spelt_only_in_the_contract() -> None:
    """Writers and readers import names from groktransfer.runs.rundir (docs/architecture.md)."""
    statuses = {str(s) for s in Status}
    offenders = []
    for path in sorted([*(REPO / "src").rglob("*.py"), *(REPO / "scripts").glob("*.py")]):
        if path.name == "rundir.py":
            continue
        for line, text in _string_literals(path):
            if text in statuses or any(name in text for name in CONTRACT_NAMES) or text == rundir.CHECKPOINT_DIR:
                offenders.append(f"{path.relative_to(REPO)}:{line}: {text!r}")
    assert not offenders, "spell these through groktransfer.runs.rundir:\n" + "\n".join(offenders)

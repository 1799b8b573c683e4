"""Damaged files of a run: named, never carried forward, never a silent start from zero.

Each test damages one file of a real run the way a torn write, a full disk during a copy
or a crash of the machine would, then runs the same command again (``scripts/train.py``
in a fresh Hydra directory, found through the run index) and checks its exit status, the
one line it says, what the new run holds and that the damaged directory was not altered.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import PYTHON, REPO, TINY, run_in, script_env
from faults import FaultInjection, digests, status_now, truncate

from groktransfer.runs.integrity import check_completed
from groktransfer.runs.rundir import RunDir

KILLABLE = TINY + ["train.max_epochs=400", "train.patience=0", "train.checkpoint_every=40"]


def _train(root: Path, run_dir: Path, overrides=KILLABLE) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "scripts/train.py", *overrides, f"paths.root={root}", f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _crashed(tmp_path: Path) -> Path:
    """A run that crashed at epoch 100: checkpoints 0..80 and a resume state of epoch 80."""
    with pytest.raises(RuntimeError, match="injected failure"):
        run_in(tmp_path, "crashed", KILLABLE, [FaultInjection(raise_at_epoch=100)])
    return tmp_path / "crashed"


def _all_load(run_dir: Path) -> None:
    for path in sorted((run_dir / "checkpoints").glob("*.pt")):
        torch.load(path, weights_only=True)
    assert check_completed(RunDir(run_dir)) == []


def test_a_completed_runs_truncated_final_checkpoint_is_not_reused(tmp_path: Path) -> None:
    short = TINY + ["train.max_epochs=60"]
    first = run_in(tmp_path, "done", short).run_dir
    truncate(first / "checkpoints" / "final.pt")
    before = digests(first)
    proc = _train(tmp_path, tmp_path / "again", short)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"training from the start: checkpoints/final.pt in {first} does not match its checksum in manifest.json" in out
    assert "skipped" not in out
    again = status_now(tmp_path / "again")
    assert again["status"] == "completed" and again["reused_from"] is None
    _all_load(tmp_path / "again")
    assert digests(first) == before  # the damaged run is left as it was, for inspection


@pytest.mark.parametrize("damaged, why", [
    ("metrics.csv", "does not match its checksum in manifest.json"),
    ("manifest.json", "is torn or not a manifest"),
])  # fmt: skip
def test_a_completed_run_with_a_damaged_table_or_manifest_is_not_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damaged: str, why: str
) -> None:
    short = TINY + ["train.max_epochs=60"]
    first = run_in(tmp_path, "done", short).run_dir
    truncate(first / damaged)
    before = digests(first)
    again = run_in(tmp_path, "again", short)
    assert again.skipped is None and again.status == "completed"
    assert f"training from the start: {damaged} in {first} {why}" in caplog.text
    _all_load(again.run_dir)
    assert digests(first) == before


def test_a_damaged_checkpoint_of_the_resume_epoch_is_written_again(tmp_path: Path) -> None:
    crashed = _crashed(tmp_path)
    truncate(crashed / "checkpoints" / "epoch_000080.pt")
    before = digests(crashed)
    proc = _train(tmp_path, tmp_path / "rerun")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert (
        f"checkpoints/epoch_000080.pt in {crashed} does not match its checksum in manifest.json: "
        "written again from its resume state"
    ) in out
    assert f"retrying the crash in {crashed}" in out and "resuming from epoch 80" in out
    rerun = status_now(tmp_path / "rerun")
    assert rerun["status"] == "completed" and rerun["epoch"] == 400 and rerun["resumed_at"]
    _all_load(tmp_path / "rerun")  # nothing damaged was carried into the completed run
    assert digests(crashed) == before


def test_a_damaged_older_checkpoint_retrains_from_the_start_saying_why(tmp_path: Path) -> None:
    crashed = _crashed(tmp_path)
    truncate(crashed / "checkpoints" / "epoch_000040.pt")
    before = digests(crashed)
    proc = _train(tmp_path, tmp_path / "rerun")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"training from the start: checkpoints/epoch_000040.pt in {crashed} does not match its checksum" in out
    rerun = status_now(tmp_path / "rerun")
    assert rerun["status"] == "completed" and rerun["epoch"] == 400 and rerun["resumed_at"] is None
    _all_load(tmp_path / "rerun")
    assert digests(crashed) == before


def test_a_torn_status_record_next_to_an_intact_resume_state_resumes(tmp_path: Path) -> None:
    crashed = _crashed(tmp_path)
    truncate(crashed / "status.json")
    proc = _train(tmp_path, tmp_path / "rerun")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"resuming in {crashed}, whose status.json is damaged: from epoch 80" in out
    rerun = status_now(tmp_path / "rerun")
    assert rerun["status"] == "completed" and rerun["epoch"] == 400 and rerun["resumed_at"]
    epochs = pd.read_csv(tmp_path / "rerun" / "metrics.csv").epoch.tolist()
    assert epochs == list(range(0, 401, 10))  # every eval, once: the rows before epoch 80 were carried


def test_a_truncated_resume_state_is_named_and_the_job_trains_from_the_start(tmp_path: Path) -> None:
    crashed = _crashed(tmp_path)
    truncate(crashed / "resume.pt")
    before = digests(crashed)
    proc = _train(tmp_path, tmp_path / "rerun")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"training from the start: resume.pt in {crashed} cannot be loaded" in out
    assert status_now(tmp_path / "rerun")["status"] == "completed"
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in tmp_path.glob("*/status.json")}
    assert statuses == {"crashed": "failed", "rerun": "completed"}  # no second `running` directory
    assert digests(crashed) == before


def test_resuming_links_the_files_and_leaves_the_original_as_it_was(tmp_path: Path) -> None:
    """No second copy of a run to resume it (a full disk may not have room): its files are hard
    links, and since no run file is rewritten in place, the original is not altered."""
    crashed = _crashed(tmp_path)
    before = digests(crashed)
    resumed = run_in(tmp_path, "resumed", KILLABLE)
    assert resumed.status == "completed"
    for name in ("checkpoints/epoch_000040.pt", "checkpoints/epoch_000080.pt"):
        assert (crashed / name).stat().st_ino == (tmp_path / "resumed" / name).stat().st_ino
    assert digests(crashed) == before
    _all_load(tmp_path / "resumed")


def test_an_unfinished_cached_source_with_a_damaged_resume_state_is_moved_aside_and_trained_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transfer = TINY + ["task=subtract", "transfer=checkpoint", "transfer.source.epoch=20", "train.max_epochs=20",
                       "transfer.source.max_epochs=40"]  # fmt: skip
    run_in(tmp_path, "first", transfer)
    (source,) = [p for p in (tmp_path / ".sources").iterdir() if p.is_dir()]
    RunDir(source).update_status(status="running", epoch=20)  # as if killed at epoch 20 ...
    (source / "resume.pt").write_bytes((source / "checkpoints" / "final.pt").read_bytes()[:5000])  # ... mid-write
    second = run_in(tmp_path, "second", transfer + ["seed=1", "transfer.source.source_seed=0"])
    assert second.status == "completed"
    assert f"cached source run is corrupt (resume.pt in {source} cannot be loaded" in caplog.text
    assert len([p for p in (tmp_path / ".sources").iterdir() if ".corrupt-" in p.name]) == 1
    assert RunDir(source).read_status().status == "completed"
    _all_load(source)

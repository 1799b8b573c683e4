"""Fault injection: kills, corrupt files, NaNs, crashes and reruns lose nothing.

Every test here injects a fault on purpose and checks that finished work survives
and that the record says what happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import PYTHON, REPO, TINY, run_in, script_env
from faults import FaultInjection, status_now

# Long enough to be killed mid-way; patience 0 so it always runs to max_epochs.
KILLABLE = TINY + ["train.max_epochs=400", "train.patience=0", "train.checkpoint_every=40"]


def _train_cmd(root: Path, run_dir: Path, extra=()) -> list:
    return [PYTHON, "scripts/train.py", *KILLABLE, f"paths.root={root}", f"hydra.run.dir={run_dir}", *extra]


def test_sigkill_then_same_command_resumes_bit_identically(tmp_path: Path) -> None:
    reference = run_in(tmp_path / "ref", "a", KILLABLE)  # an uninterrupted run, separate root
    root = tmp_path / "sweeps"
    first, second = root / "launch1", root / "launch2"
    proc = subprocess.Popen(
        _train_cmd(root, first, ["logger=wandb"]),
        cwd=REPO, env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and status_now(first).get("epoch", 0) < 120:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no finally blocks
    proc.wait()
    killed_at = status_now(first)["epoch"]
    assert status_now(first)["status"] == "running" and 120 <= killed_at < 400

    # "the same command again": a new Hydra directory; the run index finds the old one
    done = subprocess.run(_train_cmd(root, second, ["logger=wandb"]), cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from epoch" in done.stdout + done.stderr
    assert status_now(second)["status"] == "completed"
    pd.testing.assert_frame_equal(
        pd.read_csv(reference.run_dir / "metrics.csv"), pd.read_csv(second / "metrics.csv"), check_exact=True
    )
    ref_measures = pd.read_csv(reference.run_dir / "measures.csv")
    pd.testing.assert_frame_equal(ref_measures, pd.read_csv(second / "measures.csv"), check_exact=True)
    assert status_now(second)["thresholds"] == reference.record.thresholds
    assert status_now(first)["status"] == "running"  # the killed launch's files were copied, not altered

    from groktransfer.sinks.wandb_sink import wandb_run_id
    from wandb_reader import offline_run_files, read_offline_run

    # the resumed job continued its own W&B run: the id derives from the run identity
    expected = wandb_run_id(status_now(second)["run_id"])
    resumed_files = offline_run_files(second)
    assert len(resumed_files) == 1
    resumed = read_offline_run(resumed_files[0])
    assert resumed.run_id == expected
    # the killed launch's offline dir (if W&B had created it) carries the same id in its name
    assert all(f.parent.name.endswith(expected) for f in offline_run_files(first))
    resumed_epochs = [row["epoch"] for row in resumed.history if "epoch" in row]
    assert min(resumed_epochs) > killed_at - 40 and max(resumed_epochs) == 400


def test_rerun_of_a_finished_job_trains_nothing_and_force_retrains(tmp_path: Path) -> None:
    short = TINY + ["train.max_epochs=60"]
    first = run_in(tmp_path, "one", short)
    again = run_in(tmp_path, "two", short)
    assert again.skipped and "already completed" in again.skipped
    assert status_now(tmp_path / "two")["reused_from"] == str(first.run_dir)
    pd.testing.assert_frame_equal(pd.read_csv(first.run_dir / "metrics.csv"), pd.read_csv(tmp_path / "two" / "metrics.csv"))
    forced = run_in(tmp_path, "three", short + ["force=true"])
    assert forced.skipped is None and forced.status == "completed"


def test_nan_is_recorded_as_failure_and_not_retried_silently(tmp_path: Path) -> None:
    nan = [FaultInjection(nan_at_epoch=30)]
    failed = run_in(tmp_path, "nan", TINY, nan)
    assert failed.status == "failed" and failed.record.failed_epoch == 31
    assert "non-finite training loss" in failed.record.reason
    rerun = run_in(tmp_path, "nan_again", TINY, nan)
    assert rerun.status == "failed" and "failed before" in rerun.skipped


def test_exception_is_recorded_and_the_job_resumes_after_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="injected failure"):
        run_in(tmp_path, "crash", KILLABLE, [FaultInjection(raise_at_epoch=100)])
    status = status_now(tmp_path / "crash")
    assert status["status"] == "failed" and "injected failure" in status["reason"]
    resumed = run_in(tmp_path, "crash_rerun", KILLABLE)  # the same job, without the fault
    assert resumed.status == "completed" and resumed.record.epoch == 400


def test_timeout_marks_the_job_failed(tmp_path: Path) -> None:
    slow = [FaultInjection(sleep_per_epoch=0.01)]
    result = run_in(tmp_path, "slow", KILLABLE + ["train.timeout_minutes=0.001"], slow)
    assert result.status == "failed" and "timeout" in result.record.reason


def test_corrupt_cached_source_is_detected_and_rebuilt(tmp_path: Path, caplog) -> None:
    transfer = TINY + ["task=subtract", "transfer=grokked", "train.max_epochs=40", "transfer.source.source_seed=0"]
    first = run_in(tmp_path, "g0", transfer)
    chosen = Path(json.loads((first.run_dir / "source.json").read_text())["chosen"]["checkpoint"])
    chosen.write_bytes(chosen.read_bytes()[:1000])  # truncate the checkpoint the job will load
    second = run_in(tmp_path, "g1", transfer + ["seed=1"])
    assert second.status == "completed"
    assert any("is corrupt" in r.message for r in caplog.records)
    aside = [p for p in (tmp_path / ".sources").iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1  # moved aside for inspection, not deleted
    rebuilt = Path(json.loads((second.run_dir / "source.json").read_text())["chosen"]["checkpoint"])
    assert rebuilt.stat().st_size > 1000


def test_a_directory_holding_another_run_is_not_overwritten(tmp_path: Path) -> None:
    from groktransfer.jobs.run_job import JobError

    run_in(tmp_path, "x", TINY + ["train.max_epochs=20"])
    with pytest.raises(JobError, match="force=true"):
        run_in(tmp_path, "x", TINY + ["train.max_epochs=30"])

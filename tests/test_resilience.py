"""Fault injection: kills, corrupt files, NaNs, crashes and reruns lose nothing.

Every test here injects a fault on purpose and checks that finished work survives
and that the record says what happened.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import PYTHON, REPO, TINY, run_in, script_env
from faults import FaultInjection, on_small_disk, small_disk_available, status_now

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
    assert "non-finite training loss" in failed.record.reason and failed.record.failure_kind == "deterministic"
    rerun = run_in(tmp_path, "nan_again", TINY, nan)
    assert rerun.status == "failed"
    assert rerun.skipped == (
        f"failed before in {failed.run_dir}: {failed.record.reason} (it would fail the same way again; force=true retrains)"
    )
    assert run_in(tmp_path, "nan_forced", TINY + ["force=true"]).status == "completed"  # the fault is gone


def test_exception_is_recorded_and_the_job_resumes_after_it(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(RuntimeError, match="injected failure"):
        run_in(tmp_path, "crash", KILLABLE, [FaultInjection(raise_at_epoch=100)])
    status = status_now(tmp_path / "crash")
    assert status["status"] == "failed" and "injected failure" in status["reason"] and status["failure_kind"] == "crash"
    resumed = run_in(tmp_path, "crash_rerun", KILLABLE)  # the same job, without the fault
    assert resumed.status == "completed" and resumed.record.epoch == 400 and resumed.record.failure_kind is None
    said = f"retrying the crash in {tmp_path / 'crash'} (RuntimeError: injected failure at epoch 100): resuming from epoch 80"
    assert said in caplog.text


def test_a_fixed_plugin_reruns_the_job_it_crashed_before_any_checkpoint(tmp_path: Path) -> None:
    """A crash before the first checkpoint (a plugin's bug) left no resume state: the rerun of
    the same command, the bug fixed, trains it from the start -- no force=true needed."""
    with pytest.raises(RuntimeError, match="before the first checkpoint"):
        run_in(tmp_path, "crash", KILLABLE, [FaultInjection(raise_at_start=True)])
    status = status_now(tmp_path / "crash")
    assert status["failure_kind"] == "crash" and not (tmp_path / "crash" / "resume.pt").exists()
    proc = subprocess.run(_train_cmd(tmp_path, tmp_path / "fixed"), cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert (
        f"retrying the crash in {tmp_path / 'crash'} (RuntimeError: injected failure before the first checkpoint): "
        "from the start (it left no checkpoint)"
    ) in out
    assert status_now(tmp_path / "fixed")["status"] == "completed"


@pytest.mark.skipif(not small_disk_available(), reason="needs a private tmpfs (unshare -rm: root or user namespaces)")
def test_a_full_disk_leaves_its_traceback_in_train_log_and_the_rerun_resumes(tmp_path: Path) -> None:
    disk, out = tmp_path / "disk", tmp_path / "out"
    out.mkdir()
    job = " ".join(["train.max_epochs=400", "train.patience=0", "train.checkpoint_every=20", *TINY])
    train = f"{PYTHON} scripts/train.py {job} paths.root={disk}"
    script = (
        f"{train} hydra.run.dir={disk}/full > {out}/full.txt 2>&1; echo $? > {out}/full.rc; "
        f"cp -r {disk}/full {out}/full; "
        f"mount -o remount,size=16m {disk} && "  # space freed: the same command again
        f"{train} hydra.run.dir={disk}/rerun > {out}/rerun.txt 2>&1; echo $? > {out}/rerun.rc; "
        f"cp {disk}/rerun/status.json {out}/rerun_status.json; "
        f"stat -c '%i %n' {disk}/full/checkpoints/*.pt {disk}/rerun/checkpoints/*.pt > {out}/inodes"
    )
    done = on_small_disk(disk, "2m", script)  # room for about eight checkpoints of this run
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "full.rc").read_text().strip() == "1", (out / "full.txt").read_text()
    log = (out / "full" / "train.log").read_text()
    assert "Traceback" in log and "No space left on device" in log and "job failed (recorded in" in log
    assert not (out / "full" / ".train.log.reserve").exists()  # the reserve was spent on the traceback
    assert (out / "rerun.rc").read_text().strip() == "0", (out / "rerun.txt").read_text()
    assert json.loads((out / "rerun_status.json").read_text())["status"] == "completed"
    said = (out / "rerun.txt").read_text()
    resumed = re.search(r"(?:retrying the crash in \S+/full \(.*\): )?resuming from epoch (\d+)", said)
    assert resumed is not None and int(resumed.group(1)) >= 40, said
    inode = {}
    for line in (out / "inodes").read_text().splitlines():
        number, path = line.split(" ", 1)
        inode[(Path(path).parent.parent.name, Path(path).name)] = number
    kept = [name for (run, name) in inode if run == "full" and name.startswith("epoch_") and int(name[6:12]) <= int(resumed.group(1))]
    assert len(kept) >= 3 and all(inode[("full", n)] == inode[("rerun", n)] for n in kept)  # links, no second copy

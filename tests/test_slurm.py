"""Sweeps through `hydra/launcher=slurm` against a real SLURM: pre-emption, cancel, rerun.

They need a cluster that answers (`bash scripts/slurm_local.sh start` brings up a
one-node one as root; `.ci/run` does) and are skipped, with the reason, otherwise.
Every job is a tiny problem (debug=smoke); a job that must be interrupted runs 1000
epochs without early stopping, so that the signal lands mid-training.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import List, Optional

import pandas as pd
import pytest

from conftest import PYTHON, REPO, TINY, run_in, script_env
from faults import status_now


def _cluster_problem() -> Optional[str]:
    """Why the SLURM tests cannot run here, or None when a cluster answers."""
    if shutil.which("sbatch") is None:
        return "no SLURM client on PATH; as root, `bash scripts/slurm_local.sh start` starts a one-node cluster"
    for cmd, what in ((["scontrol", "ping"], "controller"), (["sacct", "-n", "-X", "-S", "now"], "accounting (sacct)")):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"SLURM {what} does not answer ({exc})"
        if proc.returncode != 0 or (what == "controller" and "UP" not in proc.stdout):
            return f"SLURM {what} does not answer: {(proc.stdout + proc.stderr).strip()[:200]}"
    return None


_PROBLEM = _cluster_problem()
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm"), pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))]

SLURM = ["hydra/launcher=slurm", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=30"]
# A job long enough to be signalled mid-way: patience 0 so it always runs to max_epochs.
SLOW_JOB = TINY + ["train.max_epochs=1000", "train.patience=0", "train.checkpoint_every=100", "task=add", "transfer=random"]


def _start_sweep(root: Path, sweep_dir: Path, overrides: List[str]) -> subprocess.Popen:
    cmd = [PYTHON, "scripts/train.py", "-m", *overrides, *SLURM, f"paths.root={root}", f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.Popen(cmd, cwd=REPO, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def _slurm_job_id(sweep_dir: Path, num: int, n_jobs: int) -> str:
    """submitit's id of sweep job ``num``: ``<array>_<num>``, or the plain id of a one-job sweep."""
    folders = [p.name for p in (sweep_dir / ".submitit").iterdir() if p.is_dir()]
    if n_jobs == 1:
        return next(f for f in folders if "_" not in f)
    return next(f for f in folders if f.endswith(f"_{num}"))


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_slurm_sweep_completes_analyses_and_rerun_trains_nothing(tmp_path: Path) -> None:
    root = tmp_path / "multirun"
    sweep = TINY + ["experiment_name=slurm_sweep", "task=subtract", "train.max_epochs=100",
                    "transfer.source.source_seed=0", "seed=0", "transfer=grokked,random,memorized"]
    first = root / "slurm_sweep" / "first"
    out = _finish(_start_sweep(root, first, sweep))
    statuses = {s["condition"]: s for s in map(status_now, first.glob("*_s0")) if s}
    assert set(statuses) == {"grokked", "random", "memorized"}, out[-3000:]
    assert all(s["status"] == "completed" for s in statuses.values()), out[-3000:]
    assert len(list((first / ".submitit").glob("*_[0-2]"))) == 3  # one SLURM array of three tasks

    proc = subprocess.run([PYTHON, "scripts/analyze.py", f"sweep_dir={first}"], cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = pd.read_csv(first / "analysis" / "runs.csv")
    assert len(runs) == 3 and set(runs["status"]) == {"completed"}
    assert (first / "analysis" / "report.html").stat().st_size > 0

    second = root / "slurm_sweep" / "second"
    out = _finish(_start_sweep(root, second, sweep))
    again = [status_now(d) for d in second.glob("*_s0")]
    assert len(again) == 3 and all(str(first) in s["reused_from"] for s in again), out[-3000:]
    for job in second.glob("*_s0"):
        assert (job / "metrics.csv").stat().st_nlink > 1  # shared bytes: nothing retrained
        assert not (job / "resume.pt").exists()


def test_preempted_job_is_requeued_and_resumes_bit_identically(tmp_path: Path) -> None:
    reference = run_in(tmp_path / "ref", "uninterrupted", SLOW_JOB + ["seed=5"])
    root = tmp_path / "multirun"
    sweep_dir = root / "preempt"
    proc = _start_sweep(root, sweep_dir, SLOW_JOB + ["experiment_name=preempt", "seed=5"])
    run_dir = sweep_dir / "0_add_random_s5"
    _wait_until(lambda: status_now(run_dir).get("epoch", 0) >= 200, 180, "epoch 200")
    job = _slurm_job_id(sweep_dir, 0, 1)
    # what SLURM sends before pre-empting a job: USR2 to the job's processes (not --batch)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    _wait_until(lambda: status_now(run_dir).get("status") == "stopped", 60, "the job to stop")
    stopped = status_now(run_dir)
    assert "SystemExit" in stopped["reason"] and (run_dir / "resume.pt").exists()
    assert 200 <= stopped["epoch"] < 1000

    out = _finish(proc)
    done = status_now(run_dir)
    assert done["status"] == "completed" and done["epoch"] == 1000, out[-3000:]
    assert "resumed_at" in done and not (run_dir / "resume.pt").exists()
    log = "".join(p.read_text() for p in (sweep_dir / ".submitit").glob(f"{job}/*_log.*"))
    assert "this job is preempted" in log and "Requeued job" in log
    assert f"resuming from epoch {stopped['epoch']}" in log
    states = subprocess.run(["sacct", "-n", "-X", "-D", "-o", "State", "-j", job], capture_output=True, text=True).stdout
    assert states.split()[0] == "REQUEUED"  # SLURM's record of the first run
    for name in ("metrics.csv", "measures.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(reference.run_dir / name), pd.read_csv(run_dir / name), check_exact=True
        )
    assert done["thresholds"] == reference.record.thresholds


def test_cancelled_job_is_recorded_failed_and_the_sweep_completes(tmp_path: Path) -> None:
    root = tmp_path / "multirun"
    sweep_dir = root / "cancel"
    # longer than SLOW_JOB: on an idle machine 1000 tiny epochs take ~5 s and submitit ignores
    # scancel's SIGTERM, so such a job could finish before SLURM's SIGKILL lands (seen in CI)
    long_job = [o for o in SLOW_JOB if not o.startswith("train.max_epochs=")] + ["train.max_epochs=5000"]
    proc = _start_sweep(root, sweep_dir, long_job + ["experiment_name=cancel", "seed=0,1"])
    victim = sweep_dir / "0_add_random_s0"
    _wait_until(lambda: status_now(victim).get("epoch", 0) >= 100, 180, "epoch 100")
    job = _slurm_job_id(sweep_dir, 0, 2)
    subprocess.run(["scancel", job], check=True)  # no signal option: SIGTERM, then SIGKILL

    out = _finish(proc)  # returns: the launcher does not wait for the lost job for ever
    assert proc.returncode != 0  # the sweep reports that one job left no result ...
    assert f"SLURM job {job} ended CANCELLED" in out, out[-3000:]
    assert status_now(sweep_dir / "1_add_random_s1")["status"] == "completed"  # ... after the rest finished
    failed = status_now(victim)
    assert failed["status"] == "failed" and f"SLURM job {job} ended CANCELLED" in failed["reason"]
    assert 100 <= failed["failed_epoch"] < 5000 and (victim / "resume.pt").exists()  # a rerun resumes it

"""Worker processes and GPUs: who trains where, what a worker's death leaves, what ``auto`` says.

Without a GPU here, the GPU side is tested through what decides it: the visible GPUs are
pretended (``visible_gpus``), a spawned worker reports the ``CUDA_VISIBLE_DEVICES`` it got,
and the slot locks are taken by hand. The CUDA tests proper are in test_cuda.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import List

import pytest
import torch
from filelock import FileLock

from conftest import compose_job
from fakegpu import FAKE, fake_gpu
from faults import FaultInjection
from groktransfer.config.schema import TrainJobConfig, to_typed
from groktransfer.jobs import ensemble_launch
from groktransfer.jobs.ensemble_launch import WorkerPlan, _in_workers, train_planned, worker_count, worker_plan
from groktransfer.jobs.run_job import Launch, PlannedJob, plan_job
from groktransfer.jobs import train_run_dir
from groktransfer.training import device as device_module
from groktransfer.training.device import DeviceError, claim_gpu, resolve_device, training_device

JOB = ["debug=smoke", "train.max_epochs=12", "train.eval_every=3", "train.checkpoint_every=6", "train.patience=0"]


def _planned(root: Path, seeds=(0, 1), callbacks=()) -> List[PlannedJob]:
    held = contextlib.ExitStack()
    jobs = []
    for seed in seeds:
        job = to_typed(TrainJobConfig, compose_job(JOB + [f"seed={seed}"], root=root))
        planned = plan_job(job, Launch(run_dir=root / f"job{seed}", cwd=root), held, callbacks)
        assert isinstance(planned, PlannedJob)
        jobs.append(planned)
    return jobs


def _status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


# --------------------------------------------------------------------------- which GPU each worker gets
@pytest.fixture
def three_gpus(monkeypatch):
    """This process sees three CUDA GPUs (as far as the launcher's decisions go)."""
    real = ensemble_launch.resolve_device

    def resolve(spec: str) -> torch.device:
        text = str(spec).strip().lower()
        if text in ("auto", "cuda"):
            return torch.device("cuda", 0)
        if text.startswith("cuda:"):
            return torch.device(text)
        return real(spec)

    monkeypatch.setattr(ensemble_launch, "resolve_device", resolve)
    monkeypatch.setattr(ensemble_launch, "visible_gpus", lambda: ["0", "1", "2"])


def test_workers_are_one_per_gpu_or_the_stated_number_per_gpu(three_gpus) -> None:
    assert worker_count(0, "cuda") == 3 and worker_count(0, "auto", jobs_per_gpu=2) == 6
    assert worker_count(0, "cuda:1", jobs_per_gpu=2) == 2 and worker_count(5, "cuda") == 5
    assert worker_plan("cuda", 3).gpus == ("0", "1", "2")
    assert worker_plan("auto", 6).gpus == ("0", "1", "2", "0", "1", "2")  # spread, then share
    assert worker_plan("cuda", 4).describe() == ", on GPU 0, 1, 2 (2 per GPU)"
    assert worker_plan("cuda:1", 2).gpus == (None, None)  # the jobs name their GPU
    assert worker_plan("cpu", 2).gpus == (None, None) and worker_plan("cpu", 2).describe() == ""


def _report_gpu() -> List[str]:
    time.sleep(1.5)  # long enough that each worker takes a task
    return [f"{os.getpid()}:{os.environ.get('CUDA_VISIBLE_DEVICES')}"]


def test_each_spawned_worker_sees_only_its_own_gpu() -> None:
    seen = _in_workers([_report_gpu] * 4, 2, ["a", "b", "c", "d"], WorkerPlan(("3", "5")))
    by_pid = {}
    for entry in seen:
        pid, gpu = entry.split(":")
        by_pid.setdefault(pid, set()).add(gpu)
    assert all(len(gpus) == 1 for gpus in by_pid.values())  # a worker keeps its GPU
    assert set.union(*by_pid.values()) <= {"3", "5"} and os.getpid() not in map(int, by_pid)
    if len(by_pid) == 2:
        assert set.union(*by_pid.values()) == {"3", "5"}


def test_workers_train_after_this_process_ran_backward_with_an_accelerator_present(tmp_path: Path) -> None:
    """Forked workers would fail here: autograd's device threads started in this process (as
    with CUDA installed) forbid autograd in a forked child. Spawned workers do not care."""
    with fake_gpu():
        w = torch.ones(3, requires_grad=True).to(FAKE)
        (w * 2).sum().backward()
    results = train_planned(_planned(tmp_path), max_members=1, n_jobs=2, threads=1)
    assert [r.status.value for r in results] == ["completed", "completed"]


# --------------------------------------------------------------------------- nothing left "running"
def test_members_of_a_worker_that_died_are_recorded_failed_and_resume(tmp_path: Path) -> None:
    jobs = _planned(tmp_path, seeds=(0,), callbacks=[FaultInjection(die_at_epoch=8)]) + _planned(tmp_path, seeds=(1,))
    train_planned(jobs, max_members=1, n_jobs=2, threads=1)
    dead = _status(tmp_path / "job0")
    assert dead["status"] == "failed" and "worker process died" in dead["reason"]
    assert "rerun the sweep to resume" in dead["reason"] and (tmp_path / "job0" / "resume.pt").exists()
    assert _status(tmp_path / "job1")["status"] in ("completed", "failed")  # never "running"
    again = _planned(tmp_path, seeds=(0,))  # the same job, without the fault: it resumes
    assert again[0].plan.resume_state is not None and int(again[0].plan.resume_state["epoch"]) == 6
    (result,) = train_planned(again, max_members=1)
    assert result.status.value == "completed" and result.record.epoch == 12


def test_a_device_that_fails_to_start_is_recorded_in_every_member(tmp_path: Path, monkeypatch) -> None:
    def broken(spec: str) -> torch.device:
        raise RuntimeError("CUDA error: initialization error")

    monkeypatch.setattr(train_run_dir, "training_device", broken)
    assert train_planned(_planned(tmp_path), max_members=2) == []
    for seed in (0, 1):
        status = _status(tmp_path / f"job{seed}")
        assert status["status"] == "failed" and "CUDA error: initialization error" in status["reason"]


def test_a_separate_job_whose_device_fails_to_start_is_recorded_failed(tmp_path: Path, monkeypatch) -> None:
    from conftest import run_in

    def broken(spec: str) -> torch.device:
        raise RuntimeError("no CUDA")

    monkeypatch.setattr(train_run_dir, "training_device", broken)
    with pytest.raises(RuntimeError, match="no CUDA"):
        run_in(tmp_path, "job", JOB)
    status = _status(tmp_path / "job")
    assert status["status"] == "failed" and "no CUDA" in status["reason"]


# --------------------------------------------------------------------------- train.device=auto and cuda
def test_auto_says_on_one_line_which_device_it_chose_and_why(caplog, monkeypatch) -> None:
    monkeypatch.setattr(device_module, "_announced", set())
    with caplog.at_level(logging.INFO, logger="groktransfer.training.device"):
        assert training_device("auto") == torch.device("cpu")
        training_device("auto")  # said once per process
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train.device=auto")]
    if torch.version.cuda is None:
        assert lines == [f"train.device=auto: cpu (torch {torch.__version__} is a CPU build)"]
    else:
        assert len(lines) == 1 and lines[0].startswith("train.device=auto: ")


@pytest.fixture
def old_driver(monkeypatch):
    """A CUDA 13.0 build of torch on a machine whose driver supports CUDA 12.4 and lists two GPUs."""
    banner = "| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4     |"

    def smi(*args: str) -> str:
        return "GPU 0: NVIDIA A100 (UUID: GPU-a)\nGPU 1: NVIDIA A100 (UUID: GPU-b)\n" if args == ("-L",) else banner

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_nvidia_smi", smi)
    device_module._nvidia_gpus.cache_clear()
    device_module._driver_cuda_version.cache_clear()
    yield
    device_module._nvidia_gpus.cache_clear()
    device_module._driver_cuda_version.cache_clear()


def test_a_driver_too_old_for_this_torch_is_named(old_driver, caplog, monkeypatch) -> None:
    with pytest.raises(DeviceError) as refused:
        resolve_device("cuda")
    message = str(refused.value)
    assert "built for CUDA 13.0" in message and "the driver supports CUDA 12.4" in message and "2 GPU(s)" in message
    monkeypatch.setattr(device_module, "_announced", set())
    with caplog.at_level(logging.INFO, logger="groktransfer.training.device"):
        assert training_device("auto") == torch.device("cpu")
    (record,) = [r for r in caplog.records if r.getMessage().startswith("train.device=auto")]
    assert record.levelno == logging.WARNING and "the driver supports CUDA 12.4" in record.getMessage()


def test_gpu_slots_spread_processes_over_the_gpus_before_sharing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(device_module, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(device_module.tempfile, "gettempdir", lambda: str(tmp_path))
    folder = tmp_path / f"groktransfer-gpu-slots-{os.getuid()}"
    folder.mkdir()
    host = device_module.socket.gethostname()
    other = FileLock(str(folder / f"{host}-gpu0-0.lock"))  # another process trains on GPU 0
    other.acquire()
    monkeypatch.setattr(device_module, "_claimed", [])
    assert claim_gpu() == 1 and claim_gpu() == 1  # the free GPU; claimed once per process
    first = device_module._claimed  # this process's slot, still held
    monkeypatch.setattr(device_module, "_claimed", [])  # a second process: both GPUs are busy
    assert claim_gpu() == 0 and (folder / f"{host}-gpu0-1.lock").exists()  # share, starting with the first
    for _, lock in first + device_module._claimed:
        lock.release()
    other.release()

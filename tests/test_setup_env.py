"""scripts/setup_env.sh chooses the torch a machine needs before installing anything: the CPU
build without an NVIDIA GPU, the newest CUDA build the driver supports with one, a one-line
refusal for a driver too old, and a working torch already there kept."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, script_env


def _plan(tmp_path: Path, venv: Path, cuda: str | None = None, **env: str) -> subprocess.CompletedProcess:
    path = os.environ["PATH"]
    if cuda is not None:  # a stand-in nvidia-smi: two GPUs, a driver for CUDA `cuda`
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        smi = bin_dir / "nvidia-smi"
        smi.write_text(f'#!/usr/bin/env bash\nif [ "${{1:-}}" = -L ]; then echo "GPU 0: A (UUID: a)"; echo "GPU 1: B (UUID: b)"; '
                       f'else echo "| Driver Version: 999.1   CUDA Version: {cuda} |"; fi\n')  # fmt: skip
        smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
        path = f"{bin_dir}:{path}"
    else:
        path = ":".join(p for p in path.split(":") if not (Path(p) / "nvidia-smi").exists())
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "setup_env.sh")], capture_output=True, text=True, timeout=120,
        env={**script_env(), "PATH": path, "GROKTRANSFER_VENV": str(venv), "GROKTRANSFER_SETUP_PLAN": "1", **env},
    )  # fmt: skip


@pytest.mark.parametrize("cuda, build", [("13.1", "cu130"), ("12.9", "cu128"), ("12.6", "cu126")])
def test_a_gpu_machine_gets_the_newest_cuda_build_its_driver_supports(tmp_path: Path, cuda: str, build: str) -> None:
    proc = _plan(tmp_path, tmp_path / "venv", cuda=cuda)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"[setup] plan: torch 2.13.0: {build} (NVIDIA GPUs: 2, driver CUDA: {cuda})"
    assert not (tmp_path / "venv").exists()  # a plan changes nothing


def test_a_driver_too_old_is_refused_in_one_line(tmp_path: Path) -> None:
    proc = _plan(tmp_path, tmp_path / "venv", cuda="12.4")
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert "the NVIDIA driver supports CUDA 12.4, older than every CUDA build of torch 2.13.0" in lines[0]
    assert "GROKTRANSFER_TORCH=cpu" in lines[0]


def test_a_laptop_gets_the_cpu_build_and_a_working_torch_is_kept(tmp_path: Path) -> None:
    laptop = _plan(tmp_path, tmp_path / "venv")
    assert laptop.returncode == 0 and laptop.stdout.strip().startswith("[setup] plan: torch 2.13.0: cpu"), laptop.stderr
    # this suite's own environment has a working torch: it is kept, on a laptop as on a GPU machine whose
    # torch works (here, with a stand-in driver, this CPU torch cannot use the GPU: a CUDA build is chosen)
    if sys.prefix == sys.base_prefix:
        pytest.skip("the suite does not run in a virtual environment")
    here = Path(sys.prefix)
    assert "plan: torch 2.13.0: keep" in _plan(tmp_path, here).stdout
    assert "plan: torch 2.13.0: cu130" in _plan(tmp_path, here, cuda="13.0").stdout


def test_an_unknown_choice_is_refused(tmp_path: Path) -> None:
    proc = _plan(tmp_path, tmp_path / "venv", GROKTRANSFER_TORCH="rocm")
    assert proc.returncode == 1 and "GROKTRANSFER_TORCH=rocm: choose auto, keep, cpu, cuXYZ" in proc.stderr

"""benchmarks/gpu_check.sh cannot pass having checked nothing: "no GPU" only without one, one
failing line when the GPU is there but torch cannot use it or the environment lacks the
package, and (slow) its dry run on the CPU passes every step within its limit."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, script_env

SCRIPT = str(REPO / "benchmarks" / "gpu_check.sh")


def _run(tmp_path: Path, *args: str, env: dict, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**script_env(), "GPU_CHECK_OUT": str(tmp_path / "out"), **env})  # fmt: skip


def _fake_nvidia_smi(tmp_path: Path) -> str:
    """A PATH whose nvidia-smi lists two GPUs (and a driver for CUDA 12.4)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/usr/bin/env bash\nif [ "${1:-}" = -L ]; then echo "GPU 0: NVIDIA A100 (UUID: GPU-a)"; '
                   'echo "GPU 1: NVIDIA A100 (UUID: GPU-b)"; else echo "| Driver Version: 550.54   CUDA Version: 12.4 |"; fi\n')  # fmt: skip
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    return f"{bin_dir}:{os.environ['PATH']}"


def _no_nvidia_path() -> str:
    return ":".join(p for p in os.environ["PATH"].split(":") if not (Path(p) / "nvidia-smi").exists())


def test_says_no_gpu_in_one_line_and_exits_0_without_one(tmp_path: Path) -> None:
    proc = _run(tmp_path, env={"PATH": _no_nvidia_path()})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gpu_check: no GPU: no NVIDIA driver (nvidia-smi not found)")
    assert len(proc.stdout.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="a bash stand-in for nvidia-smi")
def test_a_gpu_that_torch_cannot_use_fails_in_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this torch can use a GPU")
    proc = _run(tmp_path, env={"PATH": _fake_nvidia_smi(tmp_path), "GPU_CHECK_PYTHON": PYTHON})
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("gpu_check: FAILED: nvidia-smi lists 2 GPU(s) but torch cannot use them: ")
    assert "CPU build" in lines[0] or "driver supports CUDA 12.4" in lines[0]


def test_an_environment_without_the_package_fails_in_one_line(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    proc = _run(tmp_path, "--dry-run", env={"GPU_CHECK_PYTHON": str(bare / "bin" / "python")})
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "cannot import groktransfer" in lines[0], lines


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_dry_run_on_the_cpu_passes_every_step_within_its_limit(tmp_path: Path) -> None:
    """Every step on the CPU with train.device=cpu, in this suite's environment (the install
    step is run by hand: `bash benchmarks/gpu_check.sh --dry-run`)."""
    proc = _run(tmp_path, "--dry-run", env={"GPU_CHECK_PYTHON": PYTHON, "OMP_NUM_THREADS": "1"}, timeout=1700)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "gpu_check: all steps passed" in proc.stdout and "DRY RUN on the CPU" in proc.stdout
    summary = (tmp_path / "out" / "summary.md").read_text()
    for step in ("tests", "digits", "bench", "sweep", "analysis", "deterministic_true", "deterministic_false"):
        assert f"| {step} | rc=0," in summary, step
    assert not (REPO / "benchmarks" / "results" / "gpu_check.json").exists()  # apart from the CPU's results

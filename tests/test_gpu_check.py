"""benchmarks/gpu_check.sh on a machine without a GPU: one clear line and exit 0, nothing written."""

from __future__ import annotations

import subprocess

import pytest
import torch

from conftest import PYTHON, REPO, script_env


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: gpu_check.sh would run the real check")
def test_gpu_check_says_no_gpu_and_exits_0_on_a_cpu_machine(tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                          env={**script_env(), "PYTHON_BIN": PYTHON, "GPU_CHECK_OUT": str(out)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gpu_check: no GPU: torch.cuda.is_available() is False here") and "CUDA build" in proc.stdout
    assert len(proc.stdout.strip().splitlines()) == 1 and not out.exists()

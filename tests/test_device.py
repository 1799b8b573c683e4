"""train.device: resolution, a missing device as one readable error, device-independent saves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from conftest import PYTHON, REPO, TINY, script_env
from groktransfer.training.device import DeviceError, loss_dtype, resolve_device, to_cpu

NO_CUDA = not torch.cuda.is_available()


def test_auto_and_cpu_resolve() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda") if not NO_CUDA else torch.device("cpu"))
    assert loss_dtype(torch.device("cpu")) == torch.float64


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu"])
def test_nonsense_is_a_device_error(spec: str) -> None:
    with pytest.raises(DeviceError, match="train.device"):
        resolve_device(spec)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_missing_cuda_is_a_device_error(spec: str) -> None:
    with pytest.raises(DeviceError, match="CUDA is not available here"):
        resolve_device(spec)


def test_cuda_index_beyond_the_devices_is_refused() -> None:
    with pytest.raises(DeviceError):
        resolve_device(f"cuda:{torch.cuda.device_count() + 3}")


def test_to_cpu_walks_nested_states() -> None:
    state = {"a": [torch.ones(2), (torch.zeros(1), 3)], "b": {"c": torch.arange(3)}, "d": "x"}
    out = to_cpu(state)
    assert out["a"][1][1] == 3 and out["d"] == "x"
    assert all(t.device.type == "cpu" for t in (out["a"][0], out["a"][1][0], out["b"]["c"]))


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_train_device_cuda_without_a_gpu_exits_2_before_training(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, "scripts/train.py", *TINY, f"paths.root={tmp_path}", "train.device=cuda"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "train.device=cuda: CUDA is not available here" in out
    assert "Traceback" not in out
    assert not list(tmp_path.rglob("status.json")) and not list(tmp_path.rglob("*.pt"))

"""Shared fixtures: compose real configs from conf/ and run jobs in tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Sequence

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"

# train.cpu_gemm=auto keeps its per-CPU choices in a cache (groktransfer.model.gemm); the
# suite keeps its own, shared by its subprocesses, so a run of the tests leaves ~/.cache alone.
os.environ.setdefault("GROKTRANSFER_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"groktransfer-tests-{os.getuid()}"))

# One tiny job in seconds (conf/debug/smoke.yaml): memorises by ~epoch 100, groks by ~1100.
TINY: List[str] = ["debug=smoke"]

# The suite trains on the CPU wherever it runs: its expected numbers are the CPU's (ensembles
# equal separate runs to 1e-6, resumes are bit-identical), and train.device=auto would pick a
# GPU where there is one. In-process jobs get this override first, so a test's own
# train.device wins; jobs in subprocesses see no GPU (script_env). The CUDA tests (test_cuda.py,
# run by benchmarks/gpu_check.sh) and the pretend GPU (test_gpu_path.py) choose their device.
PIN_DEVICE: List[str] = ["train.device=cpu"]


def compose_job(overrides: Sequence[str] = (), root: Path | None = None) -> DictConfig:
    """A job config exactly as scripts/train.py would see it (minus Hydra's runtime), on the CPU
    unless ``overrides`` name another train.device."""
    from groktransfer.config.schema import register_configs

    register_configs()
    extra = [f"paths.root={root}"] if root is not None else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=PIN_DEVICE + list(overrides) + extra)


def run_in(tmp_path: Path, name: str, overrides: Sequence[str], callbacks: Sequence = ()):
    """Run one job in-process into ``tmp_path/name``; returns its JobResult.

    ``callbacks``: extra trainer callbacks, e.g. the fault injection of ``faults.py``.
    """
    from groktransfer.config.schema import TrainJobConfig, to_typed
    from groktransfer.jobs.run_job import Launch, run_job

    cfg = compose_job(overrides, root=tmp_path)
    return run_job(to_typed(TrainJobConfig, cfg), Launch(run_dir=tmp_path / name, cwd=tmp_path), callbacks)


def script_env() -> dict:
    """Environment for subprocess runs of scripts/: quiet, single-threaded, no network W&B, no GPU
    (train.device=auto resolves to the CPU there: see PIN_DEVICE)."""
    # Drop W&B state inherited from this process: once an in-process test has used W&B,
    # os.environ holds e.g. WANDB_SERVICE, which would attach the child to our W&B service.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    return env


PYTHON = sys.executable


def transformer_lens_or_skip():
    """The installed ``transformer_lens`` module; skips the calling test module without it.

    ``GROKTRANSFER_REQUIRE_TL`` (set by ``.ci/run``) makes a missing TransformerLens a
    collection error instead of a skip: ``1`` any supported version, ``3`` or ``4`` that
    major version (CI's two steps), so a wrong install cannot pass as the other one.
    """
    from groktransfer.model.transformer_lens import installed_major

    required, major = os.environ.get("GROKTRANSFER_REQUIRE_TL", ""), installed_major()
    if required and major is None:
        pytest.fail(f"GROKTRANSFER_REQUIRE_TL={required}: TransformerLens is not installed", pytrace=False)
    if required not in ("", "1") and str(major) != required:
        pytest.fail(f"GROKTRANSFER_REQUIRE_TL={required}: TransformerLens {major}.x is installed", pytrace=False)
    if major not in (3, 4):
        why = "not installed (extras tl: 3.x, tl4: 4.x)" if major is None else f"{major}.x (3.x and 4.x are tested)"
        pytest.skip(f"TransformerLens {why}", allow_module_level=True)
    import transformer_lens

    return transformer_lens


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield

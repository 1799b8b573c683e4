"""The CUDA path: an ensemble on the GPU equals its members trained separately there, a
CUDA run is repeatable under ``train.deterministic``, and a GPU run agrees with the CPU's
to float32 rounding -- a modular run, a digit job in minibatches, and every family's
checkpoint measures. Skipped, with the reason, on a machine without CUDA (run by
``benchmarks/gpu_check.sh`` on one that has it; tests/test_gpu_path.py checks the same
device discipline on a pretend GPU everywhere)."""

from __future__ import annotations

import dataclasses

import math

import pytest
import torch

from conftest import run_in
from groktransfer.config.schema import OptimizerConfig, TrainConfig
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.tasks.modular import Task
from groktransfer.training.device import configure_determinism
from groktransfer.training.ensemble import EnsembleTrainer
from groktransfer.training.trainer import Trainer, TrainOutcome

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (benchmarks/gpu_check.sh runs these on a GPU)")

# On the GPU the stacked members run batched cuBLAS kernels where separate runs run plain
# GEMMs, which may round differently; accuracies must agree exactly on this small task,
# losses and weights to float32 rounding accumulated over the run.
RTOL, ATOL = 1e-4, 1e-6
MEMBERS = [dict(seed=0, data_seed=0, lr=3e-3), dict(seed=1, data_seed=0, lr=1e-3), dict(seed=2, data_seed=5, lr=3e-3)]


def member(seed: int, data_seed: int, lr: float, device: str = "cuda", epochs: int = 200) -> Trainer:
    task = Task("add", 23, 0.6, data_seed)
    cfg = TransformerConfig(d_model=64, d_mlp=128, d_head=16, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out)
    model = HookedGrokTransformer(cfg, seed=seed).to(device)
    train = TrainConfig(max_epochs=epochs, eval_every=10, checkpoint_every=50, patience=0, progress_bar=False, device=device)
    return Trainer(model, task, OptimizerConfig(lr=lr), train)


def weights(t: Trainer) -> dict:
    return {k: v.detach().cpu() for k, v in t.model.state_dict().items()}


def test_a_cuda_ensemble_equals_separate_cuda_runs() -> None:
    configure_determinism(torch.device("cuda"), True)
    separate = [member(**m) for m in MEMBERS]
    outcomes = [t.fit() for t in separate]
    members = [member(**m) for m in MEMBERS]
    results = EnsembleTrainer(members).fit()
    assert all(isinstance(r, TrainOutcome) for r in results + outcomes)
    for r, o, ens, sep in zip(results, outcomes, members, separate):
        assert r.last_eval.train_acc == o.last_eval.train_acc and r.last_eval.test_acc == o.last_eval.test_acc
        assert r.last_eval.train_loss == pytest.approx(o.last_eval.train_loss, rel=RTOL, abs=ATOL)
        for name, w in weights(ens).items():
            torch.testing.assert_close(w, weights(sep)[name], rtol=RTOL, atol=ATOL, msg=name)


def test_a_deterministic_cuda_run_repeats_bit_for_bit() -> None:
    configure_determinism(torch.device("cuda"), True)
    a, b = member(**MEMBERS[0]), member(**MEMBERS[0])
    a.fit(), b.fit()
    for name, w in weights(a).items():
        assert torch.equal(w, weights(b)[name]), name


def test_a_cuda_run_follows_the_cpu_run() -> None:
    gpu, cpu = member(**MEMBERS[0], epochs=50), member(**MEMBERS[0], device="cpu", epochs=50)
    g, c = gpu.fit(), cpu.fit()
    assert g.last_eval.train_loss == pytest.approx(c.last_eval.train_loss, rel=1e-3)


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-3, abs=1e-5)
    return a == b


def test_a_digit_job_in_minibatches_on_cuda_follows_the_cpu(tmp_path) -> None:
    job = ["debug=smoke", "task=digit_add", "model=attn_only_2l", "train.batch_size=8", "train.max_epochs=40",
           "train.eval_every=10", "train.checkpoint_every=20", "train.patience=0"]  # fmt: skip
    cpu = run_in(tmp_path / "cpu", "job", job + ["train.device=cpu"])
    gpu = run_in(tmp_path / "gpu", "job", job + ["train.device=cuda"])
    assert cpu.status == gpu.status == "completed", gpu.record.reason
    assert gpu.record.final["train_loss"] == pytest.approx(cpu.record.final["train_loss"], rel=1e-3)
    assert (tmp_path / "gpu" / "job" / "measures.csv").read_text().count("\n") == 3  # epochs 0, 20, 40


@pytest.mark.parametrize("task_name, model_kw", [
    ("add", {}), ("divide", {}), ("int_add", {}), ("x2xyy2", {}), ("subtract", {"n_layers": 2, "attn_only": True}),
    ("digit_add", {}),
])  # fmt: skip
def test_checkpoint_measures_on_cuda_follow_the_cpu(task_name: str, model_kw: dict) -> None:
    from groktransfer.config.schema import TaskConfig
    from groktransfer.measures.registry import measure_checkpoint
    from groktransfer.jobs.train_run_dir import resolved_model_config
    from groktransfer.tasks.registry import family_of, make_task, typed_task

    keys = {"p": 23, "frac_train": 0.5, "n_digits": 2}  # each family takes the keys it declares
    declared = {f.name for f in dataclasses.fields(family_of(task_name).config_class)}
    task = make_task(typed_task({"name": task_name, **{k: v for k, v in keys.items() if k in declared}}), 0)
    cfg = resolved_model_config(TransformerConfig(d_model=32, d_mlp=64, d_head=8, **model_kw), task)
    model = HookedGrokTransformer(cfg, seed=1)
    cpu = measure_checkpoint(task, model, 0.3)
    gpu = measure_checkpoint(task, model.to("cuda"), 0.3)
    assert list(gpu[0]) == list(cpu[0])
    different = {k: (gpu[0][k], cpu[0][k]) for k in cpu[0] if not _close(gpu[0][k], cpu[0][k])}
    assert not different

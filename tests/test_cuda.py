"""The CUDA path: an ensemble on the GPU equals its members trained separately there, a
CUDA run is repeatable under ``train.deterministic``, and a GPU run agrees with the CPU's
to float32 rounding. Skipped, with the reason, on a machine without CUDA (run by
``benchmarks/gpu_check.sh`` on one that has it)."""

from __future__ import annotations

import pytest
import torch

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

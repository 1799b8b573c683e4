"""Seed ensembles: K members trained as one stacked model equal K separate runs."""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional

import pytest
import torch

from groktransfer.config.schema import OptimizerConfig, TrainConfig
from groktransfer.model.transformer import TransformerConfig
from groktransfer.training.ensemble import EnsembleTrainer, IncompatibleMembers, incompatibility
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import EvalResult, Trainer, TrainerCallback, TrainingFailure, TrainOutcome

# Float tolerance of the equality. The ensemble runs the same kernels over a member axis
# and the same AdamW, so on this machine the weights stay bit-identical to separate runs
# and the float64 losses differ only in summation order (~1e-15). The stated tolerance
# leaves room for BLAS builds whose batched kernels round differently.
RTOL, ATOL = 1e-6, 1e-9


class Record(TrainerCallback):
    """A callback that keeps every evaluation."""

    def __init__(self) -> None:
        self.evals: List[EvalResult] = []
        self.checkpoints: List[int] = []

    def on_eval(self, trainer, result) -> None:
        self.evals.append(result)

    def on_checkpoint(self, trainer, result) -> None:
        self.checkpoints.append(result.epoch)
        assert trainer.state_dict()["epoch"] == result.epoch  # the member's state is current


def tiny_member(
    seed: int, data_seed: int, lr: float = 3e-3, wd: float = 1.0, opt: Optional[dict] = None, model: Optional[dict] = None, **train
) -> Trainer:
    task = Task("add", 23, 0.6, data_seed)
    cfg = TransformerConfig(d_model=64, d_mlp=128, d_head=16, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, **(model or {}))
    train_cfg = TrainConfig(
        **{"max_epochs": 300, "eval_every": 10, "checkpoint_every": 50, "patience": 0, "progress_bar": False, **train}
    )
    optimizer = OptimizerConfig(lr=lr, weight_decay=wd, **(opt or {}))
    return Trainer(HookedGrokTransformer(cfg, seed=seed), task, optimizer, train_cfg, [Record()])


MEMBERS = [dict(seed=0, data_seed=0), dict(seed=1, data_seed=0, lr=1e-3), dict(seed=2, data_seed=5, wd=0.5)]


def assert_same_run(ens: Trainer, sep: Trainer) -> None:
    a, b = ens.callbacks[0], sep.callbacks[0]
    assert [r.epoch for r in a.evals] == [r.epoch for r in b.evals]
    assert a.checkpoints == b.checkpoints
    for x, y in zip(a.evals, b.evals):
        for key in ("train_loss", "test_loss", "lr"):
            assert getattr(x, key) == pytest.approx(getattr(y, key), rel=RTOL, abs=ATOL), (x.epoch, key)
        for key in ("train_acc", "test_acc"):
            assert getattr(x, key) == getattr(y, key), (x.epoch, key)
    assert ens.thresholds.as_record() == sep.thresholds.as_record()
    for (name, p), q in zip(ens.model.named_parameters(), sep.model.parameters()):
        torch.testing.assert_close(p, q, rtol=RTOL, atol=ATOL, msg=name)


def test_three_members_equal_three_separate_runs() -> None:
    separate = [tiny_member(**m) for m in MEMBERS]
    for t in separate:
        t.fit()
    members = [tiny_member(**m) for m in MEMBERS]
    results = EnsembleTrainer(members).fit()
    assert all(isinstance(r, TrainOutcome) and r.last_eval.epoch == 300 for r in results)
    for ens, sep in zip(members, separate):
        assert_same_run(ens, sep)


@pytest.mark.parametrize(
    "model", [dict(n_layers=2, normalization="LN", act="gelu"), dict(n_layers=2, normalization="LN", attn_only=True),
              dict(n_layers=1, normalization="LN")], ids=["power-decoder", "attn-only", "one-layer-LN"],
)  # fmt: skip
def test_members_equal_separate_runs_at_every_depth(model: dict) -> None:
    spec = [dict(seed=0, data_seed=0, model=model, max_epochs=60), dict(seed=1, data_seed=2, lr=1e-3, model=model, max_epochs=60)]
    separate = [tiny_member(**m) for m in spec]
    for t in separate:
        t.fit()
    members = [tiny_member(**m) for m in spec]
    EnsembleTrainer(members).fit()
    for ens, sep in zip(members, separate):
        assert_same_run(ens, sep)


def test_minibatch_and_full_path_jobs_are_not_stacked() -> None:
    """The stacked step is the full-batch, last-position one: anything else trains one job at a time."""
    minibatch = [tiny_member(0, 0, batch_size=64), tiny_member(1, 1, batch_size=64)]
    assert incompatibility(minibatch).startswith("ensembles train full batch on one answer position")
    full_path = [tiny_member(0, 0, fast_path=False), tiny_member(1, 1, fast_path=False)]
    assert incompatibility(full_path).startswith("train.fast_path=false")


def test_members_stop_early_independently_with_identical_threshold_epochs() -> None:
    """A small grokking run: every member's threshold epochs are exactly a separate run's.

    Seed 0 groks (0.9 near epoch 930, 0.999 near 1100) and stops early; seed 3 reaches
    0.9, 0.95 and 0.99 only and trains on to max_epochs alone. The exact epochs depend on
    the CPU's instruction set and on the GEMM library ``cpu_gemm=auto`` picks for it (each
    sums products in another order), so they are
    compared between the ensemble and the separate runs on this machine, and only their
    story (who groks, who stops, roughly when) is checked against the recorded figures.
    """
    spec = [dict(seed=s, data_seed=s, max_epochs=1500, patience=50) for s in (0, 3)]
    separate = [tiny_member(**m) for m in spec]
    sep_results = [t.fit() for t in separate]
    members = [tiny_member(**m) for m in spec]
    results = EnsembleTrainer(members).fit()
    assert [r.stop_reason for r in results] == [r.stop_reason for r in sep_results] == ["early_stop", "max_epochs"]
    assert [r.last_eval.epoch for r in results] == [r.last_eval.epoch for r in sep_results]
    assert results[1].last_eval.epoch == 1500
    for ens, sep, r in zip(members, separate, results):
        assert ens.thresholds.as_record() == sep.thresholds.as_record()
        assert ens.callbacks[0].evals[-1].epoch == ens.epoch == r.last_eval.epoch  # ends at its own epoch
    grokked = members[0].thresholds.as_record()["0.999"]["epoch"]
    assert 1000 <= grokked <= 1200 and grokked < results[0].last_eval.epoch < 1500  # recorded: 1100, stop 1150
    # recorded: 1180 (oneDNN, AVX-512), 1170 (oneDNN, AVX2), 1430 (cpu_gemm=auto on AVX2): a slow
    # climb whose epoch moves with the float path; the story is that it gets there, late
    assert 1000 <= members[1].thresholds.as_record()["0.95"]["epoch"] < 1500
    assert members[1].thresholds.as_record().get("0.999", {}).get("epoch") is None


def test_a_non_finite_member_fails_alone() -> None:
    members = [tiny_member(0, 0, max_epochs=40), tiny_member(1, 1, lr=1e6, max_epochs=40)]
    results = EnsembleTrainer(members).fit()
    assert isinstance(results[0], TrainOutcome) and results[0].last_eval.epoch == 40
    assert isinstance(results[1], TrainingFailure) and "non-finite" in results[1].reason


def test_incompatible_members_are_refused_with_a_reason() -> None:
    a, b = tiny_member(0, 0), tiny_member(1, 1, max_epochs=10)
    assert incompatibility([a, b]) == "train settings differ"
    c = tiny_member(2, 2)
    c.model.embed.W_E.requires_grad_(False)  # a frozen component
    assert incompatibility([a, c]) == "different parameters are frozen"
    with pytest.raises(IncompatibleMembers):
        EnsembleTrainer([a, b])

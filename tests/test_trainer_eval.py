"""The trainer's evaluations: what they reuse, and that it changes neither the figures nor the training.

A minibatch evaluation reuses the logits of the epoch's first minibatch (the only one computed
with the weights it evaluates). Its figures are those of one forward over all pairs
(:meth:`Trainer.evaluate`): the accuracies as the same counts, the losses to float rounding
(the logits come from products of other sizes); and evaluating never changes a weight.
"""

from __future__ import annotations

from typing import List

import pytest
import torch

from groktransfer.config.schema import OptimizerConfig, TrainConfig
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import EvalResult, Trainer, TrainerCallback

MODELS = {
    "one-layer": {},
    "power-decoder": dict(n_layers=2, normalization="LN", act="gelu"),
}


class Record(TrainerCallback):
    def __init__(self) -> None:
        self.evals: List[EvalResult] = []

    def on_eval(self, trainer, result) -> None:
        self.evals.append(result)


def trainer(model: dict, batch_size=64, eval_every: int = 1, max_epochs: int = 6, fast_path: bool = True) -> Trainer:
    task = Task("add", 23, 0.6, 0)  # 317 training pairs: 5 minibatches of 64
    cfg = TransformerConfig(d_model=32, d_mlp=64, d_head=8, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, **model)
    train = TrainConfig(max_epochs=max_epochs, eval_every=eval_every, checkpoint_every=max_epochs, patience=0,
                        batch_size=batch_size, fast_path=fast_path, progress_bar=False)  # fmt: skip
    return Trainer(HookedGrokTransformer(cfg, seed=0), task, OptimizerConfig(lr=3e-3), train, [Record()])


def _assert_same_figures(a: EvalResult, b: EvalResult) -> None:
    assert (a.epoch, a.train_acc, a.test_acc, a.lr) == (b.epoch, b.train_acc, b.test_acc, b.lr)
    assert a.train_loss == pytest.approx(b.train_loss, rel=1e-6) and a.test_loss == pytest.approx(b.test_loss, rel=1e-6)


@pytest.mark.parametrize("model", MODELS.values(), ids=MODELS.keys())
def test_a_minibatch_evaluation_is_a_forward_over_all_pairs(model: dict) -> None:
    t = trainer(model)
    for _ in range(2):  # weights away from the initial ones
        t.train_step()
        t.epoch += 1
    idx = t._batch_order()[: t.batch_size]
    logits, _ = t._logits_and_loss(t._train_tokens[idx], t._train_labels[idx])
    _assert_same_figures(t._evaluate_with_batch(idx, logits.detach()), t.evaluate())


@pytest.mark.parametrize("model", MODELS.values(), ids=MODELS.keys())
def test_evaluating_every_epoch_leaves_the_training_bit_identical(model: dict) -> None:
    every, rarely = trainer(model, eval_every=1), trainer(model, eval_every=1000)
    every.fit()
    rarely.fit()
    for (name, p), q in zip(every.model.named_parameters(), rarely.model.parameters()):
        assert torch.equal(p, q), name
    first, last = every.callbacks[0].evals[0], every.callbacks[0].evals[-1]
    assert [r.epoch for r in every.callbacks[0].evals] == list(range(7))
    _assert_same_figures(last, rarely.callbacks[0].evals[-1])  # both at epoch 6 with the same weights
    _assert_same_figures(first, trainer(model).evaluate())  # epoch 0: the initial weights


def test_full_batch_and_digit_evaluations_are_unchanged() -> None:
    """Only single-answer minibatch runs reuse a minibatch; a batch as large as the set is the full batch."""
    assert trainer({}, batch_size=64)._first_batch_evals
    assert not trainer({}, batch_size=None)._first_batch_evals and not trainer({}, batch_size=10_000)._first_batch_evals

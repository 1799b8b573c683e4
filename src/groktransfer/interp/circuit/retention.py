"""Does a transferred model still solve -- or still compute -- the source task?

Retention is read on *all* p^2 source-task pairs (there is no train/test distinction
for a model that never trained on that task), with the logits sliced to the source
task's outputs (which also handles the original paper's files, whose unembedding has
an extra '=' output). Two numbers:

* accuracy on the source task;
* the share of the logit variance that still lies along the source task's Fourier
  directions (e.g. cos/sin(w(a+b−c)) for a+b): a circuit-level reading of retention
  that does not depend on the argmax.

Caveat the report states: when source and target read the same inputs ([a, b, =] for
both a+b and a−b), a model that solves the target perfectly can match the source only
where the two answers coincide (b = 0 for a+b vs a−b, i.e. 1/p of the pairs) --
:func:`label_agreement` gives that ceiling.
"""

from __future__ import annotations

from typing import Any

import torch

from groktransfer.measures.modular import logit_target_structure
from groktransfer.tasks.fourier import GroupFourier
from groktransfer.tasks.modular import Task

from .. import forward


def evaluation_problem(d_vocab: int, d_vocab_out: int, task: Task) -> str | None:
    """Why a model with these vocabulary sizes cannot be read on ``task`` (None if it can)."""
    if d_vocab != task.d_vocab:
        return f"model reads {d_vocab} input tokens but {task.describe()} needs {task.d_vocab}"
    if d_vocab_out < task.d_vocab_out:
        return f"model has {d_vocab_out} outputs but {task.describe()} needs {task.d_vocab_out}"
    return None


def accuracy_from_logits(logits: torch.Tensor, task: Task) -> float:
    """Accuracy over all of ``task``'s pairs from last-position logits [n_pairs, >= d_vocab_out]."""
    pred = logits[:, : task.d_vocab_out].argmax(dim=-1)
    return float((pred == task.labels).double().mean())


def task_direction_share(logits: torch.Tensor, task: Task) -> float:
    """Share of the logit variance along ``task``'s target directions (all frequencies);
    NaN for a task without a group structure."""
    gf = GroupFourier.for_task(task)
    if gf is None:
        return float("nan")
    _, _, frac, _ = logit_target_structure(gf.output_grid(logits[:, : task.d_vocab_out].double()), gf)
    return float(frac.sum())


def label_agreement(a: Task, b: Task) -> float:
    """Fraction of input pairs on which two tasks over the same inputs give the same answer
    (the most a perfect solver of one can score on the other); NaN if the inputs differ."""
    if a.p != b.p or a.n_pairs != b.n_pairs or not torch.equal(a.tokens, b.tokens):
        return float("nan")
    return float((a.labels == b.labels).double().mean())


def last_logits(model: Any, task: Task, chunk: int = 8192) -> torch.Tensor:
    """Last-position logits of ``model`` on every pair of ``task`` (fast path, eval mode)."""
    return forward.last_logits(model, task.tokens, chunk)


def source_task_readout(model: Any, task: Task) -> tuple[float, float]:
    """(accuracy, share of logit variance along the task's directions) on every pair."""
    logits = last_logits(model, task)
    return accuracy_from_logits(logits, task), task_direction_share(logits, task)

"""Does a transferred model still solve the source task?

Retention is read on *all* p^2 source-task pairs (there is no train/test distinction
for a model that never trained on that task). The model's logits are sliced to the
source task's outputs, which also handles the original paper's files whose
unembedding has an extra '=' output.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from groktransfer.tasks import Task


def evaluation_problem(d_vocab: int, d_vocab_out: int, task: Task) -> Optional[str]:
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


@torch.no_grad()
def accuracy_on_task(model: Any, task: Task, chunk: int = 8192) -> float:
    """Accuracy of ``model`` (a HookedGrokTransformer) on every pair of ``task``."""
    was_training = model.training
    model.eval()
    try:
        logits = torch.cat(
            [model.forward_last(task.tokens[i : i + chunk]) for i in range(0, task.n_pairs, chunk)]
        )
    finally:
        model.train(was_training)
    return accuracy_from_logits(logits, task)

"""Progress measures of a parity run: has the network found the secret bits?

* ``subset_weight_frac``: the share of the first layer's squared weight on the secret bits'
  rows, sum over i in S of ||W_in[i]||^2 / ||W_in||^2. A fresh network has about k/n (0.1 for
  3 of 30 bits); one that computes the parity from those bits alone, with weight decay
  removing the rest, approaches 1. It climbs *before* test accuracy jumps (Barak et al.'s
  "hidden progress"), which is what makes it a progress measure.
* ``subset_in_top_k``: 1 when the k input rows with the largest norms are exactly the secret
  bits, else 0: the subset can be read off the weights.

A model without input weights (``input_weights()``; the transformer has token and position
embeddings instead) gets losses, accuracies and weight norms, and the note says why.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F

from groktransfer.measures.modular import ModelWeights


def parity_measures(task: Any, model: torch.nn.Module, key_freq_threshold: float) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """The measures of one checkpoint on every string of the task (train and test)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model.forward_last(task.tokens.to(device)).double().cpu()
    labels, train = task.labels, task.train_mask
    losses = F.cross_entropy(logits, labels, reduction="none")
    right = (logits.argmax(dim=-1) == labels).double()
    scalars: Dict[str, Any] = {
        "train_loss": float(losses[train].mean()),
        "test_loss": float(losses[~train].mean()),
        "train_acc": float(right[train].mean()),
        "test_acc": float(right[~train].mean()),
        **{f"weight_norm_{k}": v for k, v in ModelWeights.from_model(model).sq_norms.items()},
        "fourier_status": "absent",
        "fourier_note": task.no_structure_reason,
    }
    if hasattr(model, "input_weights"):
        rows = model.input_weights().detach().double().cpu().square().sum(dim=1)  # [n_bits]
        subset = list(task.subset)
        scalars["subset_weight_frac"] = float(rows[subset].sum() / rows.sum().clamp_min(1e-300))
        top = set(rows.topk(len(subset)).indices.tolist())
        scalars["subset_in_top_k"] = int(top == set(subset))
    return scalars, []

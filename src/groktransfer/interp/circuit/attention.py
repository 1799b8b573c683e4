"""Where the '=' position looks: mean attention from the last query to a, b and '='.

In the Fourier circuit the '=' position gathers a and b (the paper's heads split their
attention between them), so the attention pattern of the last query, averaged over
all inputs, is a cheap fingerprint of whether a model reads its inputs the same way.
Heads are identified by index only, which is meaningful between models sharing an
initialisation (a transfer target and its source) and arbitrary between independently
initialised ones, hence per-model rows in the figures rather than means per head
across unrelated seeds.
"""

from __future__ import annotations

import numpy as np
import torch

POSITION_LABELS: tuple[str, ...] = ("a", "b", "=")


def position_labels(n_ctx: int) -> list[str]:
    """Key-position labels: ``a``, ``b``, ``=`` for the usual 3-token input, else indices."""
    return list(POSITION_LABELS) if n_ctx == 3 else [f"pos {i}" for i in range(n_ctx)]


def mean_last_query_attention(pattern: torch.Tensor) -> torch.Tensor:
    """[batch, head, q, k] attention pattern -> [head, k] mean over the batch of the last
    query's row. Each output row sums to 1 (it is an average of softmax rows)."""
    return pattern[:, :, -1, :].double().mean(dim=0)


def head_labels(attention: np.ndarray) -> list[str]:
    """Row labels for an [n_layers, n_heads, k] array: ``h0`` .. or ``L1h0`` .. for deeper models."""
    n_layers, n_heads = attention.shape[:2]
    if n_layers == 1:
        return [f"h{h}" for h in range(n_heads)]
    return [f"L{layer}h{h}" for layer in range(n_layers) for h in range(n_heads)]


def attention_asymmetry(attention: np.ndarray) -> float:
    """Mean over heads of |attention to a − attention to b| from the last query, in [0, 1].

    Head-order independent. a+b is symmetric in its inputs and its heads can split
    attention evenly; a−b is not, so heads that tell a from b show up here.
    NaN for inputs that are not [a, b, =].
    """
    if attention.shape[-1] != 3:
        return float("nan")
    rows = attention.reshape(-1, 3)
    return float(np.abs(rows[:, 0] - rows[:, 1]).mean())

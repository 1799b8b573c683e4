"""Training losses by name (``train.loss``): ce_float64 (the default), ce_float32, stablemax; plugins add theirs.

Why a choice: the precision of the softmax decides whether grokking happens without
regularisation. Prieto et al. (ICLR 2025, "Grokking at the edge of numerical stability")
show that once a model fits its training set, training pushes the logits apart until, in
float32, the softmax of most training examples rounds to exactly one-hot -- *Softmax
Collapse*: their loss is exactly 0 and they stop contributing gradient, so learning stops
before the model generalises. Their remedies are a softmax computed further from that edge:

* ``ce_float64`` -- cross-entropy with the log-softmax in float64 (Nanda et al.'s
  precision; float32 on a device without float64). The default, and what every run before
  this choice used.
* ``ce_float32`` -- cross-entropy with the log-softmax in float32 (PyTorch's default for a
  float32 model): where Softmax Collapse happens.
* ``stablemax`` -- StableMax cross-entropy: the softmax's exp replaced by
  s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0, so probabilities move away from 0
  and 1 only polynomially in the logits; computed in float64, as the authors' code does
  (``stablemax_cross_entropy`` in github.com/LucasPrietoAl/grokking-at-the-edge-of-numerical-stability).

A loss maps logits ``[n, classes]`` (any float dtype) and labels ``[n]`` to the per-example
losses or their mean. The loop minimises it and its loss columns (metrics.csv ``train_loss``
/ ``test_loss``) report it, so a run's curves show what it minimised; the progress
measures keep their own float64 cross-entropy (measures.csv), comparable across losses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from groktransfer.utils.registry import Registry

__all__ = ["LOSSES", "LossEntry", "stablemax_cross_entropy", "softmax_collapse"]

#: (logits, labels, the loop's float dtype -- float64 where the device has it, reduction) -> loss
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.dtype, str], torch.Tensor]


@dataclass(frozen=True)
class LossEntry:
    fn: LossFn


LOSSES: Registry[LossEntry] = Registry("loss", "train.loss")


def _ce_float64(
    logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype, reduction: str = "mean"
) -> torch.Tensor:
    return F.cross_entropy(logits.to(dtype), labels, reduction=reduction)


def _ce_float32(
    logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype, reduction: str = "mean"
) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, reduction=reduction)


def _stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0): positive, continuous with a continuous slope at 0."""
    return torch.where(x < 0, 1.0 / (1.0 - x + 1e-30), x + 1.0)


def stablemax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype = torch.float64, reduction: str = "mean"
) -> torch.Tensor:
    """-log(s(x_label) / sum_j s(x_j)), in ``dtype`` (the authors compute it in float64)."""
    s = _stablemax_s(logits.to(dtype))
    log_probs = torch.log(s / s.sum(dim=-1, keepdim=True))
    per_example = -log_probs.gather(-1, labels[..., None].long()).squeeze(-1)
    if reduction == "none":
        return per_example
    return per_example.sum() if reduction == "sum" else per_example.mean()


@torch.no_grad()
def softmax_collapse(logits: torch.Tensor, dtype: torch.dtype = torch.float32) -> float:
    """Prieto et al.'s Softmax Collapse measure: the fraction of rows whose softmax
    denominator sum_j exp(x_j - max x) rounds to exactly 1 in ``dtype`` -- every other class's
    term is absorbed, the softmax is exactly one-hot and the row's gradient is zero."""
    x = logits.to(dtype)
    total = torch.exp(x - x.amax(dim=-1, keepdim=True)).sum(dim=-1)
    return float((total == 1).double().mean())


LOSSES.register("ce_float64", LossEntry(_ce_float64))
LOSSES.register("ce_float32", LossEntry(_ce_float32))
LOSSES.register("stablemax", LossEntry(stablemax_cross_entropy))

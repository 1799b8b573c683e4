"""The original paper's training loop, re-implemented as a speed baseline.

Nanda et al. (ICLR 2023) trained with the ``Trainer`` / ``train_model`` of
``transformers.py`` in the progress-measures-paper repository. This module reproduces
what that loop *costs* per epoch, written here from its description, not copied:

* the model is their one-layer transformer: embeddings stored as [d_model, d_vocab],
  per-head weights as [head, d_head, d_model], einsum attention over all three positions
  with a ``tril - 1e10`` causal mask, a ReLU MLP, and an unembedding to d_vocab = p + 1
  outputs, all at every position (the loss then reads the last one);
* the data are Python lists of ``(a, b, p)`` tuples; every loss call turns the list
  into an index tensor and recomputes the labels with a Python function per pair;
* every epoch computes the full-batch train loss *and the test loss*, both with
  autograd on, in float64 (log-softmax of the logits cast to float64), calls
  ``.item()`` on both, backpropagates the train loss, steps AdamW
  (lr 1e-3, weight decay 1, betas (0.9, 0.98)) and a ``LambdaLR`` warm-up
  ``min(step / 10, 1)``, then zeroes the gradients.

Left out, because they are not training: W&B logging, the every-100-epochs state-dict
record and the every-1000-epochs metrics (which would only make the baseline slower).
``prebuilt_data=True`` gives a stricter baseline that builds the index and label
tensors once (an improvement the original does not have).
"""

from __future__ import annotations

import math
import random
from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class PaperTransformer(nn.Module):
    """One-layer transformer in the original layout (no LayerNorm; MLP biases only)."""

    def __init__(self, p: int, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512, n_ctx: int = 3) -> None:
        super().__init__()
        d_vocab, d_head = p + 1, d_model // n_heads
        self.d_head = d_head
        scale = 1 / math.sqrt(d_model)
        self.W_E = nn.Parameter(torch.randn(d_model, d_vocab) * scale)
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model) * scale)
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_head, d_model) * scale)
        self.W_K = nn.Parameter(torch.randn(n_heads, d_head, d_model) * scale)
        self.W_V = nn.Parameter(torch.randn(n_heads, d_head, d_model) * scale)
        self.W_O = nn.Parameter(torch.randn(d_model, n_heads * d_head) * scale)
        self.W_in = nn.Parameter(torch.randn(d_mlp, d_model) * scale)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_model, d_mlp) * scale)
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab) / math.sqrt(d_vocab))
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx)))

    def forward(self, data) -> torch.Tensor:  # list of (a, b, =) or [batch, pos] -> [batch, pos, d_vocab]
        x = torch.einsum("dbp->bpd", self.W_E[:, data])  # a list index becomes a tensor on every call
        x = x + self.W_pos[: x.shape[-2]]
        n = x.shape[-2]
        k = torch.einsum("ihd,bpd->biph", self.W_K, x)
        q = torch.einsum("ihd,bpd->biph", self.W_Q, x)
        v = torch.einsum("ihd,bpd->biph", self.W_V, x)
        scores = torch.einsum("biph,biqh->biqp", k, q)
        scores = torch.tril(scores) - 1e10 * (1 - self.mask[:n, :n])
        pattern = F.softmax(scores / math.sqrt(self.d_head), dim=-1)
        z = torch.einsum("biph,biqp->biqh", v, pattern)
        z = z.permute(0, 2, 1, 3).reshape(z.shape[0], n, -1)  # b head q e -> b q (head e)
        x = x + torch.einsum("df,bqf->bqd", self.W_O, z)
        hidden = F.relu(torch.einsum("md,bpd->bpm", self.W_in, x) + self.b_in)
        x = x + torch.einsum("dm,bpm->bpd", self.W_out, hidden) + self.b_out
        return x @ self.W_U


def paper_split(p: int, frac_train: float, seed: int) -> Tuple[List[tuple], List[tuple]]:
    """All (a, b, p) triples, shuffled with Python's ``random`` and cut at frac_train."""
    pairs = [(a, b, p) for a in range(p) for b in range(p)]
    random.seed(seed)
    random.shuffle(pairs)
    cut = int(frac_train * len(pairs))
    return pairs[:cut], pairs[cut:]


def high_precision_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy with the log-softmax taken in float64, as the paper does."""
    log_probs = logits.to(torch.float64).log_softmax(dim=-1)
    return -log_probs.gather(dim=-1, index=labels[:, None]).mean()


class PaperTrainer:
    """Full batch, train and test loss every epoch, AdamW + 10-step linear warm-up."""

    def __init__(self, p: int = 113, frac_train: float = 0.3, seed: int = 0, prebuilt_data: bool = False) -> None:
        torch.manual_seed(seed)
        self.p = p
        self.model = PaperTransformer(p)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(step / 10, 1))
        self.train, self.test = paper_split(p, frac_train, seed)
        self.fn: Callable[[int, int], int] = lambda a, b: (a + b) % p
        self.train_losses: List[float] = []
        self.test_losses: List[float] = []
        self._prebuilt = None
        if prebuilt_data:
            self._prebuilt = {id(d): (torch.tensor(d), self._labels(d)) for d in (self.train, self.test)}

    def _labels(self, data) -> torch.Tensor:
        return torch.tensor([self.fn(a, b) for a, b, _ in data])

    def full_loss(self, data) -> torch.Tensor:
        if self._prebuilt is not None:
            tokens, labels = self._prebuilt[id(data)]
        else:
            tokens, labels = data, self._labels(data)  # as the original: rebuilt on every call
        return high_precision_cross_entropy(self.model(tokens)[:, -1], labels)

    def training_step(self) -> Tuple[torch.Tensor, torch.Tensor]:
        train_loss = self.full_loss(self.train)
        test_loss = self.full_loss(self.test)  # autograd on, as in the original
        self.train_losses.append(train_loss.item())
        self.test_losses.append(test_loss.item())
        train_loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return train_loss, test_loss

"""Power et al.'s decoder in a plain PyTorch loop: the speed baseline of ``bench_decoder.py``.

What a grokking paper's training script does with this model (Power et al. 2022; the
Grokfast, Omnigrok and Muon studies train it the same way), written here as one would in
an afternoon, with nothing of groktransfer in it:

* the model: token and learned position embeddings, ``n_layers`` pre-LayerNorm blocks
  (``nn.MultiheadAttention`` with a causal mask, then a GELU MLP of 4x the width), a final
  LayerNorm and a linear head over every position, of which the loss reads the last;
* the loop: each epoch a shuffled pass over the training pairs in minibatches (Adam,
  float32 cross-entropy), the training accuracy counted from the minibatches' own logits
  as the weights change (the usual "running" figure), then the held-out pairs evaluated
  in one forward under ``torch.no_grad`` in eval mode (which lets ``nn.MultiheadAttention``
  take its fused inference kernel).

It takes the data as tensors, so the benchmark feeds it exactly the pairs groktransfer
trains on.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class Decoder(nn.Module):
    def __init__(self, n_tokens: int, n_out: int, n_ctx: int = 3, d: int = 128, heads: int = 4, n_layers: int = 2) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(n_tokens, d), nn.Embedding(n_ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(n_layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, n_out)
        self.register_buffer("mask", torch.triu(torch.ones(n_ctx, n_ctx, dtype=torch.bool), diagonal=1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [batch, pos] -> [batch, pos, n_out]
        x = self.tok(tokens) + self.pos.weight[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x, self.mask)
        return self.head(self.ln(x))


class PlainLoop:
    """One epoch = a shuffled minibatch pass, then the held-out pairs evaluated."""

    def __init__(self, train: Tuple[torch.Tensor, torch.Tensor], test: Tuple[torch.Tensor, torch.Tensor],
                 n_tokens: int, n_out: int, batch_size: int = 512, lr: float = 1e-3, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = Decoder(n_tokens, n_out, n_ctx=train[0].shape[1])
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.9, 0.98))
        (self.x, self.y), (self.x_test, self.y_test) = train, test
        self.batch_size = batch_size

    def epoch(self) -> Tuple[float, float, float, float]:
        """(train loss, train acc, test loss, test acc); the train figures are the minibatches' running means."""
        self.model.train()
        loss_sum, correct = 0.0, 0
        for idx in torch.randperm(len(self.x)).split(self.batch_size):
            logits = self.model(self.x[idx])[:, -1]
            loss = F.cross_entropy(logits, self.y[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(-1) == self.y[idx]).sum())
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.x_test)[:, -1]
            test_loss, test_acc = F.cross_entropy(logits, self.y_test).item(), (logits.argmax(-1) == self.y_test).float().mean().item()
        return loss_sum / len(self.x), correct / len(self.x), test_loss, test_acc

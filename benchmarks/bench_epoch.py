"""Seconds per training epoch for Nanda et al.'s reference setup, on a fixed thread count.

Measures, in one process and on the same data:

  (a) a full-batch train step through ``forward_last`` (the fast path) alone,
  (b) (a) plus an evaluation on all p^2 pairs every ``eval_every`` epochs,
  (c) a straightforward train step through the full-sequence ``forward`` with an
      evaluation (also full-sequence) every epoch -- the naive loop,

and prints the speed-up (c)/(b). Usage::

    python benchmarks/bench_epoch.py --p 113 --epochs 200 --threads 1

The step and evaluation functions are importable so other benchmarks (or the real
Trainer) can be timed the same way.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable, Dict

import torch
import torch.nn.functional as F

from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.tasks.modular import Task


@dataclass
class Setup:
    """Everything one timed loop needs: model, optimizer and the task's tensors."""

    task: Task
    model: HookedGrokTransformer
    optimizer: torch.optim.Optimizer
    train_tokens: torch.Tensor
    train_labels: torch.Tensor


def make_setup(p: int = 113, frac_train: float = 0.3, seed: int = 0) -> Setup:
    """The reference shape (d_model 128, 4x32 heads, d_mlp 512, ReLU) on a+b mod p."""
    task = Task("add", p=p, frac_train=frac_train, data_seed=seed)
    cfg = TransformerConfig(d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out)
    model = HookedGrokTransformer(cfg, seed=seed)
    optimizer = torch.optim.AdamW(
        [q for q in model.parameters() if q.requires_grad], lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98)
    )
    train_idx = task.split[0]
    return Setup(task, model, optimizer, task.tokens[train_idx], task.labels[train_idx])


def last_position_logits(model: HookedGrokTransformer, tokens: torch.Tensor, fast: bool) -> torch.Tensor:
    return model.forward_last(tokens) if fast else model(tokens)[:, -1]


def train_step(setup: Setup, fast: bool = True) -> float:
    """One full-batch AdamW step; loss in float64 as in the paper."""
    logits = last_position_logits(setup.model, setup.train_tokens, fast)
    loss = F.cross_entropy(logits.double(), setup.train_labels)
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    setup.optimizer.step()
    return loss.item()


@torch.no_grad()
def evaluate(setup: Setup, fast: bool = True) -> Dict[str, float]:
    """Loss and accuracy on the train and test pairs, from one forward over all p^2 pairs."""
    task = setup.task
    logits = last_position_logits(setup.model, task.tokens, fast).double()
    losses = F.cross_entropy(logits, task.labels, reduction="none")
    correct = (logits.argmax(-1) == task.labels).double()
    train = task.train_mask
    return {
        "train_loss": losses[train].mean().item(),
        "test_loss": losses[~train].mean().item(),
        "train_acc": correct[train].mean().item(),
        "test_acc": correct[~train].mean().item(),
    }


def seconds_per_epoch(epoch_fn: Callable[[int], None], epochs: int, warmup: int) -> Dict[str, float]:
    """Wall and CPU seconds per epoch after ``warmup`` untimed epochs.

    CPU time is reported too because on a shared machine wall time also counts the
    time other processes hold the core; with one thread the two agree when idle.
    """
    for epoch in range(warmup):
        epoch_fn(epoch)
    wall, cpu = time.perf_counter(), time.process_time()
    for epoch in range(warmup, warmup + epochs):
        epoch_fn(epoch)
    return {"wall": (time.perf_counter() - wall) / epochs, "cpu": (time.process_time() - cpu) / epochs}


def run(
    p: int = 113, epochs: int = 200, threads: int = 1, eval_every: int = 10, warmup: int = 10
) -> Dict[str, Dict[str, float]]:
    """Time the three loops; each gets a fresh, identically seeded setup."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as every job does (train.flush_denormal)

    def fast_train_only() -> Callable[[int], None]:
        setup = make_setup(p)
        return lambda epoch: train_step(setup, fast=True)

    def fast_with_eval() -> Callable[[int], None]:
        setup = make_setup(p)

        def epoch_fn(epoch: int) -> None:
            train_step(setup, fast=True)
            if epoch % eval_every == 0:
                evaluate(setup, fast=True)

        return epoch_fn

    def naive() -> Callable[[int], None]:
        setup = make_setup(p)

        def epoch_fn(epoch: int) -> None:
            train_step(setup, fast=False)
            evaluate(setup, fast=False)

        return epoch_fn

    return {
        "a": seconds_per_epoch(fast_train_only(), epochs, warmup),
        "b": seconds_per_epoch(fast_with_eval(), epochs, warmup),
        "c": seconds_per_epoch(naive(), epochs, warmup),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--epochs", type=int, default=200, help="timed epochs per loop, after warm-up")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    t = run(args.p, args.epochs, args.threads, args.eval_every, args.warmup)
    n_train = make_setup(args.p).train_tokens.shape[0]
    rows = [
        ("(a) train step, forward_last", t["a"]),
        (f"(b) train step, forward_last + eval every {args.eval_every}", t["b"]),
        ("(c) train step, full forward + eval every epoch", t["c"]),
    ]
    print(f"p={args.p}  train pairs={n_train}  threads={args.threads}  timed epochs={args.epochs}")
    print(f"{'loop':<54}{'wall s/epoch':>14}{'cpu s/epoch':>14}")
    for label, times in rows:
        print(f"{label:<54}{times['wall']:>14.4f}{times['cpu']:>14.4f}")
    speedup = {k: t["c"][k] / t["b"][k] for k in ("wall", "cpu")}
    print(f"{'speed-up (c)/(b)':<54}{speedup['wall']:>13.1f}x{speedup['cpu']:>13.1f}x")

if __name__ == "__main__":
    main()

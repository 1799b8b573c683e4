"""Epochs per second of the attention-only digit model, beside the modular baseline.

Times the real ``Trainer.train_step`` (what every job runs), one thread, in one process:

  (a) baseline: Nanda et al.'s one-layer MLP model on a+b mod 113, full batch (fast path),
  (b) the ARENA model (``model=attn_only_2l``) on 2-digit sums, 750 examples in batches of 256
      (the source run of ``experiment=digit_add_to_sub``),
  (c) the ARENA model on 4-digit sums in minibatches (``experiment=arena_sum``: 20,000 examples, batch 200),

and prints epochs/s, optimizer steps/s and examples/s side by side. Usage::

    python benchmarks/bench_attn_only.py --seconds 20 --threads 1

Times measured on a shared machine are inflated: the load average before and after is
printed and recorded. The table also goes to ``benchmarks/results/bench_attn_only.json``
(``--out``), one entry per machine, which the documentation's performance page reads.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Dict, Optional

import torch

from groktransfer.config.schema import OptimizerConfig, TrainConfig
from groktransfer.model.transformer import TransformerConfig
from groktransfer.tasks.digits import DigitSettings, DigitTask
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.jobs.run_job import configure_torch
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import Trainer
from groktransfer.model.gemm import machine_key

import results

TITLE = "Attention-only model on the digit presets, against the one-layer modular baseline"


def arena_model_config(task: DigitTask) -> TransformerConfig:
    """conf/model/attn_only_2l.yaml with the task's sizes filled in."""
    return TransformerConfig(
        name="attn_only_2l", attn_only=True, n_layers=2, n_heads=3, d_model=48, d_head=24, d_mlp=1,
        normalization="LN", n_ctx=task.seq_len, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out,
        attn_bias=True, unembed_bias=True,
    )  # fmt: skip


def setups(n_train: int, batch_size: int, small_batch_size: Optional[int]) -> Dict[str, Trainer]:
    modular = Task("add", 113, 0.3, 0)
    small = DigitTask(DigitSettings("digit_add", 2, frac_train=0.3), 0)
    big = DigitTask(DigitSettings("digit_add", 4, n_train=n_train, n_test=2000), 0)
    opt = OptimizerConfig(lr=1e-3, weight_decay=1.0)
    return {
        "(a) one_layer, add mod 113, full batch [baseline]": Trainer(
            HookedGrokTransformer(TransformerConfig(d_vocab=modular.d_vocab, d_vocab_out=modular.d_vocab_out), 0),
            modular, opt, TrainConfig(progress_bar=False),
        ),
        f"(b) attn_only_2l, digit_add n=2, batch {small_batch_size or 'full'}": Trainer(
            HookedGrokTransformer(arena_model_config(small), 0), small, opt,
            TrainConfig(progress_bar=False, batch_size=small_batch_size),
        ),
        f"(c) attn_only_2l, digit_add n=4, {n_train} ex, batch {batch_size}": Trainer(
            HookedGrokTransformer(arena_model_config(big), 0), big, opt,
            TrainConfig(progress_bar=False, batch_size=batch_size),
        ),
    }  # fmt: skip


def time_epochs(trainer: Trainer, seconds: float) -> Dict[str, float]:
    """Train whole epochs for about ``seconds`` (after one warm-up epoch); return rates."""
    trainer.train_step()
    n_train = int(trainer._train_tokens.shape[0])
    bs = trainer.batch_size or n_train
    steps_per_epoch = -(-n_train // min(bs, n_train))
    epochs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or epochs < 2:
        trainer.train_step()
        epochs += 1
    elapsed = time.perf_counter() - start
    return {
        "epochs_per_s": epochs / elapsed,
        "steps_per_s": epochs * steps_per_epoch / elapsed,
        "examples_per_s": epochs * n_train / elapsed,
        "n_train": n_train,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per setup")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--small-batch-size", type=int, default=256, help="(b)'s batch; 0 = full batch")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_attn_only.json"))
    args = parser.parse_args()
    load_before = list(os.getloadavg())
    configure_torch(args.threads, flush_denormal=True)  # as every job does: threads, denormals, allocator, oneDNN
    print(f"machine: {machine_key()}; torch={torch.__version__}; load average={load_before}")
    print(f"{'setup':58s} {'epochs/s':>10s} {'steps/s':>10s} {'examples/s':>11s} {'n_train':>8s}")
    rows = []
    for name, trainer in setups(args.n_train, args.batch_size, args.small_batch_size or None).items():
        r = time_epochs(trainer, args.seconds)
        rows.append({"setting": name, **r})
        print(f"{name:58s} {r['epochs_per_s']:10.2f} {r['steps_per_s']:10.1f} {r['examples_per_s']:11.0f} {r['n_train']:8d}")
    load_after = list(os.getloadavg())
    print(f"load average after: {load_after}")
    figures = {
        "columns": {"setting": "setting", "epochs_per_s": "epochs/s", "steps_per_s": "steps/s",
                    "examples_per_s": "examples/s", "n_train": "training examples"},
        "rows": rows, "args": vars(args), "load_before": load_before, "load_after": load_after,
        "notes": f"Trainer.train_step, whole epochs for about {args.seconds:g} s per setting after one warm-up epoch; "
                 f"wall time, {args.threads} thread(s).",
    }  # fmt: skip
    print(f"results: {results.record('bench_attn_only', machine_key(), figures, Path(args.out), title=TITLE)}")


if __name__ == "__main__":
    main()

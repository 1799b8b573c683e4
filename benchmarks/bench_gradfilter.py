"""Seconds per epoch of the p = 113 reference job (one thread) with each optimizer and filter.

What a Grokfast filter or Muon costs per step, for the per-second speed-up: the full
training loop (``Trainer.fit``, the preset's eval cadence, no run directory) of
``experiment=grokfast_p113`` for ``--epochs`` epochs per variant. Variants run in
interleaved rounds (adamw, ema, ma, muon, adamw, ...) so that a change in the machine's load
hits every variant alike; the median over rounds is reported.

    python benchmarks/bench_gradfilter.py --epochs 100 --rounds 3 (writes benchmarks/results/bench_gradfilter.json; --out elsewhere)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from groktransfer.config.schema import GradFilterConfig, ModelConfig, OptimizerConfig, TrainConfig
from groktransfer.model.registry import build_model
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import Trainer
from groktransfer.model.gemm import machine_key

import results

VARIANTS = {
    "adamw": (OptimizerConfig(), GradFilterConfig()),
    "adamw + ema": (OptimizerConfig(), GradFilterConfig(name="ema")),
    "adamw + ma": (OptimizerConfig(), GradFilterConfig(name="ma")),
    "muon": (OptimizerConfig(name="muon"), GradFilterConfig()),
}


def seconds_per_epoch(opt: OptimizerConfig, filt: GradFilterConfig, epochs: int) -> float:
    task = Task("add", 113, 0.3, 0)
    model = build_model(ModelConfig(d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.seq_len), 0)
    train = TrainConfig(max_epochs=epochs, eval_every=10, checkpoint_every=500, patience=0, progress_bar=False)
    trainer = Trainer(model, task, opt, train, gradfilter_cfg=filt)
    started = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - started) / epochs


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    times = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (opt, filt) in VARIANTS.items():
            times[name].append(seconds_per_epoch(opt, filt, args.epochs))
    base = statistics.median(times["adamw"])
    avx512 = "avx512f" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print(f"CPU: {cpu_name()} (AVX-512: {avx512}), 1 thread, torch {torch.__version__}, load average {' '.join(load)}")
    print(f"{args.epochs} epochs x {args.rounds} interleaved rounds, p=113 reference job")
    print("| variant | s/epoch (median) | rounds | x adamw |\n|---|---|---|---|")
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"variant": name, "seconds_per_epoch": med, "rounds": ts, "relative": med / base})
        print(f"| {name} | {med:.4f} | {', '.join(f'{t:.4f}' for t in ts)} | {med / base:.2f} |")
    figures = {"rows": [{**r, "rounds": ", ".join(f"{t:.4f}" for t in r["rounds"])} for r in rows],
               "columns": {"variant": "optimizer + filter", "seconds_per_epoch": "s/epoch (median)",
                           "rounds": "each round", "relative": "× adamw"},
               "notes": f"{args.epochs} epochs x {args.rounds} interleaved rounds of the p = 113 reference job, 1 thread"}
    path = results.record("bench_gradfilter", machine_key(), figures, Path(args.out) if args.out else None,
                          title="Cost per epoch of the optimizers and Grokfast filters (p = 113)")
    print(f"results: {path}")


if __name__ == "__main__":
    main()

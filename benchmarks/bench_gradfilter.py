"""Seconds per epoch of the p = 113 reference job (one thread) with each optimizer and filter.

What a Grokfast filter or Muon costs per step, for the per-second speed-up: the full
training loop (``Trainer.fit``, the preset's eval cadence, no run directory) of
``experiment=grokfast_p113`` for ``--epochs`` epochs per variant. Variants run in
interleaved rounds (adamw, ema, ma, muon, adamw, ...) so that a change in the machine's load
hits every variant alike; the median over rounds is reported, in CPU seconds of the process
(on a shared machine wall time also counts the time other processes hold the core) with the
wall seconds beside them.

    python benchmarks/bench_gradfilter.py --epochs 100 --rounds 3 (writes benchmarks/results/bench_gradfilter.json; --out elsewhere)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Tuple

from groktransfer.config.schema import GradFilterConfig, OptimizerConfig, TrainConfig
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.registry import build_model
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import Trainer
from groktransfer.model.gemm import machine_key
from groktransfer.jobs.run_job import configure_torch

import results

VARIANTS = {
    "adamw": (OptimizerConfig(), GradFilterConfig()),
    "adamw + ema": (OptimizerConfig(), GradFilterConfig(name="ema")),
    "adamw + ma": (OptimizerConfig(), GradFilterConfig(name="ma")),
    "muon": (OptimizerConfig(name="muon"), GradFilterConfig()),
}


def seconds_per_epoch(opt: OptimizerConfig, filt: GradFilterConfig, epochs: int) -> Tuple[float, float]:
    """(CPU, wall) seconds per epoch of ``Trainer.fit`` for one variant."""
    task = Task("add", 113, 0.3, 0)
    model = build_model(TransformerConfig(d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.seq_len), 0)
    train = TrainConfig(max_epochs=epochs, eval_every=10, checkpoint_every=500, patience=0, progress_bar=False)
    trainer = Trainer(model, task, opt, train, gradfilter_cfg=filt)
    cpu, wall = time.process_time(), time.perf_counter()
    trainer.fit()
    return (time.process_time() - cpu) / epochs, (time.perf_counter() - wall) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    load = [float(x) for x in os.getloadavg()]
    configure_torch(1, flush_denormal=True)  # as every job does: threads, denormals, allocator
    seconds_per_epoch(*VARIANTS["adamw"], 20)  # warm-up: allocator, kernels, cpu_gemm=auto's choices
    times = {name: [] for name in VARIANTS}
    walls = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (opt, filt) in VARIANTS.items():
            cpu, wall = seconds_per_epoch(opt, filt, args.epochs)
            times[name].append(cpu)
            walls[name].append(wall)
    base = statistics.median(times["adamw"])
    print(f"machine: {machine_key()}; load average before {' '.join(f'{x:.2f}' for x in load)}")
    print(f"{args.epochs} epochs x {args.rounds} interleaved rounds, p=113 reference job")
    print("| variant | CPU s/epoch (median) | rounds | x adamw | wall s/epoch (median) |\n|---|---|---|---|---|")
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        wall = statistics.median(walls[name])
        rows.append({"variant": name, "seconds_per_epoch": med, "rounds": ts, "relative": med / base, "wall_seconds_per_epoch": wall})
        print(f"| {name} | {med:.4f} | {', '.join(f'{t:.4f}' for t in ts)} | {med / base:.2f} | {wall:.4f} |")
    figures = {"rows": [{**r, "rounds": ", ".join(f"{t:.4f}" for t in r["rounds"])} for r in rows],
               "columns": {"variant": "optimizer + filter", "seconds_per_epoch": "CPU s/epoch (median)",
                           "rounds": "each round (CPU s/epoch)", "relative": "× adamw (CPU)",
                           "wall_seconds_per_epoch": "wall s/epoch (median)"},
               "load_before": load,
               "notes": f"{args.epochs} epochs x {args.rounds} interleaved rounds of the p = 113 reference job (Trainer.fit, "
                        "eval every 10 epochs), 1 thread; CPU seconds of the process"}
    path = results.record("bench_gradfilter", machine_key(), figures, Path(args.out) if args.out else None,
                          title="Cost per epoch of the optimizers and Grokfast filters (p = 113)")
    print(f"results: {path}")


if __name__ == "__main__":
    main()

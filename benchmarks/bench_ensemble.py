"""Epochs per second per member, and peak memory, of seed ensembles against separate runs.

For each K, K members of the p=113 reference config (different seeds and data seeds)
train together for ``--epochs`` epochs at the default cadence (eval every 10 epochs);
the baseline is one ``Trainer.fit`` of the same config, i.e. what each separate job
does. Every measurement runs in a fresh subprocess so peak memory is its own (CPU:
peak resident set size; CUDA: ``torch.cuda.max_memory_allocated``). Usage::

    python benchmarks/bench_ensemble.py                      # CPU, K = 1 2 4 8 16, 1 thread
    python benchmarks/bench_ensemble.py --device cuda        # K = 1 8 64 256

Speed-up per member = (separate run's s/epoch) / (ensemble s/epoch / K): how many times
faster each job's epochs go when it trains inside an ensemble of K. The table also goes
to ``benchmarks/results/bench_ensemble.json`` (``--out``), one entry per machine (the CPU's
model and instruction set, or the GPU's name), which the documentation's performance page reads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from groktransfer.config.schema import OptimizerConfig, TrainConfig
from groktransfer.model.transformer import TransformerConfig
from groktransfer.training.ensemble import EnsembleTrainer
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.jobs.run_job import configure_torch
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import Trainer

import results

TITLE = "Seed ensembles against separate runs"


def member(seed: int, epochs: int, device: torch.device, p: int) -> Trainer:
    task = Task("add", p, 0.3, seed)
    model = HookedGrokTransformer(TransformerConfig(d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out), seed=seed).to(device)
    train = TrainConfig(max_epochs=epochs, eval_every=10, checkpoint_every=100, patience=0, progress_bar=False)
    return Trainer(model, task, OptimizerConfig(), train)


def measure(k: int, epochs: int, device_name: str, p: int) -> dict:
    """One timing in this process: k = 0 means a plain Trainer.fit (the separate job)."""
    device = torch.device(device_name)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warm = [member(s, 10, device, p) for s in range(max(k, 1))]  # kernels, allocator
    (warm[0].fit() if k == 0 else EnsembleTrainer(warm).fit())
    del warm
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainers = [member(s, epochs, device, p) for s in range(max(k, 1))]
    sync()
    start = time.perf_counter(), time.process_time()
    (trainers[0].fit() if k == 0 else EnsembleTrainer(trainers).fit())
    sync()
    wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"k": k, "wall_s_per_epoch": wall / epochs, "cpu_s_per_epoch": cpu / epochs, "peak_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ks", type=int, nargs="*", default=None, help="ensemble sizes (default: CPU 1 2 4 8 16, GPU 1 8 64 256)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_ensemble.json"))
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child: measure this k
    args = parser.parse_args()
    configure_torch(args.threads, flush_denormal=True)  # as every job does: threads, denormals, allocator, oneDNN
    if args.one is not None:
        print(json.dumps(measure(args.one, args.epochs, args.device, args.p)))
        return
    load_before = list(os.getloadavg())
    ks = args.ks or ([1, 8, 64, 256] if args.device.startswith("cuda") else [1, 2, 4, 8, 16])
    rows = []
    for k in [0, *ks]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(k), "--device", args.device,
               "--epochs", str(args.epochs), "--threads", str(args.threads), "--p", str(args.p)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(f"  measured k={k}", file=sys.stderr, flush=True)
    base = rows[0]
    cpu_clock = args.device == "cpu"
    key = "cpu_s_per_epoch" if cpu_clock else "wall_s_per_epoch"
    memory = "peak RSS (MiB)" if cpu_clock else "peak CUDA memory (MiB)"
    table = []
    for r in rows:
        members = max(r["k"], 1)
        per_member = r[key] / members
        table.append({"run": "separate job (Trainer.fit)" if r["k"] == 0 else f"ensemble K={r['k']}",
                      "s_per_epoch": r[key], "s_per_epoch_member": per_member, "epochs_per_s_member": 1 / per_member,
                      "speedup_member": base[key] / per_member, "peak_mib": r["peak_mib"]})
    print(f"machine: {results.machine(args.device)}")
    print(f"p={args.p} device={args.device} threads={args.threads} epochs={args.epochs} (eval every 10, checkpoint cadence 100)")
    print(f"time base: {'CPU seconds (this process)' if cpu_clock else 'wall seconds'}")
    print(f"{'run':<28}{'s/epoch':>10}{'s/epoch/member':>16}{'epochs/s/member':>17}{'speed-up/member':>17}{'peak MiB':>10}")
    for t in table:
        print(f"{t['run']:<28}{t['s_per_epoch']:>10.4f}{t['s_per_epoch_member']:>16.4f}{t['epochs_per_s_member']:>17.1f}"
              f"{t['speedup_member']:>16.2f}x{t['peak_mib']:>10.0f}")
    figures = {
        "columns": {"run": "run", "s_per_epoch": "s/epoch", "s_per_epoch_member": "s/epoch per member",
                    "epochs_per_s_member": "epochs/s per member", "speedup_member": "speed-up per member", "peak_mib": memory},
        "rows": table, "args": {k: v for k, v in vars(args).items() if k != "one"}, "load_before": load_before,
        "notes": (f"a+b mod {args.p} (the reference model, 30% of pairs), {args.epochs} epochs per measurement, each in a "
                  "fresh process, eval every 10 epochs; "
                  f"{'CPU seconds of the process, ' + str(args.threads) + ' thread(s)' if cpu_clock else 'wall seconds'}. "
                  "Speed-up per member = the separate job's s/epoch / (the ensemble's s/epoch / K)."),
    }  # fmt: skip
    print(f"results: {results.record('bench_ensemble', results.machine(args.device), figures, Path(args.out), title=TITLE)}")


if __name__ == "__main__":
    main()

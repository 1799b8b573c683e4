"""Seconds per epoch of the *real* training job against the original paper's trainer.

``bench_epoch.py`` times the model's step in isolation; this times the product, in one
process, on the same thread count:

  (0) the original paper's ``Trainer`` loop (``paper_trainer.py``: full-sequence forward,
      train *and test* loss every epoch, AdamW + warm-up), as written and with its data
      tensors prebuilt (a stricter baseline),
  (1) ``Trainer.fit`` with the default cadence (eval every 10 epochs) and no callbacks,
      its products chosen per shape (``train.cpu_gemm=auto``, the default), (1a) all on
      oneDNN (``train.cpu_gemm=onednn``) and (1b) all on torch's BLAS (``blas``),
  (2) the full job loop (``training.train_in_run_dir``: local CSV sink, a checkpoint, a resume
      state and progress measures every ``checkpoint_every`` epochs),
  (3) the same with measures switched off,

and prints the speed-ups over (0) and the measures' overhead (2)/(3) - 1. Loops (1)-(3) run
in interleaved rounds (``--rounds``) and each reports its median: these machines drift by
5-10% within a minute, which would otherwise decide a 2% comparison. CPU seconds are
printed beside wall seconds: on a shared machine wall time also counts the time other
processes hold the core.

It also says how close each loop is to the machine's floor: the CPU (model, instruction
set), its measured float32 GEMM peak on these threads (the better of BLAS and oneDNN on a
2048^3 product), the FLOPs of one epoch of ``Trainer.fit`` (counted by
``torch.utils.flop_counter`` on the BLAS path: the same products either way, the eval
forward included at its cadence), and per loop the achieved GFLOP/s and the fraction of
the floor (floor = FLOPs per epoch / peak). The figures also go to
``benchmarks/results/bench_trainer.json`` (``--out``), one entry per machine
(``benchmarks/results.py``), which the documentation's performance page reads. Usage::

    python benchmarks/bench_trainer.py --p 113 --epochs 300 --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from groktransfer.config.schema import CpuGemm, MeasuresConfig, OptimizerConfig, TrainConfig
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.gemm import _onednn_mm, auto_choices, machine_key, onednn_available, set_cpu_gemm
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.jobs.run_job import configure_torch
from groktransfer.runs.rundir import RunDir
from groktransfer.sinks import RunMeta
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import Trainer
from groktransfer.jobs.train_run_dir import TrainingPlan, train_in_run_dir
from paper_trainer import PaperTrainer

import results


TITLE = "Training loop against the original paper's loop (p = 113)"


def _model(task: Task) -> HookedGrokTransformer:
    return HookedGrokTransformer(TransformerConfig(d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out), seed=0)


def _train_cfg(epochs: int, checkpoint_every: int) -> TrainConfig:
    return TrainConfig(max_epochs=epochs, eval_every=10, checkpoint_every=checkpoint_every, patience=0, progress_bar=False)


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def per(self, n: int) -> Tuple[float, float]:
        return self.wall / n, self.cpu / n


def time_paper(p: int, frac_train: float, epochs: int, prebuilt: bool) -> Tuple[float, float]:
    trainer = PaperTrainer(p, frac_train, seed=0, prebuilt_data=prebuilt)
    for _ in range(3):  # warm-up: allocator, kernels
        trainer.training_step()
    with Timer() as t:
        for _ in range(epochs):
            trainer.training_step()
    return t.per(epochs)


def time_trainer(task: Task, epochs: int, checkpoint_every: int, gemm: CpuGemm = CpuGemm.auto) -> Tuple[float, float]:
    set_cpu_gemm(gemm)
    trainer = Trainer(_model(task), task, OptimizerConfig(), _train_cfg(epochs, checkpoint_every))
    with Timer() as t:
        trainer.fit()
    set_cpu_gemm(CpuGemm.auto)
    return t.per(epochs)


def _median_pair(times: list) -> Tuple[float, float]:
    """(median wall, median CPU) seconds per epoch over rounds."""
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def gemm_peak_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """Best float32 GFLOP per CPU second of an n^3 product on this thread count, per library."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    libraries = {"blas": lambda: torch.mm(a, b)}
    if onednn_available():
        libraries["onednn"] = lambda: _onednn_mm(a, b)
    out = {}
    for name, fn in libraries.items():
        fn()
        best = min(_seconds(fn) for _ in range(repeats))
        out[name] = 2 * n**3 / best / 1e9
    return out


def _seconds(fn) -> float:
    """CPU seconds of the process, as the loops are timed: on a shared machine wall time
    also counts the time other processes hold the core, and would put loops above 100%."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def flops_per_epoch(task: Task, checkpoint_every: int, epochs: int = 20) -> float:
    """FLOPs of one epoch of Trainer.fit at the default cadence, counted on the BLAS path."""
    set_cpu_gemm(CpuGemm.blas)
    trainer = Trainer(_model(task), task, OptimizerConfig(), _train_cfg(epochs, checkpoint_every))
    with FlopCounterMode(display=False) as counter:
        trainer.fit()
    set_cpu_gemm(CpuGemm.auto)
    return counter.get_total_flops() / epochs


def time_job(task: Task, epochs: int, checkpoint_every: int, measures: bool) -> Tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        plan = TrainingPlan(
            task=task,
            model=_model(task),
            optimizer=OptimizerConfig(),
            train=_train_cfg(epochs, checkpoint_every),
            measures=MeasuresConfig(enabled=measures),
            meta=RunMeta(run_id="bench", experiment="bench", task=task.name, condition="random", seed=0),
            config={},
        )
        with Timer() as t:
            train_in_run_dir(RunDir(Path(tmp)), plan)  # local files only (plan.logger is None)
        return t.per(epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--frac-train", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--paper-epochs", type=int, default=40, help="timed epochs of the (slow) paper loop")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the loops (1)-(3); the median is reported")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_trainer.json"))
    args = parser.parse_args()
    load_before = list(os.getloadavg())
    configure_torch(args.threads, flush_denormal=True)  # as every job does: threads, denormals, allocator
    task = Task("add", args.p, args.frac_train, 0)
    time_trainer(task, 20, args.checkpoint_every)  # warm-up: allocator, kernels, auto's choices
    peaks = gemm_peak_gflops()
    peak = max(peaks.values())
    flops = flops_per_epoch(task, args.checkpoint_every)
    floor = flops / (peak * 1e9)

    paper_rows = {
        "(0) paper Trainer, as written": time_paper(args.p, args.frac_train, args.paper_epochs, prebuilt=False),
        "(0') paper Trainer, data tensors prebuilt": time_paper(args.p, args.frac_train, args.paper_epochs, prebuilt=True),
    }
    loops = {
        "(1) Trainer.fit, default eval cadence (auto)": lambda: time_trainer(task, args.epochs, args.checkpoint_every),
        "(1a) the same, train.cpu_gemm=onednn": lambda: time_trainer(task, args.epochs, args.checkpoint_every, CpuGemm.onednn),
        "(1b) the same, train.cpu_gemm=blas": lambda: time_trainer(task, args.epochs, args.checkpoint_every, CpuGemm.blas),
        "(2) full job loop: files, checkpoints, measures": lambda: time_job(task, args.epochs, args.checkpoint_every, True),
        "(3) full job loop without measures": lambda: time_job(task, args.epochs, args.checkpoint_every, False),
    }
    # Interleaved rounds (1, 1a, 1b, 2, 3, 1, 1a, ...), the median per loop: a change in the
    # machine's speed during the run hits every loop alike instead of deciding a comparison.
    rounds = {label: [] for label in loops}
    for _ in range(args.rounds):
        for label, loop in loops.items():
            rounds[label].append(loop())
    rows = {**paper_rows, **{label: _median_pair(ts) for label, ts in rounds.items()}}
    print(f"machine: {machine_key()}")
    print(f"float32 GEMM peak (2048^3, {args.threads} thread(s)): "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()) + f"; floor {flops / 1e9:.2f} GFLOP/epoch / "
          f"{peak:.1f} GFLOP/s = {floor:.4f} s/epoch")
    print(f"p={args.p} frac_train={args.frac_train} threads={args.threads} epochs={args.epochs} x {args.rounds} interleaved "
          f"rounds, median (paper loop {args.paper_epochs} epochs once) eval_every=10 checkpoint_every={args.checkpoint_every}")
    print(f"{'loop':<50} {'wall s/ep':>10} {'cpu s/ep':>10} {'x paper':>8} {'x strict':>8} {'GFLOP/s':>8} {'floor':>6}")
    paper, strict = rows["(0) paper Trainer, as written"], rows["(0') paper Trainer, data tensors prebuilt"]
    table = []
    for label, (wall, cpu) in rows.items():
        paper_loop = label.startswith("(0")
        gflops = "" if paper_loop else f"{flops / cpu / 1e9:8.1f}"
        frac = "" if paper_loop else f"{floor / cpu:6.0%}"
        print(f"{label:<50} {wall:10.4f} {cpu:10.4f} {paper[1] / cpu:7.1f}x {strict[1] / cpu:7.1f}x {gflops:>8} {frac:>6}")
        table.append({"loop": label, "wall_s_per_epoch": wall, "cpu_s_per_epoch": cpu, "x_paper": paper[1] / cpu,
                      "gflops": None if paper_loop else flops / cpu / 1e9, "fraction_of_floor": None if paper_loop else floor / cpu,
                      "rounds_cpu_s_per_epoch": None if paper_loop else ", ".join(f"{t[1]:.4f}" for t in rounds[label])})
    with_measures, without = rows["(2) full job loop: files, checkpoints, measures"], rows["(3) full job loop without measures"]
    print(f"speed-ups are CPU-time ratios (the paper loop counts its whole sequence's FLOPs, not shown); "
          f"measures overhead (2)/(3) - 1: {100 * (with_measures[1] / without[1] - 1):.1f}%")
    print(f"auto's choices: {auto_choices()}")
    columns = {"loop": "loop", "wall_s_per_epoch": "wall s/epoch", "cpu_s_per_epoch": "CPU s/epoch", "x_paper": "× paper (CPU)",
               "gflops": "GFLOP/s", "fraction_of_floor": "fraction of the floor", "rounds_cpu_s_per_epoch": "each round (CPU s/epoch)"}
    notes = (f"{args.epochs} epochs x {args.rounds} interleaved rounds per loop, the median; "
             f"float32 GEMM peak (2048³, CPU time): {', '.join(f'{k} {v:.1f}' for k, v in peaks.items())} GFLOP/s; "
             f"{flops / 1e9:.2f} GFLOP per epoch, so the floor is {floor:.4f} s/epoch. auto chose: {auto_choices()}")
    figures = {"columns": columns, "notes": notes, "args": vars(args), "load_before": load_before, "gemm_peak_gflops": peaks, "gflop_per_epoch": flops / 1e9,
               "floor_s_per_epoch": floor, "rows": table, "auto_choices": auto_choices()}  # fmt: skip
    print(f"results: {results.record('bench_trainer', machine_key(), figures, Path(args.out), title=TITLE)}")


if __name__ == "__main__":
    main()

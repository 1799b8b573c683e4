"""Seconds per epoch of the *real* training job against the original paper's trainer.

``bench_epoch.py`` times the model's step in isolation; this times the product, in one
process, on the same thread count:

  (0) the original paper's ``Trainer`` loop (``paper_trainer.py``: full-sequence forward,
      train *and test* loss every epoch, AdamW + warm-up), as written and with its data
      tensors prebuilt (a stricter baseline),
  (1) ``Trainer.fit`` with the default cadence (eval every 10 epochs) and no callbacks,
      its products on oneDNN (``train.cpu_gemm=onednn``, the default) and (1b) on
      torch's BLAS (``train.cpu_gemm=blas``),
  (2) the full job loop (``training.train_in_run_dir``: local CSV sink, a checkpoint, a resume
      state and progress measures every ``checkpoint_every`` epochs),
  (3) the same with measures switched off,

and prints the speed-ups over (0) and the measures' overhead (2)/(3) - 1. CPU seconds
are printed beside wall seconds: on a shared machine wall time also counts the time
other processes hold the core. Usage::

    python benchmarks/bench_trainer.py --p 113 --epochs 500 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Tuple


from groktransfer.config.schema import CpuGemm, MeasuresConfig, ModelConfig, OptimizerConfig, TrainConfig
from groktransfer.model.gemm import set_cpu_gemm
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.jobs.run_job import configure_torch
from groktransfer.runs.rundir import RunDir
from groktransfer.sinks import RunMeta
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import Trainer
from groktransfer.runs.train_run_dir import TrainingPlan, train_in_run_dir
from paper_trainer import PaperTrainer


def _model(task: Task) -> HookedGrokTransformer:
    return HookedGrokTransformer(ModelConfig(d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out), seed=0)


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


def time_trainer(task: Task, epochs: int, checkpoint_every: int, gemm: CpuGemm = CpuGemm.onednn) -> Tuple[float, float]:
    set_cpu_gemm(gemm)
    trainer = Trainer(_model(task), task, OptimizerConfig(), _train_cfg(epochs, checkpoint_every))
    with Timer() as t:
        trainer.fit()
    set_cpu_gemm(CpuGemm.onednn)
    return t.per(epochs)


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
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_torch(args.threads, flush_denormal=True)  # as every job does: threads, denormals, allocator
    task = Task("add", args.p, args.frac_train, 0)
    time_trainer(task, 20, args.checkpoint_every)  # warm-up: allocator, kernels

    rows = {
        "(0) paper Trainer, as written": time_paper(args.p, args.frac_train, args.paper_epochs, prebuilt=False),
        "(0') paper Trainer, data tensors prebuilt": time_paper(args.p, args.frac_train, args.paper_epochs, prebuilt=True),
        "(1) Trainer.fit, default eval cadence": time_trainer(task, args.epochs, args.checkpoint_every),
        "(1b) the same, train.cpu_gemm=blas": time_trainer(task, args.epochs, args.checkpoint_every, CpuGemm.blas),
        "(2) full job loop: files, checkpoints, measures": time_job(task, args.epochs, args.checkpoint_every, True),
        "(3) full job loop without measures": time_job(task, args.epochs, args.checkpoint_every, False),
    }
    print(f"p={args.p} frac_train={args.frac_train} threads={args.threads} epochs={args.epochs} "
          f"(paper loop {args.paper_epochs}) eval_every=10 checkpoint_every={args.checkpoint_every}")
    print(f"{'loop':<50} {'wall s/ep':>10} {'cpu s/ep':>10} {'x paper':>8} {'x strict':>8}")
    paper, strict = rows["(0) paper Trainer, as written"], rows["(0') paper Trainer, data tensors prebuilt"]
    for label, (wall, cpu) in rows.items():
        print(f"{label:<50} {wall:10.4f} {cpu:10.4f} {paper[1] / cpu:7.1f}x {strict[1] / cpu:7.1f}x")
    with_measures, without = rows["(2) full job loop: files, checkpoints, measures"], rows["(3) full job loop without measures"]
    print(f"speed-ups are CPU-time ratios; measures overhead (2)/(3) - 1: {100 * (with_measures[1] / without[1] - 1):.1f}%")


if __name__ == "__main__":
    main()

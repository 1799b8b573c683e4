"""Seconds per epoch of the *real* training job, and what progress measures cost.

``bench_epoch.py`` times the model's step in isolation; this times the product:

  (1) ``Trainer.fit`` with the default cadence (eval every 10 epochs) and no callbacks,
  (2) the full job loop (``training.train_in_run_dir``: local CSV sink, a checkpoint, a resume
      state and progress measures every ``checkpoint_every`` epochs),
  (3) the same with measures switched off,

and prints the measures' overhead (2)/(3) - 1. Usage::

    python benchmarks/bench_trainer.py --p 113 --epochs 500 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from groktransfer.config.schema import MeasuresConfig, ModelConfig, OptimizerConfig, TrainConfig
from groktransfer.model import HookedGrokTransformer
from groktransfer.rundir import RunDir
from groktransfer.sinks import RunMeta
from groktransfer.tasks import Task
from groktransfer.trainer import Trainer
from groktransfer.training import TrainingPlan, train_in_run_dir


def _model(task: Task) -> HookedGrokTransformer:
    return HookedGrokTransformer(ModelConfig(d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out), seed=0)


def _train_cfg(epochs: int, checkpoint_every: int) -> TrainConfig:
    return TrainConfig(max_epochs=epochs, eval_every=10, checkpoint_every=checkpoint_every, patience=0, progress_bar=False)


def time_trainer(task: Task, epochs: int, checkpoint_every: int) -> float:
    trainer = Trainer(_model(task), task, OptimizerConfig(), _train_cfg(epochs, checkpoint_every))
    start = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - start) / epochs


def time_job(task: Task, epochs: int, checkpoint_every: int, measures: bool) -> float:
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
        start = time.perf_counter()
        train_in_run_dir(RunDir(Path(tmp)), plan)  # local files only (plan.logger is None)
        return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--frac-train", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as every job does (train.flush_denormal)
    task = Task("add", args.p, args.frac_train, 0)
    time_trainer(task, 20, args.checkpoint_every)  # warm-up: allocator, kernels

    trainer_s = time_trainer(task, args.epochs, args.checkpoint_every)
    with_measures = time_job(task, args.epochs, args.checkpoint_every, measures=True)
    without = time_job(task, args.epochs, args.checkpoint_every, measures=False)
    print(f"p={args.p} frac_train={args.frac_train} threads={args.threads} epochs={args.epochs} "
          f"eval_every=10 checkpoint_every={args.checkpoint_every}")
    print(f"{'loop':<52} {'s/epoch':>9}")
    print(f"{'(1) Trainer.fit, default eval cadence':<52} {trainer_s:9.4f}")
    print(f"{'(2) full job loop: files, checkpoints, measures':<52} {with_measures:9.4f}")
    print(f"{'(3) full job loop without measures':<52} {without:9.4f}")
    print(f"measures overhead (2)/(3) - 1: {100 * (with_measures / without - 1):.1f}%  "
          f"(whole job vs bare trainer: {100 * (with_measures / trainer_s - 1):.1f}%)")


if __name__ == "__main__":
    main()

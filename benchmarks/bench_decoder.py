"""Seconds per epoch of Power et al.'s decoder in minibatches: groktransfer against a plain PyTorch loop.

The setting most grokking papers train in (Power et al. 2022; Grokfast, Omnigrok, Muon
studies): a 2-layer pre-LayerNorm decoder (d_model 128, 4 heads, GELU MLP of 512), x*y mod
97 with half of the pairs for training, minibatches of 512, Adam, an evaluation every epoch.
In one process, on the same thread count, in interleaved rounds (``--rounds``; the median
per loop is reported, since these shared machines drift by 5-10% within a minute):

  (0) the plain loop (``plain_decoder.py``: ``nn.MultiheadAttention``, the training accuracy
      counted from the minibatches as the weights change, the held-out half evaluated),
  (1) ``Trainer.fit`` of the same model (``model=two_layer model.normalization=LN
      model.act=gelu optimizer=adam train.batch_size=512 train.eval_every=1``): exact train
      and test figures every epoch, the last-position fast path,
  (2) the same with ``train.fast_path=false`` (every position through every block).

Both train on exactly the same pairs. Differences that remain: the plain loop has trained
attention and unembedding biases (groktransfer's presets keep them at zero), a float32 loss
(groktransfer's is float64), torch's default Adam (groktransfer's is the fused one), and its
train figures are running means over the epoch, where groktransfer's are exact (an extra
forward over the training pairs, less the first minibatch's). Power et al.'s inputs are
``x o y =`` with an operator token and y in 1..96; here they are the existing task's
``x y =`` with y in 0..96 (9409 pairs against 9312).

Each loop's FLOPs per epoch are counted with ``torch.utils.flop_counter`` (groktransfer's on the
BLAS path: the same products either way) and set against the thread's float32 GEMM peak (the
better of BLAS and oneDNN on a 2048^3 product): the floor is FLOPs / peak, and each row says
which fraction of that floor it runs at. The table goes to
``benchmarks/results/bench_decoder.json`` (``--out``), one entry per machine. Usage::

    python benchmarks/bench_decoder.py --epochs 10 --rounds 5 --threads 1
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/bench_decoder.py   # an AVX2 CPU
    python benchmarks/bench_decoder.py --device cuda      # wall seconds (synchronised); no FLOP floor
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from groktransfer.config.schema import CpuGemm, OptimizerConfig, TrainConfig
from groktransfer.model.transformer import TransformerConfig
from groktransfer.jobs.run_job import configure_torch
from groktransfer.model.gemm import auto_choices, set_cpu_gemm
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import Trainer
from bench_trainer import gemm_peak_gflops
from plain_decoder import PlainLoop

import results

TITLE = "Power et al.'s decoder in minibatches (x*y mod 97): groktransfer against a plain PyTorch loop"
PLAIN = "(0) plain PyTorch loop (nn.MultiheadAttention)"
FAST = "(1) groktransfer Trainer.fit"
FULL = "(2) the same, train.fast_path=false"


def decoder_config(task: Task) -> TransformerConfig:
    """conf/model/two_layer.yaml with LayerNorm and GELU: Power et al.'s shape."""
    return TransformerConfig(name="two_layer", n_layers=2, normalization="LN", act="gelu",
                       d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out)  # fmt: skip


def groktransfer_trainer(task: Task, epochs: int, batch_size: int, fast: bool, device: str) -> Trainer:
    """``Trainer.fit`` evaluates before the first epoch and after each: the initial evaluation is
    made here, untimed, so that ``fit`` evaluates once per epoch, as the plain loop does."""
    train = TrainConfig(max_epochs=epochs, eval_every=1, checkpoint_every=max(epochs, 1), patience=0,
                        batch_size=batch_size, fast_path=fast, progress_bar=False)  # fmt: skip
    model = HookedGrokTransformer(decoder_config(task), seed=0).to(device)
    trainer = Trainer(model, task, OptimizerConfig(name="adam"), train)
    trainer.last_eval = trainer.evaluate()
    return trainer


def plain_loop(task: Task, batch_size: int, device: str) -> PlainLoop:
    train_idx, test_idx = task.split
    on = lambda t: t.to(device)  # noqa: E731
    loop = PlainLoop((on(task.tokens[train_idx]), on(task.labels[train_idx])),
                     (on(task.tokens[test_idx]), on(task.labels[test_idx])),
                     task.d_vocab, task.d_vocab_out, batch_size=batch_size)  # fmt: skip
    loop.model.to(device)
    return loop


def seconds_per_epoch(run: Callable[[], None], epochs: int, device: str) -> float:
    """CPU seconds of the process per epoch on CPU (wall time would count other processes
    holding the core); wall seconds, synchronised, on a GPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / epochs
    t0 = time.process_time()
    run()
    return (time.process_time() - t0) / epochs


class _FlopCount(TorchDispatchMode):
    """Total FLOPs of the ops ``torch.utils.flop_counter`` knows, without its per-module
    tracker (which fails on a parameter's view made under ``torch.no_grad``, as the full
    forward's position embedding is during evaluation)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def count_flops(run: Callable[[], None]) -> float:
    with _FlopCount() as counter:
        run()
    return counter.total


def plain_flops_per_epoch(task: Task, batch_size: int, epochs: int = 2) -> float:
    """The plain loop's FLOPs, its eval forward counted in train mode: in eval mode
    ``nn.MultiheadAttention`` runs one fused kernel whose products the counter cannot see
    (the same products either way)."""
    loop = plain_loop(task, batch_size, "cpu")
    loop.model.eval = loop.model.train  # type: ignore[method-assign]  # counting only
    return count_flops(lambda: [loop.epoch() for _ in range(epochs)]) / epochs


def trainer_flops_per_epoch(task: Task, batch_size: int, fast: bool, epochs: int = 2) -> float:
    set_cpu_gemm(CpuGemm.blas)  # oneDNN's product is one opaque op to the counter
    trainer = groktransfer_trainer(task, epochs, batch_size, fast, "cpu")  # (its first evaluation not counted)
    flops = count_flops(trainer.fit) / epochs
    set_cpu_gemm(CpuGemm.auto)
    return flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p", type=int, default=97)
    parser.add_argument("--frac-train", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per loop per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median per loop is reported")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_decoder.json"))
    args = parser.parse_args()
    load_before = list(os.getloadavg())
    configure_torch(args.threads, flush_denormal=True)  # as every job does: threads, denormals, allocator
    task, device, on_cpu = Task("multiply", args.p, args.frac_train, 0), args.device, args.device == "cpu"

    def run_plain() -> float:
        loop = plain_loop(task, args.batch_size, device)
        return seconds_per_epoch(lambda: [loop.epoch() for _ in range(args.epochs)], args.epochs, device)

    def run_trainer(fast: bool) -> Callable[[], float]:
        def run() -> float:
            trainer = groktransfer_trainer(task, args.epochs, args.batch_size, fast, device)
            return seconds_per_epoch(trainer.fit, args.epochs, device)

        return run

    loops: Dict[str, Callable[[], float]] = {PLAIN: run_plain, FAST: run_trainer(True), FULL: run_trainer(False)}
    for loop in loops.values():  # warm-up: allocator, kernels, auto's product choices
        loop()
    rounds: Dict[str, List[float]] = {label: [] for label in loops}
    for _ in range(args.rounds):  # interleaved: a drift in the machine's speed hits every loop alike
        for label, loop in loops.items():
            rounds[label].append(loop())
    median = {label: statistics.median(times) for label, times in rounds.items()}

    peaks, flops = {}, {}
    if on_cpu:
        peaks = gemm_peak_gflops()
        flops = {PLAIN: plain_flops_per_epoch(task, args.batch_size), FAST: trainer_flops_per_epoch(task, args.batch_size, True),
                 FULL: trainer_flops_per_epoch(task, args.batch_size, False)}  # fmt: skip
    peak = max(peaks.values()) if peaks else None
    machine = results.machine(device)
    clock = "CPU" if on_cpu else "wall"
    print(f"machine: {machine}")
    if peak:
        print(f"float32 GEMM peak (2048^3, {args.threads} thread(s), CPU time): "
              + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()) + " GFLOP/s")  # fmt: skip
    print(f"{task.name} p={args.p} frac_train={args.frac_train} batch {args.batch_size} Adam, eval every epoch; "
          f"{args.epochs} epochs x {args.rounds} interleaved rounds, the median; threads={args.threads} device={device}")
    print(f"{'loop':<48} {clock + ' s/ep':>10} {'x plain':>8} {'GFLOP/ep':>9} {'floor s':>8} {'of floor':>8}")
    table = []
    for label, seconds in median.items():
        row = {"loop": label, "s_per_epoch": seconds, "x_plain": median[PLAIN] / seconds,
               "gflop_per_epoch": flops[label] / 1e9 if flops else None,
               "floor_s_per_epoch": flops[label] / (peak * 1e9) if flops else None,
               "rounds_s_per_epoch": ", ".join(f"{t:.4f}" for t in rounds[label])}  # fmt: skip
        row["fraction_of_floor"] = row["floor_s_per_epoch"] / seconds if flops else None
        table.append(row)
        extra = (f" {row['gflop_per_epoch']:9.2f} {row['floor_s_per_epoch']:8.4f} {row['fraction_of_floor']:8.0%}"
                 if flops else "")  # fmt: skip
        print(f"{label:<48} {seconds:10.4f} {row['x_plain']:7.2f}x{extra}")
    print(f"each round: " + "; ".join(f"{label[:3]} {row['rounds_s_per_epoch']}" for label, row in zip(median, table)))
    if on_cpu:
        print(f"auto's choices: {auto_choices()}")
    columns = {"loop": "loop", "s_per_epoch": f"{clock} s/epoch", "x_plain": "× plain loop", "gflop_per_epoch": "GFLOP/epoch",
               "floor_s_per_epoch": "floor s/epoch", "fraction_of_floor": "fraction of the floor",
               "rounds_s_per_epoch": f"each round ({clock} s/epoch)"}  # fmt: skip
    notes = (f"{task.name} mod {args.p}, frac_train {args.frac_train}, batch {args.batch_size}, Adam, eval every epoch; "
             f"{args.epochs} epochs x {args.rounds} interleaved rounds per loop, the median"
             + (f"; float32 GEMM peak (2048³, CPU time): {', '.join(f'{k} {v:.1f}' for k, v in peaks.items())} GFLOP/s; "
                "each loop's floor is its own FLOPs at that peak" if peak else "; wall time, synchronised"))  # fmt: skip
    figures = {"columns": columns, "notes": notes, "args": vars(args), "load_before": load_before, "gemm_peak_gflops": peaks,
               "rows": table, "auto_choices": auto_choices() if on_cpu else {}}  # fmt: skip
    print(f"results: {results.record('bench_decoder', machine, figures, Path(args.out), title=TITLE)}")


if __name__ == "__main__":
    main()

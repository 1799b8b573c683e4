"""Fabricate run directories that follow docs/architecture.md, for the analysis tests.

Why fabricate instead of training: the analysis only reads files, and a known
answer (this run reached 0.99 at epoch 400, that one is censored at 3000) needs
files we control exactly. ``make_sweep`` also produces realistic-looking
sweeps (sigmoid grokking curves, progress measures) to look at the figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

THRESHOLDS = (0.9, 0.95, 0.99, 0.999)


def write_status(
    run_dir: Path,
    *,
    condition: str,
    seed: int,
    status: str = "completed",
    epoch: int = 1000,
    max_epochs: int = 1000,
    thresholds: Mapping[float, int | None] | None = None,
    reason: str | None = None,
    task: str = "subtract",
    experiment: str = "test",
    final: Mapping[str, float] | None = None,
    updated_at: str = "2026-11-21T20:30:00+00:00",
    wall_time_s: float = 12.5,
    hydra: bool = True,
) -> Path:
    """Write a status.json (plus .hydra/ and config.yaml) with exactly the given fields.

    ``thresholds`` maps t -> epoch reached (None = not reached); ``held`` is True
    for reached thresholds.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    th = {f"{t:g}": {"epoch": e, "held": e is not None} for t, e in (thresholds or {}).items()}
    st = {
        "status": status,
        "reason": reason,
        "run_id": f"{condition}-s{seed}",
        "experiment": experiment,
        "task": task,
        "condition": condition,
        "seed": seed,
        "data_seed": seed,
        "model_seed": seed,
        "source_seed": 0,
        "epoch": epoch,
        "max_epochs": max_epochs,
        "thresholds": th,
        "final": dict(final or {"train_loss": 0.01, "test_loss": 0.02, "train_acc": 1.0, "test_acc": 0.99}),
        "wall_time_s": wall_time_s,
        "threads": 1,
        "versions": {"torch": "2.x"},
        "started_at": "2026-11-21T20:00:00+00:00",
        "updated_at": updated_at,
    }
    (run_dir / "status.json").write_text(json.dumps(st, indent=1))
    cfg = _config_yaml(condition, seed, task, experiment, max_epochs)
    (run_dir / "config.yaml").write_text(cfg)
    if hydra:
        (run_dir / ".hydra").mkdir(exist_ok=True)
        (run_dir / ".hydra" / "config.yaml").write_text(cfg)
    return run_dir


def _config_yaml(condition: str, seed: int, task: str, experiment: str, max_epochs: int) -> str:
    return (
        f"experiment_name: {experiment}\nseed: {seed}\n"
        f"task:\n  name: {task}\n  p: 113\n  frac_train: 0.3\n"
        f"transfer:\n  name: {condition}\n"
        f"train:\n  max_epochs: {max_epochs}\n  eval_every: 10\n"
        f"logger:\n  name: wandb\n  mode: offline\n  group: {experiment}\n"
    )


def write_crashed(job_dir: Path, *, condition: str, seed: int, task: str = "subtract") -> Path:
    """A job dir Hydra created (``.hydra/``) whose job died before writing status.json."""
    (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (job_dir / ".hydra" / "config.yaml").write_text(_config_yaml(condition, seed, task, "test", 1000))
    return job_dir


# --------------------------------------------------------------------------- realistic curves


def synthetic_curves(
    grok_epoch: float,
    max_epochs: int,
    rng: np.random.Generator,
    eval_every: int = 10,
    checkpoint_every: int = 100,
    width: float | None = None,
    start_test_acc: float = 0.01,
    patience: int = 500,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[float, int | None], int]:
    """Sigmoid-like grokking curves, progress measures, threshold epochs and last epoch.

    Test accuracy = 1 - (1 - a0) / (1 + exp((e - g) / w)); training stops early
    ``patience`` epochs after the last threshold is reached, as the trainer does.
    """
    w = width or max(grok_epoch / 12.0, 20.0)
    epochs = np.arange(0, max_epochs + 1, eval_every)
    test_acc = 1 - (1 - start_test_acc) / (1 + np.exp((epochs - grok_epoch) / w))
    test_acc = np.clip(test_acc + rng.normal(0, 0.004, epochs.size) * (test_acc < 0.99), 0, 1)
    reached = {t: (int(epochs[np.argmax(test_acc >= t)]) if (test_acc >= t).any() else None) for t in THRESHOLDS}
    last = max_epochs
    if reached[THRESHOLDS[-1]] is not None:
        last = min(max_epochs, reached[THRESHOLDS[-1]] + patience)
    keep = epochs <= last
    epochs, test_acc = epochs[keep], test_acc[keep]
    mem = 150.0 + rng.uniform(-20, 20)
    train_acc = np.clip(1 - 0.99 / (1 + np.exp((epochs - mem) / 25.0)), 0, 1)
    train_loss = 4.7 * np.exp(-epochs / 60.0) + 0.02 * np.exp(-epochs / (grok_epoch + 1)) + 1e-4
    hump = 3.0 * np.exp(-(((epochs - mem * 2) / (grok_epoch * 0.6 + 50)) ** 2))
    test_loss = (1 - test_acc) * 4.6 + hump * (1 - test_acc) + 1e-3 + 1e-3 * rng.random(epochs.size)
    metrics = pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "train_acc": train_acc,
            "test_acc": test_acc,
            "lr": 1e-3,
        }
    )
    ce = np.arange(0, last + 1, checkpoint_every)
    s = 1 / (1 + np.exp(-(ce - grok_epoch * 0.8) / w))
    measures = pd.DataFrame(
        {
            "epoch": ce,
            "restricted_loss": 4.7 * (1 - s) * np.exp(-ce / (grok_epoch + 200)) + 2e-3,
            "restricted_acc": 0.01 + 0.98 * s,
            "excluded_loss": 1e-3 + 4.0 * s * (1 - np.exp(-ce / 300.0)),
            "excluded_acc": 1 - 0.98 * s,
            "n_key_freqs": np.round(5 * s).astype(int),
            "key_freqs": [" ".join(str(k) for k in [14, 35, 41, 42, 52][: int(round(5 * v))]) for v in s],
            "gini_W_E": 0.15 + 0.55 * s + rng.normal(0, 0.01, ce.size),
            "gini_W_L": 0.2 + 0.6 * s + rng.normal(0, 0.01, ce.size),
            "weight_norm_total": 2500 * np.exp(-ce / (grok_epoch * 1.5 + 500)) + 600,
        }
    )
    return metrics, measures, reached, int(epochs[-1])


def write_run_with_curves(
    run_dir: Path,
    *,
    condition: str,
    seed: int,
    grok_epoch: float,
    max_epochs: int,
    rng: np.random.Generator,
    task: str = "subtract",
    experiment: str = "test",
    start_test_acc: float = 0.01,
    measure_columns: Sequence[str] | None = None,
) -> dict[float, int | None]:
    """A completed run: metrics.csv, measures.csv and a status.json that agrees with them."""
    metrics, measures, reached, last = synthetic_curves(grok_epoch, max_epochs, rng, start_test_acc=start_test_acc)
    if measure_columns is not None:
        measures = measures[["epoch", *measure_columns]]
    fin = metrics.iloc[-1]
    write_status(
        run_dir,
        condition=condition,
        seed=seed,
        epoch=last,
        max_epochs=max_epochs,
        thresholds=reached,
        task=task,
        experiment=experiment,
        final={k: float(fin[k]) for k in ("train_loss", "test_loss", "train_acc", "test_acc")},
        wall_time_s=float(last) * 0.01,
    )
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    measures.to_csv(run_dir / "measures.csv", index=False)
    return reached


def make_sweep(
    root: Path,
    n_seeds: int = 5,
    grok_epochs: Mapping[str, Sequence[float]] | None = None,
    max_epochs: int = 8000,
    failed: bool = True,
    crashed: bool = False,
    stale: bool = False,
    seed: int = 0,
) -> Path:
    """A realistic sweep dir: one job dir per (condition, seed), Hydra-style names.

    Default grok epochs put one ``random`` seed past ``max_epochs`` (censored at
    every threshold) and one ``memorized`` seed between 0.95 and 0.99 at the end
    (censored at 0.99 and 0.999 only). ``failed`` adds a failed ``random`` job with partial
    metrics; ``crashed`` a job dir without status.json; ``stale`` a long-dead running job.
    """
    rng = np.random.default_rng(seed)
    if grok_epochs is None:
        base = {"grokked": 700.0, "memorized": 2000.0, "random": 3500.0}
        grok_epochs = {c: [g * (1 + 0.25 * (s - n_seeds / 2) / n_seeds) for s in range(n_seeds)] for c, g in base.items()}
        grok_epochs["random"] = list(grok_epochs["random"])
        grok_epochs["random"][-1] = max_epochs * 1.3  # never grokks: censored everywhere
        grok_epochs["memorized"] = list(grok_epochs["memorized"])
        grok_epochs["memorized"][-1] = max_epochs * 0.72  # reaches 0.95, not 0.99
    root.mkdir(parents=True, exist_ok=True)
    job = 0
    for cond, gs in grok_epochs.items():
        start = 0.3 if cond == "grokked" else 0.01
        for s, g in enumerate(gs):
            write_run_with_curves(
                root / f"{job}_{cond}_s{s}", condition=cond, seed=s, grok_epoch=g,
                max_epochs=max_epochs, rng=rng, start_test_acc=start,
            )  # fmt: skip
            job += 1
    if failed:
        d = root / f"{job}_random_s{n_seeds}"
        metrics, measures, _, _ = synthetic_curves(3000, 1200, rng, patience=0)
        write_status(
            d, condition="random", seed=n_seeds, status="failed", epoch=1200, max_epochs=max_epochs,
            thresholds={t: None for t in THRESHOLDS}, reason="RuntimeError: loss became NaN at epoch 1210",
        )  # fmt: skip
        metrics.to_csv(d / "metrics.csv", index=False)
        measures.to_csv(d / "measures.csv", index=False)
        job += 1
    if crashed:
        write_crashed(root / f"{job}_grokked_s{n_seeds}", condition="grokked", seed=n_seeds)
        job += 1
    if stale:
        write_status(
            root / f"{job}_memorized_s{n_seeds}", condition="memorized", seed=n_seeds, status="running",
            epoch=300, max_epochs=max_epochs, thresholds={t: None for t in THRESHOLDS},
            updated_at="2020-01-01T00:00:00+00:00",
        )  # fmt: skip
        job += 1
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def first_epoch(metrics: pd.DataFrame, t: float) -> int | None:
    """First eval epoch with test_acc >= t, the contract's definition (for cross-checks)."""
    hit = metrics.index[metrics.test_acc >= t]
    return None if len(hit) == 0 else int(metrics.epoch[hit[0]])


__all__ = [
    "THRESHOLDS",
    "write_status",
    "write_crashed",
    "synthetic_curves",
    "write_run_with_curves",
    "make_sweep",
    "first_epoch",
    "stub_section_provider",
]


def stub_section_provider(runs, out_dir, settings):
    """A report-section provider as configured by ``analysis.extra_sections`` (for tests)."""
    from groktransfer.analysis import ReportSection

    return [ReportSection("Stub provider", f"{len(runs)} runs seen")]


# --------------------------------------------------------------------------- transfer axes


def write_transfer_run(
    run_dir: Path,
    *,
    condition: str,
    seed: int,
    reached_999: int | None,
    epoch: int | None = None,
    task: str = "subtract",
    source_task: str = "add",
    source_epoch: int | None = None,
    source_run_dir: Path | None = None,
    start_measures: Mapping[str, float | int | str] | None = None,
    lr: float = 1e-3,
    weight_decay: float = 1.0,
    run_id: str | None = None,
    reused_from: str | None = None,
) -> Path:
    """A completed target run of a transfer sweep with known answers.

    ``reached_999`` is the epoch it reached every threshold (None: censored at ``epoch``).
    Transfer runs get the status ``source`` record (chosen epoch) and a ``source.json``
    with the start's measures, as ``run.py`` writes them; the config names the source
    task and the optimizer, which the trajectory / matrix / fair-baseline analyses read.
    """
    last = epoch if epoch is not None else (reached_999 + 100 if reached_999 is not None else 3000)
    write_status(
        run_dir, condition=condition, seed=seed, task=task, epoch=last, max_epochs=max(last, 3000),
        thresholds={t: reached_999 for t in THRESHOLDS},
    )  # fmt: skip
    status = json.loads((run_dir / "status.json").read_text())
    status["run_id"] = run_id or f"{source_task}-{task}-{condition}-{source_epoch}-s{seed}"
    if reused_from:
        status["reused_from"] = reused_from
    chosen = None
    if condition != "random":
        chosen = {"condition": condition, "epoch": source_epoch, "requested_epoch": source_epoch,
                  "measures": dict(start_measures or {})}  # fmt: skip
        status["source"] = chosen
        record = {"condition": condition, "source_run_dir": str(source_run_dir) if source_run_dir else None,
                  "chosen": chosen}  # fmt: skip
        (run_dir / "source.json").write_text(json.dumps(record))
    (run_dir / "status.json").write_text(json.dumps(status))
    cfg = (
        f"experiment_name: test\nseed: {seed}\ntask:\n  name: {task}\n  p: 59\n  frac_train: 0.7\n"
        f"optimizer:\n  lr: {lr}\n  weight_decay: {weight_decay}\n"
        f"transfer:\n  name: {condition}\n  source:\n    task: {source_task}\n"
        "  grokked: {min_train_acc: 0.999, min_test_acc: 0.999, max_test_acc: 1.0, held_for: 0, pick: first}\n"
        "  memorized: {min_train_acc: 0.999, min_test_acc: 0.0, max_test_acc: 0.2, held_for: 0, pick: first}\n"
        "train:\n  max_epochs: 3000\n  eval_every: 10\n"
    )
    (run_dir / "config.yaml").write_text(cfg)
    return run_dir


def write_source_run(run_dir: Path, memorized_at: int = 100, grokked_at: int = 2000, last: int = 2500) -> Path:
    """A finished source run: metrics/measures every 100 epochs and empty checkpoint files.

    Train accuracy is 1 from ``memorized_at``; test accuracy is 0.1 until ``grokked_at``,
    then 1 -- so the memorized / grokked criteria above pick exactly those epochs.
    """
    epochs = np.arange(0, last + 1, 100)
    train_acc = np.where(epochs >= memorized_at, 1.0, 0.05)
    test_acc = np.where(epochs >= grokked_at, 1.0, 0.1)
    metrics = pd.DataFrame({"epoch": epochs, "train_loss": 1 - train_acc + 1e-3, "test_loss": 5 * (1 - test_acc) + 1e-3,
                            "train_acc": train_acc, "test_acc": test_acc, "lr": 3e-3})  # fmt: skip
    measures = metrics[["epoch", "train_loss", "test_loss", "train_acc", "test_acc"]].assign(
        restricted_loss=np.linspace(4.5, 0.01, epochs.size), excluded_loss=np.linspace(0.01, 6.0, epochs.size),
        restricted_acc=np.linspace(0.02, 1.0, epochs.size), n_key_freqs=np.minimum(epochs // 500, 4),
        gini_W_E=np.linspace(0.05, 0.6, epochs.size), gini_W_L=np.linspace(0.05, 0.7, epochs.size),
    )  # fmt: skip
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    measures.to_csv(run_dir / "measures.csv", index=False)
    for e in epochs:
        (run_dir / "checkpoints" / f"epoch_{int(e):06d}.pt").write_bytes(b"")
    return run_dir


# --------------------------------------------------------------------------- runs with a model
def write_model_run(
    run_dir: Path,
    *,
    condition: str,
    seed: int,
    model,
    task: Mapping,
    reached_999: int | None,
    measures: pd.DataFrame,
    start_measures: Mapping[str, float | int | str] | None = None,
    source_task: str | None = None,
    experiment: str = "kinds",
    max_epochs: int = 400,
) -> Path:
    """A completed run of any task family and any registered model: status, a config with the
    task and model blocks, metrics, the given measures, a source record for a transfer start
    (with ``start_measures``) and ``checkpoints/final.pt`` holding ``model`` (weights as given:
    the analysis reads whatever the model computes)."""
    from dataclasses import asdict

    import yaml

    from groktransfer.model.checkpoint import save_checkpoint

    last = reached_999 + 50 if reached_999 is not None else max_epochs
    write_status(run_dir, condition=condition, seed=seed, task=str(task["name"]), epoch=last, max_epochs=max_epochs,
                 thresholds={t: reached_999 for t in THRESHOLDS}, experiment=experiment)  # fmt: skip
    status = json.loads((run_dir / "status.json").read_text())
    status["run_id"] = f"{experiment}-{condition}-s{seed}"
    if condition != "random":
        status["source"] = {"condition": condition, "epoch": 100}
        chosen = {"condition": condition, "epoch": 100, "requested_epoch": None, "train_acc": 1.0,
                  "test_acc": float((start_measures or {}).get("test_acc", 0.5)), "checkpoint": "/not/kept/epoch_000100.pt",
                  "measures": dict(start_measures or {})}  # fmt: skip
        (run_dir / "source.json").write_text(json.dumps({"condition": condition, "chosen": chosen}))
    (run_dir / "status.json").write_text(json.dumps(status))
    config = {
        "experiment_name": experiment, "seed": seed, "task": dict(task),
        "model": json.loads(json.dumps(asdict(model.config), default=str)),
        "optimizer": {"lr": 1e-3, "weight_decay": 1.0},
        "transfer": {"name": condition, "source": {"task": source_task or task["name"]}},
        "train": {"max_epochs": max_epochs, "eval_every": 10}, "measures": {"key_freq_threshold": 0.85},
    }  # fmt: skip
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    epochs = np.arange(0, last + 1, 10)
    grok = reached_999 if reached_999 is not None else max_epochs * 2
    test_acc = 1 / (1 + np.exp(-(epochs - grok * 0.9) / 10.0))
    pd.DataFrame({"epoch": epochs, "train_loss": 1e-3 + np.exp(-epochs / 30), "test_loss": 1 - test_acc + 1e-3,
                  "train_acc": np.minimum(1.0, 0.5 + epochs / 60), "test_acc": test_acc, "lr": 1e-3}).to_csv(
        run_dir / "metrics.csv", index=False)  # fmt: skip
    measures.to_csv(run_dir / "measures.csv", index=False)
    save_checkpoint(run_dir / "checkpoints" / "final.pt", model, epoch=last, metrics={})
    return run_dir

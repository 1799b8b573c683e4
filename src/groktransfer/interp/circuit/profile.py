"""A model's circuit, measured once: the unit every table, figure and comparison uses.

Why a profile: the sweep analysis compares every model with several others (its
source, its starting checkpoint, every run of every other condition). Measuring each
model once and comparing small summaries makes that O(models) forward passes instead
of O(pairs), which is what keeps a 15-run p=113 sweep well under a minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from groktransfer.measures.modular import compute_progress_measures
from groktransfer.model.checkpoint import LoadedCheckpoint, load_checkpoint
from groktransfer.tasks.fourier import GroupFourier
from groktransfer.tasks.modular import Task

from ..forward import run_all_inputs
from .attention import attention_asymmetry
from .fourier_logits import LogitSpectrum, logit_spectrum
from .neurons import SPECIALISED, NeuronSpectrum, neuron_spectrum
from .retention import accuracy_from_logits, evaluation_problem

DEFAULT_KEY_FREQ_THRESHOLD = 0.85


@dataclass
class CircuitProfile:
    """Everything the circuit report says about one model on one task.

    ``logits`` and ``neurons`` are None for a task without a group structure (the
    Fourier measures are absent, not zero; ``note`` says why). ``lineage`` identifies
    the MLP's initial weights (see ``discover``): neuron-by-neuron comparisons are
    made only between profiles with equal lineage and shape.
    """

    label: str
    task: str
    p: int
    accuracy: float  # all pairs
    train_acc: float
    test_acc: float
    attention: np.ndarray  # [n_layers, n_heads, n_ctx]
    d_model: int
    d_mlp: int
    group: str | None = None
    modulus: int | None = None
    key_freqs: list[int] = field(default_factory=list)
    key_freq_threshold: float = DEFAULT_KEY_FREQ_THRESHOLD
    logits: LogitSpectrum | None = None
    neurons: NeuronSpectrum | None = None
    note: str = ""
    epoch: int | None = None
    path: str | None = None
    lineage: tuple[Any, ...] | None = None

    @property
    def has_fourier(self) -> bool:
        return self.neurons is not None and self.logits is not None

    def summary(self) -> dict[str, Any]:
        """Flat scalars for tables and JSON (NaN where a measure does not exist)."""
        nan = float("nan")
        n = self.neurons
        out: dict[str, Any] = {
            "task": self.task,
            "p": self.p,
            "epoch": self.epoch,
            "accuracy_all_pairs": self.accuracy,
            "train_acc": self.train_acc,
            "test_acc": self.test_acc,
            "key_freqs": " ".join(str(w) for w in self.key_freqs) if self.has_fourier else "",
            "n_key_freqs": len(self.key_freqs) if self.has_fourier else nan,
            "dominant_freqs": " ".join(str(w) for w in self.dominant_freqs),
            "n_dominant_freqs": len(self.dominant_freqs) if self.has_fourier else nan,
            "d_mlp": self.d_mlp,
            "neurons_over_0.5": n.n_over(SPECIALISED) if n else nan,
            f"neurons_over_{self.key_freq_threshold:g}": n.n_over(self.key_freq_threshold) if n else nan,
            "neurons_dead": n.n_dead if n else nan,
            "frac_neurons_over_0.5": n.n_over(SPECIALISED) / n.d_mlp if n else nan,
            f"frac_neurons_over_{self.key_freq_threshold:g}": n.n_over(self.key_freq_threshold) / n.d_mlp if n else nan,
            "mean_neuron_frac_live": n.mean_frac_live if n else nan,
            "key_freq_logit_frac": self.key_logit_frac(),
            "logit_residual_frac": self.logits.residual_frac if self.logits else nan,
        }
        labels = ("a", "b", "=") if self.attention.shape[-1] == 3 else tuple(range(self.attention.shape[-1]))
        mean_heads = self.attention.reshape(-1, self.attention.shape[-1]).mean(axis=0)
        for name, v in zip(labels, mean_heads):
            out[f"attn_to_{name}"] = float(v)
        out["attn_ab_asymmetry"] = attention_asymmetry(self.attention)
        return out

    @property
    def dominant_freqs(self) -> list[int]:
        """Frequencies holding >= 5% of the MLP's activation variance (see ``NeuronSpectrum.dominant``)."""
        return self.neurons.dominant() if self.neurons is not None else []

    def key_logit_frac(self) -> float:
        """Share of the logit variance along the target directions of the key frequencies."""
        if self.logits is None:
            return float("nan")
        idx = [w - 1 for w in self.key_freqs]
        return float(self.logits.frac[idx].sum()) if idx else 0.0


def profile_model(
    model: Any,
    task: Task,
    label: str,
    key_freq_threshold: float = DEFAULT_KEY_FREQ_THRESHOLD,
    lineage: tuple[Any, ...] | None = None,
    epoch: int | None = None,
    path: str | None = None,
) -> CircuitProfile:
    """Measure one model offering the hook-point readings (the built-in transformer) on every pair of ``task``."""
    cfg = model.config
    problem = evaluation_problem(cfg.d_vocab, cfg.d_vocab_out, task)
    if problem:
        raise ValueError(f"{label}: {problem}")
    out = run_all_inputs(model, task.tokens)
    logits = out.logits[:, : task.d_vocab_out]  # paper-format models have an extra '=' output
    params = {k: v for k, v in model.state_dict().items()}
    pm = compute_progress_measures(task, logits, out.neuron_acts, params, key_freq_threshold, mlp_block=out.mlp_block)
    profile = CircuitProfile(
        label=label,
        task=task.name,
        p=task.p,
        accuracy=accuracy_from_logits(logits, task),
        train_acc=pm.train_acc,
        test_acc=pm.test_acc,
        attention=out.attention.numpy(),
        d_model=cfg.d_model,
        d_mlp=cfg.d_mlp,
        key_freq_threshold=float(key_freq_threshold),
        note=pm.no_structure_reason or "",
        epoch=epoch,
        path=path,
        lineage=lineage,
    )
    fm = pm.fourier
    if fm is not None:
        gf = GroupFourier.for_task(task)
        assert gf is not None
        profile.group, profile.modulus, profile.note = fm.group, fm.modulus, fm.note
        profile.key_freqs = list(fm.key_freqs)
        profile.logits = logit_spectrum(fm)
        profile.neurons = neuron_spectrum(fm, gf, out.neuron_acts)
    return profile


def profile_checkpoint(
    path: Path | str,
    task: Task,
    label: str,
    key_freq_threshold: float = DEFAULT_KEY_FREQ_THRESHOLD,
    lineage: tuple[Any, ...] | None = None,
    loaded: LoadedCheckpoint | None = None,
) -> CircuitProfile:
    """Load a checkpoint (either format) and profile it."""
    ckpt = loaded if loaded is not None else load_checkpoint(path)
    return profile_model(
        ckpt.build_model(), task, label, key_freq_threshold, lineage=lineage, epoch=ckpt.epoch, path=str(path)
    )

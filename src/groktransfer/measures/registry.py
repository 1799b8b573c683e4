"""Progress measures by task family: what a run records at every checkpoint.

Each family registers one :class:`FamilyMeasures` under its family name; the run-directory
callbacks and file starts call it without asking which family they hold. A family that
registers none records no measures, and says so in the run's status instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from groktransfer.measures.digits import compute_digit_measures
from groktransfer.measures.modular import ModelWeights, compute_progress_measures
from groktransfer.model.protocol import Reading
from groktransfer.utils.registry import Registry

#: (scalars for measures.csv, per-frequency rows for measures_freqs.csv)
Measured = tuple[dict[str, Any], list[Mapping[str, Any]]]
MeasureFn = Callable[[Any, torch.nn.Module, float], Measured]


@dataclass(frozen=True)
class FamilyMeasures:
    """A family's measures: ``measure(task, model, key_freq_threshold)``.

    ``on_file_starts``: whether a start from a checkpoint file is measured too (on the task
    ``transfer.source`` describes); when not, ``file_start_note`` says why.
    """

    measure: MeasureFn
    on_file_starts: bool = True
    file_start_note: str = ""


CHECKPOINT_MEASURES: Registry[FamilyMeasures] = Registry("measure set (by task family)")


def measure_checkpoint(task: Any, model: torch.nn.Module, key_freq_threshold: float) -> Measured | None:
    """The measures of ``task``'s family on ``model``, or None if the family registered none."""
    entry = CHECKPOINT_MEASURES.find(task.family)
    return None if entry is None else entry.measure(task, model, key_freq_threshold)


def _modular(task: Any, model: torch.nn.Module, key_freq_threshold: float) -> Measured:
    """Fourier progress measures in the task's own group, on every pair, on the model's device
    (the same numbers as the analysis computes on the CPU, to that device's rounding).

    What is measured is what the model offers (the model protocol's readings): the Fourier
    measures read its neurons, token embedding and neuron logit weights; a model without
    neurons (an attention-only transformer) gets losses, accuracies and weight norms.
    """
    device = next(model.parameters()).device
    tokens = task.tokens.to(device)
    with torch.no_grad():
        if Reading.neurons in model.readings:
            logits, neurons = model.last_position_activations(tokens)  # [N, d_vocab_out], [N, n_neurons]
        else:
            logits, neurons = model.forward_last(tokens), None  # losses, accuracies and norms only
    measures = compute_progress_measures(
        task,
        logits[:, : task.d_vocab_out],
        neurons,
        ModelWeights.from_model(model),
        key_freq_threshold=key_freq_threshold,
    )
    return measures.scalars(), measures.per_frequency_rows()


def _digit(task: Any, model: torch.nn.Module, key_freq_threshold: float) -> Measured:
    """Per-position and carry-class accuracies, weight norms, W_U's Fourier spectrum over digits."""
    digit = compute_digit_measures(task, model)
    return digit.scalars(), digit.per_frequency_rows()


CHECKPOINT_MEASURES.register("modular", FamilyMeasures(_modular))
CHECKPOINT_MEASURES.register(
    "digit", FamilyMeasures(_digit, on_file_starts=False, file_start_note="digit source task: no progress measures")
)

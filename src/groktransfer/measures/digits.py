"""Measures of digit-task models, computed at every checkpoint.

Where the modular tasks have Fourier progress measures over Z_p, a digit model is
read the way the ARENA analysis reads it:

* per answer position: loss and accuracy (which digit is learnt first?),
* exact match (every answer digit right) -- the threshold metric,
* accuracy split by carry structure: answer digits without an incoming carry, with a
  direct one, with a cascading one (999 + 1); and exact match per example class,
* sum of squared weights per component and per layer,
* how concentrated the unembedding is in the Fourier basis over the ten digits
  ("digits as phases": W_U[:, i] ~ A cos(2 pi k i / 10 + phi) for one frequency k).

All functions are pure and vectorised; ``compute_digit_measures`` ties them to a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping

import torch

from groktransfer.tasks.digits import CARRY_CLASS_NAMES, EXAMPLE_CLASS_NAMES, N_DIGIT_TASKS_FREQS, DigitTask
from groktransfer.measures.modular import ModelWeights, weight_sq_norms
from groktransfer.model.protocol import Reading

Scalar = Any


@dataclass
class DigitMeasures:
    """One checkpoint's digit measures: ``scalars`` for measures.csv, ``freq_rows`` for measures_freqs.csv."""

    values: Dict[str, Scalar] = field(default_factory=dict)
    freq_rows: List[Dict[str, Scalar]] = field(default_factory=list)

    def scalars(self) -> Dict[str, Scalar]:
        return dict(self.values)

    def per_frequency_rows(self) -> List[Dict[str, Scalar]]:
        return [dict(r) for r in self.freq_rows]


def answer_logits(model: torch.nn.Module, task: DigitTask, chunk: int = 8192) -> torch.Tensor:
    """[N, n_answer, d_vocab_out] logits at the answer positions, in chunks (float64)."""
    out = []
    with torch.no_grad():
        for start in range(0, task.n_pairs, chunk):
            out.append(model(task.tokens[start : start + chunk])[:, task.answer_positions].double())
    return torch.cat(out)


def per_position(logits: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per example and answer position: loss, correctness, probability of the right digit.

    logits [N, k, v], labels [N, k] -> each [N, k].
    """
    logprobs = logits.log_softmax(dim=-1)
    lp_correct = logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return {
        "loss": -lp_correct,
        "correct": logits.argmax(dim=-1) == labels,
        "prob": lp_correct.exp(),
    }


def class_accuracy(correct: torch.Tensor, classes: torch.Tensor, n_classes: int) -> Dict[int, tuple]:
    """{class: (accuracy, or None without examples, count)} of the entries of ``correct`` in each class (same shapes)."""
    result = {}
    for c in range(n_classes):
        sel = classes == c
        n = int(sel.sum())
        result[c] = (float(correct[sel].double().mean()) if n else None, n)
    return result


def fourier_power_over_digits(W_U: torch.Tensor, n: int = 10) -> torch.Tensor:
    """Fraction of W_U's power at each frequency 0..n//2 of the digit axis: [d_model, >=n] -> [n//2 + 1].

    Frequencies k and n - k are one real frequency (cos and sin); the fractions sum to 1.
    """
    spectrum = torch.fft.fft(W_U[:, :n].double(), dim=1).abs().pow(2).sum(dim=0)  # [n]
    power = torch.zeros(n // 2 + 1, dtype=torch.float64)
    for k in range(n):
        power[min(k, n - k)] += spectrum[k]
    total = power.sum()
    return power / total if total > 0 else power


def weight_norms(model: torch.nn.Module) -> Dict[str, float]:
    """Sums of squared weights: the modular measures' per-component columns, plus one per layer.

    ``weight_norm_{embed,pos_embed,attn,mlp,unembed,ln,other,total}`` as for every task
    (``measures.weight_sq_norms``); ``weight_norm_attn_L{i}`` for the attention of layer i
    (and ``weight_norm_mlp_L{i}`` where there is an MLP).
    """
    if Reading.transformer_lens not in getattr(model, "readings", frozenset()):  # another architecture: its own groups
        return {f"weight_norm_{k}": v for k, v in ModelWeights.from_model(model).sq_norms.items()}
    params = {k: v for k, v in model.named_parameters()}
    norms = {f"weight_norm_{k}": v for k, v in weight_sq_norms(params).items()}
    for name, param in params.items():
        parts = name.split(".")
        if parts[0] == "blocks" and parts[2] in ("attn", "mlp"):
            key = f"weight_norm_{parts[2]}_L{parts[1]}"
            norms[key] = norms.get(key, 0.0) + float(param.detach().double().square().sum())
    return norms


def compute_digit_measures(task: DigitTask, model: torch.nn.Module) -> DigitMeasures:
    """All digit measures of ``model`` on every example of ``task`` (train and test)."""
    stats = per_position(answer_logits(model, task), task.labels)
    train, test = task.train_mask, ~task.train_mask
    exact = stats["correct"].all(dim=1)
    loss = stats["loss"].mean(dim=1)
    values: Dict[str, Scalar] = {  # the modular measures' base columns, with exact match as accuracy
        "train_loss": float(loss[train].mean()),
        "test_loss": float(loss[test].mean()),
        "train_acc": float(exact[train].double().mean()),
        "test_acc": float(exact[test].double().mean()),
        "fourier_status": "absent",
        "fourier_note": task.no_structure_reason,
    }
    values["exact_match_train"] = float(exact[train].double().mean())
    values["exact_match_test"] = float(exact[test].double().mean())
    values["mean_prob_correct_test"] = float(stats["prob"][test].mean())
    for i in range(task.n_answer):
        values[f"pos{i}_loss_test"] = float(stats["loss"][test, i].mean())
        values[f"pos{i}_acc_test"] = float(stats["correct"][test, i].double().mean())
    for c, (acc, n) in class_accuracy(stats["correct"][test], task.carry_classes[test], len(CARRY_CLASS_NAMES)).items():
        values[f"acc_{CARRY_CLASS_NAMES[c]}_test"] = acc
        values[f"n_{CARRY_CLASS_NAMES[c]}_test"] = n
    for c, (acc, n) in class_accuracy(exact[test], task.example_classes[test], len(EXAMPLE_CLASS_NAMES)).items():
        values[f"exact_{EXAMPLE_CLASS_NAMES[c]}_test"] = acc
        values[f"n_examples_{EXAMPLE_CLASS_NAMES[c]}_test"] = n
    values.update(weight_norms(model))
    if Reading.unembedding not in getattr(model, "readings", frozenset()):
        return DigitMeasures(values, [])
    power = fourier_power_over_digits(model.unembedding().detach(), N_DIGIT_TASKS_FREQS)
    nonconstant = power[1:]
    top = int(nonconstant.argmax()) + 1
    values["wu_fourier_top_freq"] = top
    values["wu_fourier_top_frac"] = float(power[top] / nonconstant.sum()) if nonconstant.sum() > 0 else float("nan")
    for k, frac in enumerate(power.tolist()):
        values[f"wu_fourier_f{k}"] = frac
    rows = [{"freq": k, "wu_power_frac": frac, "is_top": int(k == top)} for k, frac in enumerate(power.tolist())]
    return DigitMeasures(values, rows)


def final_summary_keys(values: Mapping[str, Scalar]) -> List[str]:
    """The digit measures worth repeating in status.json's ``final`` record."""
    keep = ("exact_match_test", "mean_prob_correct_test", "wu_fourier_top_freq", "wu_fourier_top_frac", "weight_norm_total")
    prefixes = ("pos", "acc_", "exact_")
    return [k for k in values if k in keep or (k.startswith(prefixes) and k.endswith("_test"))]

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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from groktransfer.measures.modular import ModelWeights, weight_sq_norms
from groktransfer.model.protocol import Reading
from groktransfer.tasks.digits import CARRY_CLASS_NAMES, EXAMPLE_CLASS_NAMES, N_DIGIT_TASKS_FREQS, DigitTask

Scalar = Any


@dataclass
class DigitMeasures:
    """One checkpoint's digit measures: ``scalars`` for measures.csv, ``freq_rows`` for measures_freqs.csv."""

    values: dict[str, Scalar] = field(default_factory=dict)
    freq_rows: list[dict[str, Scalar]] = field(default_factory=list)

    def scalars(self) -> dict[str, Scalar]:
        return dict(self.values)

    def per_frequency_rows(self) -> list[dict[str, Scalar]]:
        return [dict(r) for r in self.freq_rows]


def answer_logits(model: torch.nn.Module, task: DigitTask, chunk: int = 8192) -> torch.Tensor:
    """[N, n_answer, d_vocab_out] logits at the answer positions, in chunks (float64), on the model's device."""
    device = next(model.parameters()).device
    tokens, positions = task.tokens.to(device), task.answer_positions.to(device)
    out = []
    with torch.no_grad():
        for start in range(0, task.n_pairs, chunk):
            out.append(model(tokens[start : start + chunk])[:, positions].double())
    return torch.cat(out)


def per_position(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
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


def class_counts(correct: torch.Tensor, classes: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([n_classes] entries of ``correct`` that are True, [n_classes] entries) per class, as float64
    on their device. Counts of 0/1 are exact in any order, so no entry is read on the host."""
    member = classes.reshape(-1, 1) == torch.arange(n_classes, device=classes.device)  # [M, n_classes]
    hits = (member & correct.reshape(-1, 1)).sum(dim=0)
    return hits.double(), member.sum(dim=0).double()


def class_accuracy(correct: torch.Tensor, classes: torch.Tensor, n_classes: int) -> dict[int, tuple]:
    """{class: (accuracy, or None without examples, count)} of the entries of ``correct`` in each class (same shapes)."""
    hits, counts = (t.tolist() for t in class_counts(correct, classes, n_classes))
    return {c: (hits[c] / counts[c] if counts[c] else None, int(counts[c])) for c in range(n_classes)}


def fourier_power_over_digits(W_U: torch.Tensor, n: int = 10) -> torch.Tensor:
    """Fraction of W_U's power at each frequency 0..n//2 of the digit axis: [d_model, >=n] -> [n//2 + 1].

    Frequencies k and n - k are one real frequency (cos and sin); the fractions sum to 1.
    On W_U's device, without reading anything on the host.
    """
    spectrum = torch.fft.fft(W_U[:, :n].double(), dim=1).abs().pow(2).sum(dim=0)  # [n]
    power = spectrum[: n // 2 + 1].clone()
    mirrored = n - (n // 2 + 1)  # frequencies n//2+1 .. n-1 fold onto n-k = mirrored .. 1
    power[1 : 1 + mirrored] += spectrum[n // 2 + 1 :].flip(0)
    total = power.sum()
    return torch.where(total > 0, power / total, power)


def weight_norms(model: torch.nn.Module) -> dict[str, float]:
    """Sums of squared weights: the modular measures' per-component columns, plus one per layer.

    ``weight_norm_{embed,pos_embed,attn,mlp,unembed,ln,other,total}`` as for every task
    (``measures.weight_sq_norms``); ``weight_norm_attn_L{i}`` for the attention of layer i
    (and ``weight_norm_mlp_L{i}`` where there is an MLP).
    """
    if Reading.transformer_lens not in getattr(model, "readings", frozenset()):  # another architecture: its own groups
        return {f"weight_norm_{k}": v for k, v in ModelWeights.from_model(model).sq_norms.items()}
    params = {k: v for k, v in model.named_parameters()}
    layers = [n for n in params if n.split(".")[0] == "blocks" and n.split(".")[2] in ("attn", "mlp")]
    squares = [params[n].detach().double().square().sum() for n in layers]
    norms = {f"weight_norm_{k}": v for k, v in weight_sq_norms(params).items()}
    for name, sq in zip(layers, torch.stack(squares).tolist() if squares else []):  # one read on the host
        parts = name.split(".")
        key = f"weight_norm_{parts[2]}_L{parts[1]}"
        norms[key] = norms.get(key, 0.0) + sq
    return norms


def compute_digit_measures(task: DigitTask, model: torch.nn.Module) -> DigitMeasures:
    """All digit measures of ``model`` on every example of ``task`` (train and test).

    Computed on the model's device; the numbers cross to the host once, at the end
    (and once more for the weight norms).
    """
    device = next(model.parameters()).device
    stats = per_position(answer_logits(model, task), task.labels.to(device))
    train = torch.nonzero(task.train_mask).flatten().to(device)  # rows, not a mask: no size for the host to wait for
    test = torch.nonzero(~task.train_mask).flatten().to(device)
    exact = stats["correct"].all(dim=1).double()
    loss = stats["loss"].mean(dim=1)
    right = stats["correct"].double()
    test_right, test_loss = right.index_select(0, test), stats["loss"].index_select(0, test)
    n_pos, n_carry, n_example = task.n_answer, len(CARRY_CLASS_NAMES), len(EXAMPLE_CLASS_NAMES)
    carry_hits, carry_n = class_counts(test_right.bool(), task.carry_classes.to(device).index_select(0, test), n_carry)
    example_hits, example_n = class_counts(
        exact.index_select(0, test).bool(), task.example_classes.to(device).index_select(0, test), n_example
    )
    has_unembedding = Reading.unembedding in getattr(model, "readings", frozenset())  # the model protocol's reading
    if has_unembedding:
        power = fourier_power_over_digits(model.unembedding().detach(), N_DIGIT_TASKS_FREQS)
    else:  # no W_U to read: the spectrum columns are left out below
        power = torch.zeros(N_DIGIT_TASKS_FREQS // 2 + 1, dtype=torch.float64, device=device)
    nonconstant = power[1:]
    top = nonconstant.argmax() + 1
    top_frac = torch.where(nonconstant.sum() > 0, power[top] / nonconstant.sum(), float("nan"))
    parts = [  # (name, values) in the order the columns are written
        ("train_loss", loss.index_select(0, train).mean()),
        ("test_loss", loss.index_select(0, test).mean()),
        ("train_acc", exact.index_select(0, train).mean()),
        ("test_acc", exact.index_select(0, test).mean()),
        ("mean_prob_correct_test", stats["prob"].index_select(0, test).mean()),
        ("pos_loss_test", torch.stack([test_loss[:, i].contiguous().mean() for i in range(n_pos)])),
        ("pos_acc_test", test_right.mean(dim=0)),  # [n_answer]; sums of 0/1 are exact in any order
        ("carry_hits", carry_hits),
        ("carry_n", carry_n),
        ("example_hits", example_hits),
        ("example_n", example_n),
        ("top", top.double()),
        ("top_frac", top_frac),
        ("power", power),
    ]
    flat = torch.cat([v.reshape(-1).double() for _, v in parts]).tolist()  # the one read on the host
    got, at = {}, 0
    for name, v in parts:
        got[name], at = flat[at : at + v.numel()], at + v.numel()
    values: dict[str, Scalar] = {  # the modular measures' base columns, with exact match as accuracy
        "train_loss": got["train_loss"][0],
        "test_loss": got["test_loss"][0],
        "train_acc": got["train_acc"][0],
        "test_acc": got["test_acc"][0],
        "fourier_status": "absent",
        "fourier_note": task.no_structure_reason,
    }
    values["exact_match_train"] = got["train_acc"][0]
    values["exact_match_test"] = got["test_acc"][0]
    values["mean_prob_correct_test"] = got["mean_prob_correct_test"][0]
    for i in range(n_pos):
        values[f"pos{i}_loss_test"] = got["pos_loss_test"][i]
        values[f"pos{i}_acc_test"] = got["pos_acc_test"][i]
    for c in range(n_carry):
        n = int(got["carry_n"][c])
        values[f"acc_{CARRY_CLASS_NAMES[c]}_test"] = got["carry_hits"][c] / n if n else None
        values[f"n_{CARRY_CLASS_NAMES[c]}_test"] = n
    for c in range(n_example):
        n = int(got["example_n"][c])
        values[f"exact_{EXAMPLE_CLASS_NAMES[c]}_test"] = got["example_hits"][c] / n if n else None
        values[f"n_examples_{EXAMPLE_CLASS_NAMES[c]}_test"] = n
    values.update(weight_norms(model))
    if not has_unembedding:
        return DigitMeasures(values, [])
    top_k = int(got["top"][0])
    values["wu_fourier_top_freq"] = top_k
    values["wu_fourier_top_frac"] = got["top_frac"][0]
    for k, frac in enumerate(got["power"]):
        values[f"wu_fourier_f{k}"] = frac
    rows = [{"freq": k, "wu_power_frac": frac, "is_top": int(k == top_k)} for k, frac in enumerate(got["power"])]
    return DigitMeasures(values, rows)


def final_summary_keys(values: Mapping[str, Scalar]) -> list[str]:
    """The digit measures worth repeating in status.json's ``final`` record."""
    keep = (
        "exact_match_test",
        "mean_prob_correct_test",
        "wu_fourier_top_freq",
        "wu_fourier_top_frac",
        "weight_norm_total",
    )
    prefixes = ("pos", "acc_", "exact_")
    return [k for k in values if k in keep or (k.startswith(prefixes) and k.endswith("_test"))]

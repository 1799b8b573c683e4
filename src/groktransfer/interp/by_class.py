"""Readings split by an example's class (digit tasks: the carry class of each answer digit).

Why split: a digit model can use one mechanism for a digit with no incoming carry and
another when a carry arrives; averages over all examples hide the difference. Here:

* :func:`probability_stats` -- the probability of the correct answer token: mean, median
  and minimum per answer position, and the [examples, answers] matrix behind a heatmap;
* :func:`attention_by_class` -- a layer's mean attention from each answer position over
  the examples of each class of that answer (e.g. carry vs no carry), with the total
  variation distance between the classes' patterns per head;
* :func:`loss_change_by_class` -- for ablations already run, the loss increase at each
  answer position within each class;
* :func:`carry_subsets` / :func:`ablation_within_subsets` -- the examples split by whether
  any answer digit receives a carry, and each head ablated with the mean taken *within*
  each subset (the seed analysis' measurement: on the examples without any carry, does a
  last-layer key matter at all?). Loss changes averaged within one class of a mean taken
  over every input (:func:`loss_change_by_class`) answer a different question: there the
  replacement itself carries the other class's average.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from .ablation import AblationEffect, ablate_heads
from .answers import AnswerSet, answer_set, select
from .forward import answer_logits, run_cache


def answer_classes(aset: AnswerSet) -> torch.Tensor:
    """[n, n_answers] class of every answer (an example-level class repeated per answer)."""
    assert aset.classes is not None, f"{aset.name}: no classes to split by"
    return aset.classes if aset.classes.dim() == 2 else aset.classes[:, None].expand(-1, aset.n_answers)


@torch.no_grad()
def correct_probabilities(model: Any, task: Any) -> torch.Tensor:
    """[n, n_answers] probability the model gives the correct token at each answer position."""
    aset = answer_set(task)
    probs = answer_logits(model, aset).double().softmax(dim=-1)
    return probs.gather(-1, aset.labels[..., None]).squeeze(-1)


def probability_stats(model: Any, task: Any) -> pd.DataFrame:
    """One row per answer position and one for all answers together: mean, median and
    minimum probability on the correct token; ``attrs['probs']`` is the [n, n_answers] matrix."""
    aset = answer_set(task)
    p = correct_probabilities(model, aset)
    rows = [
        dict(answer=name, mean=float(p[:, j].mean()), median=float(p[:, j].median()), min=float(p[:, j].min()))
        for j, name in enumerate(aset.answer_names)
    ]
    rows.append(dict(answer="all", mean=float(p.mean()), median=float(p.flatten().median()), min=float(p.min())))
    df = pd.DataFrame(rows)
    df.attrs["probs"] = p
    return df


def attention_by_class(model: Any, task: Any, layer: int) -> pd.DataFrame:
    """One row per (answer, class, head): the class's examples, and the mean attention from
    the answer's position to each key position (columns ``pos 0`` ...), plus ``tv`` = total
    variation distance of that mean pattern from the pattern of the first class present
    (0 = identical, 1 = disjoint). ``attrs['patterns']`` is the per-example pattern at the
    answer positions, [n, head, n_answers, seq]."""
    aset = answer_set(task)
    name = f"blocks.{layer}.attn.hook_pattern"
    _, cache = run_cache(model, aset, [name])
    pos = list(aset.positions)
    pattern = cache[name][:, :, pos].double()  # [n, head, answers, seq]
    classes = answer_classes(aset)
    rows: list[dict[str, Any]] = []
    for j, answer in enumerate(aset.answer_names):
        ref = None
        for c, cname in enumerate(aset.class_names):
            sel = classes[:, j] == c
            if not bool(sel.any()):
                continue
            mean = pattern[sel, :, j].mean(dim=0)  # [head, seq]
            ref = mean if ref is None else ref
            tv = 0.5 * (mean - ref).abs().sum(dim=-1)
            for h in range(mean.shape[0]):
                rows.append(
                    dict(
                        answer=answer,
                        cls=cname,
                        head=h,
                        n=int(sel.sum()),
                        tv=float(tv[h]),
                        **{f"pos {k}": float(mean[h, k]) for k in range(mean.shape[-1])},
                    )
                )
    df = pd.DataFrame(rows)
    df.attrs["patterns"] = pattern
    return df


def loss_change_by_class(effects: Mapping[Any, AblationEffect], task: Any) -> pd.DataFrame:
    """One row per (ablation, answer, class): examples, clean loss and the loss increase
    of the ablation within that class."""
    aset = answer_set(task)
    classes = answer_classes(aset)
    rows = []
    for eff in effects.values():
        d = eff.ablated.ce - eff.clean.ce  # [n, answers]
        for j, answer in enumerate(aset.answer_names):
            for c, cname in enumerate(aset.class_names):
                sel = classes[:, j] == c
                if bool(sel.any()):
                    rows.append(
                        dict(
                            ablation=eff.name,
                            answer=answer,
                            cls=cname,
                            n=int(sel.sum()),
                            clean_loss=float(eff.clean.ce[sel, j].mean()),
                            d_loss=float(d[sel, j].mean()),
                        )
                    )
    return pd.DataFrame(rows)


#: names of the two example-level subsets of :func:`carry_subsets`
NO_CARRY_ANYWHERE, SOME_CARRY = "no carry anywhere", "some carry"


def carry_subsets(task: Any) -> dict[str, AnswerSet]:
    """{name: the examples of that subset}: no answer digit receives a carry (class 0
    everywhere) / at least one does. Subsets without examples are left out."""
    aset = answer_set(task)
    none = (answer_classes(aset) == 0).all(dim=1)
    subsets = {NO_CARRY_ANYWHERE: none, SOME_CARRY: ~none}
    return {name: select(aset, m, name) for name, m in subsets.items() if bool(m.any())}


def ablation_within_subsets(
    model: Any, subsets: Mapping[str, AnswerSet], sites: Sequence[str] = ("q", "k", "v"), kind: str = "mean"
) -> pd.DataFrame:
    """One row per (subset, layer, head, site): the subset's examples, and the loss
    increase (mean over answer positions, as one loss over the answer digits) when that
    head's ``site`` is replaced by its ``kind`` over the subset's own examples."""
    rows = []
    for name, sub in subsets.items():
        table, _ = ablate_heads(model, sub, kind=kind, sites=list(sites))
        per = table.groupby(["layer", "head", "site"], sort=False).d_loss.mean().reset_index()
        rows += [
            dict(subset=name, n=sub.n, layer=int(r.layer), head=int(r.head), site=r.site, d_loss=float(r.d_loss))
            for r in per.itertuples()
        ]
    return pd.DataFrame(rows, columns=["subset", "n", "layer", "head", "site", "d_loss"])

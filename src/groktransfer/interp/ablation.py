"""Ablations: remove one part of the computation and see which answers break.

Every ablation is a set of TransformerLens forward hooks; the model is never edited.
Each reports, per answer position, loss and accuracy against the clean model, and which
inputs break (clean right, ablated wrong), from which :func:`failure_map` draws the
(a, b) heatmap of a pair task or the per-class table of a digit task.

Kinds: ``zero`` replaces the part by 0; ``mean`` by its mean over all inputs of the
task at the same position (the part's constant contribution stays, its information
goes). Parts: a head's output (``hook_z``), a head's query, key or value input
(``hook_q``/``hook_k``/``hook_v``), MLP neurons (``hook_post``), or any linear subspace
of any hook's activations (e.g. the top principal components of the embedding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from .answers import AnswerSet, answer_set
from .forward import Score, answer_logits, n_layers_heads, run_cache, score

KINDS = ("zero", "mean")


@dataclass(frozen=True)
class AblationEffect:
    """Clean against ablated scores of one ablation on every input of a task."""

    name: str
    clean: Score
    ablated: Score

    @property
    def broken(self) -> torch.Tensor:
        """[n, n_answers] bool: right in the clean model, wrong after the ablation."""
        return self.clean.correct & ~self.ablated.correct

    def rows(self, aset: AnswerSet, **labels: Any) -> list[dict[str, Any]]:
        """One row per answer position: loss/acc clean and ablated, their change, inputs broken."""
        out = []
        for j, answer in enumerate(aset.answer_names):
            out.append(
                dict(
                    labels,
                    ablation=self.name,
                    answer=answer,
                    clean_loss=float(self.clean.loss[j]),
                    loss=float(self.ablated.loss[j]),
                    d_loss=float(self.ablated.loss[j] - self.clean.loss[j]),
                    clean_acc=float(self.clean.acc[j]),
                    acc=float(self.ablated.acc[j]),
                    d_acc=float(self.ablated.acc[j] - self.clean.acc[j]),
                    n_broken=int(self.broken[:, j].sum()),
                )
            )
        return out


def clean_score(model: Any, task: Any) -> Score:
    aset = answer_set(task)
    return score(run_cache(model, aset, [])[0], aset.labels)


def ablate(model: Any, task: Any, fwd_hooks: Sequence, name: str, clean: Score | None = None) -> AblationEffect:
    """Run every input with ``fwd_hooks`` attached and compare with the clean model."""
    aset = answer_set(task)
    clean = clean if clean is not None else clean_score(model, aset)
    return AblationEffect(name, clean, score(answer_logits(model, aset, fwd_hooks), aset.labels))


def _replace_slice(index: Callable[[torch.Tensor], Any], kind: str, mean: torch.Tensor | None) -> Callable:
    """Hook setting ``act[index(act)]`` to 0 or to the same slice of ``mean`` (batch dim dropped)."""
    assert kind in KINDS, f"kind must be one of {KINDS}, got {kind!r}"

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act = act.clone()
        idx = index(act)
        if kind == "zero":
            act[idx] = 0.0
        else:
            assert mean is not None
            act[idx] = mean.to(act.dtype).expand_as(act)[idx]
        return act

    return hook


def _means(model: Any, aset: AnswerSet, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Mean of each hook's activation over all inputs, keeping the batch dim as 1."""
    _, cache = run_cache(model, aset, names)
    return {k: v.mean(dim=0, keepdim=True) for k, v in cache.items()}


def head_hook(layer: int, head: int, kind: str = "mean", mean_z: torch.Tensor | None = None, site: str = "z") -> tuple:
    """``(hook name, fn)`` ablating one head's ``hook_{site}`` (site z, q, k or v; [b, pos, head, d_head])."""
    assert site in ("z", "q", "k", "v"), site
    return (
        f"blocks.{layer}.attn.hook_{site}",
        _replace_slice(lambda a: (slice(None), slice(None), head), kind, mean_z),
    )


def ablate_heads(model: Any, task: Any, kind: str = "mean", sites: Sequence[str] = ("z",)) -> tuple:
    """Ablate every head alone, at each of ``sites`` (``z`` = its output; ``q``/``k``/``v`` =
    its query/key/value input). Returns (table, {(layer, head, site): AblationEffect}).

    The table has one row per (layer, head, site, answer position)."""
    aset = answer_set(task)
    n_layers, n_heads = n_layers_heads(model)
    clean = clean_score(model, aset)
    names = [f"blocks.{layer}.attn.hook_{s}" for layer in range(n_layers) for s in sites]
    means = _means(model, aset, names) if kind == "mean" else {}
    rows, effects = [], {}
    for layer in range(n_layers):
        for head in range(n_heads):
            for site in sites:
                name = f"blocks.{layer}.attn.hook_{site}"
                hook = head_hook(layer, head, kind, means.get(name), site)
                eff = ablate(model, aset, [hook], f"L{layer}H{head} {site} {kind}", clean)
                effects[(layer, head, site)] = eff
                rows += eff.rows(aset, layer=layer, head=head, site=site, kind=kind)
    return pd.DataFrame(rows), effects


def ablate_neurons(
    model: Any,
    task: Any,
    layer: int,
    neurons: Sequence[int],
    kind: str = "mean",
    name: str | None = None,
    clean: Score | None = None,
) -> AblationEffect:
    """Ablate MLP neurons ``neurons`` of block ``layer`` together (``hook_post``, every position)."""
    aset = answer_set(task)
    hook_name = f"blocks.{layer}.mlp.hook_post"
    mean = _means(model, aset, [hook_name])[hook_name] if kind == "mean" else None
    idx = torch.as_tensor(list(neurons), dtype=torch.long)
    hook = (hook_name, _replace_slice(lambda a: (Ellipsis, idx), kind, mean))
    return ablate(model, aset, [hook], name or f"L{layer} {len(idx)} neuron(s) {kind}", clean)


def ablate_each_neuron(model: Any, task: Any, layer: int, neurons: Sequence[int], kind: str = "mean") -> pd.DataFrame:
    """One row per (neuron, answer position): each neuron ablated alone."""
    aset = answer_set(task)
    clean = clean_score(model, aset)
    rows: list[dict[str, Any]] = []
    for i in neurons:
        rows += ablate_neurons(model, aset, layer, [int(i)], kind, f"L{layer}N{int(i)} {kind}", clean).rows(
            aset, layer=layer, neuron=int(i), kind=kind
        )
    return pd.DataFrame(rows)


def orthonormal(directions: torch.Tensor) -> torch.Tensor:
    """[k, d] directions -> [k', d] orthonormal rows spanning them (k' = rank)."""
    q, r = torch.linalg.qr(directions.double().T)
    keep = r.diagonal().abs() > 1e-10 * r.diagonal().abs().max().clamp_min(1e-300)
    return q[:, keep].T


def subspace_hook(
    hook_name: str,
    directions: torch.Tensor,
    kind: str = "mean",
    mean: torch.Tensor | None = None,
    positions: Sequence[int] | None = None,
) -> tuple:
    """``(hook name, fn)`` removing the span of ``directions`` [k, d] from the last dim of
    the activation (at ``positions`` of dim 1, or everywhere). ``mean``: the component is
    replaced by that of ``mean`` (same shape as one batch row) instead of by 0."""
    assert kind in KINDS, kind
    Q = orthonormal(directions)

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        q = Q.to(act.dtype)
        ref = torch.zeros_like(act) if kind == "zero" else mean.to(act.dtype).expand_as(act)  # type: ignore[union-attr]
        new = act - ((act - ref) @ q.T) @ q
        if positions is None:
            return new
        out = act.clone()
        pos = list(positions)
        out[:, pos] = new[:, pos]
        return out

    return hook_name, hook


def ablate_subspace(
    model: Any,
    task: Any,
    hook_name: str,
    directions: torch.Tensor,
    kind: str = "mean",
    positions: Sequence[int] | None = None,
    name: str | None = None,
    clean: Score | None = None,
) -> AblationEffect:
    """Ablate a linear subspace (rows of ``directions`` [k, d]) of ``hook_name``'s activations."""
    aset = answer_set(task)
    mean = _means(model, aset, [hook_name])[hook_name] if kind == "mean" else None
    hook = subspace_hook(hook_name, directions, kind, mean, positions)
    label = name or f"{hook_name} {directions.shape[0]}-dim subspace {kind}"
    return ablate(model, aset, [hook], label, clean)


def failure_map(effect: AblationEffect, task: Any) -> Any:
    """Which inputs break. Pair tasks: [p, p] float grid, 1 = broken by the ablation, 0 =
    still right or already wrong, NaN = pair not in the task. Tasks with classes (carry
    classes of digit tasks): a table of accuracy per class and answer position."""
    aset = answer_set(task)
    if aset.has_grid:
        return aset.to_grid(effect.broken.any(dim=1).double())
    assert aset.classes is not None, f"{aset.name}: neither an (a, b) grid nor classes to break failures down by"
    classes = aset.classes if aset.classes.dim() == 2 else aset.classes[:, None].expand(-1, aset.n_answers)
    rows = []
    for j, answer in enumerate(aset.answer_names):
        for c, cname in enumerate(aset.class_names):
            sel = classes[:, j] == c
            if not bool(sel.any()):
                continue
            rows.append(
                dict(
                    answer=answer,
                    cls=cname,
                    n=int(sel.sum()),
                    clean_acc=float(effect.clean.correct[sel, j].double().mean()),
                    acc=float(effect.ablated.correct[sel, j].double().mean()),
                    n_broken=int(effect.broken[sel, j].sum()),
                )
            )
    return pd.DataFrame(rows)

"""Run the configured analyses on one (model, task) and collect tables and headline numbers.

One place decides what "the interpretability summary of a model" is, so the
single-checkpoint command and the sweep report show the same numbers:
:func:`interpret` returns an :class:`Interpretation` (tables as DataFrames, a few
scalars, and the arrays the figures need); ``groktransfer.interp.plots`` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import pandas as pd
import torch

from . import ablation, attribution, representations
from .families import ReadingContext, family_key, run_readings
from .answers import AnswerSet, answer_set, subsample
from .forward import has_mlp, n_layers_heads, reuse_activations, run_cache
from .settings import InterpSettings


@dataclass
class Interpretation:
    """Everything :func:`interpret` measured. ``tables`` by name; ``scalars`` flat numbers
    (for the sweep's per-seed aggregation); ``arrays`` for figures."""

    task: str
    family: Optional[str] = None  # families.family_key: which hand-made readings and findings apply
    tables: Dict[str, pd.DataFrame] = field(default_factory=dict)
    scalars: Dict[str, float] = field(default_factory=dict)
    arrays: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def _record_failure(res: Interpretation, key: str, name: str, fmap: Any) -> None:
    """A failure map: (a, b) grids go to the figures; per-class tables (digit tasks: carry
    class x answer digit) to the tables and, as accuracies, to the scalars."""
    res.arrays[f"{key}_failure"] = (name, fmap)
    if isinstance(fmap, pd.DataFrame):
        res.tables[f"failures_{key}"] = fmap.assign(ablation=name)
        for r in fmap.itertuples():
            res.scalars[f"{key}_ablated_acc[{r.cls}/{r.answer}]"] = r.acc
            res.scalars[f"clean_class_acc[{r.cls}/{r.answer}]"] = r.clean_acc


def _prefetch(model: Any, task: AnswerSet, s: Any) -> None:
    """One clean pass caching every activation the switched-on analyses read."""
    n_layers, _ = n_layers_heads(model)
    want = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale"]
    for l in range(n_layers):
        want += [f"blocks.{l}.attn.hook_{x}" for x in ["z", *map(str, s.head_sites), "pattern"]]
        want.append(f"blocks.{l}.mlp.hook_post")
    if s.probes:
        want += _expand_hooks(list(s.probe_hooks), model)
    run_cache(model, task, [n for n in dict.fromkeys(want) if n in model.hook_dict])


def _expand_hooks(patterns: List[str], model: Any) -> List[str]:
    n_layers, _ = n_layers_heads(model)
    out: List[str] = []
    for pat in patterns:
        names = [pat.replace("{L}", str(l)) for l in range(n_layers)] if "{L}" in pat else [pat]
        out += [n for n in names if n in model.hook_dict and n not in out]
    return out


@torch.no_grad()
def interpret(model: Any, task: Any, settings: Any = None) -> Interpretation:
    """Run the analyses ``settings`` (``analysis.interp``, an ``InterpSettings``) switch on."""
    if settings is None:
        settings = InterpSettings()
    s = settings
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(s.threads)))  # small matmuls: extra threads only contend
    try:
        with reuse_activations():
            aset = answer_set(task)
            if not aset.has_grid and s.max_inputs:
                aset = subsample(aset, int(s.max_inputs))
            if s.process_weights:  # readings of W_U, W_E and the circuits mean most on processed weights
                from .processing import process_weights

                model = process_weights(model)
            _prefetch(model, aset, s)
            return _interpret(model, task, aset, s)
    finally:
        torch.set_num_threads(before)


def _interpret(model: Any, task: Any, aset: AnswerSet, s: Any) -> Interpretation:
    model.eval()
    res = Interpretation(task=aset.name, family=family_key(getattr(task, "name", aset.name)))
    n_layers, n_heads = n_layers_heads(model)
    clean = ablation.clean_score(model, aset)
    for j, name in enumerate(aset.answer_names):
        res.scalars[f"clean_acc[{name}]"] = float(clean.acc[j])
        res.scalars[f"clean_loss[{name}]"] = float(clean.loss[j])

    worst: Optional[ablation.AblationEffect] = None
    all_effects: dict = {}
    sites = [str(x) for x in s.head_sites]
    for kind in map(str, s.head_ablation):
        table, effects = ablation.ablate_heads(model, aset, kind=kind, sites=sites)
        if kind == "mean":  # the per-carry-class loss changes read the mean ablations, as the seed analysis did
            all_effects.update(effects)
        res.tables[f"head_ablation_{kind}"] = table
        for r in table.itertuples():
            res.scalars[f"head_{kind}_{r.site}_L{r.layer}H{r.head}_d_loss[{r.answer}]"] = r.d_loss
            res.scalars[f"head_{kind}_{r.site}_L{r.layer}H{r.head}_acc[{r.answer}]"] = r.acc
        z = table[table.site == "z"] if "z" in set(table.site) else table
        top = z.sort_values("d_loss", ascending=False).iloc[0]
        eff = effects[(int(top.layer), int(top["head"]), str(top.site))]
        if worst is None or float(eff.ablated.loss.mean()) > float(worst.ablated.loss.mean()):
            worst = eff
    if worst is not None and (aset.has_grid or aset.classes is not None):
        _record_failure(res, "worst_head", worst.name, ablation.failure_map(worst, aset))

    clusters = None
    if s.neurons and aset.has_grid and has_mlp(model, n_layers - 1):
        try:
            clusters = representations.neuron_clusters(model, task, layer=n_layers - 1, threshold=s.key_freq_threshold)
        except AssertionError as exc:  # an incomplete (a, b) grid (divide)
            res.notes.append(f"neuron clusters by frequency skipped: {exc}")

    if s.dla:
        groups = None
        if clusters is not None:
            groups = {n_layers - 1: {f"L{n_layers - 1} {k}": v for k, v in clusters.groups().items()}}
        attr = attribution.direct_logit_attribution(model, aset, neuron_groups=groups)
        table = attr.table()
        res.tables["dla"] = table
        res.scalars["dla_completeness_error"] = attr.completeness_error()
        for r in table.itertuples():
            res.scalars[f"dla_{r.part}[{r.answer}]"] = r.mean
        heads = [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]
        top_parts = table[table.part != "bias"].assign(a=lambda d: d["mean"].abs()).sort_values("a", ascending=False)
        parts = list(dict.fromkeys(heads + list(top_parts.part[:8])))
        res.tables["dla_fourier"] = attribution.fourier_attribution(attr, aset.out_modulus, parts)

    if s.embedding:
        pca = representations.embedding_pca(model, aset)
        res.arrays["embedding_pca"] = pca
        res.tables["embedding_pca"] = pd.DataFrame({"pc": range(1, len(pca.explained) + 1), "explained": pca.explained.numpy()})
        for k in range(min(3, len(pca.explained))):
            res.scalars[f"embed_pc{k + 1}_explained"] = float(pca.explained[k])
        fn = representations.embedding_fourier_norms(model, task)
        res.tables["embedding_fourier"] = fn
        res.scalars["embed_fourier_gini"] = float(fn.attrs["gini"])
        res.scalars["embed_top_freq"] = float(fn.norm.iloc[1:].idxmax()) if len(fn) > 1 else float("nan")
        rows = []
        for k in s.pc_ablation:
            if k > len(pca.explained):
                continue
            eff = ablation.ablate_subspace(model, aset, "hook_embed", pca.components[k - 1 : k].float(), kind="mean",
                                           positions=list(aset.operand_positions), name=f"embedding PC{k}", clean=clean)  # fmt: skip
            rows += eff.rows(aset, pc=k)
            res.scalars[f"embed_pc{k}_ablated_acc"] = float(eff.ablated.acc.mean())
            if aset.has_grid or aset.classes is not None:
                _record_failure(res, f"pc{k}", eff.name, ablation.failure_map(eff, aset))
        if rows:
            res.tables["pc_ablation"] = pd.DataFrame(rows)

    if s.spectra:
        spec = representations.singular_spectra(model)
        res.tables["spectra"] = spec
        er = spec.groupby("weight")[["effective_rank", "control_effective_rank"]].first().reset_index()
        res.tables["spectra_summary"] = er
        for r in er.itertuples():
            res.scalars[f"eff_rank_ratio[{r.weight}]"] = r.effective_rank / r.control_effective_rank

    if s.probes and aset.targets:
        hooks = _expand_hooks(list(s.probe_hooks), model)
        probes = representations.probe_hooks(model, aset, hooks)
        res.tables["probes"] = probes
        for r in probes.itertuples():
            res.scalars[f"probe[{r.hook}@{r.position}->{r.target}]"] = r.score

    if s.neurons and has_mlp(model, n_layers - 1):
        layer = n_layers - 1
        if clusters is not None:
            cl = clusters
            rows = []
            for name, idx in cl.groups().items():  # each frequency's neurons ablated together
                eff = ablation.ablate_neurons(model, aset, layer, idx, "mean", f"{name} neurons", clean)
                rows += eff.rows(aset, group=name, n_neurons=len(idx))
                res.scalars[f"cluster_ablated_acc[{name}]"] = float(eff.ablated.acc.mean())
            if rows:
                res.tables["cluster_ablation"] = pd.DataFrame(rows)
            res.arrays["clusters"] = cl
            res.tables["neuron_clusters"] = pd.DataFrame({"freq": range(1, len(cl.counts) + 1), "neurons": cl.counts.numpy()})
            res.scalars["n_key_freqs"] = float(len(cl.key_freqs))
            res.scalars["frac_neurons_clustered"] = float(cl.counted.double().mean())
            res.arrays["key_freqs"] = list(cl.key_freqs)
        target = next((t for t in ("a+b", "answer") if t in aset.targets), None)
        if target is not None:
            top = representations.top_neuron_maps(model, aset, target, layer, s.top_neurons)
            res.tables["top_neurons"] = top.assign(target=target)
            res.arrays["top_neuron_maps"] = (target, top)
            res.scalars[f"max_abs_neuron_corr[{target}]"] = float(top.r.abs().max())

    if s.attention:
        res.arrays["attention"] = representations.attention_patterns(model, aset)
    if s.readings:
        run_readings(ReadingContext(model, task, aset, s, res, clean, all_effects))
    return res

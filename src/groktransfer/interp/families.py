"""Which hand-made readings each task family has: the one place that says it.

The generic analyses in ``summary.interpret`` (ablations, DLA, embeddings, probes, neurons)
run on every task. Some readings only mean something for one family: the QK/OV circuits,
the W_U circle and the carry splits of the digit-sum model (ARENA's), the PC fits and the
sum neurons of a model adding integers. :data:`FAMILY_READINGS` maps a family key
(:func:`family_key`) to its :class:`Reading` s; ``interpret`` runs them after the generic
analyses, ``writeup`` shows them, and ``findings`` compares their numbers with the claims
the seed notebooks make about their own models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import pandas as pd
import torch

from . import by_class, circuits_qkov, neurons_int, unembed_geometry
from .ablation import AblationEffect, failure_map
from .answers import AnswerSet
from .forward import Score, has_mlp, n_layers_heads


def family_key(task_name: str) -> str:
    """The task's family for families whose readings do not depend on the task (``digit``),
    else the task's own name (``int_add``, ``add``, ...): readings of the modular family are per task."""
    from groktransfer.tasks.registry import TASKS

    family = TASKS.find(str(task_name))
    return family.name if family is not None and family.name != "modular" else str(task_name)


@dataclass
class ReadingContext:
    """What a reading may use: the (processed) model, the task and its answer view, the
    settings, the clean score, the head ablations already run, and the result to fill."""

    model: Any
    task: Any
    aset: AnswerSet
    settings: Any
    res: Any  # summary.Interpretation
    clean: Score
    effects: Mapping[Tuple[int, int, str], AblationEffect]


@dataclass(frozen=True)
class Reading:
    """One reading: ``run`` fills ``ctx.res`` (tables, scalars, arrays); ``markdown`` shows
    what it found (empty when it did not run)."""

    name: str
    run: Callable[[ReadingContext], None]
    markdown: Callable[[Any], List[str]]


def _md(df: pd.DataFrame, fmt: str = ".4g") -> str:
    from .writeup import md_table

    return md_table(df, fmt)


# --------------------------------------------------------------------------- digit family
def _qk(ctx: ReadingContext) -> None:
    qk = circuits_qkov.mean_query_qk(ctx.model, ctx.aset, layer=0)
    ctx.res.arrays["qk_mean_query"] = qk
    cd = circuits_qkov.corresponding_digit_share(qk, ctx.aset)
    ctx.res.tables["qk_corresponding_digits"] = cd
    for r in cd.itertuples():
        ctx.res.scalars[f"qk_cd_share[L0H{r.head}/{r.answer}]"] = r.share


def _qk_md(res: Any) -> List[str]:
    t = res.tables.get("qk_corresponding_digits")
    if t is None:
        return []
    wide = t.pivot_table(index="head", columns="answer", values="share", sort=False).reset_index()
    wide["head"] = [f"L0H{h}" for h in wide["head"]]
    return ["### Layer-0 QK circuit with mean queries", "",
            "Attention from each answer position with every query and key replaced by its mean over the inputs "
            "(`interp_qk_mean_query.png` shows the full position × position matrix per head). Share on the two "
            "operand digits of the same place value (the 'corresponding digits'):", "", _md(wide, ".3f"), ""]  # fmt: skip


def _attention_only_multilayer(model: Any) -> bool:
    n_layers, _ = n_layers_heads(model)
    return n_layers >= 2 and not any(has_mlp(model, l) for l in range(n_layers))


def _ov(ctx: ReadingContext) -> None:
    if not _attention_only_multilayer(ctx.model):
        return
    single = circuits_qkov.ov_circuit_table(ctx.model, ctx.aset)
    ctx.res.tables["ov_circuits"] = single
    for r in single.itertuples():
        ctx.res.scalars[f"ov_freq1_share[{r.head}]"] = r.freq1_share
    t = circuits_qkov.ov_composition_table(ctx.model, ctx.aset)
    ctx.res.tables["ov_composition"] = t
    for r in t.itertuples():
        ctx.res.scalars[f"ov_freq1_share[{r.path}]"] = r.freq1_share


def _ov_md(res: Any) -> List[str]:
    t = res.tables.get("ov_composition")
    if t is None:
        return []
    out = ["### OV circuits and their composition", ""]
    single = res.tables.get("ov_circuits")
    if single is not None:
        out += ["Each head's own `W_E · OV · W_U` over the digits (processed weights, LayerNorm scales left out): size "
                "and share of its power at frequency 1 of the output digits.", "", _md(single, ".3g"), ""]  # fmt: skip
    return out + ["`W_E · OV(layer-0 head) · OV(last-layer head) · W_U`, the same measures:", "", _md(t, ".3g"), ""]


def _paths(ctx: ReadingContext) -> None:
    if not _attention_only_multilayer(ctx.model):
        return
    attr = circuits_qkov.path_attribution(ctx.model, ctx.aset)
    t = attr.table()
    ctx.res.tables["path_dla"] = t
    ctx.res.scalars["path_completeness_error"] = attr.completeness_error()
    two_step = t.part.str.match(r"^L\d+H\d+ → ")
    for answer, d in t.groupby("answer", sort=False):
        ctx.res.scalars[f"path_share_heads_to_last[{answer}]"] = float(d[two_step.loc[d.index]].share.sum())
        top = d[d.part != "bias"].assign(a=d["mean"].abs()).sort_values("a", ascending=False).iloc[0]
        ctx.res.scalars[f"path_top_share[{answer}]"] = float(top.share)
    for r in t.itertuples():
        ctx.res.scalars[f"path_share[{r.part}/{r.answer}]"] = r.share


def _paths_md(res: Any) -> List[str]:
    t = res.tables.get("path_dla")
    if t is None:
        return []
    top = t[t.part != "bias"].assign(a=t["mean"].abs()).sort_values(["answer", "a"], ascending=[True, False])
    top = top.groupby("answer", sort=False).head(5).drop(columns="a")
    return ["### Path attribution (direct, and through one last-layer head)", "",
            f"Share of the correct digit's centred logit carried by each path (`A → L1Hy`: part A moved by head y of "
            f"the last layer); the paths reproduce the logit to {res.scalars['path_completeness_error']:.2g}. The five "
            "largest per answer digit (all: `interp_path_dla.csv`):", "", _md(top, ".3g"), ""]  # fmt: skip


def _unembed(ctx: ReadingContext) -> None:
    g = unembed_geometry.unembed_geometry(ctx.model, ctx.aset)
    ctx.res.arrays["unembed_geometry"] = g
    ctx.res.tables["unembed_dims"] = g.dims_table()
    ctx.res.tables["unembed_coords"] = pd.DataFrame({"token": range(g.coords.shape[0]), "x": g.coords[:, 0].numpy(),
                                                     "y": g.coords[:, 1].numpy()})  # fmt: skip
    ctx.res.tables["unembed_freqs"] = pd.DataFrame({"freq": range(len(g.freq_share)), "share": g.freq_share.numpy()})
    ctx.res.tables["unembed_gram"] = g.gram_table()
    ctx.res.tables["unembed_fourier"] = g.fourier_table()
    rebuilt = unembed_geometry.rebuilt_unembed_score(ctx.model, ctx.aset, g.rebuilt_freq)
    s = ctx.res.scalars
    s.update({"wu_top_freq": float(g.top_freq), "wu_top_freq_share": float(g.freq_share[g.top_freq]),
              "wu_dims_for_90": float(g.dims_for_90), "wu_top2_share": g.top2_share, "wu_radius_cv": g.radius_cv,
              "wu_circle_freq": g.circle_freq, "wu_angle_step_spread": g.angle_step_spread,
              "wu_rebuilt_error": g.rebuilt_error, "wu_rebuilt_acc": float(rebuilt.acc.mean()),
              "wu_clean_acc": float(ctx.clean.acc.mean())})  # fmt: skip


def _unembed_md(res: Any) -> List[str]:
    if "unembed_dims" not in res.tables:
        return []
    s = res.scalars
    f = int(s["wu_top_freq"])
    return ["### Unembedding geometry (answer columns of W_U)", "",
            f"Strongest frequency over the answer tokens: {f} ({s['wu_top_freq_share']:.1%} of the power); "
            f"{int(s['wu_dims_for_90'])} residual dimensions hold 90% of it; the top two singular values hold "
            f"{s['wu_top2_share']:.1%}. In their plane the tokens sit at radii with CV {s['wu_radius_cv']:.3f}, one step "
            f"{s['wu_circle_freq']:.2f} × 2π/m apart (largest deviation {s['wu_angle_step_spread']:.2f} rad). W_U rebuilt "
            f"from frequency 1 alone: relative error {s['wu_rebuilt_error']:.3f}, accuracy {s['wu_rebuilt_acc']:.4f} "
            f"(clean {s['wu_clean_acc']:.4f}). Largest dimensions (amplitude and phase at frequency {f}; every "
            "dimension at every frequency: `interp_unembed_fourier.csv`; W_UᵀW_U: `interp_unembed_gram.csv` and the "
            "figure `interp_unembed.png`):", "",
            _md(res.tables["unembed_dims"], ".3g"), ""]  # fmt: skip


def _attention_classes(ctx: ReadingContext) -> None:
    if ctx.aset.classes is None:
        return
    n_layers, _ = n_layers_heads(ctx.model)
    layer = n_layers - 1
    t = by_class.attention_by_class(ctx.model, ctx.aset, layer)
    ctx.res.tables["attention_by_class"] = t.assign(layer=layer)
    ctx.res.arrays["attention_per_example"] = t.attrs["patterns"]  # [n, head, answers, seq]
    ctx.res.arrays["answer_classes"] = by_class._classes(ctx.aset)  # [n, answers]
    ctx.res.arrays["class_names"] = list(ctx.aset.class_names)
    for r in t[t.tv > 0].itertuples():
        ctx.res.scalars[f"attn_class_tv[L{layer}H{r.head}/{r.answer}/{r.cls}]"] = r.tv


def _attention_classes_md(res: Any) -> List[str]:
    t = res.tables.get("attention_by_class")
    if t is None:
        return []
    tv = t[t.tv > 0][["layer", "head", "answer", "cls", "n", "tv"]]
    return ["### Last-layer attention by carry class", "",
            "Total variation distance between the mean attention pattern of examples whose answer digit receives a "
            "carry and of those without (0 = the same pattern); the patterns: `interp_attention_by_class.csv`; per "
            "example, for the answer digit whose classes differ most: `interp_attention_by_class.png`.", "",
            _md(tv, ".3f"), ""]  # fmt: skip


def _probabilities(ctx: ReadingContext) -> None:
    t = by_class.probability_stats(ctx.model, ctx.aset)
    ctx.res.tables["prob_correct"] = t
    ctx.res.arrays["prob_correct"] = t.attrs["probs"]
    for r in t.itertuples():
        for stat in ("mean", "median", "min"):
            ctx.res.scalars[f"prob_correct_{stat}[{r.answer}]"] = getattr(r, stat)


def _probabilities_md(res: Any) -> List[str]:
    t = res.tables.get("prob_correct")
    if t is None:
        return []
    return ["### Probability on the correct token", "", _md(t, ".4f"),
            "", "(per-example heatmap: `interp_prob_correct.png`)", ""]  # fmt: skip


def _ablation_classes(ctx: ReadingContext) -> None:
    if ctx.aset.classes is None or not ctx.effects:
        return
    t = by_class.loss_change_by_class(ctx.effects, ctx.aset)
    ctx.res.tables["ablation_by_class"] = t
    for r in t.itertuples():
        ctx.res.scalars[f"class_d_loss[{r.ablation}/{r.answer}/{r.cls}]"] = r.d_loss


def _ablation_classes_md(res: Any) -> List[str]:
    t = res.tables.get("ablation_by_class")
    if t is None:
        return []
    wide = t.pivot_table(index="ablation", columns="cls", values="d_loss", aggfunc="mean", sort=False).reset_index()
    return ["### Loss change of each ablation per carry class", "",
            "Mean loss increase over the answer digits of each carry class (per digit: `interp_ablation_by_class.csv`):",
            "", _md(wide, ".3g"), ""]  # fmt: skip


def _carry_subsets(ctx: ReadingContext) -> None:
    if ctx.aset.classes is None or not ctx.settings.head_ablation:
        return
    subsets = by_class.carry_subsets(ctx.aset)
    sites = [x for x in map(str, ctx.settings.head_sites) if x in ("q", "k", "v")] or ["k"]
    t = by_class.ablation_within_subsets(ctx.model, subsets, sites=sites)
    ctx.res.tables["ablation_by_carry_subset"] = t
    for r in t.itertuples():
        ctx.res.scalars[f"subset_d_loss[L{r.layer}H{r.head} {r.site}/{r.subset}]"] = r.d_loss
    for name, sub in subsets.items():
        ctx.res.scalars[f"subset_n[{name}]"] = float(sub.n)


def _carry_subsets_md(res: Any) -> List[str]:
    t = res.tables.get("ablation_by_carry_subset")
    if t is None:
        return []
    t = t.assign(ablation=[f"L{l}H{h} {s}" for l, h, s in zip(t.layer, t["head"], t.site)])
    wide = t.pivot_table(index="ablation", columns="subset", values="d_loss", sort=False).reset_index()
    counts = ", ".join(f"{k}: {int(v)}" for k, v in t.groupby("subset", sort=False).n.first().items())
    return ["### Ablations within carry subsets", "",
            f"The examples split by whether any answer digit receives a carry ({counts} examples); each head's query / "
            "key / value mean-ablated with the mean over the subset's own examples; loss increase averaged over the "
            "answer digits:", "", _md(wide, ".3g"), ""]  # fmt: skip


# --------------------------------------------------------------------------- int_add
def _pc_fits(ctx: ReadingContext) -> None:
    t = neurons_int.pc_token_fits(ctx.model, ctx.aset)
    ctx.res.tables["pc_token_fits"] = t
    for r in t.itertuples():
        ctx.res.scalars[f"pc{r.pc}_linear_r2"] = r.linear_r2
        ctx.res.scalars[f"pc{r.pc}_quadratic_r2"] = r.quadratic_r2


def _pc_fits_md(res: Any) -> List[str]:
    t = res.tables.get("pc_token_fits")
    if t is None:
        return []
    return ["### Embedding PCs against the token", "", "R² of a linear and of a quadratic fit of each PC score "
            "against the token, with the fits' coefficients (figure: `interp_pc_token_fits.png`):", "", _md(t, ".3g"), ""]  # fmt: skip


def _sum_neurons(ctx: ReadingContext) -> None:
    n_layers, _ = n_layers_heads(ctx.model)
    layer = n_layers - 1
    if not has_mlp(ctx.model, layer) or "a+b" not in ctx.aset.targets:
        return
    t = neurons_int.sum_neurons(ctx.model, ctx.aset, layer)
    s = ctx.res.scalars
    s.update({"n_sum_neurons_post": float(t.attrs["n_post"]), "n_sum_neurons_pre": float(t.attrs["n_pre"]),
              "d_mlp": float(t.attrs["d_mlp"])})  # fmt: skip
    top = t.sort_values("r_post", ascending=False).neuron.head(int(ctx.settings.top_neurons)).tolist()
    reg = neurons_int.neuron_pc_regression(ctx.model, ctx.aset, top, layer)
    ctx.res.tables["sum_neurons"] = t
    ctx.res.tables["neuron_pc_regression"] = reg.merge(t[["neuron", "r_pre", "r_post"]], on="neuron")
    ctx.res.arrays["pre_activation_maps"] = (top, neurons_int.pre_activation_maps(ctx.model, ctx.aset, top, layer))
    s["pc_regression_r2_median"] = float(reg.r2.median())
    s["pc_regression_r2_top"] = float(reg.r2.iloc[0])


def _sum_neurons_md(res: Any) -> List[str]:
    if "sum_neurons" not in res.tables:
        return []
    s = res.scalars
    return ["### Sum neurons", "",
            f"{int(s['n_sum_neurons_post'])} of {int(s['d_mlp'])} neurons correlate with a+b above 0.9 after the ReLU "
            f"({int(s['n_sum_neurons_pre'])} before it). Pre-activation of the most correlated ones regressed on PC1 and "
            "PC2 of a and of b (maps of their pre-activations: `interp_pre_activation_maps.png`):", "",
            _md(res.tables["neuron_pc_regression"], ".3g"), ""]  # fmt: skip


def _only_pc(ctx: ReadingContext) -> None:
    rows = []
    for k in ctx.settings.pc_ablation:
        eff = neurons_int.keep_only_pc(ctx.model, ctx.aset, int(k), clean=ctx.clean)
        rows += eff.rows(ctx.aset, pc=int(k))
        ctx.res.scalars[f"embed_only_pc{k}_acc"] = float(eff.ablated.acc.mean())
        if ctx.aset.has_grid:
            ctx.res.arrays[f"only_pc{k}_failure"] = (eff.name, failure_map(eff, ctx.aset))
    if rows:
        ctx.res.tables["only_pc"] = pd.DataFrame(rows)


def _only_pc_md(res: Any) -> List[str]:
    t = res.tables.get("only_pc")
    if t is None:
        return []
    return ["Keeping only one embedding PC (operand embeddings = their mean + that PC's component):", "",
            _md(t[["pc", "answer", "acc", "d_acc", "d_loss", "n_broken"]]), ""]  # fmt: skip


FAMILY_READINGS: Dict[str, Tuple[Reading, ...]] = {
    "digit": (
        Reading("probabilities", _probabilities, _probabilities_md),
        Reading("qk_mean_query", _qk, _qk_md),
        Reading("ov_composition", _ov, _ov_md),
        Reading("path_dla", _paths, _paths_md),
        Reading("unembed_geometry", _unembed, _unembed_md),
        Reading("attention_by_class", _attention_classes, _attention_classes_md),
        Reading("ablation_by_class", _ablation_classes, _ablation_classes_md),
        Reading("ablation_by_carry_subset", _carry_subsets, _carry_subsets_md),
    ),
    "int_add": (
        Reading("pc_token_fits", _pc_fits, _pc_fits_md),
        Reading("sum_neurons", _sum_neurons, _sum_neurons_md),
        Reading("only_pc", _only_pc, _only_pc_md),
    ),
}


def readings_for(family: Optional[str]) -> Tuple[Reading, ...]:
    return FAMILY_READINGS.get(str(family), ())


def run_readings(ctx: ReadingContext) -> None:
    """Run the family's readings; one that does not apply to this model leaves a note."""
    for reading in readings_for(ctx.res.family):
        try:
            with torch.no_grad():
                reading.run(ctx)
        except (AssertionError, ValueError) as exc:
            ctx.res.notes.append(f"{reading.name} skipped: {exc}")

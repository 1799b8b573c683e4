"""The digit family's own readings: the seed analysis of the attention-only digit-sum model.

QK with mean queries and the corresponding digits, OV circuits and their composition, path
attribution, W_U's answer columns as a circle, attention and ablations split by carry class,
and the probability on the correct digit. ``findings`` compares their numbers with the claims
the seed analysis makes about its own model.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from groktransfer.render import markdown_table

from .. import by_class, circuits_qkov, plots, unembed_geometry
from ..capabilities import Need
from ..forward import has_mlp, n_layers_heads
from ..reading import Interpretation, Reading, ReadingContext

_md = markdown_table
DIGIT = frozenset({"digit"})


def _attention_only_multilayer(model: Any) -> bool:
    n_layers, _ = n_layers_heads(model)
    return n_layers >= 2 and not any(has_mlp(model, layer) for layer in range(n_layers))


class Probabilities(Reading):
    """The probability the model gives the correct token, per answer position."""

    name = "probabilities"
    families = DIGIT
    produces = ("prob_correct",)
    figures = (("prob_correct", plots.plot_prob_correct),)

    def run(self, ctx: ReadingContext) -> None:
        t = by_class.probability_stats(ctx.model, ctx.aset)
        ctx.res.tables["prob_correct"] = t
        ctx.res.arrays["prob_correct"] = t.attrs["probs"]
        for r in t.itertuples():
            for stat in ("mean", "median", "min"):
                ctx.res.add("prob_correct", getattr(r, stat), stat=stat, answer=r.answer)

    def markdown(self, res: Interpretation) -> list[str]:
        t = res.tables.get("prob_correct")
        if t is None:
            return []
        return [
            "### Probability on the correct token",
            "",
            _md(t, ".4f"),
            "",
            "(per-example heatmap: `interp_prob_correct.png`)",
            "",
        ]


class MeanQueryQK(Reading):
    """Layer-0 attention with every query and key replaced by its mean: which digits each head reads."""

    name = "qk_mean_query"
    families = DIGIT
    needs = frozenset({Need.hooks, Need.attention})
    produces = ("qk_cd_share",)
    figures = (("qk_mean_query", plots.plot_qk_mean_query),)

    def run(self, ctx: ReadingContext) -> None:
        qk = circuits_qkov.mean_query_qk(ctx.model, ctx.aset, layer=0)
        ctx.res.arrays["qk_mean_query"] = qk
        cd = circuits_qkov.corresponding_digit_share(qk, ctx.aset)
        ctx.res.tables["qk_corresponding_digits"] = cd
        for r in cd.itertuples():
            ctx.res.add("qk_cd_share", r.share, layer=0, head=int(r.head), answer=r.answer)

    def markdown(self, res: Interpretation) -> list[str]:
        t = res.tables.get("qk_corresponding_digits")
        if t is None:
            return []
        wide = t.pivot_table(index="head", columns="answer", values="share", sort=False).reset_index()
        wide["head"] = [f"L0H{h}" for h in wide["head"]]
        return [
            "### Layer-0 QK circuit with mean queries",
            "",
            "Attention from each answer position with every query and key replaced by its mean over the inputs "
            "(`interp_qk_mean_query.png` shows the full position × position matrix per head). Share on the two "
            "operand digits of the same place value (the 'corresponding digits'):",
            "",
            _md(wide, ".3f"),
            "",
        ]


class OVComposition(Reading):
    """Each head's OV circuit over the digits, and layer-0 OV composed with last-layer OV."""

    name = "ov_composition"
    families = DIGIT
    needs = frozenset({Need.hooks, Need.embedding, Need.unembedding})
    produces = ("ov_freq1_share",)

    def run(self, ctx: ReadingContext) -> None:
        if not _attention_only_multilayer(ctx.model):
            return
        single = circuits_qkov.ov_circuit_table(ctx.model, ctx.aset)
        ctx.res.tables["ov_circuits"] = single
        for r in single.itertuples():
            ctx.res.add("ov_freq1_share", r.freq1_share, circuit=r.head)
        t = circuits_qkov.ov_composition_table(ctx.model, ctx.aset)
        ctx.res.tables["ov_composition"] = t
        for r in t.itertuples():
            ctx.res.add("ov_freq1_share", r.freq1_share, circuit=r.path)

    def markdown(self, res: Interpretation) -> list[str]:
        t = res.tables.get("ov_composition")
        if t is None:
            return []
        out = ["### OV circuits and their composition", ""]
        single = res.tables.get("ov_circuits")
        if single is not None:
            out += [
                "Each head's own `W_E · OV · W_U` over the digits (processed weights, LayerNorm scales left out): "
                "size and share of its power at frequency 1 of the output digits.",
                "",
                _md(single, ".3g"),
                "",
            ]
        return out + ["`W_E · OV(layer-0 head) · OV(last-layer head) · W_U`, the same measures:", "", _md(t, ".3g"), ""]


class PathAttribution(Reading):
    """Direct logit attribution along paths: each part directly, and through one last-layer head."""

    name = "path_dla"
    families = DIGIT
    needs = frozenset({Need.hooks})
    produces = ("path_completeness_error", "path_share_heads_to_last", "path_top_share", "path_share")

    def run(self, ctx: ReadingContext) -> None:
        if not _attention_only_multilayer(ctx.model):
            return
        attr = circuits_qkov.path_attribution(ctx.model, ctx.aset)
        t = attr.table()
        ctx.res.tables["path_dla"] = t
        ctx.res.add("path_completeness_error", attr.completeness_error())
        two_step = t.part.str.match(r"^L\d+H\d+ → ")
        for answer, d in t.groupby("answer", sort=False):
            ctx.res.add("path_share_heads_to_last", float(d[two_step.loc[d.index]].share.sum()), answer=answer)
            top = d[d.part != "bias"].assign(a=d["mean"].abs()).sort_values("a", ascending=False).iloc[0]
            ctx.res.add("path_top_share", float(top.share), answer=answer)
        for r in t.itertuples():
            ctx.res.add("path_share", r.share, part=r.part, answer=r.answer)

    def markdown(self, res: Interpretation) -> list[str]:
        t = res.tables.get("path_dla")
        if t is None:
            return []
        top = t[t.part != "bias"].assign(a=t["mean"].abs()).sort_values(["answer", "a"], ascending=[True, False])
        top = top.groupby("answer", sort=False).head(5).drop(columns="a")
        err = res.measurements.value("path_completeness_error")
        return [
            "### Path attribution (direct, and through one last-layer head)",
            "",
            f"Share of the correct digit's centred logit carried by each path (`A → L1Hy`: part A moved by head y "
            f"of the last layer); the paths reproduce the logit to {err:.2g}. The five largest per answer digit "
            "(all: `interp_path_dla.csv`):",
            "",
            _md(top, ".3g"),
            "",
        ]


class UnembedGeometry(Reading):
    """W_U's answer columns as a circle: frequencies, singular plane, a rebuild from frequency 1."""

    name = "unembed_geometry"
    families = DIGIT
    needs = frozenset({Need.hooks, Need.unembedding})
    produces = (
        "wu_top_freq",
        "wu_top_freq_share",
        "wu_dims_for_90",
        "wu_top2_share",
        "wu_radius_cv",
        "wu_circle_freq",
        "wu_angle_step_spread",
        "wu_rebuilt_error",
        "wu_rebuilt_acc",
        "wu_clean_acc",
    )
    figures = (("unembed", plots.plot_unembed_circle),)

    def run(self, ctx: ReadingContext) -> None:
        g = unembed_geometry.unembed_geometry(ctx.model, ctx.aset)
        res = ctx.res
        res.arrays["unembed_geometry"] = g
        res.tables["unembed_dims"] = g.dims_table()
        res.tables["unembed_coords"] = pd.DataFrame(
            {"token": range(g.coords.shape[0]), "x": g.coords[:, 0].numpy(), "y": g.coords[:, 1].numpy()}
        )
        res.tables["unembed_freqs"] = pd.DataFrame({"freq": range(len(g.freq_share)), "share": g.freq_share.numpy()})
        res.tables["unembed_gram"] = g.gram_table()
        res.tables["unembed_fourier"] = g.fourier_table()
        rebuilt = unembed_geometry.rebuilt_unembed_score(ctx.model, ctx.aset, g.rebuilt_freq)
        for name, value in (
            ("wu_top_freq", g.top_freq),
            ("wu_top_freq_share", g.freq_share[g.top_freq]),
            ("wu_dims_for_90", g.dims_for_90),
            ("wu_top2_share", g.top2_share),
            ("wu_radius_cv", g.radius_cv),
            ("wu_circle_freq", g.circle_freq),
            ("wu_angle_step_spread", g.angle_step_spread),
            ("wu_rebuilt_error", g.rebuilt_error),
            ("wu_rebuilt_acc", rebuilt.acc.mean()),
            ("wu_clean_acc", ctx.clean.acc.mean()),
        ):
            res.add(name, float(value))

    def markdown(self, res: Interpretation) -> list[str]:
        if "unembed_dims" not in res.tables:
            return []
        v = {k: res.measurements.value(k) or 0.0 for k in self.produces}
        f = int(v["wu_top_freq"])
        return [
            "### Unembedding geometry (answer columns of W_U)",
            "",
            f"Strongest frequency over the answer tokens: {f} ({v['wu_top_freq_share']:.1%} of the power); "
            f"{int(v['wu_dims_for_90'])} residual dimensions hold 90% of it; the top two singular values hold "
            f"{v['wu_top2_share']:.1%}. In their plane the tokens sit at radii with CV {v['wu_radius_cv']:.3f}, one "
            f"step {v['wu_circle_freq']:.2f} × 2π/m apart (largest deviation {v['wu_angle_step_spread']:.2f} rad). "
            f"W_U rebuilt from frequency 1 alone: relative error {v['wu_rebuilt_error']:.3f}, accuracy "
            f"{v['wu_rebuilt_acc']:.4f} (clean {v['wu_clean_acc']:.4f}). Largest dimensions (amplitude and phase at "
            f"frequency {f}; every dimension at every frequency: `interp_unembed_fourier.csv`; W_UᵀW_U: "
            "`interp_unembed_gram.csv` and the figure `interp_unembed.png`):",
            "",
            _md(res.tables["unembed_dims"], ".3g"),
            "",
        ]


class AttentionByClass(Reading):
    """Last-layer attention split by the carry class of each answer digit."""

    name = "attention_by_class"
    families = DIGIT
    needs = frozenset({Need.hooks, Need.attention, Need.classes})
    produces = ("attn_class_tv",)
    figures = (("attention_by_class", plots.plot_attention_by_class),)

    def run(self, ctx: ReadingContext) -> None:
        layer = ctx.n_layers - 1
        t = by_class.attention_by_class(ctx.model, ctx.aset, layer)
        ctx.res.tables["attention_by_class"] = t.assign(layer=layer)
        ctx.res.arrays["attention_per_example"] = t.attrs["patterns"]  # [n, head, answers, seq]
        ctx.res.arrays["answer_classes"] = by_class.answer_classes(ctx.aset)  # [n, answers]
        ctx.res.arrays["class_names"] = list(ctx.aset.class_names)
        for r in t[t.tv > 0].itertuples():
            ctx.res.add("attn_class_tv", r.tv, layer=layer, head=int(r.head), answer=r.answer, cls=r.cls)

    def markdown(self, res: Interpretation) -> list[str]:
        t = res.tables.get("attention_by_class")
        if t is None:
            return []
        tv = t[t.tv > 0][["layer", "head", "answer", "cls", "n", "tv"]]
        return [
            "### Last-layer attention by carry class",
            "",
            "Total variation distance between the mean attention pattern of examples whose answer digit receives a "
            "carry and of those without (0 = the same pattern); the patterns: `interp_attention_by_class.csv`; per "
            "example, for the answer digit whose classes differ most: `interp_attention_by_class.png`.",
            "",
            _md(tv, ".3f"),
            "",
        ]


class AblationByClass(Reading):
    """The loss change of each (mean) head ablation within each carry class."""

    name = "ablation_by_class"
    families = DIGIT
    needs = frozenset({Need.hooks, Need.classes})
    produces = ("class_d_loss",)

    def run(self, ctx: ReadingContext) -> None:
        if not ctx.effects:
            return
        t = by_class.loss_change_by_class(ctx.effects, ctx.aset)
        ctx.res.tables["ablation_by_class"] = t
        names = {eff.name: key for key, eff in ctx.effects.items()}
        for r in t.itertuples():
            layer, head, site = names[r.ablation]
            ctx.res.add(
                "class_d_loss", r.d_loss, layer=layer, head=head, site=site, kind="mean", answer=r.answer, cls=r.cls
            )

    def markdown(self, res: Interpretation) -> list[str]:
        t = res.tables.get("ablation_by_class")
        if t is None:
            return []
        wide = t.pivot_table(index="ablation", columns="cls", values="d_loss", aggfunc="mean", sort=False).reset_index()
        return [
            "### Loss change of each ablation per carry class",
            "",
            "Mean loss increase over the answer digits of each carry class (per digit: `interp_ablation_by_class.csv`):",
            "",
            _md(wide, ".3g"),
            "",
        ]


class AblationWithinCarrySubsets(Reading):
    """Each head's query / key / value mean-ablated with the mean over the examples with / without any carry."""

    name = "ablation_by_carry_subset"
    families = DIGIT
    needs = frozenset({Need.hooks, Need.attention, Need.classes})
    produces = ("subset_d_loss", "subset_n")

    def enabled(self, settings: Any) -> bool:
        return bool(settings.head_ablation)

    def run(self, ctx: ReadingContext) -> None:
        subsets = by_class.carry_subsets(ctx.aset)
        sites = [x for x in map(str, ctx.settings.head_sites) if x in ("q", "k", "v")] or ["k"]
        t = by_class.ablation_within_subsets(ctx.model, subsets, sites=sites)
        ctx.res.tables["ablation_by_carry_subset"] = t
        for r in t.itertuples():
            ctx.res.add("subset_d_loss", r.d_loss, layer=int(r.layer), head=int(r.head), site=r.site, subset=r.subset)
        for name, sub in subsets.items():
            ctx.res.add("subset_n", float(sub.n), subset=name)

    def markdown(self, res: Interpretation) -> list[str]:
        t = res.tables.get("ablation_by_carry_subset")
        if t is None:
            return []
        t = t.assign(ablation=[f"L{layer}H{h} {s}" for layer, h, s in zip(t.layer, t["head"], t.site)])
        wide = t.pivot_table(index="ablation", columns="subset", values="d_loss", sort=False).reset_index()
        counts = ", ".join(f"{k}: {int(v)}" for k, v in t.groupby("subset", sort=False).n.first().items())
        return [
            "### Ablations within carry subsets",
            "",
            f"The examples split by whether any answer digit receives a carry ({counts} examples); each head's "
            "query / key / value mean-ablated with the mean over the subset's own examples; loss increase averaged "
            "over the answer digits:",
            "",
            _md(wide, ".3g"),
            "",
        ]


DIGIT_READINGS = (
    Probabilities(),
    MeanQueryQK(),
    OVComposition(),
    PathAttribution(),
    UnembedGeometry(),
    AttentionByClass(),
    AblationByClass(),
    AblationWithinCarrySubsets(),
)

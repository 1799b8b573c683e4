"""The ``int_add`` readings: the seed analysis of the model adding small integers.

Embedding PCs as functions of the token (a line and a bend), sum neurons and their
pre-activations regressed on the operands' PCs, and what keeping only one PC leaves.
``findings`` compares their numbers with the seed analysis' claims.
"""

from __future__ import annotations

import pandas as pd

from groktransfer.render import markdown_table

from .. import neurons_int, plots
from ..ablation import failure_map
from ..capabilities import Need
from ..forward import has_mlp
from ..reading import Interpretation, Reading, ReadingContext

_md = markdown_table
INT_ADD = frozenset({"int_add"})


class PCTokenFits(Reading):
    """Each top embedding PC's score against the token, with a linear and a quadratic fit."""

    name = "pc_token_fits"
    families = INT_ADD
    needs = frozenset({Need.hooks, Need.embedding, Need.operands})
    produces = ("pc_linear_r2", "pc_quadratic_r2")
    figures = (("pc_token_fits", plots.plot_pc_token_fits),)

    def run(self, ctx: ReadingContext) -> None:
        t = neurons_int.pc_token_fits(ctx.model, ctx.aset)
        ctx.res.tables["pc_token_fits"] = t
        if "embedding_pca" not in ctx.res.arrays:  # the figure draws the scores
            from ..representations import embedding_pca

            ctx.res.arrays["embedding_pca"] = embedding_pca(ctx.model, ctx.aset)
        for r in t.itertuples():
            ctx.res.add("pc_linear_r2", r.linear_r2, k=int(r.pc))
            ctx.res.add("pc_quadratic_r2", r.quadratic_r2, k=int(r.pc))

    def markdown(self, res: Interpretation) -> list[str]:
        t = res.tables.get("pc_token_fits")
        if t is None:
            return []
        return [
            "### Embedding PCs against the token",
            "",
            "R² of a linear and of a quadratic fit of each PC score "
            "against the token, with the fits' coefficients (figure: `interp_pc_token_fits.png`):",
            "",
            _md(t, ".3g"),
            "",
        ]


class SumNeurons(Reading):
    """Neurons that track a+b, before and after the ReLU; their pre-activation on the operands' PCs."""

    name = "sum_neurons"
    families = INT_ADD
    needs = frozenset({Need.hooks, Need.mlp, Need.operands, Need.grid})
    produces = ("n_sum_neurons_post", "n_sum_neurons_pre", "d_mlp", "pc_regression_r2_median", "pc_regression_r2_top")
    figures = (("pre_activation_maps", plots.plot_pre_activation_maps),)

    def run(self, ctx: ReadingContext) -> None:
        layer = ctx.n_layers - 1
        if not has_mlp(ctx.model, layer) or "a+b" not in ctx.aset.targets:
            return
        t = neurons_int.sum_neurons(ctx.model, ctx.aset, layer)
        top = t.sort_values("r_post", ascending=False).neuron.head(int(ctx.settings.top_neurons)).tolist()
        reg = neurons_int.neuron_pc_regression(ctx.model, ctx.aset, top, layer)
        ctx.res.tables["sum_neurons"] = t
        ctx.res.tables["neuron_pc_regression"] = reg.merge(t[["neuron", "r_pre", "r_post"]], on="neuron")
        ctx.res.arrays["pre_activation_maps"] = (top, neurons_int.pre_activation_maps(ctx.model, ctx.aset, top, layer))
        ctx.res.add("n_sum_neurons_post", t.attrs["n_post"])
        ctx.res.add("n_sum_neurons_pre", t.attrs["n_pre"])
        ctx.res.add("d_mlp", t.attrs["d_mlp"])
        ctx.res.add("pc_regression_r2_median", float(reg.r2.median()))
        ctx.res.add("pc_regression_r2_top", float(reg.r2.iloc[0]))

    def markdown(self, res: Interpretation) -> list[str]:
        if "sum_neurons" not in res.tables:
            return []
        m = res.measurements
        post, pre, d = (int(m.value(k) or 0) for k in ("n_sum_neurons_post", "n_sum_neurons_pre", "d_mlp"))
        return [
            "### Sum neurons",
            "",
            f"{post} of {d} neurons correlate with a+b above 0.9 after the ReLU ({pre} before it). Pre-activation "
            "of the most correlated ones regressed on PC1 and PC2 of a and of b (maps of their pre-activations: "
            "`interp_pre_activation_maps.png`):",
            "",
            _md(res.tables["neuron_pc_regression"], ".3g"),
            "",
        ]


class OnlyOnePC(Reading):
    """The operand embeddings reduced to their mean plus one PC's component."""

    name = "only_pc"
    families = INT_ADD
    needs = frozenset({Need.hooks, Need.embedding, Need.operands})
    produces = ("embed_only_pc_acc",)

    def run(self, ctx: ReadingContext) -> None:
        rows = []
        for k in ctx.settings.pc_ablation:
            eff = neurons_int.keep_only_pc(ctx.model, ctx.aset, int(k), clean=ctx.clean)
            rows += eff.rows(ctx.aset, pc=int(k))
            ctx.res.add("embed_only_pc_acc", float(eff.ablated.acc.mean()), k=int(k))
            if ctx.aset.has_grid:
                ctx.res.arrays[f"only_pc{k}_failure"] = (eff.name, failure_map(eff, ctx.aset))
        if rows:
            ctx.res.tables["only_pc"] = pd.DataFrame(rows)

    def markdown(self, res: Interpretation) -> list[str]:
        t = res.tables.get("only_pc")
        if t is None:
            return []
        return [
            "Keeping only one embedding PC (operand embeddings = their mean + that PC's component):",
            "",
            _md(t[["pc", "answer", "acc", "d_acc", "d_loss", "n_broken"]]),
            "",
        ]


INT_ADD_READINGS = (PCTokenFits(), SumNeurons(), OnlyOnePC())

"""The generic readings: what any model is read for, wherever the (model, task) offers it.

Registered in ``groktransfer.interp.readings`` in the order they run: head ablations, the
neurons' input frequencies, direct logit attribution, the operand embeddings, weight
spectra, probes, neurons (cluster ablations, target-correlated neurons), attention.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from groktransfer.render import markdown_table

from .. import ablation, attribution, plots, representations
from ..answers import AnswerSet
from ..capabilities import Need
from ..forward import has_mlp
from ..reading import Interpretation, Reading, ReadingContext, expand_hooks

_md = markdown_table


def record_failure(ctx: ReadingContext, key: str, effect: ablation.AblationEffect) -> None:
    """An ablation's failure map: (a, b) grids go to the figures; per-class tables (digit tasks:
    carry class x answer digit) to the tables and, as accuracies, to the measurements."""
    if not (ctx.aset.has_grid or ctx.aset.classes is not None):
        return
    fmap = ablation.failure_map(effect, ctx.aset)
    ctx.res.arrays[f"{key}_failure"] = (effect.name, fmap)
    if isinstance(fmap, pd.DataFrame):
        ctx.res.tables[f"failures_{key}"] = fmap.assign(ablation=effect.name)
        for r in fmap.itertuples():
            ctx.res.add("class_ablated_acc", r.acc, ablation=key, cls=r.cls, answer=r.answer)
            ctx.res.add("clean_class_acc", r.clean_acc, cls=r.cls, answer=r.answer)


def failures_markdown(res: Interpretation, keys: list[str]) -> list[str]:
    out: list[str] = []
    for key in keys:
        t = res.tables.get(f"failures_{key}")
        if t is not None:
            out += [f"### Failures by carry class: {t.ablation.iloc[0]}", "", _md(t.drop(columns="ablation")), ""]
    return out


def head_ablation_view(res: Interpretation, kind: str) -> pd.DataFrame | None:
    """Wide table: one row per (head, answer), loss increase and accuracy per ablated site."""
    t = res.tables.get(f"head_ablation_{kind}")
    if t is None:
        return None
    t = t.assign(head_name=[f"L{a}H{b}" for a, b in zip(t.layer, t["head"])])
    wide = t.pivot_table(index=["head_name", "answer"], columns="site", values=["d_loss", "acc"], sort=False)
    wide.columns = [f"{what} ({site})" for what, site in wide.columns]
    return wide.reset_index().rename(columns={"head_name": "head"})


class HeadAblation(Reading):
    """Every head ablated alone, at its output (z) and its query / key / value inputs."""

    name = "head_ablation"
    needs = frozenset({Need.hooks, Need.attention})
    produces = ("head_d_loss", "head_acc", "class_ablated_acc", "clean_class_acc")
    figures = (("head_ablation", plots.plot_head_ablation),)

    def enabled(self, settings: Any) -> bool:
        return bool(settings.head_ablation)

    def run(self, ctx: ReadingContext) -> None:
        worst: ablation.AblationEffect | None = None
        sites = [str(x) for x in ctx.settings.head_sites]
        for kind in map(str, ctx.settings.head_ablation):
            table, effects = ablation.ablate_heads(ctx.model, ctx.aset, kind=kind, sites=sites)
            if kind == "mean":  # the per-carry-class loss changes read the mean ablations, as the seed analysis did
                ctx.effects.update(effects)
            ctx.res.tables[f"head_ablation_{kind}"] = table
            for r in table.itertuples():
                labels = dict(kind=kind, site=r.site, layer=int(r.layer), head=int(r.head), answer=r.answer)
                ctx.res.add("head_d_loss", r.d_loss, **labels)
                ctx.res.add("head_acc", r.acc, **labels)
            z = table[table.site == "z"] if "z" in set(table.site) else table
            top = z.sort_values("d_loss", ascending=False).iloc[0]
            eff = effects[(int(top.layer), int(top["head"]), str(top.site))]
            if worst is None or float(eff.ablated.loss.mean()) > float(worst.ablated.loss.mean()):
                worst = eff
        if worst is not None:
            record_failure(ctx, "worst_head", worst)

    def markdown(self, res: Interpretation) -> list[str]:
        out: list[str] = []
        for key in [k for k in res.tables if k.startswith("head_ablation_")]:
            kind = key.split("_")[-1]
            view = head_ablation_view(res, kind)
            assert view is not None
            out += [
                f"### Head ablations ({kind})",
                "",
                "Loss increase and accuracy when one head's output (z) or its "
                "query/key/value input (q/k/v) is replaced by its mean (or zero) over all inputs.",
                "",
                _md(view),
                "",
            ]
        return out + failures_markdown(res, ["worst_head"])


class NeuronFrequencies(Reading):
    """Each MLP neuron's dominant input frequency on the (a, b) grid; the key frequencies."""

    name = "neuron_clusters"
    needs = frozenset({Need.hooks, Need.mlp, Need.grid, Need.fourier})
    produces = ("n_key_freqs", "frac_neurons_clustered")

    def enabled(self, settings: Any) -> bool:
        return bool(settings.neurons)

    def run(self, ctx: ReadingContext) -> None:
        layer = ctx.n_layers - 1
        if not has_mlp(ctx.model, layer):
            raise ValueError(f"block {layer} has no MLP")
        cl = representations.neuron_clusters(
            ctx.model, ctx.task, layer=layer, threshold=ctx.settings.key_freq_threshold
        )
        ctx.shared["clusters"] = cl
        ctx.res.arrays["clusters"] = cl
        ctx.res.arrays["key_freqs"] = list(cl.key_freqs)
        ctx.res.tables["neuron_clusters"] = pd.DataFrame(
            {"freq": range(1, len(cl.counts) + 1), "neurons": cl.counts.numpy()}
        )
        ctx.res.add("n_key_freqs", len(cl.key_freqs))
        ctx.res.add("frac_neurons_clustered", float(cl.counted.double().mean()))

    def markdown(self, res: Interpretation) -> list[str]:
        if "neuron_clusters" not in res.tables:
            return []
        keys = res.arrays.get("key_freqs", [])
        frac = res.measurements.value("frac_neurons_clustered") or 0.0
        return [
            "### Neurons",
            "",
            "Key input frequencies (neurons with more than `analysis.interp.key_freq_threshold` of "
            f"their variance at one frequency on the (a, b) grid): {keys}; {frac:.1%} of neurons clustered.",
            "",
        ]


class DirectLogitAttribution(Reading):
    """Each part's direct contribution to the correct answer's logit; split over output
    frequencies where the task's tokens are read in a Fourier basis."""

    name = "dla"
    needs = frozenset({Need.hooks})
    produces = ("dla_completeness_error", "dla_head", "dla")
    figures = (("dla", plots.plot_dla),)

    def enabled(self, settings: Any) -> bool:
        return bool(settings.dla)

    def run(self, ctx: ReadingContext) -> None:
        n_layers, n_heads = ctx.n_layers, ctx.n_heads
        clusters = ctx.shared.get("clusters")
        groups = None
        if clusters is not None:
            groups = {n_layers - 1: {f"L{n_layers - 1} {k}": v for k, v in clusters.groups().items()}}
        attr = attribution.direct_logit_attribution(ctx.model, ctx.aset, neuron_groups=groups)
        table = attr.table()
        ctx.res.tables["dla"] = table
        ctx.res.add("dla_completeness_error", attr.completeness_error())
        heads = {f"L{layer}H{h}": (layer, h) for layer in range(n_layers) for h in range(n_heads)}
        for r in table.itertuples():
            if r.part in heads:
                ctx.res.add("dla_head", r.mean, layer=heads[r.part][0], head=heads[r.part][1], answer=r.answer)
            else:
                ctx.res.add("dla", r.mean, part=r.part, answer=r.answer)
        if Need.fourier in ctx.offers:
            top_parts = (
                table[table.part != "bias"].assign(a=lambda d: d["mean"].abs()).sort_values("a", ascending=False)
            )
            parts = list(dict.fromkeys(list(heads) + list(top_parts.part[:8])))
            ctx.res.tables["dla_fourier"] = attribution.fourier_attribution(attr, ctx.aset.out_modulus, parts)

    def markdown(self, res: Interpretation) -> list[str]:
        if "dla" not in res.tables:
            return []
        t = res.tables["dla"]
        top = (
            t.assign(a=t["mean"].abs()).sort_values(["answer", "a"], ascending=[True, False]).groupby("answer").head(12)
        )
        err = res.measurements.value("dla_completeness_error")
        out = [
            "### Direct logit attribution",
            "",
            f"Mean contribution of each part to the correct answer's centred logit; parts plus bias reproduce the "
            f"logit to {err:.2g} (completeness check).",
            "",
            _md(top.drop(columns="a")),
            "",
        ]
        f = res.tables.get("dla_fourier")
        if f is not None and not f.empty:
            best = f.assign(a=f["mean"].abs()).sort_values("a", ascending=False).groupby(["answer", "part"]).head(3)
            best = best.groupby(["answer", "part"], sort=False).apply(
                lambda d: ", ".join(f"{int(w)}: {m:.3g}" for w, m in zip(d.freq, d["mean"])), include_groups=False
            )
            out += [
                "Largest output frequencies of each part's contribution (freq: mean contribution):",
                "",
                _md(best.rename("top frequencies").reset_index()),
                "",
            ]
        return out


class Embedding(Reading):
    """The operand embeddings: principal components, Fourier norms (where the tokens are read in
    a Fourier basis), and what each PC is needed for (ablated one at a time)."""

    name = "embedding"
    needs = frozenset({Need.hooks, Need.embedding, Need.operands})
    produces = (
        "embed_pc_explained",
        "embed_fourier_gini",
        "embed_top_freq",
        "embed_pc_ablated_acc",
        "class_ablated_acc",
    )
    figures = (("embedding", plots.plot_embedding),)

    def enabled(self, settings: Any) -> bool:
        return bool(settings.embedding)

    def run(self, ctx: ReadingContext) -> None:
        res, aset = ctx.res, ctx.aset
        pca = representations.embedding_pca(ctx.model, aset)
        res.arrays["embedding_pca"] = pca
        res.tables["embedding_pca"] = pd.DataFrame(
            {"pc": range(1, len(pca.explained) + 1), "explained": pca.explained.numpy()}
        )
        for k in range(min(3, len(pca.explained))):
            res.add("embed_pc_explained", float(pca.explained[k]), k=k + 1)
        if Need.fourier in ctx.offers:
            fn = representations.embedding_fourier_norms(ctx.model, ctx.task)
            res.tables["embedding_fourier"] = fn
            res.add("embed_fourier_gini", float(fn.attrs["gini"]))
            res.add("embed_top_freq", float(fn.norm.iloc[1:].idxmax()) if len(fn) > 1 else float("nan"))
        rows = []
        for k in ctx.settings.pc_ablation:
            if k > len(pca.explained):
                continue
            eff = ablation.ablate_subspace(
                ctx.model,
                aset,
                "hook_embed",
                pca.components[k - 1 : k].float(),
                kind="mean",
                positions=list(aset.operand_positions),
                name=f"embedding PC{k}",
                clean=ctx.clean,
            )
            rows += eff.rows(aset, pc=k)
            res.add("embed_pc_ablated_acc", float(eff.ablated.acc.mean()), k=int(k))
            record_failure(ctx, f"pc{k}", eff)
        if rows:
            res.tables["pc_ablation"] = pd.DataFrame(rows)

    def markdown(self, res: Interpretation) -> list[str]:
        if "embedding_pca" not in res.tables:
            return []
        ev = res.tables["embedding_pca"].head(5)
        out = [
            "### Embedding",
            "",
            "Explained variance of the first PCs: "
            + ", ".join(f"PC{int(r.pc)} {r.explained:.1%}" for r in ev.itertuples())
            + ".",
        ]
        fn = res.tables.get("embedding_fourier")
        if fn is not None:
            top = fn.iloc[1:].sort_values("norm", ascending=False).head(5)
            out.append(
                f"Largest W_E Fourier norms (mod {fn.attrs['modulus']}): "
                + ", ".join(f"freq {int(r.freq)}: {r.norm:.3g}" for r in top.itertuples())
                + f"; Gini {fn.attrs['gini']:.3f}."
            )
        out.append("")
        if "pc_ablation" in res.tables:
            out += [
                "Ablating one embedding principal component (mean, at the operand positions):",
                "",
                _md(res.tables["pc_ablation"][["pc", "answer", "acc", "d_acc", "d_loss", "n_broken"]]),
                "",
            ]
        keys = [k[len("failures_") :] for k in res.tables if k.startswith("failures_pc")]
        return out + failures_markdown(res, keys)


class Spectra(Reading):
    """Singular values of every weight matrix against a Gaussian control of its shape and scale."""

    name = "spectra"
    produces = ("eff_rank_ratio",)
    figures = (("spectra", plots.plot_spectra),)

    def enabled(self, settings: Any) -> bool:
        return bool(settings.spectra)

    def run(self, ctx: ReadingContext) -> None:
        spec = representations.singular_spectra(ctx.model)
        if spec.empty:
            raise ValueError("the model has no weight matrix")
        ctx.res.tables["spectra"] = spec
        er = spec.groupby("weight", sort=False)[["effective_rank", "control_effective_rank"]].first().reset_index()
        ctx.res.tables["spectra_summary"] = er
        for r in er.itertuples():
            ctx.res.add("eff_rank_ratio", r.effective_rank / r.control_effective_rank, weight=r.weight)

    def markdown(self, res: Interpretation) -> list[str]:
        if "spectra_summary" not in res.tables:
            return []
        s = res.tables["spectra_summary"]
        s = s[~s.weight.str.contains(r"\[") | s.weight.str.endswith("[0]")]
        return [
            "### Weight spectra",
            "",
            "Effective rank (exp entropy of squared singular values) against a Gaussian "
            "matrix of the same shape and scale:",
            "",
            _md(s),
            "",
        ]


class Probes(Reading):
    """Ridge probes of the task's targets (the answer; the operands where the task has them) from
    hook points at the answer positions, or from the model's neurons (the ``neurons`` reading)."""

    name = "probes"
    produces = ("probe",)
    figures = (("probes", plots.plot_probes),)

    def enabled(self, settings: Any) -> bool:
        return bool(settings.probes)

    def applies_to(self, model: Any, task: Any, aset: AnswerSet | None = None) -> str | None:
        from ..capabilities import capabilities

        offers = capabilities(model, task, aset)
        return None if {Need.hooks, Need.neurons} & offers else "needs hooks or the neurons reading"

    def run(self, ctx: ReadingContext) -> None:
        if not ctx.aset.targets:
            raise ValueError("the task declares no probe target")
        if Need.hooks in ctx.offers:
            hooks = expand_hooks(list(ctx.settings.probe_hooks), ctx.model)
            probes = representations.probe_hooks(ctx.model, ctx.aset, hooks)
        else:
            probes = representations.probe_neurons(ctx.model, ctx.aset)
        ctx.res.tables["probes"] = probes
        for r in probes.itertuples():
            ctx.res.add("probe", r.score, hook=r.hook, position=int(r.position), target=r.target)

    def markdown(self, res: Interpretation) -> list[str]:
        if "probes" not in res.tables:
            return []
        p = res.tables["probes"][["hook", "position", "target", "kind", "score", "chance", "alpha"]]
        return [
            "### Linear probes",
            "",
            "Ridge probes, held-out R² (regression) or accuracy (classification; chance = majority class).",
            "",
            _md(p),
            "",
        ]


class Neurons(Reading):
    """Each key frequency's neurons ablated together, and the neurons most correlated with a target."""

    name = "neurons"
    needs = frozenset({Need.hooks, Need.mlp})
    produces = ("cluster_ablated_acc", "max_abs_neuron_corr")
    figures = (("neurons", plots.plot_neurons),)

    def enabled(self, settings: Any) -> bool:
        return bool(settings.neurons)

    def run(self, ctx: ReadingContext) -> None:
        layer = ctx.n_layers - 1
        if not has_mlp(ctx.model, layer):
            raise ValueError(f"block {layer} has no MLP")
        cl = ctx.shared.get("clusters")
        if cl is not None:
            rows = []
            for name, idx in cl.groups().items():  # each frequency's neurons ablated together
                eff = ablation.ablate_neurons(ctx.model, ctx.aset, layer, idx, "mean", f"{name} neurons", ctx.clean)
                rows += eff.rows(ctx.aset, group=name, n_neurons=len(idx))
                ctx.res.add("cluster_ablated_acc", float(eff.ablated.acc.mean()), group=name)
            if rows:
                ctx.res.tables["cluster_ablation"] = pd.DataFrame(rows)
        target = next((t for t in ("a+b", "answer") if t in ctx.aset.targets), None)
        if target is not None:
            top = representations.top_neuron_maps(ctx.model, ctx.aset, target, layer, ctx.settings.top_neurons)
            ctx.res.tables["top_neurons"] = top.assign(target=target)
            ctx.res.arrays["top_neuron_maps"] = (target, top)
            ctx.res.add("max_abs_neuron_corr", float(top.r.abs().max()), target=target)

    def markdown(self, res: Interpretation) -> list[str]:
        out: list[str] = []
        if "cluster_ablation" in res.tables:
            c = res.tables["cluster_ablation"][["group", "n_neurons", "answer", "acc", "d_acc", "d_loss", "n_broken"]]
            out += ["Mean-ablating each frequency's neurons together:", "", _md(c), ""]
        if "top_neurons" in res.tables:
            out += [_md(res.tables["top_neurons"]), ""]
        return out


class Attention(Reading):
    """Each head's mean attention from every answer position."""

    name = "attention"
    needs = frozenset({Need.hooks, Need.attention})
    figures = (("attention", plots.plot_attention),)

    def enabled(self, settings: Any) -> bool:
        return bool(settings.attention)

    def run(self, ctx: ReadingContext) -> None:
        ctx.res.arrays["attention"] = representations.attention_patterns(ctx.model, ctx.aset)

    def markdown(self, res: Interpretation) -> list[str]:
        att = res.arrays.get("attention")
        if att is None:
            return []
        rows = [
            dict(
                layer=layer, head=h, answer=a, **{f"pos {k}": float(att[layer, h, a, k]) for k in range(att.shape[-1])}
            )
            for layer in range(att.shape[0])
            for h in range(att.shape[1])
            for a in range(att.shape[2])
        ]
        return ["### Attention from the answer positions (mean over inputs)", "", _md(pd.DataFrame(rows), ".3f"), ""]


GENERIC_READINGS = (
    HeadAblation(),
    NeuronFrequencies(),
    DirectLogitAttribution(),
    Embedding(),
    Spectra(),
    Probes(),
    Neurons(),
    Attention(),
)

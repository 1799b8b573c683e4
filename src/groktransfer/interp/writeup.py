"""Markdown and JSON of an :class:`Interpretation`: the single-checkpoint summary's
interpretability part (``scripts/analyze.py checkpoint=...``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import pandas as pd

from groktransfer.render import markdown_table

from . import plots
from .families import readings_for
from .findings import findings_table
from .summary import Interpretation, interpret


md_table = markdown_table  # the one markdown table of the package (groktransfer.render)


def head_ablation_view(res: Interpretation, kind: str) -> Optional[pd.DataFrame]:
    """Wide table: one row per (head, answer), loss increase and accuracy per ablated site."""
    t = res.tables.get(f"head_ablation_{kind}")
    if t is None:
        return None
    t = t.assign(head_name=[f"L{a}H{b}" for a, b in zip(t.layer, t["head"])])
    wide = t.pivot_table(index=["head_name", "answer"], columns="site", values=["d_loss", "acc"], sort=False)
    wide.columns = [f"{what} ({site})" for what, site in wide.columns]
    return wide.reset_index().rename(columns={"head_name": "head"})


def sections(res: Interpretation) -> List[str]:
    """Markdown paragraphs and tables, one block per analysis that ran."""
    out: List[str] = ["## Interpretability", ""]
    clean = ", ".join(f"{k.split('[')[1][:-1]}: acc {v:.4f}" for k, v in res.scalars.items() if k.startswith("clean_acc"))
    out += [f"Clean model on every input ({res.task}): {clean}.", ""]
    findings = findings_table(res.family, res.scalars)
    if not findings.empty:
        out += ["### Findings", "", "Each claim the seed analysis makes about its own model, checked on this one "
                "(the criterion is in the claim):", "", md_table(findings), ""]  # fmt: skip
    for key in [k for k in res.tables if k.startswith("head_ablation_")]:
        kind = key.split("_")[-1]
        out += [f"### Head ablations ({kind})", "", "Loss increase and accuracy when one head's output (z) or its "
                "query/key/value input (q/k/v) is replaced by its mean (or zero) over all inputs.", "",
                md_table(head_ablation_view(res, kind)), ""]  # type: ignore[arg-type]  # fmt: skip
    for key in [k for k in res.tables if k.startswith("failures_")]:
        t = res.tables[key]
        out += [f"### Failures by carry class: {t.ablation.iloc[0]}", "",
                md_table(t.drop(columns="ablation")), ""]  # fmt: skip
    if "dla" in res.tables:
        t = res.tables["dla"]
        top = t.assign(a=t["mean"].abs()).sort_values(["answer", "a"], ascending=[True, False]).groupby("answer").head(12)
        out += ["### Direct logit attribution", "",
                f"Mean contribution of each part to the correct answer's centred logit; parts plus bias reproduce the "
                f"logit to {res.scalars['dla_completeness_error']:.2g} (completeness check).", "",
                md_table(top.drop(columns="a")), ""]  # fmt: skip
        f = res.tables.get("dla_fourier")
        if f is not None and not f.empty:
            best = f.assign(a=f["mean"].abs()).sort_values("a", ascending=False).groupby(["answer", "part"]).head(3)
            best = best.groupby(["answer", "part"], sort=False).apply(
                lambda d: ", ".join(f"{int(w)}: {m:.3g}" for w, m in zip(d.freq, d["mean"])), include_groups=False)
            out += ["Largest output frequencies of each part's contribution (freq: mean contribution):", "",
                    md_table(best.rename("top frequencies").reset_index()), ""]  # fmt: skip
    if "embedding_pca" in res.tables:
        ev = res.tables["embedding_pca"].head(5)
        fn = res.tables["embedding_fourier"]
        top = fn.iloc[1:].sort_values("norm", ascending=False).head(5)
        out += ["### Embedding", "",
                "Explained variance of the first PCs: " + ", ".join(f"PC{int(r.pc)} {r.explained:.1%}" for r in ev.itertuples()) + ".",
                f"Largest W_E Fourier norms (mod {fn.attrs['modulus']}): " + ", ".join(f"freq {int(r.freq)}: {r.norm:.3g}" for r in top.itertuples())
                + f"; Gini {fn.attrs['gini']:.3f}.", ""]  # fmt: skip
        if "pc_ablation" in res.tables:
            out += ["Ablating one embedding principal component (mean, at the operand positions):", "",
                    md_table(res.tables["pc_ablation"][["pc", "answer", "acc", "d_acc", "d_loss", "n_broken"]]), ""]  # fmt: skip
    if "spectra_summary" in res.tables:
        s = res.tables["spectra_summary"]
        s = s[~s.weight.str.contains(r"\[") | s.weight.str.endswith("[0]")]
        out += ["### Weight spectra", "", "Effective rank (exp entropy of squared singular values) against a Gaussian "
                "matrix of the same shape and scale:", "", md_table(s), ""]  # fmt: skip
    if "probes" in res.tables:
        p = res.tables["probes"][["hook", "position", "target", "kind", "score", "chance", "alpha"]]
        out += ["### Linear probes", "", "Ridge probes, held-out R² (regression) or accuracy (classification; chance = "
                "majority class).", "", md_table(p), ""]  # fmt: skip
    if "neuron_clusters" in res.tables:
        keys = res.arrays.get("key_freqs", [])
        out += ["### Neurons", "", f"Key input frequencies (neurons with more than `analysis.interp.key_freq_threshold` of their variance at one frequency on the "
                f"(a, b) grid): {keys}; {res.scalars['frac_neurons_clustered']:.1%} of neurons clustered.", ""]  # fmt: skip
    if "cluster_ablation" in res.tables:
        c = res.tables["cluster_ablation"][["group", "n_neurons", "answer", "acc", "d_acc", "d_loss", "n_broken"]]
        out += ["Mean-ablating each frequency's neurons together:", "", md_table(c), ""]
    if "top_neurons" in res.tables:
        out += [md_table(res.tables["top_neurons"]), ""]
    att = res.arrays.get("attention")
    if att is not None:
        rows = [dict(layer=l, head=h, answer=a, **{f"pos {k}": float(att[l, h, a, k]) for k in range(att.shape[-1])})
                for l in range(att.shape[0]) for h in range(att.shape[1]) for a in range(att.shape[2])]  # fmt: skip
        out += ["### Attention from the answer positions (mean over inputs)", "", md_table(pd.DataFrame(rows), ".3f"), ""]
    for reading in readings_for(res.family):
        out += reading.markdown(res)
    out += [f"- {n}" for n in res.notes]
    return out


def summary_json(res: Interpretation) -> Dict[str, Any]:
    return {"task": res.task, "family": res.family, "findings": findings_table(res.family, res.scalars).to_dict("records"),
            "scalars": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in res.scalars.items()},
            "key_freqs": res.arrays.get("key_freqs"), "notes": res.notes}  # fmt: skip


def write_interpretation(model: Any, task: Any, out: Path, settings: Any = None, dpi: int = 130) -> Dict[str, Any]:
    """Run :func:`interpret`, write figures and CSV tables under ``out``; return
    ``{"result", "figures", "markdown", "json"}``."""
    res = interpret(model, task, settings)
    out.mkdir(parents=True, exist_ok=True)
    figs = plots.plot_all(res, out, dpi)
    for name, table in res.tables.items():
        table.to_csv(out / f"interp_{name}.csv", index=False)
    md = "\n".join(sections(res))
    md += "\n" + "\n".join(f"![{k}]({v.name})" for k, v in figs.items()) + "\n"
    return {"result": res, "figures": figs, "markdown": md, "json": summary_json(res)}

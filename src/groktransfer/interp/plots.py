"""Figures of an :class:`~groktransfer.interp.reading.Interpretation`: each reading names its own
(``Reading.figures``); :func:`plot_all` draws those of the readings that ran, and the failure
maps several readings leave.

Every function returns the written path, or None when the interpretation holds nothing
for that figure (the reading was switched off, or does not apply to the task).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch

from groktransfer.render import save_figure as _save

if TYPE_CHECKING:
    from .reading import Interpretation


def plot_head_ablation(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """Per head and site: loss increase and accuracy after ablation, per answer position."""
    tables = [(k.split("_")[-1], t) for k, t in res.tables.items() if k.startswith("head_ablation_")]
    if not tables:
        return None
    answers = list(dict.fromkeys(tables[0][1].answer))
    fig, axes = plt.subplots(
        len(tables) * len(answers), 2, figsize=(11, 3.2 * len(tables) * len(answers)), squeeze=False
    )
    row = 0
    for kind, t in tables:
        for answer in answers:
            d = t[t.answer == answer]
            heads = list(dict.fromkeys(f"L{a}H{b}" for a, b in zip(d.layer, d["head"])))
            sites = list(dict.fromkeys(d.site))
            width = 0.8 / len(sites)
            for i, site in enumerate(sites):
                ds = d[d.site == site]
                x = np.arange(len(heads)) + i * width
                axes[row, 0].bar(x, ds.d_loss, width, label=site)
                axes[row, 1].bar(x, ds.acc, width, label=site)
            clean = float(d.clean_acc.iloc[0])
            axes[row, 1].axhline(clean, color="k", ls="--", lw=1, label=f"clean {clean:.3f}")
            for ax, what in zip(axes[row], ("loss increase", "accuracy")):
                ax.set_xticks(np.arange(len(heads)) + 0.4 - width / 2, heads)
                ax.set_title(f"{kind}-ablation, answer '{answer}': {what}")
            axes[row, 1].legend(fontsize=8, title="ablated input", loc="upper left", bbox_to_anchor=(1.0, 1.0))
            row += 1
    fig.suptitle(f"Head ablations ({res.task}): z = head output; q/k/v = its query/key/value input")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_dla(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """Mean direct contribution to the correct answer's (centred) logit, and its split over
    output frequencies."""
    if "dla" not in res.tables:
        return None
    t, f = res.tables["dla"], res.tables.get("dla_fourier")
    answers = list(dict.fromkeys(t.answer))
    fig, axes = plt.subplots(
        len(answers),
        2,
        figsize=(13, max(3.5, 0.28 * t.part.nunique() + 1.5) * len(answers)),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 1.6]},
    )
    for i, answer in enumerate(answers):
        d = t[t.answer == answer]
        ax = axes[i, 0]
        ax.barh(d.part, d["mean"], xerr=d["std"], color=["#1f77b4" if v >= 0 else "#d62728" for v in d["mean"]])
        ax.invert_yaxis()
        ax.set_title(f"DLA to the correct answer '{answer}' (mean ± sd over inputs)")
        ax.set_xlabel("contribution to centred logit")
        ax = axes[i, 1]
        if f is None or f.empty:
            ax.axis("off")
            continue
        g = f[f.answer == answer].pivot(index="part", columns="freq", values="mean")
        g = g.loc[[p for p in dict.fromkeys(f.part) if p in g.index]]
        lim = float(np.nanmax(np.abs(g.values))) or 1.0
        im = ax.imshow(g.values, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_yticks(range(len(g.index)), g.index)
        step = max(1, len(g.columns) // 20)
        ax.set_xticks(range(0, len(g.columns), step), [str(c) for c in g.columns[::step]])
        ax.set_xlabel("output frequency (0 = constant)")
        ax.set_title("the same, split by output Fourier frequency")
        fig.colorbar(im, ax=ax, fraction=0.03)
    fig.suptitle(
        f"Direct logit attribution ({res.task}); completeness error {res.scalars.get('dla_completeness_error', float('nan')):.2g}"
    )
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_embedding(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """Scree plot, PC1 against PC2 coloured by token, and the embedding's Fourier norms."""
    pca = res.arrays.get("embedding_pca")
    if pca is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    k = min(10, len(pca.explained))
    axes[0].bar(range(1, k + 1), pca.explained[:k].numpy(), label="per PC")
    axes[0].plot(range(1, k + 1), np.cumsum(pca.explained[:k].numpy()), "k.-", label="cumulative")
    axes[0].set_xlabel("principal component")
    axes[0].set_title("operand embedding: explained variance")
    axes[0].legend()
    sc = pca.scores.numpy()
    if sc.shape[1] >= 2:
        pts = axes[1].scatter(sc[:, 0], sc[:, 1], c=np.arange(len(sc)), cmap="viridis", s=18)
        fig.colorbar(pts, ax=axes[1], label="token")
        axes[1].set_xlabel("PC1")
        axes[1].set_ylabel("PC2")
    axes[1].set_title("embedding on PC1, PC2")
    fn = res.tables.get("embedding_fourier")
    if fn is not None:
        axes[2].bar(fn.freq, fn.norm)
        axes[2].set_xlabel(f"input frequency (mod {fn.attrs.get('modulus')}; 0 = constant)")
        axes[2].set_title(f"W_E Fourier norms (Gini {fn.attrs.get('gini', float('nan')):.2f})")
    fig.suptitle(f"Embedding ({res.task})")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_spectra(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """Singular values of each weight matrix (first head of per-head weights) against a
    Gaussian control of the same shape and scale."""
    spec = res.tables.get("spectra")
    if spec is None or spec.empty:
        return None
    names = [w for w in dict.fromkeys(spec.weight) if "[" not in w or w.endswith("[0]")][:8]
    cols = 4
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        d = spec[spec.weight == name]
        ax.plot(d["index"], d.singular_value, "o-", ms=3, label="trained")
        ax.plot(d["index"], d.control, "s--", ms=3, color="grey", label="Gaussian control")
        if (d.singular_value > 0).any():
            ax.set_yscale("log")
        ax.set_title(
            f"{name}\neff. rank {d.effective_rank.iloc[0]:.1f} vs {d.control_effective_rank.iloc[0]:.1f}", fontsize=9
        )
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Singular values of the weights ({res.task})")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_probes(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """Held-out probe score (R^2 or accuracy) per hook/position and target."""
    t = res.tables.get("probes")
    if t is None or t.empty:
        return None
    g = t.assign(where=lambda d: d.hook + " @" + d.position.astype(str)).pivot(
        index="where", columns="target", values="score"
    )
    fig, ax = plt.subplots(figsize=(2 + 1.3 * g.shape[1], 1 + 0.45 * g.shape[0]))
    im = ax.imshow(g.values, cmap="viridis", vmin=min(0.0, float(np.nanmin(g.values))), vmax=1.0, aspect="auto")
    for (i, j), v in np.ndenumerate(g.values):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=8)
    ax.set_xticks(range(g.shape[1]), g.columns)
    ax.set_yticks(range(g.shape[0]), g.index)
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title(f"Ridge probes, held-out R² (regression) / accuracy (classes) ({res.task})")
    return _save(fig, path, dpi)


def plot_neurons(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """Neurons per dominant input frequency, and the most target-correlated neurons' maps."""
    cl, maps = res.arrays.get("clusters"), res.arrays.get("top_neuron_maps")
    if cl is None and maps is None:
        return None
    target, top = maps if maps is not None else (None, None)
    grids = top.attrs.get("maps") if top is not None else None
    n_maps = 0 if grids is None or top is None else len(top)
    fig, axes = plt.subplots(1, 1 + n_maps, figsize=(4.5 + 2.6 * n_maps, 3.4), squeeze=False)
    ax = axes[0, 0]
    if cl is not None:
        freqs = np.arange(1, len(cl.counts) + 1)
        live = cl.neuron_freq[cl.neuron_freq > 0]
        ax.bar(
            freqs, np.bincount(live.numpy(), minlength=len(freqs) + 1)[1:], color="#aec7e8", label="all live neurons"
        )
        ax.bar(freqs, cl.counts.numpy(), color="#1f77b4", label="share > threshold")
        ax.set_xlabel(f"dominant input frequency (mod {cl.modulus})")
        ax.set_title(f"neurons by dominant frequency\nkey: {cl.key_freqs}", fontsize=9)
        ax.legend(fontsize=7)
    else:
        ax.axis("off")
    for i in range(n_maps):
        assert grids is not None and top is not None
        ax = axes[0, 1 + i]
        ax.imshow(grids[i].numpy(), origin="lower", cmap="magma", aspect="auto")
        ax.set_title(f"neuron {int(top.neuron.iloc[i])}: r={top.r.iloc[i]:.2f} with {target}", fontsize=9)
        ax.set_xlabel("b")
        ax.set_ylabel("a")
    fig.suptitle(f"MLP neurons ({res.task})")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_attention(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """Mean attention of each head from each answer position to every position."""
    att = res.arrays.get("attention")
    if att is None:
        return None
    n_layers, n_heads, n_ans, seq = att.shape
    fig, axes = plt.subplots(
        1, n_layers, figsize=(1.2 + 0.7 * seq * n_layers + 1, 0.5 + 0.4 * n_heads * n_ans), squeeze=False
    )
    for layer in range(n_layers):
        ax = axes[0, layer]
        m = att[layer].reshape(n_heads * n_ans, seq).numpy()
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues", aspect="auto")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v > 0.6 else "k")
        ax.set_yticks(range(n_heads * n_ans), [f"H{h} ans{a}" for h in range(n_heads) for a in range(n_ans)])
        ax.set_xticks(range(seq))
        ax.set_xlabel("key position")
        ax.set_title(f"layer {layer}")
    fig.suptitle(f"Attention from the answer positions ({res.task})")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_failures(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """(a, b) maps of the inputs each ablation breaks (pair tasks)."""
    maps = [(k, v) for k, v in res.arrays.items() if k.endswith("_failure") and not hasattr(v[1], "columns")]
    if not maps:
        return None
    fig, axes = plt.subplots(1, len(maps), figsize=(4 * len(maps), 3.8), squeeze=False)
    for ax, (_, (name, grid)) in zip(axes.flat, maps):
        g = grid.numpy()
        ax.imshow(g, origin="lower", cmap="Reds", vmin=0, vmax=1)
        ax.set_title(f"{name}\n{int(np.nansum(g))} inputs broken", fontsize=9)
        ax.set_xlabel("b")
        ax.set_ylabel("a")
    fig.suptitle(f"Failure maps: red = right in the clean model, wrong after the ablation ({res.task})")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_qk_mean_query(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """Per layer-0 head: the position x position attention with mean queries and keys."""
    qk = res.arrays.get("qk_mean_query")
    if qk is None:
        return None
    fig, axes = plt.subplots(1, qk.shape[0], figsize=(4 * qk.shape[0], 3.8), squeeze=False)
    for h, ax in enumerate(axes.flat):
        ax.imshow(qk[h].numpy(), vmin=0, vmax=1, cmap="Blues")
        ax.set_title(f"L0H{h}")
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
    fig.suptitle(f"Layer-0 attention with mean queries and keys ({res.task})")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_unembed_circle(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """W_U's answer columns on its top two singular directions, and its power per frequency."""
    g = res.arrays.get("unembed_geometry")
    if g is None:
        return None
    fig, (ax, bx, gx) = plt.subplots(1, 3, figsize=(13.5, 4))
    xy = g.coords.numpy()
    ax.plot(*np.vstack([xy, xy[:1]]).T, color="0.7", lw=1)
    ax.scatter(xy[:, 0], xy[:, 1])
    for i, (x, y) in enumerate(xy):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4))
    ax.set_aspect("equal")
    ax.set_title("W_U columns on singular directions 1, 2")
    bx.bar(range(len(g.freq_share)), g.freq_share.numpy())
    bx.set_xlabel("frequency over the answer tokens")
    bx.set_ylabel("share of W_U's power")
    lim = float(g.gram.abs().max()) or 1.0
    im = gx.imshow(g.gram.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    gx.set_title("W_UᵀW_U (answer tokens)")
    gx.set_xlabel("token")
    gx.set_ylabel("token")
    fig.colorbar(im, ax=gx, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_prob_correct(res: Interpretation, path: Path, dpi: int = 130, n_examples: int = 60) -> Path | None:
    """Heatmap of the probability on the correct token, per example and answer position."""
    p = res.arrays.get("prob_correct")
    if p is None:
        return None
    fig, ax = plt.subplots(figsize=(3 + 0.5 * p.shape[1], 6))
    im = ax.imshow(p[:n_examples].numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xlabel("answer position")
    ax.set_ylabel("example")
    fig.colorbar(im, ax=ax, label="probability on the correct token")
    ax.set_title(f"first {min(n_examples, p.shape[0])} examples")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_pre_activation_maps(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """Pre-activation of the most a+b-correlated neurons on the (a, b) grid."""
    item = res.arrays.get("pre_activation_maps")
    if item is None:
        return None
    neurons, maps = item
    fig, axes = plt.subplots(1, len(neurons), figsize=(3.2 * len(neurons), 3.2), squeeze=False)
    for ax, n, m in zip(axes.flat, neurons, maps):
        im = ax.imshow(m.numpy(), origin="lower", cmap="RdBu_r")
        ax.set_title(f"neuron {n} (pre-ReLU)", fontsize=9)
        ax.set_xlabel("b")
        ax.set_ylabel("a")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_attention_by_class(res: Interpretation, path: Path, dpi: int = 130, per_class: int = 40) -> Path | None:
    """Per example: the last layer's attention from the answer position whose carry classes
    differ most, up to ``per_class`` examples of each class stacked (classes separated by a
    line), one panel per head."""
    t, patterns = res.tables.get("attention_by_class"), res.arrays.get("attention_per_example")
    classes = res.arrays.get("answer_classes")
    if t is None or patterns is None or classes is None or not bool((t.tv > 0).any()):
        return None
    best = t.loc[t.tv.idxmax()]
    answers = list(dict.fromkeys(t.answer))
    j = answers.index(best.answer)
    names = list(dict.fromkeys(t[t.answer == best.answer].cls))
    n_heads, seq = patterns.shape[1], patterns.shape[-1]
    rows, bounds, labels = [], [], []
    for cname in names:
        idx = (classes[:, j] == res.arrays["class_names"].index(cname)).nonzero().flatten()[:per_class]
        rows.append(patterns[idx, :, j])  # [k, head, seq]
        labels.append((sum(len(r) for r in rows) - len(idx) / 2, f"{cname} ({len(idx)})"))
        bounds.append(sum(len(r) for r in rows))
    stacked = torch.cat(rows).numpy()
    fig, axes = plt.subplots(1, n_heads, figsize=(1 + 2.2 * n_heads, 0.8 + 0.05 * len(stacked)), squeeze=False)
    for h, ax in enumerate(axes.flat):
        ax.imshow(stacked[:, h], vmin=0, vmax=1, cmap="Blues", aspect="auto", interpolation="nearest")
        for b in bounds[:-1]:
            ax.axhline(b - 0.5, color="r", lw=1)
        ax.set_xticks(range(seq))
        ax.set_xlabel("key position")
        ax.set_title(f"L{int(best.layer)}H{h}")
        ax.set_yticks([y for y, _ in labels], [s for _, s in labels] if h == 0 else [])
    fig.suptitle(f"Per-example attention from {best.answer} by carry class ({res.task})")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_pc_token_fits(res: Interpretation, path: Path, dpi: int = 130) -> Path | None:
    """Each of the top embedding PCs' score against the token, with its linear and quadratic fits."""
    t, pca = res.tables.get("pc_token_fits"), res.arrays.get("embedding_pca")
    if t is None or pca is None:
        return None
    tok = np.arange(pca.scores.shape[0])
    fig, axes = plt.subplots(1, len(t), figsize=(4 * len(t), 3.5), squeeze=False)
    for ax, r in zip(axes.flat, t.itertuples()):
        ax.scatter(tok, pca.scores[:, r.pc - 1].numpy(), color="k", s=16, zorder=3)
        lin = np.polyval(np.polyfit(tok, pca.scores[:, r.pc - 1].numpy(), 1), tok)
        ax.plot(tok, lin, label=f"linear R² {r.linear_r2:.3f}")
        ax.plot(tok, r.quad_intercept + r.quad_t * tok + r.quad_t2 * tok**2, label=f"quadratic R² {r.quadratic_r2:.3f}")
        ax.set_xlabel("token")
        ax.set_ylabel(f"PC{r.pc} score")
        ax.set_title(f"PC{r.pc} ({r.explained:.0%} of the variance)")
        ax.legend(fontsize=8)
    fig.suptitle(f"Embedding PCs against the token ({res.task})")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_all(res: Interpretation, out: Path, dpi: int = 130, prefix: str = "interp_") -> dict[str, Path]:
    """Every figure that has something to show: {name: path}."""
    from .reading import READINGS

    ran = set(res.ran)
    figures = [(name, fn) for r in READINGS.in_order() if r.name in ran for name, fn in r.figures]
    figures.append(("failures", plot_failures))  # the (a, b) failure maps of every ablation that left one
    written = {name: fn(res, out / f"{prefix}{name}.png", dpi) for name, fn in figures}
    return {k: v for k, v in written.items() if v is not None}

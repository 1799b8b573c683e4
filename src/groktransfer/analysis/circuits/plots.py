"""Figures of the circuit analysis.

Design choices, for a reader comparing a source model with transfer conditions:

* one row (or column) per model group -- the source first, then each condition in the
  report's order and colours (``groktransfer.render.style``), so "source vs conditions" is read
  top to bottom against the same frequency axis;
* the source's key frequencies are shaded in every frequency panel, so whether a
  condition reuses them is visible without reading numbers;
* spread across seeds is drawn as the seeds themselves (dots over the median bar),
  because seeds can pick *different* frequencies: a low median bar with scattered
  dots means "strong but seed-specific frequencies", not "no structure";
* every heatmap cell is annotated, so no colour has to be decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from groktransfer.interp.circuit.attention import head_labels, position_labels
from groktransfer.interp.circuit.neurons import SPECIALISED
from groktransfer.interp.circuit.profile import CircuitProfile
from groktransfer.interp.circuit.similarity import METRICS
from groktransfer.render import SOURCE_COLOR, condition_colors, save_figure

#: The five metrics drawn as matrices (all of METRICS are in circuits_similarity.csv).
FIGURE_METRICS = ("jaccard", "hist_intersection", "mass_similarity", "neurons_kept", "frac_spearman")
KEY_SHADE = "#cfeccf"  # light tint of the source green: "the source's key frequencies"

Group = tuple[str, list[tuple[str, CircuitProfile]]]  # (title, [(model label, profile)])


def group_colors(names: Sequence[str]) -> dict[str, str]:
    """Condition colours from the shared style; the source gets its own fixed green."""
    colors = condition_colors([n for n in names if n != "source"])
    colors["source"] = SOURCE_COLOR
    return colors


def _lighten(color: str, amount: float = 0.55) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def _spread(values: Sequence[float], pct: bool = False) -> str:
    """``median [min–max]`` (just the value when all agree), as % when ``pct``."""
    v = np.asarray(values, dtype=float)
    f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:g}")
    med = f(float(np.median(v)))
    return med if v.min() == v.max() else f"{med} [{f(v.min())}–{f(v.max())}]"


def _spectrum_size(max_freq: int, n_panels: int) -> tuple[float, float]:
    """Wide enough for one bar per frequency and a one-line panel title; 1.9 in per panel."""
    return (min(max(8.5, 3 + 0.17 * max_freq), 13.5), 1.9 * n_panels + 1.1)


def _freq_ticks(ax: plt.Axes, max_freq: int) -> None:
    """Every frequency up to 20, odd ones up to 40, then 1, 5, 10, ..."""
    if max_freq <= 20:
        ticks = list(range(1, max_freq + 1))
    elif max_freq <= 40:
        ticks = list(range(1, max_freq + 1, 2))
    else:
        ticks = [1] + list(range(5, max_freq + 1, 5))
    ax.set_xticks(ticks)
    ax.set_xlim(0.4, max_freq + 0.6)


def _shade_keys(ax: plt.Axes, key_freqs: Sequence[int]) -> None:
    for w in key_freqs:
        ax.axvspan(w - 0.5, w + 0.5, color=KEY_SHADE, zorder=0, lw=0)


def _adjust(
    fig: plt.Figure,
    left_in: float = 0.8,
    right_in: float = 0.2,
    top_in: float = 0.6,
    bottom_in: float = 0.6,
    hspace: float = 0.4,
    wspace: float = 0.2,
) -> None:
    """Margins in inches (so they hold labels whatever the figure size), set once.

    Figures are saved without ``bbox_inches="tight"`` and without ``tight_layout``: each
    costs a full extra draw (~40% of a figure's time), and the circuit figures are
    laid out explicitly instead.
    """
    w, h = fig.get_size_inches()
    fig.subplots_adjust(
        left=left_in / w, right=1 - right_in / w, top=1 - top_in / h, bottom=bottom_in / h, hspace=hspace, wspace=wspace
    )


def _title_and_legend(fig: plt.Figure, title: str, handles: Sequence[Artist]) -> None:
    """Title on the first line, the figure's legend on a second line below it (right
    aligned), so neither covers the other nor any data; leaves 0.85 in for both."""
    h = fig.get_size_inches()[1]
    fig.suptitle(title, fontsize=11, x=0.01, y=1 - 0.06 / h, ha="left", va="top")
    if handles:
        fig.legend(
            handles=handles,
            loc="upper right",
            bbox_to_anchor=(0.98, 1 - 0.34 / h),
            fontsize=8,
            frameon=False,
            ncol=len(handles),
        )


def _with_fourier(groups: Sequence[Group]) -> list[Group]:
    """Groups restricted to models with Fourier measures on the most common modulus
    (frequency axes of different group sizes cannot share one x axis)."""
    moduli = [p.modulus for _, members in groups for _, p in members if p.has_fourier]
    if not moduli:
        return []
    n = max(set(moduli), key=moduli.count)
    out = []
    for title, members in groups:
        kept = [(lab, p) for lab, p in members if p.has_fourier and p.modulus == n]
        if kept:
            out.append((title, kept))
    return out


# --------------------------------------------------------------------------- spectra
def plot_logit_spectrum(
    groups: Sequence[Group],
    source_keys: Sequence[int],
    colors: dict[str, str],
    path: Path,
    dpi: int = 130,
    title: str = "",
    shade_label: str = "source key frequencies",
) -> Path | None:
    """Per group: share of logit variance along each frequency's target directions
    (median bar over the group's models, one dot per model), source key freqs shaded."""
    groups = _with_fourier(groups)
    if not groups:
        return None
    max_freq = int(groups[0][1][0][1].logits.freqs.max())  # type: ignore[union-attr]
    fig, axes = plt.subplots(len(groups), 1, figsize=_spectrum_size(max_freq, len(groups)), sharex=True, squeeze=False)
    for ax, (name, members) in zip(axes[:, 0], groups):
        fr = np.stack([p.logits.frac for _, p in members])  # type: ignore[union-attr]
        freqs = members[0][1].logits.freqs  # type: ignore[union-attr]
        _shade_keys(ax, source_keys)
        ax.bar(freqs, np.nanmedian(fr, axis=0), width=0.8, color=colors.get(name, "#444"), alpha=0.9, zorder=2)
        if len(members) > 1:
            jitter = np.linspace(-0.18, 0.18, len(members))
            for j, row in zip(jitter, fr):
                visible = row > 0.005  # dots at ~0 would only hide the axis
                ax.scatter(freqs[visible] + j, row[visible], s=8, color="black", alpha=0.6, zorder=3, lw=0)
        resid = [p.logits.residual_frac for _, p in members]  # type: ignore[union-attr]
        directions = members[0][1].logits.directions  # type: ignore[union-attr]
        ax.set_title(
            f"{name} (n={len(members)}) — directions {directions}; "
            f"unexplained by any frequency: {np.nanmedian(resid):.0%}",
            fontsize=9.5,
            loc="left",
        )
        ax.set_ylabel("share of\nlogit variance", fontsize=8.5)
        ax.set_ylim(0, max(0.05, float(np.nanmax(fr)) * 1.12))
        ax.grid(axis="x", visible=False)
    _freq_ticks(axes[-1, 0], max_freq)
    axes[-1, 0].set_xlabel("frequency w")
    handles: list[Artist] = [Patch(color=KEY_SHADE, label=shade_label)]
    if any(len(m) > 1 for _, m in groups):
        handles.append(Line2D([], [], ls="", marker="o", ms=3, color="black", label="one model (seed)"))
    _title_and_legend(
        fig,
        title or "Logit Fourier spectrum in each task's own directions (bar = median over seeds)",
        handles if source_keys else handles[1:],
    )
    _adjust(fig, left_in=0.85, top_in=0.95, bottom_in=0.55, hspace=0.55)
    return save_figure(fig, path, dpi, tight=False)


def plot_neuron_histograms(
    groups: Sequence[Group],
    source_keys: Sequence[int],
    colors: dict[str, str],
    path: Path,
    dpi: int = 130,
    title: str = "",
) -> Path | None:
    """Per group: neurons per dominant frequency, mean over the group's models, split
    into share > key threshold (dark) and 0.5 < share <= threshold (light); the shaded
    frequencies are ``source_keys``."""
    groups = _with_fourier(groups)
    if not groups:
        return None
    first = groups[0][1][0][1].neurons
    assert first is not None
    max_freq, thr = first.max_freq, first.key_freq_threshold
    freqs = np.arange(1, max_freq + 1)
    fig, axes = plt.subplots(len(groups), 1, figsize=_spectrum_size(max_freq, len(groups)), sharex=True, squeeze=False)
    for ax, (name, members) in zip(axes[:, 0], groups):
        ns = [p.neurons for _, p in members]
        strong = np.mean([n.histogram(thr) for n in ns], axis=0)  # type: ignore[union-attr]
        mid = np.mean([n.histogram(SPECIALISED) for n in ns], axis=0) - strong  # type: ignore[union-attr]
        c = colors.get(name, "#444")
        _shade_keys(ax, source_keys)
        ax.bar(freqs, strong, width=0.8, color=c, zorder=2)
        ax.bar(freqs, mid, width=0.8, bottom=strong, color=_lighten(c), zorder=2)
        d = ns[0].d_mlp  # type: ignore[union-attr]
        over_t = _spread([n.n_over(thr) / d for n in ns], pct=True)  # type: ignore[union-attr]
        over_h = _spread([n.n_over(SPECIALISED) / d for n in ns], pct=True)  # type: ignore[union-attr]
        dead = _spread([n.n_dead for n in ns])  # type: ignore[union-attr]
        ax.set_title(
            f"{name} (n={len(members)}) — neurons with share > {thr:g}: {over_t}; > {SPECIALISED:g}: "
            f"{over_h}; dead: {dead} of {d}",
            fontsize=9.5,
            loc="left",
        )
        ax.set_ylabel("neurons", fontsize=8.5)
        ax.grid(axis="x", visible=False)
    _freq_ticks(axes[-1, 0], max_freq)
    axes[-1, 0].set_xlabel("dominant frequency w of the neuron")
    handles = [
        Patch(color="#555555", label=f"share of the neuron's variance > {thr:g}"),
        Patch(color=_lighten("#555555"), label=f"{SPECIALISED:g} < share ≤ {thr:g}"),
    ]
    if source_keys:
        handles.append(
            Patch(color=KEY_SHADE, label="key frequencies" if len(groups) == 1 else "source key frequencies")
        )
    several = any(len(m) > 1 for _, m in groups)
    _title_and_legend(
        fig,
        title
        or (
            "MLP neurons per dominant frequency (bars: mean over seeds; title numbers: median [range])"
            if several
            else "MLP neurons per dominant frequency"
        ),
        handles,
    )
    _adjust(fig, left_in=0.85, top_in=0.95, bottom_in=0.55, hspace=0.55)
    return save_figure(fig, path, dpi, tight=False)


# --------------------------------------------------------------------------- attention
def plot_attention(
    groups: Sequence[Group], colors: dict[str, str], path: Path, dpi: int = 130, title: str = ""
) -> Path | None:
    """Per group, a heatmap with one row per (model, head) and columns a, b, =: the
    mean attention of the last ('=') query. Rows of one model sum to 1; a model's
    (short) label, if not empty, prefixes its head names."""
    groups = [g for g in groups if g[1]]
    if not groups:
        return None
    n_rows = [sum(p.attention.shape[0] * p.attention.shape[1] for _, p in m) for _, m in groups]
    n_ctx = groups[0][1][0][1].attention.shape[-1]
    longest = max(len(lab) + 6 for _, m in groups for lab, _ in m)
    label_in = 0.065 * longest + 0.15  # room for "<model> h3" row labels left of every panel
    panel_in, right_in = 1.9, 1.35
    width = label_in + right_in + len(groups) * panel_in + (len(groups) - 1) * (label_in + 0.25)
    height = max(2.8, 0.24 * max(n_rows) + 1.4)
    fig, axes = plt.subplots(1, len(groups), figsize=(width, height), squeeze=False)
    _adjust(fig, left_in=label_in, right_in=right_in, top_in=1.0, bottom_in=0.15, wspace=(label_in + 0.25) / panel_in)
    image = None
    for ax, (name, members), rows in zip(axes[0], groups, n_rows):
        mats, labels, bounds = [], [], []
        for label, prof in members:
            att = prof.attention.reshape(-1, n_ctx)
            mats.append(att)
            prefix = f"{label} " if label else ""
            labels += [prefix + h for h in head_labels(prof.attention)]
            bounds.append(sum(m.shape[0] for m in mats))
        mat = np.concatenate(mats)
        image = ax.imshow(mat, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        if rows <= 32:
            for (i, j), v in np.ndenumerate(mat):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.6 else "black")
        for b in bounds[:-1]:
            ax.axhline(b - 0.5, color="white", lw=2.5)
        ax.set_xticks(range(n_ctx), position_labels(n_ctx))
        ax.set_yticks(range(len(labels)), labels, fontsize=7 if rows > 12 else 8)
        ax.tick_params(axis="x", labeltop=True, labelbottom=False, top=True, bottom=False)
        ax.set_title(
            name, color=colors.get(name, "black"), fontsize=10, fontweight="bold", pad=4, y=1.0 + 0.45 / height
        )
        ax.grid(False)
    if image is not None:
        cax = fig.add_axes((1 - 1.2 / width, 0.2, 0.12 / width, 0.6))
        fig.colorbar(image, cax=cax, label="attention from '='")
    fig.suptitle(
        title or "Attention of the '=' position to a, b, = (mean over all inputs; one row per head)",
        fontsize=10.5,
        x=0.01,
        y=0.995,
        ha="left",
        va="top",
    )
    return save_figure(fig, path, dpi, tight=False)


# --------------------------------------------------------------------------- similarity
def plot_similarity(
    df: pd.DataFrame, ents: Sequence[str], colors: dict[str, str], path: Path, dpi: int = 130, title: str = ""
) -> Path | None:
    """Annotated ``ref × other`` matrices, one per metric: mean ± sd over model pairs.
    ``df`` is the long frame of ``tables.similarity_frame``."""
    if df.empty or not ents:
        return None
    k = len(ents)
    cell = 0.95 if k <= 4 else 0.8
    fig, axes = plt.subplots(2, 3, figsize=(3 * max(cell * k + 1.3, 3.4), 2 * max(cell * k + 1.2, 3.1)))
    for ax, metric in zip(axes.flat, FIGURE_METRICS):
        sub = df[df.metric == metric].set_index(["ref", "other"])
        mean = np.array([[sub.loc[(a, b), "mean"] for b in ents] for a in ents], dtype=float)
        sd = np.array([[sub.loc[(a, b), "sd"] for b in ents] for a in ents], dtype=float)
        n = np.array([[sub.loc[(a, b), "n"] for b in ents] for a in ents], dtype=int)
        lo = -1.0 if metric == "frac_spearman" else 0.0
        cmap = plt.get_cmap("RdBu_r" if lo < 0 else "viridis").with_extremes(bad="#eeeeee")
        ax.imshow(np.ma.masked_invalid(mean), cmap=cmap, vmin=lo, vmax=1.0)
        for (i, j), v in np.ndenumerate(mean):
            if not np.isfinite(v):
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=7.5, color="#888")
                continue
            spread = f"\n±{sd[i, j]:.2f}" if np.isfinite(sd[i, j]) else ""
            dark = (v - lo) / (1 - lo) < 0.55 if lo == 0 else abs(v) > 0.6
            ax.text(
                j,
                i,
                f"{v:.2f}{spread}\nn={n[i, j]}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
                linespacing=1.1,
            )
        ax.set_xticks(range(k), ents, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(k), ents, fontsize=8)
        for lab in list(ax.get_xticklabels()) + list(ax.get_yticklabels()):
            lab.set_color(colors.get(lab.get_text(), "black"))
        ax.set_title(METRICS[metric], fontsize=9.5)
        ax.grid(False)
    notes = axes.flat[-1]
    notes.axis("off")
    notes.text(
        0,
        1,
        (
            "How to read\n\n"
            "row = reference, column = compared model\n"
            "cell = mean ± sd over model pairs (n)\n"
            "diagonal = pairs of different seeds\n   of the same condition\n\n"
            "neuron-matched metrics (bottom row)\n"
            "exist only for pairs whose MLP started\n"
            "from the same weights; n/a otherwise\n\n"
            "'neurons keeping their frequency' is\n"
            "directional: share of the row model's\n"
            "specialised neurons (> 0.5) that have the\n"
            "same frequency in the column model"
        ),
        va="top",
        fontsize=8,
        family="sans-serif",
    )
    fig.suptitle(
        title or "Circuit similarity between the source and the conditions (aggregated over seeds)",
        fontsize=11,
        x=0.01,
        ha="left",
    )
    _adjust(fig, left_in=1.0, right_in=0.2, top_in=0.75, bottom_in=0.85, hspace=0.5, wspace=0.45)
    return save_figure(fig, path, dpi, tight=False)


# --------------------------------------------------------------------------- per-model fingerprint
def plot_fingerprint(
    rows: Sequence[tuple[str, str, CircuitProfile]], colors: dict[str, str], path: Path, dpi: int = 130, title: str = ""
) -> Path | None:
    """Models × frequencies, two panels: logit variance share and neuron frequency mass.
    Dots mark each model's key frequencies. ``rows`` = (group, row label, profile)."""
    rows = [r for r in rows if r[2].has_fourier]
    if not rows:
        return None
    moduli = [r[2].modulus for r in rows]
    rows = [r for r in rows if r[2].modulus == max(set(moduli), key=moduli.count)]
    max_freq = int(rows[0][2].logits.freqs.max())  # type: ignore[union-attr]
    logit = np.stack([r[2].logits.frac for r in rows])  # type: ignore[union-attr]
    mass = np.stack([r[2].neurons.mass for r in rows])  # type: ignore[union-attr]
    width = min(3.0 + 0.13 * max_freq, 9.0)
    label_in = 0.065 * max(len(r[1]) for r in rows) + 0.3
    fig, axes = plt.subplots(1, 2, figsize=(2 * width + label_in, 0.28 * len(rows) + 1.9), sharey=True)
    for ax, data, label in ((axes[0], logit, "share of logit variance"), (axes[1], mass, "share of neuron variance")):
        vmax = max(float(np.nanmax(data)), 1e-6)
        im = ax.imshow(
            data,
            cmap="magma_r",
            vmin=0,
            vmax=vmax,
            aspect="auto",
            extent=(0.5, max_freq + 0.5, len(rows) - 0.5, -0.5),
            interpolation="nearest",
        )
        for i, (_, _, prof) in enumerate(rows):
            if prof.key_freqs:
                ax.scatter(
                    prof.key_freqs,
                    [i] * len(prof.key_freqs),
                    s=9,
                    facecolor="none",
                    edgecolor="#1fbfbf",
                    lw=0.9,
                    zorder=3,
                )
        _freq_ticks(ax, max_freq)
        ax.set_xlabel("frequency w")
        ax.set_title(label, fontsize=10)
        ax.grid(False)
        fig.colorbar(im, ax=ax, shrink=0.8, pad=0.01, format=PercentFormatter(1.0, decimals=None))
    axes[0].set_yticks(range(len(rows)), [r[1] for r in rows], fontsize=8)
    for lab, (group, _, _) in zip(axes[0].get_yticklabels(), rows):
        lab.set_color(colors.get(group, "black"))
    fig.suptitle(
        title or "Frequency fingerprint of every model (circles: key frequencies)", fontsize=11, x=0.01, ha="left"
    )
    axes[1].tick_params(axis="y", left=False)
    _adjust(fig, left_in=label_in, right_in=0.2, top_in=0.75, bottom_in=0.55, wspace=0.18)
    return save_figure(fig, path, dpi, tight=False)


# --------------------------------------------------------------------------- transfer summary
def plot_transfer(
    runs: pd.DataFrame,
    conditions: Sequence[str],
    colors: dict[str, str],
    path: Path,
    source_acc: float | None,
    chance: float | None,
    dpi: int = 130,
    source_task: str = "",
    ceiling: float | None = None,
    title: str = "",
) -> Path | None:
    """Per condition, one marker per seed: Jaccard of key (hollow) and dominant (filled)
    frequencies with the source, frequency-mass similarity to the source, and accuracy on
    the source task (retention), with the source's own accuracy, chance, and the ceiling
    for a model that solves the target perfectly."""
    if runs.empty or not conditions:
        return None
    panels = [
        (("jaccard_to_source", "jaccard_dominant_to_source"), "frequency Jaccard with the source"),
        (("mass_similarity_to_source",), "frequency-mass ∩ with the source"),
        (("retention_acc",), f"accuracy on the source task{' (' + source_task + ')' if source_task else ''}"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(max(10.5, 1.15 * len(conditions) * 3 + 2.5), 4.1))
    rng = np.random.default_rng(0)
    for ax, (cols, label) in zip(axes, panels):
        for i, cond in enumerate(conditions):
            c = colors.get(cond, "#444")
            shown = False
            for k, col in enumerate(cols):
                vals = runs.loc[runs.condition == cond, col].to_numpy(dtype=float)
                vals = vals[np.isfinite(vals)]
                if vals.size == 0:
                    continue
                shown = True
                offset = (k - (len(cols) - 1) / 2) * 0.22
                x = i + offset + rng.uniform(-0.06, 0.06, vals.size)
                hollow = len(cols) > 1 and k == 0
                ax.scatter(x, vals, s=30, facecolor="white" if hollow else c, edgecolor=c, lw=1.2, zorder=3)
                ax.hlines(np.median(vals), i + offset - 0.12, i + offset + 0.12, color=c, lw=2.2, zorder=2)
            if not shown:
                ax.text(i, 0.5, "n/a", ha="center", va="center", color="#888", fontsize=8)
        below = dict(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=7.5, frameon=False, ncol=2)
        if len(cols) > 1:
            ax.legend(
                handles=[
                    Line2D([], [], ls="", marker="o", mfc="white", mec="#444", label="key freqs"),
                    Line2D([], [], ls="", marker="o", color="#444", label="dominant freqs"),
                ],
                **below,
            )
        if cols[0] == "retention_acc":
            if source_acc is not None and np.isfinite(source_acc):
                ax.axhline(
                    source_acc, color=SOURCE_COLOR, ls="--", lw=1.1, label=f"source model on its task: {source_acc:.3f}"
                )
            if chance:
                same = ceiling is not None and abs(ceiling - chance) < 1e-9
                extra = " = ceiling for a perfect target solver" if same else ""
                ax.axhline(chance, color="#555", ls=":", lw=1.1, label=f"chance 1/p = {chance:.3f}{extra}")
            if ceiling is not None and np.isfinite(ceiling) and not (chance and abs(ceiling - chance) < 1e-9):
                ax.axhline(
                    ceiling, color="#b22", ls="-.", lw=1.0, label=f"ceiling for a perfect target solver: {ceiling:.3f}"
                )
            if ax.get_legend_handles_labels()[0]:
                ax.legend(**{**below, "ncol": 1})
        ax.set_xticks(range(len(conditions)), conditions)
        for lab in ax.get_xticklabels():
            lab.set_color(colors.get(lab.get_text(), "black"))
        ax.set_xlim(-0.6, len(conditions) - 0.4)
        ax.set_ylim(-0.03, 1.05)
        ax.set_title(label, fontsize=9.5)
    fig.suptitle(
        title or "Does the source's algorithm carry over? (marker = seed, bar = median)", fontsize=11, x=0.01, ha="left"
    )
    _adjust(fig, left_in=0.55, right_in=0.2, top_in=0.75, bottom_in=0.95, wspace=0.25)
    return save_figure(fig, path, dpi, tight=False)

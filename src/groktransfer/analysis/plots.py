"""The analysis figures: epochs to threshold, test curves, progress measures.

Why these choices: a reader should get the answer ("does transfer from a grokked
model speed up grokking?") at a glance, and should never mistake a lower bound
for a measurement -- so censored runs are drawn as hollow upward triangles (the
true value is above) and counted in the legend, every figure uses the same
colour per condition, and log axes are used only when values span more than
``log_span``×. Curves show the median across seeds with the inter-quartile band;
see ``curves.py`` for how seeds are put on a common epoch grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, SymmetricalLogLocator

from groktransfer.render import apply_theme, save_figure

from .curves import interpolated
from .stats import threshold_key

#: the progress figure is at least this wide (inches), so its legend fits under one panel
MIN_MEASURES_WIDTH = 7.5

MEASURE_LABELS = {
    "restricted_loss": ("Restricted loss", "loss (key frequencies only)"),
    "excluded_loss": ("Excluded loss", "train loss (key freqs removed)"),
    "restricted_acc": ("Restricted accuracy", "accuracy"),
    "excluded_acc": ("Excluded accuracy", "accuracy"),
    "weight_norm_total": ("Total sum of squared weights", "Σ w²"),
    "n_key_freqs": ("Key frequencies", "count"),
    "gini_W_E": ("Gini of W_E Fourier norms", "Gini coefficient"),
    "gini_W_L": ("Gini of W_L = W_out·W_U Fourier norms", "Gini coefficient"),
}


def _epoch_formatter(x: float, _pos: int) -> str:
    """Plain epoch numbers on log axes (1k, 10k instead of 10^3)."""
    if x <= 0:
        return "0"
    if x >= 1000:
        v = x / 1000
        return f"{v:g}k"
    return f"{x:g}"


def _needs_log(values: np.ndarray, span: float) -> bool:
    pos = values[np.isfinite(values) & (values > 0)]
    return pos.size > 1 and pos.max() / pos.min() > span


def _set_epoch_scale(ax: plt.Axes, axis: str, values: np.ndarray, span: float) -> None:
    """Log epoch axis if values span > ``span``×; symlog (linear near 0) if zeros are present.

    Epoch 0 matters for transfer runs (the starting accuracy), so it is kept on a
    short linear segment rather than dropped from a pure log axis.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not _needs_log(v, span):
        return
    setter = ax.set_xscale if axis == "x" else ax.set_yscale
    target = ax.xaxis if axis == "x" else ax.yaxis
    pos = v[v > 0]
    if (v <= 0).any():
        setter("symlog", linthresh=float(pos.min()), linscale=0.25)
        subs = (1.0, 2.0, 5.0) if pos.max() / pos.min() < 1e4 else (1.0,)
        target.set_major_locator(SymmetricalLogLocator(linthresh=float(pos.min()), base=10, subs=subs))
        if axis == "x":  # symlog margins would go negative
            ax.set_xlim(left=0)
        else:
            ax.set_ylim(bottom=0)
    else:
        setter("log")
        if pos.max() / pos.min() < 1e3:  # few decades: label 1-2-5 steps, not only powers of 10
            target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            target.set_minor_formatter(NullFormatter())
    target.set_major_formatter(FuncFormatter(_epoch_formatter))


def _set_value_log_scale(ax: plt.Axes, values: np.ndarray, span: float) -> None:
    """Log y for losses -- but only when the plotted values span more than ``span``×.

    A loss that stays within one decade (a run that never generalised) reads better
    on a linear axis than on a log axis with ``4×10⁰ 6×10⁰`` ticks.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if not _needs_log(v, span):
        return
    ax.set_yscale("log")
    if v.max() / v.min() < 1e3:  # a few decades: 1-2-5 ticks as plain numbers
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _p: f"{x:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


# --------------------------------------------------------------------------- epochs to threshold


def _spread(values: np.ndarray, width: float = 0.36) -> np.ndarray:
    """Horizontal offsets: evenly spaced in value order, so tied points (several runs
    censored at the same max_epochs) sit side by side instead of on top of each other.
    Deterministic, unlike random jitter: the same data always gives the same picture."""
    n = values.size
    if n <= 1:
        return np.zeros(n)
    offsets = np.linspace(-width / 2, width / 2, n)
    out = np.empty(n)
    out[np.argsort(values, kind="stable")] = offsets
    return out


def plot_epochs_to_threshold(
    obs: pd.DataFrame,
    thresholds: Sequence[float],
    conditions: Sequence[str],
    colors: Mapping[str, str],
    path: Path,
    n_excluded: int = 0,
    log_span: float = 10.0,
    dpi: int = 130,
    title: str = "",
) -> Path | None:
    """One panel per threshold: box per condition plus one point per seed.

    ``obs`` is ``stats.observations_frame`` restricted to included rows. Filled
    circles reached the threshold; hollow upward triangles are censored at their
    last epoch. The box summarises both (same substitution as the statistics).
    """
    if obs.empty or not thresholds:
        return None
    apply_theme()
    conds = [c for c in conditions if c in set(obs.condition)]
    k = len(thresholds)
    fig, axes = plt.subplots(1, k, figsize=(max(3.4 * k, 5.0), 4.8), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], thresholds):
        g = obs[obs.threshold == t]
        for i, cond in enumerate(conds):
            gc = g[g.condition == cond]
            vals = gc.value.to_numpy(dtype=float)
            if vals.size == 0:
                continue
            bp = ax.boxplot(
                vals,
                positions=[i],
                widths=0.55,
                showfliers=False,
                patch_artist=True,
                medianprops={"color": "black", "lw": 1.6},
                whiskerprops={"color": "0.4"},
                capprops={"color": "0.4"},
                boxprops={"edgecolor": "0.4"},
            )
            bp["boxes"][0].set_facecolor(colors[cond])
            bp["boxes"][0].set_alpha(0.25)
            cens = gc.censored.to_numpy(dtype=bool)
            x = i + _spread(vals)
            ax.scatter(x[~cens], vals[~cens], s=36, color=colors[cond], edgecolor="white", lw=0.6, zorder=3)
            ax.scatter(
                x[cens],
                vals[cens],
                s=64,
                marker="^",
                facecolor="white",
                edgecolor=colors[cond],
                lw=1.6,
                zorder=4,
            )
        n_reached = int((~g.censored.astype(bool)).sum())
        n_cens = int(g.censored.astype(bool).sum())
        handles = [
            Line2D([], [], ls="", marker="o", color="0.3", label=f"reached (n={n_reached})"),
            Line2D(
                [],
                [],
                ls="",
                marker="^",
                markerfacecolor="white",
                color="0.3",
                mew=1.5,
                label=f"censored at last epoch (n={n_cens})",
            ),
        ]
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
        ax.set_title(f"test acc ≥ {threshold_key(t)}")
        counts = g.groupby("condition").size()
        ax.set_xticks(range(len(conds)), [f"{c}\nn={int(counts.get(c, 0))}" for c in conds])
        ax.set_xlim(-0.6, len(conds) - 0.4)
        ax.set_xlabel("")
    _set_epoch_scale(axes[0][0], "y", obs.value.to_numpy(dtype=float), log_span)
    ymax = np.nanmax(obs.value.to_numpy(dtype=float))
    if axes[0][0].get_yscale() == "linear":
        axes[0][0].set_ylim(bottom=min(0, np.nanmin(obs.value)), top=ymax * 1.22 + 1)
    elif axes[0][0].get_yscale() == "symlog":  # zeros present: keep them off the frame
        linthresh = axes[0][0].yaxis.get_transform().linthresh
        axes[0][0].set_ylim(-0.25 * linthresh, ymax * 3.0)
    else:
        lo, _ = axes[0][0].get_ylim()
        axes[0][0].set_ylim(lo, ymax * 3.0)  # head-room for the legend
    axes[0][0].set_ylabel("epochs to threshold")
    note = "Box: quartiles and median of reached and censored values (censored at last epoch).  "
    note += "Hollow ▲ = never reached the threshold: true value is higher."
    if n_excluded:
        note += f"\nNot shown: {n_excluded} run(s) that did not complete (failed / running / stopped / crashed)."
    fig.text(0.01, 0.005, note, fontsize=8, color="0.3", va="bottom")
    fig.suptitle(title or "Epochs to test-accuracy threshold", fontsize=12)
    fig.tight_layout(rect=(0, 0.07 if n_excluded else 0.045, 1, 1))
    return save_figure(fig, path, dpi, tight=False)


# --------------------------------------------------------------------------- curves


def _draw_band(
    ax: plt.Axes, dfs: Sequence[pd.DataFrame], column: str, color: str, after_end: str, max_points: int
) -> np.ndarray:
    """Median line and inter-quartile band of ``column`` over the runs ``dfs`` (seaborn draws them
    from every run's values on the common grid); returns the values drawn (to choose the y scale)."""
    long = interpolated(dfs, column, after_end, max_points)
    if long.empty:
        return np.array([])
    sns.lineplot(
        data=long,
        x="epoch",
        y="value",
        estimator="median",
        errorbar=("pi", 50),
        color=color,
        lw=1.8,
        ax=ax,
        legend=False,
        err_kws={"alpha": 0.2, "lw": 0},
    )
    ax.set(xlabel="", ylabel="")
    return long.value.to_numpy(dtype=float)


def _all_epochs(tables: Mapping[str, Sequence[pd.DataFrame]]) -> np.ndarray:
    arrays = [df.epoch.to_numpy(dtype=float) for dfs in tables.values() for df in dfs]
    return np.concatenate(arrays) if arrays else np.array([])


def plot_curve(
    tables: Mapping[str, Sequence[pd.DataFrame]],
    column: str,
    conditions: Sequence[str],
    colors: Mapping[str, str],
    path: Path,
    ylabel: str,
    title: str,
    log_y: bool = False,
    hlines: Sequence[float] = (),
    after_end: str = "hold",
    max_points: int = 400,
    log_span: float = 10.0,
    dpi: int = 130,
) -> Path | None:
    """Median line and inter-quartile band of ``column`` against epoch, per condition."""
    apply_theme()
    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    plotted: list[np.ndarray] = []
    handles = []
    for cond in conditions:
        dfs = tables.get(cond, [])
        n = sum(1 for df in dfs if column in df.columns)
        drawn = _draw_band(ax, dfs, column, colors[cond], after_end, max_points)
        if drawn.size:
            plotted.append(drawn)
            handles.append(Line2D([], [], color=colors[cond], lw=1.8, label=f"{cond} (n={n})"))
    if not plotted:
        plt.close(fig)
        return None
    for h in hlines:
        ax.axhline(h, color="0.55", lw=0.8, ls=":", zorder=0)
        ax.annotate(
            f"{h:g}",
            (1.0, h),
            xycoords=("axes fraction", "data"),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
            color="0.45",
        )
    _set_epoch_scale(ax, "x", _all_epochs(tables), log_span)
    if log_y:
        _set_value_log_scale(ax, np.concatenate(plotted), log_span)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(handles=handles, title="condition (seeds)", loc="best", fontsize=9)
    hold = "held at their last value" if after_end == "hold" else "dropped"
    fig.text(
        0.01,
        0.005,
        f"Line: median across seeds; band: inter-quartile range. Runs that stopped early are {hold} after their last eval.",
        fontsize=8,
        color="0.3",
        va="bottom",
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save_figure(fig, path, dpi, tight=False)


def plot_measures(
    tables: Mapping[str, Sequence[pd.DataFrame]],
    columns: Sequence[str],
    conditions: Sequence[str],
    colors: Mapping[str, str],
    path: Path,
    after_end: str = "hold",
    max_points: int = 400,
    log_span: float = 10.0,
    dpi: int = 130,
    title: str = "Progress measures",
) -> Path | None:
    """Grid of progress-measure panels (only measures present in the data), median + IQR."""
    if not columns:
        return None
    apply_theme()
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    width = max(4.6 * ncols, MIN_MEASURES_WIDTH)  # the legend below needs this much, one panel or six
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.4 * nrows + 1.2), squeeze=False, layout="constrained")
    epochs = _all_epochs(tables)
    for ax, col in zip(axes.flat, columns):
        plotted = [np.array([])]
        for cond in conditions:
            plotted.append(_draw_band(ax, tables.get(cond, []), col, colors[cond], after_end, max_points))
        name, unit = MEASURE_LABELS.get(col, (col, col))
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(unit, fontsize=9)
        ax.set_xlabel("epoch", fontsize=9)
        _set_epoch_scale(ax, "x", epochs, log_span)
        if "loss" in col:
            _set_value_log_scale(ax, np.concatenate(plotted), log_span)
        if col.startswith("n_"):  # counts: integer ticks even when the median is 0.5
            lo, hi = ax.get_ylim()
            ax.set_ylim(min(lo, -0.05), max(hi, 1.05))  # span >= 1, else MaxNLocator falls back to 0.1 steps
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(columns) :]:
        ax.remove()
    counts = {c: len(tables.get(c, [])) for c in conditions if tables.get(c)}
    handles = [Line2D([], [], color=colors[c], lw=2.2, label=f"{c} (n={n})") for c, n in counts.items()]
    fig.suptitle(title, fontsize=12)
    # an "outside" legend takes part in the constrained layout (no overlap with panels); at the
    # bottom because at the top it collides with the suptitle
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=max(1, min(len(handles), int(width // 2.3))),
        frameon=False,
        fontsize=10,
        title="median across seeds (line), inter-quartile range (band)",
        title_fontsize=9,
    )
    return save_figure(fig, path, dpi, tight=False)

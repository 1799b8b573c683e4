"""Trajectory analysis: how a target's speed depends on *when* in the source's training it starts.

A ``transfer=checkpoint`` sweep starts the target from the source run's checkpoints at
many epochs (each run's ``status.json`` records the chosen ``source.epoch``). This
module groups those runs by source epoch and, for the headline threshold, gives
the target's epochs-to-threshold (median, range, censored count) and the speed-up
over the random baseline with its bootstrap CI -- drawn above the source run's own
progress measures on a shared epoch axis, so "transfer starts to pay here" can be
read against "the circuit forms here". The memorised and grokked checkpoints (the
two fixed conditions' criteria, applied to the same source run) are marked.

Reads run directories only: the target runs, and the source run directory that
their ``source.json`` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from groktransfer.render import FIXED_COLORS, apply_theme, condition_colors, save_figure
from groktransfer.runs.reader import read_run

from .collect import RunRecord
from .groups import MIN_RUNS_TO_JUDGE, compare_groups, observations, pick_threshold
from .report import ReportFigure, ReportSection, ReportTable
from .section import Section, Sweep
from .settings import AnalyzeJobConfig
from .starts import start_record
from .stats import format_epochs, format_ratio, threshold_key, thresholds_in

CHECKPOINT = "checkpoint"
SOURCE_PANELS = (
    ("accuracy", ("train_acc", "test_acc"), False),
    ("loss", ("test_loss", "restricted_loss", "excluded_loss"), True),
    ("Gini", ("gini_W_E", "gini_W_L"), False),
)
TWIN = {"Gini": "weight_norm_total"}  # drawn on a right-hand axis of that panel (another scale)


def checkpoint_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Runs started from a source checkpoint chosen by epoch (``transfer=checkpoint``)."""
    return [r for r in runs if (r.condition or "").split("@")[0] == CHECKPOINT and r.source_epoch is not None]


def trajectory_table(runs: Sequence[RunRecord], baseline: str, settings: AnalyzeJobConfig) -> pd.DataFrame:
    """One row per (source epoch, threshold): target epochs-to-threshold and speed-up over ``baseline``."""
    ckpt = checkpoint_runs(runs)
    base = [r for r in runs if r.condition == baseline]
    rows = []
    for epoch in sorted({r.source_epoch for r in ckpt if r.source_epoch is not None}):
        group = [r for r in ckpt if r.source_epoch == epoch]
        chosen = start_record(group[0]) if group else None
        start = chosen.measures if chosen is not None else {}
        at_start = {f"source_{k}": start.get(k) for k in ("test_acc", "restricted_test_gap", "n_key_freqs")}
        for t in thresholds_in(group):
            row = compare_groups(base, group, t, f"{CHECKPOINT}@{epoch}", settings.analysis.bootstrap)
            rows.append({"source_epoch": epoch, "baseline": baseline, **row, **at_start})
    cols = ["source_epoch", "baseline", "threshold"]
    return pd.DataFrame(rows, columns=cols + [c for c in (rows[0] if rows else {}) if c not in cols])


def first_excluding_one(table: pd.DataFrame, t: float) -> dict[str, int | None]:
    """The first source epoch whose CI lies wholly above 1 ("faster"), and wholly below 1 ("slower")."""
    rows = table[np.isclose(table.threshold, t)].sort_values("source_epoch")
    faster = rows[rows.excludes_one == 1].source_epoch
    slower = rows[rows.excludes_one == -1].source_epoch
    return {
        "faster": int(faster.iloc[0]) if len(faster) else None,
        "slower": int(slower.iloc[0]) if len(slower) else None,
    }


def source_run_dir(runs: Sequence[RunRecord]) -> Path | None:
    """The source run the checkpoint runs started from (named in their ``source.json``)."""
    for r in checkpoint_runs(runs):
        source = r.contents.source if r.contents is not None else None
        if source is not None and source.source_run_dir and Path(source.source_run_dir).is_dir():
            return Path(source.source_run_dir)
    return None


def fixed_condition_epochs(runs: Sequence[RunRecord], source_dir: Path) -> dict[str, int]:
    """Epochs the ``memorized`` / ``grokked`` criteria (from a run's config) pick on this source run."""
    from groktransfer.runs.rundir import RunDir
    from groktransfer.transfer.source_runs import SourceSelectionError, select_checkpoint, source_chance

    first = checkpoint_runs(runs)[0]
    config = (first.contents if first.contents is not None else read_run(first.run_dir)).config
    out: dict[str, int] = {}
    for condition in ("memorized", "grokked"):
        criteria = config.criteria(condition)
        if criteria is None:
            continue
        try:
            out[condition] = select_checkpoint(
                RunDir(source_dir), condition, criteria, source_chance(RunDir(source_dir))
            ).epoch
        except (SourceSelectionError, OSError, KeyError, ValueError):
            continue
    return out


def _source_tables(source_dir: Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The source run's metrics and measures (empty frames where it has none)."""
    if source_dir is None:
        return pd.DataFrame(), pd.DataFrame()
    source = read_run(source_dir)
    return (
        source.metrics if source.metrics is not None else pd.DataFrame(),
        source.measures if source.measures is not None else pd.DataFrame(),
    )


def plot_trajectory(
    runs: Sequence[RunRecord],
    table: pd.DataFrame,
    t: float,
    baseline: str,
    source_dir: Path | None,
    marks: dict[str, int],
    path: Path,
    dpi: int = 130,
) -> Path:
    """Target epochs-to-t and speed-up against source epoch, over the source's progress measures."""
    apply_theme()
    metrics, measures = _source_tables(source_dir)
    panels = [p for p in SOURCE_PANELS if any(c in measures.columns or c in metrics.columns for c in p[1])]
    fig, axes = plt.subplots(2 + len(panels), 1, sharex=True, figsize=(8, 2.4 * (2 + len(panels))), squeeze=False)
    axes = axes[:, 0]
    rows = table[np.isclose(table.threshold, t)].sort_values("source_epoch")
    ckpt = checkpoint_runs(runs)

    colors = condition_colors([CHECKPOINT, baseline])
    ax = axes[0]  # target epochs to threshold, one point per seed
    for epoch in rows.source_epoch:
        v, c = observations([r for r in ckpt if r.source_epoch == epoch], t)
        ax.scatter(np.full(int((~c).sum()), epoch), v[~c], color=colors[CHECKPOINT], s=18, zorder=3)
        ax.scatter(
            np.full(int(c.sum()), epoch), v[c], facecolors="none", edgecolors="#d62728", marker="^", s=30, zorder=3
        )
    ax.plot(rows.source_epoch, rows["median"], color=colors[CHECKPOINT], label="median (checkpoint start)")
    ax.fill_between(
        rows.source_epoch, rows["min"], rows["max"], color=colors[CHECKPOINT], alpha=0.15, label="range over seeds"
    )
    if len(rows) and np.isfinite(rows.median_baseline.iloc[0]):
        ax.axhline(rows.median_baseline.iloc[0], color=colors[baseline], ls="--", label=f"{baseline} median")
    ax.scatter([], [], facecolors="none", edgecolors="#d62728", marker="^", label="censored (at last epoch)")
    ax.set_ylabel(f"target epochs\nto test acc {threshold_key(t)}")
    ax.legend(fontsize=7, loc="best")

    ax = axes[1]  # speed-up with CI
    finite = rows[np.isfinite(rows.ratio)]
    yerr = np.vstack([finite.ratio - finite.ci_low, finite.ci_high - finite.ratio])
    ax.errorbar(
        finite.source_epoch,
        finite.ratio,
        yerr=np.where(np.isfinite(yerr), yerr, 0),
        fmt="o-",
        color="#2ca02c",
        capsize=3,
        label="speed-up, bootstrap CI",
    )
    bounded = finite[finite.bound.isin(["lower bound", "upper bound", "indeterminate"])]
    ax.scatter(
        bounded.source_epoch,
        bounded.ratio,
        marker="s",
        facecolors="none",
        edgecolors="#d62728",
        s=60,
        label="a median is censored (bound)",
        zorder=4,
    )
    ax.axhline(1.0, color="black", lw=0.8)
    if len(finite) and (finite.ratio > 0).all():
        ax.set_yscale("log")
    ax.set_ylabel(f"speed-up over\n{baseline} (×)")
    ax.legend(fontsize=7, loc="best")

    for ax, (title, cols, log_y) in zip(axes[2:], panels):
        for col in cols:
            src = measures if col in measures.columns else metrics
            if col in src.columns:
                ax.plot(src.epoch, src[col], label=col)
        if log_y:
            ax.set_yscale("log")
        ax.set_ylabel(f"source\n{title}")
        ax.legend(fontsize=7, loc="upper left")
        twin = TWIN.get(title)
        if twin in measures.columns:
            right = ax.twinx()
            right.plot(measures.epoch, measures[twin], color="black", lw=1, ls="--", label=twin)
            right.set_ylabel("Σ w²")
            right.grid(False)
            right.legend(fontsize=7, loc="lower right")
    for ax in axes:
        for name, epoch in marks.items():
            ax.axvline(epoch, color=FIXED_COLORS[name], ls=":", lw=1.2)
    for name, epoch in marks.items():
        axes[0].annotate(name, (epoch, 1.0), xycoords=("data", "axes fraction"), fontsize=7, va="bottom", ha="center")
    axes[-1].set_xlabel("source epoch (the checkpoint the target starts from)")
    fig.suptitle(f"Transfer along the source's training — threshold {threshold_key(t)}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi, tight=False)


def ci_sentence(firsts: dict[str, int | None], t: float, confidence: float, epochs: Sequence[int]) -> str:
    """The report's answer to "from which source epoch does transfer pay?"."""
    pct = f"{100 * confidence:g}%"
    tried = ", ".join(str(e) for e in epochs)
    if firsts["faster"] is not None:
        text = (
            f"The speed-up's {pct} CI first excludes 1 at source epoch {firsts['faster']} "
            f"(wholly above 1: faster than random to test acc {threshold_key(t)})."
        )
    else:
        text = (
            f"The speed-up's {pct} CI never lies wholly above 1 at the source epochs tried "
            f"(source epochs with fewer than {MIN_RUNS_TO_JUDGE} completed runs on either side are not judged)."
        )
    if firsts["slower"] is not None:
        text += f" It lies wholly below 1 (slower than random) first at source epoch {firsts['slower']}."
    return text + f" Source epochs tried: {tried}."


def trajectory_sections(runs: Sequence[RunRecord], out_dir: Path, settings: AnalyzeJobConfig) -> list[ReportSection]:
    """Report provider: the trajectory figure, table and CI sentence (nothing without checkpoint runs)."""
    if not checkpoint_runs(runs):
        return []
    a = settings.analysis
    table = trajectory_table(runs, a.baseline, settings)
    table.to_csv(out_dir / "trajectory.csv", index=False)
    t = pick_threshold(checkpoint_runs(runs), a.headline_threshold)
    if t is None or table.empty:
        return [ReportSection("Transfer along the source's training", "No checkpoint run recorded a threshold.")]
    source_dir = source_run_dir(runs)
    marks = fixed_condition_epochs(runs, source_dir) if source_dir is not None else {}
    fig = plot_trajectory(runs, table, t, a.baseline, source_dir, marks, out_dir / "trajectory.png", a.dpi)
    rows = table[np.isclose(table.threshold, t)].sort_values("source_epoch")
    sentence = ci_sentence(first_excluding_one(table, t), t, a.bootstrap.confidence, list(rows.source_epoch))
    shown = pd.DataFrame(
        {
            "source epoch": rows.source_epoch,
            "source test acc": [
                f"{x:.3f}" if isinstance(x, float) and np.isfinite(x) else "–" for x in rows.source_test_acc
            ],
            "source key freqs": [
                f"{int(x)}" if isinstance(x, (int, float)) and np.isfinite(x) else "–" for x in rows.source_n_key_freqs
            ],
            "n (censored)": [f"{n} ({c})" for n, c in zip(rows.n, rows.n_censored)],
            "median epochs": [format_epochs(m, lb) for m, lb in zip(rows["median"], rows.median_lower_bound)],
            "range": [
                f"{format_epochs(lo)}–{format_epochs(hi)}" if np.isfinite(lo) else "–"
                for lo, hi in zip(rows["min"], rows["max"])
            ],
            f"speed-up vs {a.baseline}": [
                format_ratio(r, lo, hi, b) for r, lo, hi, b in zip(rows.ratio, rows.ci_low, rows.ci_high, rows.bound)
            ],
        }
    )
    mark_text = (
        ", ".join(f"{k} checkpoint at epoch {v}" for k, v in marks.items()) or "no memorised/grokked checkpoint found"
    )
    text = (
        f"{sentence}\n\nTargets started from the source run's checkpoint at each epoch (`transfer=checkpoint`), "
        f"compared with `{a.baseline}` starts; {mark_text} (dotted lines). Source run: "
        f"`{source_dir if source_dir is not None else '(not found)'}`. Every threshold is in `trajectory.csv`."
    )
    caption = (
        "Top: target epochs to threshold per seed (hollow red triangles: censored at their last epoch), "
        "median and range; middle: speed-up over random with bootstrap CI (hollow squares: a median is "
        "censored, the ratio is a bound); below: the source run's own progress measures."
    )
    return [
        ReportSection(
            "Transfer along the source's training", text, [ReportTable(shown, "")], [ReportFigure(fig, caption)]
        )
    ]


class TrajectorySection(Section):
    """Speed-up against the source epoch a ``transfer=checkpoint`` start came from."""

    title = "Transfer along the source's training"
    writes = ("trajectory.csv", "trajectory.png")
    provider = staticmethod(trajectory_sections)

    def applies(self, sweep: Sweep) -> str | None:
        return (
            None
            if checkpoint_runs(sweep.runs)
            else "no run started from a source checkpoint chosen by epoch (`transfer=checkpoint`)"
        )

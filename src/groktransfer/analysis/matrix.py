"""Task x task transfer matrix: speed-up of each condition over random, per (source task, target task).

A matrix sweep crosses ``transfer.source.task`` with the target ``task`` (one source
run per source task, through the cache). Each cell compares a transfer condition's
runs for that pair with the *target task's* random runs (random starts do not depend
on the source task; a sweep reuses one set of them, and the analysis counts it once).
Censoring is carried as in the main report: a cell whose median is censored holds a
bound, not a measurement, and the heatmap marks it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from groktransfer.render import apply_theme, save_figure

from .collect import RunRecord
from .groups import compare_groups, pick_threshold
from .report import ReportFigure, ReportSection, ReportTable
from .section import Section, Sweep
from .settings import AnalyzeJobConfig
from .stats import format_ratio, threshold_key, thresholds_in

BOUND_MARK = {"lower bound": "≥", "upper bound": "≤", "indeterminate": "~"}


def transfer_pairs(runs: Sequence[RunRecord]) -> list[tuple[str, str]]:
    """Distinct (source task, target task) pairs among the transfer runs."""
    return sorted({(r.source_task, r.task) for r in runs if r.source_task and r.task and r.condition != "random"})


def matrix_table(
    runs: Sequence[RunRecord], baseline: str, conditions: Sequence[str], settings: AnalyzeJobConfig
) -> pd.DataFrame:
    """One row per (source task, target task, condition, threshold) with the speed-up over ``baseline``."""
    rows = []
    for source_task, target_task in transfer_pairs(runs):
        base = [r for r in runs if r.condition == baseline and r.task == target_task]
        for cond in conditions:
            group = [r for r in runs if r.condition == cond and r.task == target_task and r.source_task == source_task]
            if not group:
                continue
            for t in thresholds_in(group):
                tag = f"{cond}|{source_task}->{target_task}"
                row = compare_groups(base, group, t, tag, settings.analysis.bootstrap)
                rows.append(
                    {
                        "source_task": source_task,
                        "target_task": target_task,
                        "condition": cond,
                        "baseline": baseline,
                        **row,
                    }
                )
    cols = ["source_task", "target_task", "condition", "baseline", "threshold"]
    return pd.DataFrame(rows, columns=cols + [c for c in (rows[0] if rows else {}) if c not in cols])


def _cell_text(row: pd.Series) -> str:
    if not np.isfinite(row.ratio) and not math.isinf(row.ratio):
        return "–"
    if row["median"] == 0 and not row.n_censored:  # e.g. a grokked start on its own task: no ratio to read
        return "at threshold\nfrom the start"
    mark = BOUND_MARK.get(row.bound, "")
    fmt = lambda x: "inf" if math.isinf(x) else f"{x:.2g}"  # noqa: E731
    censored = " *" if row.n_censored or row.n_baseline_censored else ""
    return f"{mark}{fmt(row.ratio)}×{censored}\n[{fmt(row.ci_low)}, {fmt(row.ci_high)}]"


def plot_matrix(
    table: pd.DataFrame, t: float, conditions: Sequence[str], baseline: str, path: Path, dpi: int = 130
) -> Path:
    """One heatmap per condition: log2 speed-up, annotated with ratio, CI, bound and censoring marks."""
    apply_theme()
    rows = table[np.isclose(table.threshold, t)]
    sources = sorted(rows.source_task.unique())
    targets = sorted(rows.target_task.unique())
    fig, axes = plt.subplots(
        1,
        len(conditions),
        figsize=(1.9 * len(targets) * len(conditions) + 1.5, 1.5 * len(sources) + 1.6),
        squeeze=False,
    )
    finite = np.log2(rows.ratio[np.isfinite(rows.ratio) & (rows.ratio > 0)])
    vmax = max(1.0, float(np.abs(finite).max())) if len(finite) else 1.0
    image = None
    for k, (ax, cond) in enumerate(zip(axes[0], conditions)):
        grid = np.full((len(sources), len(targets)), np.nan)
        for _, r in rows[rows.condition == cond].iterrows():
            i, j = sources.index(r.source_task), targets.index(r.target_task)
            value = r.ratio
            grid[i, j] = np.nan if not (value > 0) else float(np.clip(np.log2(value), -vmax, vmax))
            dark = np.isfinite(grid[i, j]) and abs(grid[i, j]) > 0.6 * vmax
            ax.text(j, i, _cell_text(r), ha="center", va="center", fontsize=7, color="white" if dark else "black")
        image = ax.imshow(grid, cmap="RdBu", vmin=-vmax, vmax=vmax)
        ax.set_xticks(range(len(targets)), targets)
        ax.set_yticks(range(len(sources)), sources if k == 0 else [""] * len(sources))
        ax.set_xlabel("target task")
        if k == 0:
            ax.set_ylabel("source task")
        ax.set_title(f"{cond} vs {baseline}")
        ax.grid(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), label="log2 speed-up (blue: faster than random)", shrink=0.8)
    fig.suptitle(f"Speed-up to test acc {threshold_key(t)}; * = a censored run in the cell; ≥/≤/~ = bound", fontsize=9)
    return save_figure(fig, path, dpi)


def matrix_sections(runs: Sequence[RunRecord], out_dir: Path, settings: AnalyzeJobConfig) -> list[ReportSection]:
    """Report provider: the heatmap and table, when the runs span more than one task pair."""
    if len(transfer_pairs(runs)) < 2:
        return []
    a = settings.analysis
    conditions = [c for c in a.compare if any(r.condition == c for r in runs)]
    table = matrix_table(runs, a.baseline, conditions, settings)
    table.to_csv(out_dir / "matrix.csv", index=False)
    t = pick_threshold([r for r in runs if r.condition in conditions], a.headline_threshold)
    if t is None or table.empty:
        return [ReportSection("Task × task transfer matrix", "No transfer run recorded a threshold.")]
    fig = plot_matrix(table, t, conditions, a.baseline, out_dir / "matrix_speedup.png", a.dpi)
    rows = table[np.isclose(table.threshold, t)]
    shown = pd.DataFrame(
        {
            "source → target": [f"{s} → {g}" for s, g in zip(rows.source_task, rows.target_task)],
            "condition": rows.condition,
            "n (censored)": [f"{n} ({c})" for n, c in zip(rows.n, rows.n_censored)],
            f"{a.baseline} n (censored)": [f"{n} ({c})" for n, c in zip(rows.n_baseline, rows.n_baseline_censored)],
            f"speed-up vs {a.baseline}": [
                format_ratio(r, lo, hi, b) for r, lo, hi, b in zip(rows.ratio, rows.ci_low, rows.ci_high, rows.bound)
            ],
        }
    )
    text = (
        f"Speed-up to test accuracy {threshold_key(t)} of each condition over `{a.baseline}` starts on the same "
        "target task, per (source task, target task). `*` in the heatmap: at least one run of the cell or of its "
        "baseline is censored; `≥`/`≤`/`~`: the ratio is a lower/upper/indeterminate bound. The per-condition "
        "tables above pool all task pairs; read this section for per-pair numbers. All thresholds: `matrix.csv`."
    )
    caption = "Speed-up over random per source task (rows) and target task (columns), one panel per condition."
    return [ReportSection("Task × task transfer matrix", text, [ReportTable(shown, "")], [ReportFigure(fig, caption)])]


class MatrixSection(Section):
    """Speed-up per (source task, target task) of a sweep over both."""

    title = "Task × task transfer matrix"
    writes = ("matrix.csv", "matrix_speedup.png")
    provider = staticmethod(matrix_sections)

    def applies(self, sweep: Sweep) -> str | None:
        return (
            None
            if len(transfer_pairs(sweep.runs)) >= 2
            else "the transfer runs span fewer than two (source task, target task) pairs"
        )

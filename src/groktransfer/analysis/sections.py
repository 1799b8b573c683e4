"""The built-in report sections: what the analysis says, as ``ReportSection`` data.

Why separate from ``report.py``: that module knows *how* to render any section;
this one decides *what* the grokking-transfer report contains, so other analyses
(circuits) can reuse the renderer without inheriting this content.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from groktransfer.runs.rundir import MEASURES_FILE, METRICS_FILE, STATUS_FILE

from .collect import RunRecord
from .report import ReportFigure, ReportSection, ReportTable
from .settings import AnalyzeJobConfig
from .stats import method_text
from .tables import incomplete_frame, speedup_display, status_counts, summary_display


def _names(values: Sequence[str | None]) -> str:
    vals = sorted({v for v in values if v})
    return ", ".join(f"`{v}`" for v in vals) if vals else "(not recorded)"


def overview_section(
    runs: Sequence[RunRecord], sweep_dirs: Sequence[Path], conditions: Sequence[str], generated: str = ""
) -> ReportSection:
    """Which sweeps, experiment, task; runs per condition and status (the report's metadata, at its end)."""
    by_status = Counter(r.status_label for r in runs)
    status_text = ", ".join(f"{n} {s}" for s, n in by_status.most_common())
    lines = ([generated, ""] if generated else []) + ["Sweep directories analysed:", ""]
    lines += [f"- `{d}`" for d in sweep_dirs]
    lines += [
        "",
        f"Experiment: {_names([r.experiment for r in runs])}. Task: {_names([r.task for r in runs])}. "
        f"Conditions: {', '.join(f'`{c}`' for c in conditions)}.",
        "",
        f"{len(runs)} job(s): {status_text}.",
    ]
    return ReportSection(
        "Sweep",
        "\n".join(lines),
        tables=[ReportTable(status_counts(runs, conditions), "Runs per condition and status")],
    )


def threshold_section(summary: pd.DataFrame, figure: Path | None) -> ReportSection:
    """The condition × threshold table and the epochs-to-threshold figure."""
    text = (
        "Epochs until test accuracy first reached each threshold, per condition, over completed runs. "
        "A value written `≥ X` is a lower bound (censored runs sit at or below the median); "
        "means marked `≥` include censored runs and are lower bounds too. See **Statistical method**."
    )
    figs = [ReportFigure(figure, "Epochs to threshold: one point per seed; hollow triangles are censored runs at their last epoch.")] if figure else []
    return ReportSection("Epochs to threshold", text, [ReportTable(summary_display(summary), "")], figs)


def speedup_section(
    speedup: pd.DataFrame, baseline: str, present: Sequence[str], confidence: float = 0.95
) -> ReportSection:
    """Speed-up ratios with bootstrap CIs, or why there are none."""
    if speedup.empty:
        why = (
            f"No speed-up computed: the baseline condition `{baseline}` "
            + ("has no runs." if baseline not in present else "has no compared condition with runs.")
        )
        return ReportSection(f"Speed-up over {baseline}", why)
    text = (
        f"Speed-up = median epochs of `{baseline}` / median epochs of the condition (> 1: the condition "
        "reaches the threshold in fewer epochs). `≥` marks a lower bound (the baseline median is censored), "
        "`≤` an upper bound (the condition's median is censored), `~` an indeterminate direction (both)."
    )
    return ReportSection(f"Speed-up over {baseline}", text, [ReportTable(speedup_display(speedup, confidence), "")])


def method_section(settings: AnalyzeJobConfig) -> ReportSection:
    """The statistics method statement, with this run's bootstrap settings."""
    b = settings.analysis.bootstrap
    a = settings.analysis
    curves = (
        f"Curves: every run with status in {list(a.curves.include_statuses)} is linearly interpolated onto "
        "the union of its condition's eval epochs (thinned to at most "
        f"{a.curves.max_points} points); after its last eval a run "
        + ("holds its last value (runs stop early only once the last threshold has held)" if a.curves.after_end == "hold" else "stops contributing")
        + ". The line is the median across runs, the band the inter-quartile range."
    )
    return ReportSection("Statistical method", method_text(b.n_resamples, b.confidence, b.seed) + "\n\n" + curves)


def incomplete_section(runs: Sequence[RunRecord]) -> ReportSection:
    """Every job not in the statistics, with its status and reason."""
    df = incomplete_frame(runs)
    if df.empty:
        return ReportSection("Failed / incomplete jobs", f"None: all {len(runs)} job(s) completed.")
    text = (
        f"{len(df)} job(s) did not complete. They are listed here and in `runs.csv`, and are neither "
        "reached nor censored in the statistics (excluded from n). `running/stale` = status says running "
        "but it has not been updated recently; `no status` = Hydra created the job dir but the job died "
        f"before writing {STATUS_FILE}; `unreadable` = a file of the run is damaged or incomplete (the reason names it)."
    )
    return ReportSection("Failed / incomplete jobs", text, [ReportTable(df, "")])


def figures_section(figures: Mapping[str, Path | None], measures_missing: bool) -> ReportSection:
    """Training curves and progress measures."""
    captions = {
        "test_accuracy": "Test accuracy against epoch: median across seeds and inter-quartile band, per condition.",
        "test_loss": "Test loss against epoch (log scale): median and inter-quartile band, per condition.",
        "progress_measures": "Progress measures against epoch: median and inter-quartile band, per condition.",
    }
    figs = [ReportFigure(p, captions[k]) for k, p in figures.items() if k in captions and p is not None]
    text = "" if figs else f"No {METRICS_FILE} found in the completed runs: no curves to draw."
    if measures_missing:
        text += ("\n\n" if text else "") + f"No progress-measure columns found in {MEASURES_FILE}: panel omitted."
    return ReportSection("Training curves and progress measures", text, figures=figs)


FILE_DESCRIPTIONS = {
    "runs_csv": "one row per job, including failed / incomplete ones (status, reason)",
    "summary_table_csv": "condition × threshold statistics (raw numbers)",
    "speedup_csv": "speed-up ratios with bootstrap CIs and bound direction",
    "epochs_to_threshold": "figure: epochs to each threshold per condition",
    "test_accuracy": "figure: test accuracy curves",
    "test_loss": "figure: test loss curves",
    "progress_measures": "figure: progress measures",
    "report_md": "this report (markdown, figures linked)",
    "report_html": "this report (HTML, figures embedded)",
}


def files_section(files: Mapping[str, Path], out_dir: Path) -> ReportSection:
    """Where each output lives, relative to the report."""
    lines = []
    for key, p in files.items():
        shown = p.relative_to(out_dir) if p.is_relative_to(out_dir) else p
        lines.append(f"- `{shown}`: {FILE_DESCRIPTIONS.get(key, key)}")
    return ReportSection("Files", "\n".join(lines))

"""The sections every sweep report has: the answer, the speed-ups, epochs to threshold, the
curves, and at the end the damaged files, the failed jobs, the method, the sweep and the files.

Why separate from ``report.py``: that module knows *how* to render any section; this one
decides *what* the grokking-transfer report says, as :class:`~groktransfer.analysis.section.Section`
objects (registered in ``groktransfer.analysis.sections``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from groktransfer.runs.rundir import MEASURES_FILE, METRICS_FILE, STATUS_FILE

from .answer import answer_section
from .collect import RunRecord
from .curves import load_tables, measure_columns
from .plots import plot_curve, plot_epochs_to_threshold, plot_measures
from .report import ReportFigure, ReportSection, ReportTable
from .section import Section, Sweep
from .settings import DEFAULT_MEASURES, AnalyzeJobConfig
from .stats import method_text, observations_frame
from .tables import incomplete_frame, speedup_display, status_counts, summary_display


def _names(values: Sequence[str | None]) -> str:
    vals = sorted({v for v in values if v})
    return ", ".join(f"`{v}`" for v in vals) if vals else "(not recorded)"


def overview_section(
    runs: Sequence[RunRecord],
    sweep_dirs: Sequence[Path],
    conditions: Sequence[str],
    generated: str = "",
    left_out: Sequence[tuple[str, str]] = (),
) -> ReportSection:
    """Which sweeps, experiment, task; runs per condition and status; the sections that did not
    apply to these runs and why (the report's metadata, at its end)."""
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
    if left_out:
        lines += ["", "Not applicable to these runs (left out of the report):", ""]
        lines += [f"- {title}: {why}" for title, why in left_out]
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
    figs = (
        [
            ReportFigure(
                figure,
                "Epochs to threshold: one point per seed; hollow triangles are censored runs at their last epoch.",
            )
        ]
        if figure
        else []
    )
    return ReportSection("Epochs to threshold", text, [ReportTable(summary_display(summary), "")], figs)


def speedup_section(
    speedup: pd.DataFrame, baseline: str, present: Sequence[str], confidence: float = 0.95
) -> ReportSection:
    """Speed-up ratios with bootstrap CIs, or why there are none."""
    if speedup.empty:
        why = f"No speed-up computed: the baseline condition `{baseline}` " + (
            "has no runs." if baseline not in present else "has no compared condition with runs."
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
        + (
            "holds its last value (runs stop early only once the last threshold has held)"
            if a.curves.after_end == "hold"
            else "stops contributing"
        )
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


def figures_section(
    figures: Mapping[str, Path | None], measures_missing: bool, not_drawn: Sequence[str] = ()
) -> ReportSection:
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
    if not_drawn:
        text += ("\n\n" if text else "") + (
            f"Also recorded in {MEASURES_FILE}, not drawn: {', '.join(f'`{c}`' for c in not_drawn)} "
            "(`analysis.measures=[...]` picks the panels)."
        )
    return ReportSection("Training curves and progress measures", text, figures=figs)


FILE_DESCRIPTIONS = {
    "runs_csv": "one row per job, including failed / incomplete ones (status, reason)",
    "summary_table_csv": "condition × threshold statistics (raw numbers)",
    "speedup_csv": "speed-up ratios with bootstrap CIs and bound direction",
    "epochs_to_threshold": "figure: epochs to each threshold per condition",
    "test_accuracy": "figure: test accuracy curves",
    "test_loss": "figure: test loss curves",
    "progress_measures": "figure: progress measures",
    "starts_csv": "transfer starts: the source checkpoint of each start and its measures",
    "trajectory_csv": "speed-up against the source epoch of a checkpoint start",
    "matrix_csv": "speed-up per (source task, target task)",
    "trajectory": "figure: speed-up against the source epoch, over the source's measures",
    "matrix_speedup": "figure: speed-up per (source task, target task)",
    "digit_summary_csv": "digit tasks: final measures per answer position and carry class",
    "digit_positions": "figure: digit tasks, test accuracy per answer position",
    "digit_carries": "figure: digit tasks, test accuracy per carry class",
    "circuits_runs_csv": "circuit analysis: one row per run (the other circuits_*.csv and figures beside it)",
    "interp_runs_csv": "interpretability: every measurement of every run (quantity, labels, value)",
    "interp_summary_csv": "interpretability: median, min and max over seeds per condition",
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


def damaged_section(sweep: Sweep) -> ReportSection:
    """Every file of a run directory that could not be read as what it must be."""
    rows = []
    for r in sweep.runs:
        for p in r.contents.problems if r.contents is not None else ():
            rows.append(
                {"run": r.name, "condition": r.condition, "seed": r.seed, "file": p.path.name, "problem": p.problem}
            )
    text = (
        f"{len(rows)} file(s) could not be read as the run-directory format says. A damaged status record "
        "puts its job under **Failed / incomplete jobs**; a damaged table or record leaves out only what it holds."
    )
    return ReportSection("Damaged or unreadable files", text, [ReportTable(pd.DataFrame(rows), "")])


# --------------------------------------------------------------------------- the sections, as Section objects
class AnswerSection(Section):
    title = "Answer"

    def build(self, sweep: Sweep) -> list[ReportSection]:
        b = sweep.analysis.bootstrap
        return [
            answer_section(
                sweep.summary,
                sweep.speedup,
                sweep.headline,
                sweep.analysis.baseline,
                sweep.conditions,
                b.confidence,
                sweep.n_excluded,
            )
        ]


class SpeedupSection(Section):
    title = "Speed-up over the baseline"

    def build(self, sweep: Sweep) -> list[ReportSection]:
        a = sweep.analysis
        return [speedup_section(sweep.speedup, a.baseline, sweep.conditions, a.bootstrap.confidence)]


class ThresholdSection(Section):
    title = "Epochs to threshold"
    writes = ("epochs_to_threshold.png",)

    def build(self, sweep: Sweep) -> list[ReportSection]:
        a = sweep.analysis
        obs = observations_frame(sweep.runs, sweep.thresholds)
        figure = plot_epochs_to_threshold(
            obs[obs.included],
            sweep.thresholds,
            sweep.conditions,
            sweep.colors,
            sweep.out_dir / "epochs_to_threshold.png",
            n_excluded=sweep.n_excluded,
            log_span=a.log_span,
            dpi=a.dpi,
            title=f"Epochs to test-accuracy threshold{sweep.title_suffix}",
        )
        return [threshold_section(sweep.summary, figure)]


class CurvesSection(Section):
    title = "Training curves and progress measures"
    writes = ("test_accuracy.png", "test_loss.png", "progress_measures.png")

    def build(self, sweep: Sweep) -> list[ReportSection]:
        a, cv = sweep.analysis, sweep.analysis.curves
        common: dict[str, Any] = dict(
            after_end=str(cv.after_end), max_points=cv.max_points, log_span=a.log_span, dpi=a.dpi
        )
        metrics = load_tables(sweep.runs, METRICS_FILE, cv.include_statuses)
        figs: dict = {}
        figs["test_accuracy"] = plot_curve(
            metrics,
            "test_acc",
            sweep.conditions,
            sweep.colors,
            sweep.out_dir / "test_accuracy.png",
            "test accuracy",
            f"Test accuracy{sweep.title_suffix}",
            hlines=sweep.thresholds[:1] + sweep.thresholds[-1:],
            **common,
        )
        figs["test_loss"] = plot_curve(
            metrics,
            "test_loss",
            sweep.conditions,
            sweep.colors,
            sweep.out_dir / "test_loss.png",
            "test loss (cross-entropy)",
            f"Test loss{sweep.title_suffix}",
            log_y=True,
            **common,
        )
        measures = load_tables(sweep.runs, MEASURES_FILE, cv.include_statuses)
        columns, not_drawn = measure_columns(measures, a.measures, DEFAULT_MEASURES)
        figs["progress_measures"] = plot_measures(
            measures,
            columns,
            sweep.conditions,
            sweep.colors,
            sweep.out_dir / "progress_measures.png",
            title=f"Progress measures{sweep.title_suffix}",
            **common,
        )
        return [figures_section(figs, bool(measures) and not columns, not_drawn)]


class DamagedFilesSection(Section):
    title = "Damaged or unreadable files"
    closing = True

    def applies(self, sweep: Sweep) -> str | None:
        return None if sweep.problems() else ""  # nothing to say, and nothing to list

    def build(self, sweep: Sweep) -> list[ReportSection]:
        return [damaged_section(sweep)]


class IncompleteSection(Section):
    title = "Failed / incomplete jobs"
    closing = True

    def build(self, sweep: Sweep) -> list[ReportSection]:
        return [incomplete_section(sweep.runs)]


class MethodSection(Section):
    title = "Statistical method"
    closing = True

    def build(self, sweep: Sweep) -> list[ReportSection]:
        return [method_section(sweep.settings)]


class OverviewSection(Section):
    title = "Sweep"
    closing = True

    def build(self, sweep: Sweep) -> list[ReportSection]:
        generated = (
            f"Generated {datetime.now().strftime('%Y-%m-%d %H:%M')} from run directories only "
            f"({STATUS_FILE}, {METRICS_FILE}, {MEASURES_FILE}, ...)."
        )
        return [overview_section(sweep.runs, sweep.dirs, sweep.conditions, generated, sweep.left_out)]


class FilesSection(Section):
    title = "Files"
    closing = True

    def build(self, sweep: Sweep) -> list[ReportSection]:
        return [files_section(sweep.files, sweep.out_dir)]

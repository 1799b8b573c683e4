"""``run_analysis``: sweep dir(s) in, tables + figures + report out.

Why one entry point: ``scripts/analyze.py`` (Hydra), the quickstart script and
the tests all call the same function with the same settings object, so what the
tests check is what users run. Input problems (missing dir, no runs) raise
``SweepInputError`` before anything is written.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from groktransfer.runs.rundir import MEASURES_FILE, METRICS_FILE, STATUS_FILE, Status

from . import sections as sec
from .answer import answer_section, answers
from .source_cost import source_cost_section, source_costs, write_source_costs
from .collect import RunRecord, collect_runs, resolve_sweep_dirs
from .curves import load_tables, numeric_columns
from .plots import plot_curve, plot_epochs_to_threshold, plot_measures
from .report import ReportSection, build_report
from .settings import AnalysisSettings, AnalyzeJobConfig, to_settings
from .stats import (
    condition_order,
    format_ratio,
    observations_frame,
    speedup_table,
    summary_table,
    threshold_key,
    thresholds_in,
)
from .style import PREFERRED_ORDER, condition_colors
from .tables import ci_label, runs_frame
from .wandb_log import log_analysis

SectionProvider = Callable[[Sequence[RunRecord], Path, AnalyzeJobConfig], Sequence[ReportSection]]


@dataclass
class AnalysisResult:
    """Everything the analysis produced, for callers that want more than the files."""

    out_dir: Path
    sweep_dirs: list[Path]
    runs: list[RunRecord]
    thresholds: list[float]
    conditions: list[str]
    runs_table: pd.DataFrame
    summary: pd.DataFrame
    speedup: pd.DataFrame
    headline_threshold: float | None
    baseline: str
    confidence: float = 0.95
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary_text(self) -> str:
        """The short stdout summary: epochs to the headline threshold with speed-ups."""
        n_done = sum(r.completed for r in self.runs)
        lines = [
            f"Analysed {len(self.runs)} job(s) from {len(self.sweep_dirs)} sweep dir(s); "
            f"{n_done} completed, {len(self.runs) - n_done} not in the statistics."
        ]
        t = self.headline_threshold
        if t is not None:
            s = self.summary[self.summary.threshold == t]
            sp = self.speedup[self.speedup.threshold == t].set_index("condition")
            rows = []
            for _, r in s.iterrows():
                if r.condition == self.baseline:
                    speed = "(baseline)"
                elif r.condition in sp.index:
                    x = sp.loc[r.condition]
                    speed = format_ratio(x.ratio, x.ci_low, x.ci_high, x.bound)
                else:
                    speed = ""
                rows.append(
                    {
                        "condition": r.condition,
                        str(Status.COMPLETED): r.n_runs,
                        "reached": r.n_reached,
                        "censored": r.n_censored,
                        "median epochs": r.median_display,
                        f"speed-up vs {self.baseline} [{ci_label(self.confidence)}]": speed,
                    }
                )
            lines.append(
                f"\nEpochs to test acc >= {threshold_key(t)} (median; censored runs at their last epoch, "
                "'≥' = lower bound; speed-up '≥'/'≤'/'~' = lower/upper/indeterminate bound):"
            )
            lines.append(pd.DataFrame(rows).to_string(index=False) if rows else "(no completed runs)")
            found = answers(self.summary, self.speedup, t, self.baseline, self.confidence)
            if found:
                lines.append("")
                lines += [f"- {x.sentence}" for x in found]
        bad = [r for r in self.runs if not r.completed]
        if bad:
            kinds = pd.Series([r.status_label for r in bad]).value_counts()
            lines.append(
                "\nNot in the statistics: " + ", ".join(f"{n} {k}" for k, n in kinds.items())
                + " -- listed under 'Failed / incomplete jobs' in the report."
            )
        lines += self.notes
        if "report_html" in self.files:
            lines.append(f"\nReport: {self.files['report_html']}")
        return "\n".join(lines)


def _pick_headline(thresholds: Sequence[float], wanted: float) -> float | None:
    if not thresholds:
        return None
    close = [t for t in thresholds if math.isclose(t, wanted, abs_tol=1e-9)]
    return close[0] if close else max(thresholds)


def _load_provider(spec: str) -> SectionProvider:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _provider_sections(
    specs: Sequence[str], runs: Sequence[RunRecord], out_dir: Path, settings: AnalyzeJobConfig
) -> list[ReportSection]:
    """Sections from configured providers; a failing provider becomes a visible error section."""
    out: list[ReportSection] = []
    for spec in specs:
        try:
            out.extend(_load_provider(spec)(runs, out_dir, settings))
        except Exception as exc:  # noqa: BLE001 - an optional section must not sink the report
            msg = f"This section could not be built: `{type(exc).__name__}: {exc}`"
            out.append(ReportSection(f"{spec} (failed)", msg))
    return out


def default_out_dir(sweep_dirs: Sequence[Path], configured: str | os.PathLike | None) -> Path:
    """``analysis.out_dir`` if given, else ``<first sweep dir>/analysis``."""
    return Path(configured) if configured else Path(sweep_dirs[0]) / "analysis"


def _sweep_label(runs: Sequence[RunRecord]) -> str:
    """``experiment / task`` for figure and report titles."""
    experiments = ", ".join(sorted({r.experiment for r in runs if r.experiment}))
    tasks = ", ".join(sorted({r.task for r in runs if r.task}))
    return " / ".join(x for x in (experiments, tasks) if x)


def _make_figures(
    runs: Sequence[RunRecord],
    thresholds: list[float],
    conditions: list[str],
    out: Path,
    a: AnalysisSettings,
    label: str,
) -> tuple[dict[str, Path | None], bool]:
    """All figures; returns ``{name: path or None}`` and whether the measures table had none of the measures."""
    colors = condition_colors(conditions)
    suffix = f" — {label}" if label else ""
    obs = observations_frame(runs, thresholds)
    figs: dict[str, Path | None] = {}
    figs["epochs_to_threshold"] = plot_epochs_to_threshold(
        obs[obs.included], thresholds, conditions, colors, out / "epochs_to_threshold.png",
        n_excluded=sum(not r.completed for r in runs), log_span=a.log_span, dpi=a.dpi,
        title=f"Epochs to test-accuracy threshold{suffix}",
    )  # fmt: skip
    cv = a.curves
    common = dict(after_end=cv.after_end, max_points=cv.max_points, log_span=a.log_span, dpi=a.dpi)
    metrics = load_tables(runs, METRICS_FILE, cv.include_statuses)
    figs["test_accuracy"] = plot_curve(
        metrics, "test_acc", conditions, colors, out / "test_accuracy.png", "test accuracy",
        f"Test accuracy{suffix}", hlines=thresholds[:1] + thresholds[-1:], **common,
    )  # fmt: skip
    figs["test_loss"] = plot_curve(
        metrics, "test_loss", conditions, colors, out / "test_loss.png", "test loss (cross-entropy)",
        f"Test loss{suffix}", log_y=True, **common,
    )  # fmt: skip
    measures = load_tables(runs, MEASURES_FILE, cv.include_statuses)
    measure_cols = numeric_columns(measures, a.measures)
    figs["progress_measures"] = plot_measures(
        measures, measure_cols, conditions, colors, out / "progress_measures.png",
        title=f"Progress measures{suffix}", **common,
    )  # fmt: skip
    return figs, bool(measures) and not measure_cols


def run_analysis(
    sweep_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    cfg: Any = None,
    extra_sections: Sequence[ReportSection] = (),
) -> AnalysisResult:
    """Analyse one or more sweeps (paths or globs) and write every output to ``out_dir``.

    ``cfg`` is a Hydra DictConfig of ``conf/analyze.yaml``, a plain dict of the same
    shape, an ``AnalyzeJobConfig`` or None (defaults). ``out_dir`` overrides
    ``analysis.out_dir``; with neither, outputs go to ``<first sweep dir>/analysis``.
    ``extra_sections`` are added to the report (the circuits hook) after the figures,
    following any from ``analysis.extra_sections`` providers.
    """
    settings = to_settings(cfg)
    a, b = settings.analysis, settings.analysis.bootstrap
    dirs = resolve_sweep_dirs(sweep_dirs)
    runs = collect_runs(dirs, a.stale_after_s)  # raises before anything is written
    out = Path(out_dir) if out_dir is not None else default_out_dir(dirs, a.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # ---- tables
    thresholds = sorted(float(t) for t in a.thresholds) if a.thresholds else thresholds_in(runs)
    conditions = condition_order([r.condition for r in runs], [*PREFERRED_ORDER, *a.compare, a.baseline])
    runs_df = runs_frame(runs, thresholds)
    summary = summary_table(runs, thresholds, conditions)
    speedup = speedup_table(runs, thresholds, a.baseline, a.compare, b.n_resamples, b.confidence, b.seed)
    files: dict[str, Path] = {}
    for name, df in (("runs", runs_df), ("summary_table", summary), ("speedup", speedup)):
        files[f"{name}_csv"] = out / f"{name}.csv"
        df.to_csv(files[f"{name}_csv"], index=False)

    # ---- figures
    label = _sweep_label(runs)
    figs, measures_missing = _make_figures(runs, thresholds, conditions, out, a, label)
    files.update({k: p for k, p in figs.items() if p is not None})

    # ---- report: the answer first, then the details, the sweep's metadata last
    headline = _pick_headline(thresholds, a.headline_threshold)
    listed = {**files, "report_md": out / "report.md", "report_html": out / "report.html"}
    n_excluded = sum(not r.completed for r in runs)
    answer = answer_section(summary, speedup, headline, a.baseline, conditions, b.confidence, n_excluded)
    costs = source_costs(runs, summary, headline, a.baseline)  # is the source worth its cost?
    files["source_cost_json"] = write_source_costs(costs, a.baseline, headline, out / "source_cost.json")
    built_in = [
        answer,
        *filter(None, [source_cost_section(costs, a.baseline, headline)]),
        sec.speedup_section(speedup, a.baseline, conditions, b.confidence),
        sec.threshold_section(summary, figs["epochs_to_threshold"]),
        sec.figures_section(figs, measures_missing),
    ]
    extras = [*_provider_sections(a.extra_sections, runs, out, settings), *extra_sections]
    title = f"groktransfer analysis — {label}" if label else "groktransfer analysis"
    generated = (
        f"Generated {datetime.now().strftime('%Y-%m-%d %H:%M')} from run directories only "
        f"({STATUS_FILE}, {METRICS_FILE}, {MEASURES_FILE})."
    )
    tail = [
        sec.incomplete_section(runs),
        sec.method_section(settings),
        sec.overview_section(runs, dirs, conditions, generated),
        sec.files_section(listed, out),
    ]
    files["report_md"], files["report_html"] = build_report(title, built_in, out, extras, tail=tail)

    result = AnalysisResult(
        out_dir=out, sweep_dirs=dirs, runs=runs, thresholds=thresholds, conditions=conditions,
        runs_table=runs_df, summary=summary, speedup=speedup, headline_threshold=headline,
        baseline=a.baseline, confidence=b.confidence, files=files,
    )  # fmt: skip

    # ---- optional W&B mirror (never fatal)
    numbers = {
        f"speedup_{r.condition}_{threshold_key(headline)}": float(r.ratio)
        for _, r in speedup[speedup.threshold == headline].iterrows()
        if np.isfinite(r.ratio)
    }
    tables = {"runs": runs_df, "summary_table": summary, "speedup": speedup}
    note = log_analysis(settings.wandb, out, runs, tables, [p for p in figs.values() if p], numbers)
    if note:
        result.notes.append(note)
    return result

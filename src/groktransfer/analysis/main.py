"""``run_analysis``: sweep dir(s) in, tables + figures + report out.

Why one entry point: ``scripts/analyze.py`` (Hydra), the quickstart script and
the tests all call the same function with the same settings object -- whose
defaults are the schema's, the report's sections included -- so what the tests
check is what users run. Input problems (missing dir, no runs, an unknown
section) raise ``SweepInputError`` before anything is written.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from groktransfer.render import PREFERRED_ORDER
from groktransfer.runs.rundir import Status
from groktransfer.utils.registry import UnknownNameError

from .answer import answers
from .collect import UNREADABLE, RunRecord, SweepInputError, collect_runs, resolve_sweep_dirs
from .report import ReportSection, build_report
from .section import Section, Sweep
from .sections import section_for
from .settings import AnalysisSettings, SettingsError, to_settings, unknown_conditions
from .stats import condition_order, format_ratio, speedup_table, summary_table, threshold_key, thresholds_in
from .tables import ci_label, runs_frame
from .wandb_log import log_analysis


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
                "\nNot in the statistics: "
                + ", ".join(f"{n} {k}" for k, n in kinds.items())
                + " -- listed under 'Failed / incomplete jobs' in the report."
            )
        unreadable = [r for r in self.runs if r.status == UNREADABLE]
        if unreadable:
            lines.append(f"Could not read {len(unreadable)} run(s):")
            lines += [f"  {r.run_dir}: {r.reason}" for r in unreadable]
        lines += self.notes
        if "report_html" in self.files:
            lines.append(f"\nReport: {self.files['report_html']}")
        return "\n".join(lines)


def _pick_headline(thresholds: Sequence[float], wanted: float) -> float | None:
    if not thresholds:
        return None
    close = [t for t in thresholds if math.isclose(t, wanted, abs_tol=1e-9)]
    return close[0] if close else max(thresholds)


def make_out_dir(out: Path) -> None:
    """Create the output directory and make sure files can be written there: one
    ``SweepInputError`` naming it otherwise (a regular file in the way, ``/proc``, no permission)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise SweepInputError(f"cannot write the analysis to {out}: {exc.strerror or exc}") from None


def default_out_dir(sweep_dirs: Sequence[Path], configured: str | os.PathLike | None) -> Path:
    """``analysis.out_dir`` if given, else ``<first sweep dir>/analysis``."""
    return Path(configured) if configured else Path(sweep_dirs[0]) / "analysis"


def _sweep_label(runs: Sequence[RunRecord]) -> str:
    """``experiment / task`` for figure and report titles."""
    experiments = ", ".join(sorted({r.experiment for r in runs if r.experiment}))
    tasks = ", ".join(sorted({r.task for r in runs if r.task}))
    return " / ".join(x for x in (experiments, tasks) if x)


def _resolve(spec: str) -> tuple[Section | None, str]:
    """(section, "") for a configured name, or (None, why) for a ``module:function`` that does not
    load (shown as a failed section: an optional section must not sink the report). An unknown
    registered name is bad input: ``SweepInputError`` before anything is written."""
    try:
        return section_for(spec), ""
    except UnknownNameError as exc:
        raise SweepInputError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - reported in the report
        return None, f"`{type(exc).__name__}: {exc}`"


def _chosen_sections(a: AnalysisSettings) -> list[tuple[str, Section | None, str]]:
    """(spec, section or None, why it failed) for every configured section, in report order:
    ``analysis.sections`` with ``analysis.extra_sections`` before the first closing one; a
    section named twice (by name and by its provider's path) appears once."""
    main = [(spec, *_resolve(spec)) for spec in a.sections]
    extra = [(spec, *_resolve(spec)) for spec in a.extra_sections]
    at = next((i for i, (_, s, _) in enumerate(main) if s is not None and s.closing), len(main))
    out: list[tuple[str, Section | None, str]] = []
    for spec, section, why in main[:at] + extra + main[at:]:
        if section is None or all(section is not s for _, s, _ in out):
            out.append((spec, section, why))
    return out


def _build(spec: str, section: Section | None, why: str, sweep: Sweep) -> list[ReportSection]:
    """One section's part of the report, or why it could not be built (a visible error section)."""
    if section is not None:
        try:
            return list(section.build(sweep))
        except Exception as exc:  # noqa: BLE001 - an optional section must not sink the report
            why = f"`{type(exc).__name__}: {exc}`"
    return [ReportSection(f"{spec} (failed)", f"This section could not be built: {why}")]


def run_analysis(
    sweep_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    cfg: Any = None,
    extra_sections: Sequence[ReportSection] = (),
) -> AnalysisResult:
    """Analyse one or more sweeps (paths or globs) and write every output to ``out_dir``.

    ``cfg`` is a Hydra DictConfig of ``conf/analyze.yaml``, a plain dict of the same
    shape, an ``AnalyzeJobConfig`` or None (defaults: the same report as the command line).
    ``out_dir`` overrides ``analysis.out_dir``; with neither, outputs go to
    ``<first sweep dir>/analysis``. The report's sections are ``analysis.sections`` (then
    ``analysis.extra_sections``); ``extra_sections`` here are ready-made ``ReportSection``
    objects placed with them, before the closing sections.
    """
    settings = to_settings(cfg)
    a, b = settings.analysis, settings.analysis.bootstrap
    dirs = resolve_sweep_dirs(sweep_dirs)
    chosen = _chosen_sections(a)  # an unknown section name: raised before anything is written
    runs = collect_runs(dirs, a.stale_after_s)  # raises before anything is written
    unknown = unknown_conditions(a, {r.condition for r in runs if r.condition})
    if unknown:
        raise SettingsError("; ".join(unknown))
    out = Path(out_dir) if out_dir is not None else default_out_dir(dirs, a.out_dir)
    make_out_dir(out)

    # ---- the statistics every section shares
    thresholds = sorted(float(t) for t in a.thresholds) if a.thresholds else thresholds_in(runs)
    conditions = condition_order([r.condition or "unknown" for r in runs], [*PREFERRED_ORDER, *a.compare, a.baseline])
    sweep = Sweep(
        dirs=dirs,
        runs=runs,
        settings=settings,
        out_dir=out,
        thresholds=thresholds,
        conditions=conditions,
        runs_table=runs_frame(runs, thresholds),
        summary=summary_table(runs, thresholds, conditions),
        speedup=speedup_table(runs, thresholds, a.baseline, a.compare, b.n_resamples, b.confidence, b.seed),
        headline=_pick_headline(thresholds, a.headline_threshold),
        label=_sweep_label(runs),
    )
    sweep.write_csv("runs_csv", sweep.runs_table, "runs.csv")
    sweep.write_csv("summary_table_csv", sweep.summary, "summary_table.csv")
    sweep.write_csv("speedup_csv", sweep.speedup, "speedup.csv")
    report_md, report_html = out / "report.md", out / "report.html"

    # ---- the sections, in order; the ready-made ones before the closing sections
    built: list[ReportSection] = []
    closing_at = next((i for i, (_, s, _) in enumerate(chosen) if s is not None and s.closing), len(chosen))
    for i, (spec, section, why) in enumerate(chosen):
        if i == closing_at:
            built += list(extra_sections)
            sweep.files.update(report_md=report_md, report_html=report_html)
        reason = section.applies(sweep) if section is not None else None
        if reason is not None:  # left out; listed under "Sweep" unless there is nothing to say ("")
            if reason:
                sweep.left_out.append((section.title or spec, reason))  # type: ignore[union-attr]
            continue
        built += _build(spec, section, why, sweep)
        if section is not None:
            sweep.record_written(section)
    if closing_at == len(chosen):
        built += list(extra_sections)
        sweep.files.update(report_md=report_md, report_html=report_html)
    title = f"groktransfer analysis — {sweep.label}" if sweep.label else "groktransfer analysis"
    build_report(title, built, out)

    result = AnalysisResult(
        out_dir=out,
        sweep_dirs=dirs,
        runs=runs,
        thresholds=thresholds,
        conditions=conditions,
        runs_table=sweep.runs_table,
        summary=sweep.summary,
        speedup=sweep.speedup,
        headline_threshold=sweep.headline,
        baseline=a.baseline,
        confidence=b.confidence,
        files=dict(sweep.files),
    )

    # ---- optional W&B mirror (never fatal)
    headline = sweep.headline
    numbers = {
        f"speedup_{r.condition}_{threshold_key(headline)}": float(r.ratio)
        for _, r in sweep.speedup[sweep.speedup.threshold == headline].iterrows()
        if headline is not None and np.isfinite(r.ratio)
    }
    tables = {"runs": sweep.runs_table, "summary_table": sweep.summary, "speedup": sweep.speedup}
    figures = [p for p in sweep.files.values() if p.suffix == ".png"]
    note = log_analysis(settings.wandb, out, runs, tables, figures, numbers)
    if note:
        result.notes.append(note)
    return result

"""The report-section protocol: what a section needs of a sweep, and what it writes.

A sweep report is a list of :class:`Section` objects, registered by name in
``groktransfer.analysis.sections.SECTIONS`` (a plugin registers its own there, as it registers a
task family) and listed, in order, by ``analysis.sections`` (the default list is the schema's:
``groktransfer.analysis.settings.AnalysisSettings``), so ``scripts/analyze.py`` and
``run_analysis()`` called from Python build the same report.

A section is asked :meth:`Section.applies` first: a section with nothing to say about these runs
(the circuit analysis on a task without a Fourier circuit, the trajectory without checkpoint
starts) says why in one line and is left out; the reasons are listed under the report's
*Sweep* section. Otherwise :meth:`Section.build` returns its report sections, having written
its files into the analysis folder and recorded them in :attr:`Sweep.files`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from groktransfer.model.protocol import Reading
from groktransfer.model.registry import MODELS
from groktransfer.render import condition_colors
from groktransfer.runs.reader import FileProblem
from groktransfer.tasks.family import TaskFamily
from groktransfer.tasks.registry import TASKS

from .collect import RunRecord
from .report import ReportSection
from .settings import AnalysisSettings, AnalyzeJobConfig

#: The older way to add a section: a function of (runs, out dir, settings) returning report sections.
SectionProvider = Callable[[Sequence[RunRecord], Path, AnalyzeJobConfig], Sequence[ReportSection]]


@dataclass
class Sweep:
    """What every section reads: the runs, the settings, the statistics the report shares, and
    the files written so far (``files``: key -> path, listed by the *Files* section)."""

    dirs: list[Path]
    runs: list[RunRecord]
    settings: AnalyzeJobConfig
    out_dir: Path
    thresholds: list[float]
    conditions: list[str]
    runs_table: pd.DataFrame
    summary: pd.DataFrame
    speedup: pd.DataFrame
    headline: float | None
    label: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    #: (section, why) of every section that did not apply
    left_out: list[tuple[str, str]] = field(default_factory=list)

    @property
    def analysis(self) -> AnalysisSettings:
        return self.settings.analysis

    @property
    def completed(self) -> list[RunRecord]:
        return [r for r in self.runs if r.completed]

    @property
    def n_excluded(self) -> int:
        return sum(not r.completed for r in self.runs)

    @cached_property
    def colors(self) -> dict[str, str]:
        return condition_colors(self.conditions)

    @property
    def title_suffix(self) -> str:
        """`` — experiment / task`` for figure titles (empty when the runs recorded neither)."""
        return f" — {self.label}" if self.label else ""

    def problems(self) -> list[FileProblem]:
        """Every damaged or unreadable file met so far (files are read when a section needs them)."""
        return [p for r in self.runs if r.contents is not None for p in r.contents.problems]

    def record_written(self, section: Section) -> None:
        """Record the files of ``section.writes`` that it wrote (for the *Files* section)."""
        for name in section.writes:
            self.add_file(file_key(name), self.out_dir / name if (self.out_dir / name).is_file() else None)

    def add_file(self, key: str, path: Path | None) -> Path | None:
        """Record a written file for the *Files* section (None: nothing was written)."""
        if path is not None:
            self.files[key] = path
        return path

    def write_csv(self, key: str, frame: pd.DataFrame, name: str) -> Path:
        """Write ``frame`` as ``<out_dir>/<name>`` and record it."""
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        self.files[key] = path
        return path


def file_key(name: str) -> str:
    """The key a written file is listed under: a figure by its stem (``progress_measures``),
    any other file by stem and suffix (``runs_csv``, ``report_html``)."""
    path = Path(name)
    return path.stem if path.suffix == ".png" else f"{path.stem}_{path.suffix.lstrip('.')}"


class Section:
    """One part of the report (see the module docstring)."""

    #: the section's name in listings (its report sections carry their own titles)
    title: ClassVar[str] = ""
    #: closing sections (the report's metadata) come after every section added to the defaults
    closing: ClassVar[bool] = False
    #: the files it may write into the analysis folder: those it wrote are listed under *Files*
    writes: ClassVar[tuple[str, ...]] = ()

    #: a section that is one provider function (``staticmethod(fn)``): ``fn(runs, out_dir, settings)`` builds it
    provider: ClassVar[Any] = None

    def applies(self, sweep: Sweep) -> str | None:
        """None when the section has something to say about ``sweep``; else why not, in one line
        (listed under the report's *Sweep* section; ``""`` leaves it out without a word)."""
        return None

    def build(self, sweep: Sweep) -> list[ReportSection]:
        """The section's part of the report (its files written into ``sweep.out_dir``)."""
        if self.provider is None:
            raise NotImplementedError(f"{type(self).__name__} has neither build() nor a provider")
        return list(self.provider(sweep.runs, sweep.out_dir, sweep.settings))


class ProviderSection(Section):
    """A section from a provider function ``fn(runs, out_dir, settings) -> [ReportSection]``
    (``analysis.extra_sections: ["package.module:function"]``)."""

    def __init__(self, fn: SectionProvider, title: str = "") -> None:
        self.fn = fn
        self.name = title or getattr(fn, "__name__", "section")

    def build(self, sweep: Sweep) -> list[ReportSection]:
        return list(self.fn(sweep.runs, sweep.out_dir, sweep.settings))


def run_family(run: RunRecord) -> TaskFamily | None:
    """The task family of a run's task (None for a task no family registers)."""
    return TASKS.find(str(run.task)) if run.task else None


def run_model_readings(run: RunRecord) -> frozenset:
    """What the run's model offers analysis (the model protocol's ``readings``), from the
    architecture its config names; empty for an architecture no longer registered."""
    model = run.contents.config.model if run.contents is not None else {}
    cls = MODELS.find(str(model.get("architecture") or "hooked_transformer"))
    return frozenset(cls.readings) if cls is not None else frozenset()


def offers(run: RunRecord, reading: Reading) -> bool:
    return reading in run_model_readings(run)


def load_provider(spec: str) -> Any:
    """The object ``package.module:attribute`` names."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)

"""Typed settings of the analysis job, registered as a Hydra structured config.

Why a schema: ``conf/analyze.yaml`` names ``analyze_schema`` as its base, so a
misspelt key (``analysis.bootstrap.n_resample``) fails when Hydra composes the
config instead of being silently ignored. The same dataclasses give
``run_analysis`` its defaults when it is called from tests or from the quickstart
script without any Hydra config at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from groktransfer.config.conditions import CONDITIONS
from groktransfer.config.ranges import bounded, range_problems
from groktransfer.config.schema import LoggerMode, to_typed

# the interpretability settings live with the analyses they switch (interp sits below analysis)
from groktransfer.interp.settings import AblationKind, HeadSite, InterpSettings  # noqa: F401
from groktransfer.runs.rundir import Status
from groktransfer.utils.choices import Choice
from groktransfer.utils.errors import UserError

#: the report's sections, in order (names in ``groktransfer.analysis.sections.SECTIONS``); a
#: section with nothing to say about a sweep's runs is left out and listed under "Sweep"
DEFAULT_SECTIONS = [
    "answer",
    "source_cost",
    "speedup",
    "thresholds",
    "curves",
    "starts",
    "trajectory",
    "matrix",
    "circuits",
    "interpretability",
    "digits",
    "damaged_files",
    "incomplete",
    "method",
    "sweep",
    "files",
]

#: the progress measures drawn first, where the runs recorded them (the modular family's)
DEFAULT_MEASURES = [
    "restricted_loss",
    "excluded_loss",
    "weight_norm_total",
    "n_key_freqs",
    "gini_W_E",
    "gini_W_L",
]


class AfterEnd(Choice):
    """What a run contributes to a median curve after its last eval."""

    hold = "hold"
    drop = "drop"


@dataclass
class BootstrapSettings:
    """Percentile bootstrap of the speed-up ratio (resampling runs within each condition)."""

    # bootstrap resamples per speed-up CI
    n_resamples: int = bounded(2000, ge=1)
    # confidence level of the intervals
    confidence: float = bounded(0.95, gt=0, lt=1)
    # seed of the resampling (the intervals are reproducible)
    seed: int = bounded(0, ge=0)


@dataclass
class CurveSettings:
    """How per-seed curves are put on a common epoch grid before taking median / IQR.

    ``after_end``: ``hold`` keeps a run's last value after its last eval (runs that
    stopped early did so because the last threshold had *held*, so holding is the
    faithful extrapolation of accuracy); ``drop`` lets the run stop contributing.
    """

    # run statuses whose curves are drawn
    include_statuses: list[str] = field(default_factory=lambda: [str(Status.COMPLETED)])
    # hold (keep a run's last value after its last eval) or drop
    after_end: AfterEnd = AfterEnd.hold
    # at most this many epochs on the common grid of a curve
    max_points: int = bounded(400, ge=2)


@dataclass
class AnalysisSettings:
    """What to compare, which thresholds, where to write."""

    # where outputs go; None = <first sweep dir>/analysis
    out_dir: str | None = None
    # the condition speed-ups are measured against
    baseline: str = "random"
    # conditions compared with the baseline (others found in the sweep are added)
    compare: list[str] = field(default_factory=lambda: ["grokked", "memorized"])
    # None = every threshold found in the runs' status records
    thresholds: list[float] | None = bounded(None, gt=0, le=1)
    # threshold of the stdout summary; falls back to the highest one available
    headline_threshold: float = bounded(0.999, gt=0, le=1)
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    curves: CurveSettings = field(default_factory=CurveSettings)
    # measures.csv columns drawn in progress_measures.png; None = those the runs recorded (the
    # modular family's restricted/excluded loss, weight norm, key frequencies and Ginis first,
    # then a plugin family's own measures)
    measures: list[str] | None = None
    # a `running` run whose updated_at is older than this is listed as running/stale
    stale_after_s: float = bounded(3600.0, gt=0)
    # use a log axis when max/min of the plotted positive values exceeds this
    log_span: float = bounded(10.0, gt=1)
    # resolution of the PNG figures
    dpi: int = bounded(130, ge=1, le=1200)
    # the report's sections, in order: names registered in groktransfer.analysis.sections.SECTIONS
    sections: list[str] = field(default_factory=lambda: list(DEFAULT_SECTIONS))
    # more sections, placed before the closing ones (failed jobs, method, sweep, files): registered
    # names, or "package.module:function" providers returning a list of ReportSection
    extra_sections: list[str] = field(default_factory=list)
    interp: InterpSettings = field(default_factory=InterpSettings)
    # transfer starts: restricted_acc - test_acc above this (with a key frequency) = circuit forming
    circuit_flag_gap: float = bounded(0.0)


@dataclass
class WandbSettings:
    """Optional W&B logging of the analysis as a run with job_type ``analysis``."""

    # disabled, offline (files under <out_dir>/wandb) or online
    mode: LoggerMode = LoggerMode.disabled
    # W&B project
    project: str = "groktransfer"
    # W&B entity; None = your default
    entity: str | None = None
    # None = the training runs' logger.group, else their experiment name
    group: str | None = None
    # W&B run name; None = W&B's
    name: str | None = None


@dataclass
class AnalyzeJobConfig:
    """The whole analysis job. ``sweep_dir`` is a path, a glob, or a list of them."""

    # sweep directory, a quoted glob, or a list of them; their runs are merged
    sweep_dir: Any = None
    # circuit analysis of one checkpoint file instead of a sweep (this project's or the paper's format)
    checkpoint: str | None = None
    # with checkpoint=: the task whose basis the model is read in (digit_add/digit_sub: interpretability only)
    checkpoint_task: str | None = None
    # with checkpoint=: p; None = the model's input vocabulary minus the '=' token
    checkpoint_p: int | None = bounded(None, ge=2)
    # with checkpoint=: which state dict of a file holding several (paper format); None = the last
    checkpoint_index: int | None = bounded(None)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    wandb: WandbSettings = field(default_factory=WandbSettings)


def register_analyze_config() -> None:
    """Register ``analyze_schema`` so ``conf/analyze.yaml`` can extend it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="analyze_schema", node=AnalyzeJobConfig)


class SettingsError(UserError, ValueError):
    """Analysis settings that cannot describe an analysis; the message lists every problem."""


def to_settings(cfg: Any) -> AnalyzeJobConfig:
    """A Hydra DictConfig, a (partial) plain dict, an ``AnalyzeJobConfig`` or None as settings,
    checked (:func:`settings_problems`): ``SettingsError`` before anything is read or written."""
    settings = to_typed(AnalyzeJobConfig, cfg, label="analyze")
    problems = settings_problems(settings)
    if problems:
        raise SettingsError("invalid analysis settings: " + "; ".join(problems))
    return settings


def settings_problems(settings: AnalyzeJobConfig) -> list[str]:
    """Every value out of the range declared beside its field (NaN and infinities included), and
    the settings' other rules."""
    errors = range_problems(settings)
    a = settings.analysis
    statuses = {str(s) for s in Status}
    for st in a.curves.include_statuses:
        if str(st) not in statuses:
            errors.append(f"analysis.curves.include_statuses={st}: one of {', '.join(sorted(statuses))}")
    if not str(a.baseline).strip():
        errors.append(f"analysis.baseline={a.baseline!r}: name a condition (e.g. random)")
    return errors


def unknown_conditions(settings: AnalysisSettings, present: Iterable[str]) -> list[str]:
    """``analysis.baseline`` / ``analysis.compare`` entries that name no condition: neither one
    of the sweep's nor a registered transfer condition (a typo, not a condition without runs)."""
    found = set(present)
    problems = []
    for key, names in (("analysis.baseline", [settings.baseline]), ("analysis.compare", list(settings.compare))):
        for name in names:
            if str(name) not in found and str(name) not in CONDITIONS:
                problems.append(
                    f"{key}={name!r} is no condition of the sweep ({', '.join(sorted(found)) or 'none'}) "
                    f"nor a registered transfer condition ({', '.join(CONDITIONS.names())})"
                )
    return problems

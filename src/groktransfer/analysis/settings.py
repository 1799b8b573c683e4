"""Typed settings of the analysis job, registered as a Hydra structured config.

Why a schema: ``conf/analyze.yaml`` names ``analyze_schema`` as its base, so a
misspelt key (``analysis.bootstrap.n_resample``) fails when Hydra composes the
config instead of being silently ignored. The same dataclasses give
``run_analysis`` its defaults when it is called from tests or from the quickstart
script without any Hydra config at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional

from groktransfer.utils.choices import Choice
from groktransfer.utils.errors import UserError
from groktransfer.config.conditions import CONDITIONS
from groktransfer.config.schema import LoggerMode, to_typed
from groktransfer.runs.rundir import Status
# the interpretability settings live with the analyses they switch (interp sits below analysis)
from groktransfer.interp.settings import AblationKind, HeadSite, InterpSettings  # noqa: F401

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
    n_resamples: int = 2000
    # confidence level of the intervals
    confidence: float = 0.95
    # seed of the resampling (the intervals are reproducible)
    seed: int = 0


@dataclass
class CurveSettings:
    """How per-seed curves are put on a common epoch grid before taking median / IQR.

    ``after_end``: ``hold`` keeps a run's last value after its last eval (runs that
    stopped early did so because the last threshold had *held*, so holding is the
    faithful extrapolation of accuracy); ``drop`` lets the run stop contributing.
    """

    # run statuses whose curves are drawn
    include_statuses: List[str] = field(default_factory=lambda: [str(Status.COMPLETED)])
    # hold (keep a run's last value after its last eval) or drop
    after_end: AfterEnd = AfterEnd.hold
    # at most this many epochs on the common grid of a curve
    max_points: int = 400


@dataclass
class AnalysisSettings:
    """What to compare, which thresholds, where to write."""

    # where outputs go; None = <first sweep dir>/analysis
    out_dir: Optional[str] = None
    # the condition speed-ups are measured against
    baseline: str = "random"
    # conditions compared with the baseline (others found in the sweep are added)
    compare: List[str] = field(default_factory=lambda: ["grokked", "memorized"])
    # None = every threshold found in the runs' status records
    thresholds: Optional[List[float]] = None
    # threshold of the stdout summary; falls back to the highest one available
    headline_threshold: float = 0.999
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    curves: CurveSettings = field(default_factory=CurveSettings)
    # measures.csv columns drawn in progress_measures.png
    measures: List[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    # a `running` run whose updated_at is older than this is listed as running/stale
    stale_after_s: float = 3600.0
    # use a log axis when max/min of the plotted positive values exceeds this
    log_span: float = 10.0
    # resolution of the PNG figures
    dpi: int = 130
    # "module:function" callables returning list[ReportSection] (e.g. the circuits module)
    extra_sections: List[str] = field(default_factory=list)
    interp: InterpSettings = field(default_factory=InterpSettings)
    # transfer starts: restricted_acc - test_acc above this (with a key frequency) = circuit forming
    circuit_flag_gap: float = 0.0


@dataclass
class WandbSettings:
    """Optional W&B logging of the analysis as a run with job_type ``analysis``."""

    # disabled, offline (files under <out_dir>/wandb) or online
    mode: LoggerMode = LoggerMode.disabled
    # W&B project
    project: str = "groktransfer"
    # W&B entity; None = your default
    entity: Optional[str] = None
    # None = the training runs' logger.group, else their experiment name
    group: Optional[str] = None
    # W&B run name; None = W&B's
    name: Optional[str] = None


@dataclass
class AnalyzeJobConfig:
    """The whole analysis job. ``sweep_dir`` is a path, a glob, or a list of them."""

    # sweep directory, a quoted glob, or a list of them; their runs are merged
    sweep_dir: Any = None
    # circuit analysis of one checkpoint file instead of a sweep (this project's or the paper's format)
    checkpoint: Optional[str] = None
    # with checkpoint=: the task whose basis the model is read in (digit_add/digit_sub: interpretability only)
    checkpoint_task: Optional[str] = None
    # with checkpoint=: p; None = the model's input vocabulary minus the '=' token
    checkpoint_p: Optional[int] = None
    # with checkpoint=: which state dict of a file holding several (paper format); None = the last
    checkpoint_index: Optional[int] = None
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


#: the largest figure resolution accepted (a figure's pixels grow with its square)
MAX_DPI = 1200


def settings_problems(settings: AnalyzeJobConfig) -> List[str]:
    """Every value of the settings that is out of its range (NaN and infinities included)."""
    a, b, errors = settings.analysis, settings.analysis.bootstrap, []

    def need(ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            errors.append(f"{key}={value}: {rule}")

    def finite(x: Any) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(float(x))

    need(int(b.n_resamples) >= 1, "analysis.bootstrap.n_resamples", b.n_resamples, "must be >= 1")
    need(finite(b.confidence) and 0 < b.confidence < 1, "analysis.bootstrap.confidence", b.confidence, "must lie in (0, 1)")
    for t in a.thresholds or []:
        need(finite(t) and 0 < t <= 1, "analysis.thresholds", t, "each must lie in (0, 1]")
    need(finite(a.headline_threshold) and 0 < a.headline_threshold <= 1, "analysis.headline_threshold",
         a.headline_threshold, "must lie in (0, 1]")  # fmt: skip
    need(finite(a.stale_after_s) and a.stale_after_s > 0, "analysis.stale_after_s", a.stale_after_s, "must be > 0 seconds")
    need(finite(a.log_span) and a.log_span > 1, "analysis.log_span", a.log_span, "must be > 1")
    need(1 <= int(a.dpi) <= MAX_DPI, "analysis.dpi", a.dpi, f"must lie in [1, {MAX_DPI}]")
    need(finite(a.circuit_flag_gap), "analysis.circuit_flag_gap", a.circuit_flag_gap, "must be a finite number")
    need(int(a.curves.max_points) >= 2, "analysis.curves.max_points", a.curves.max_points, "must be >= 2")
    statuses = {str(s) for s in Status}
    for st in a.curves.include_statuses:
        need(str(st) in statuses, "analysis.curves.include_statuses", st, f"one of {', '.join(sorted(statuses))}")
    need(bool(str(a.baseline).strip()), "analysis.baseline", repr(a.baseline), "name a condition (e.g. random)")
    i = a.interp
    need(finite(i.key_freq_threshold) and 0 < i.key_freq_threshold <= 1, "analysis.interp.key_freq_threshold",
         i.key_freq_threshold, "must lie in (0, 1]")  # fmt: skip
    for key in ("top_neurons", "parallel_runs", "max_inputs"):
        need(int(getattr(i, key)) >= 0, f"analysis.interp.{key}", getattr(i, key), "must be >= 0")
    need(int(i.threads) >= 1, "analysis.interp.threads", i.threads, "must be >= 1")
    if settings.checkpoint_p is not None:
        need(int(settings.checkpoint_p) >= 2, "checkpoint_p", settings.checkpoint_p, "must be >= 2")
    return errors


def unknown_conditions(settings: AnalysisSettings, present: Iterable[str]) -> List[str]:
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

"""Typed settings of the analysis job, registered as a Hydra structured config.

Why a schema: ``conf/analyze.yaml`` names ``analyze_schema`` as its base, so a
misspelt key (``analysis.bootstrap.n_resample``) fails when Hydra composes the
config instead of being silently ignored. The same dataclasses give
``run_analysis`` its defaults when it is called from tests or from the quickstart
script without any Hydra config at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from groktransfer.config.schema import LoggerMode, to_typed

# the interpretability settings live with the analyses they switch (interp sits below analysis)
from groktransfer.interp.settings import AblationKind, HeadSite, InterpSettings  # noqa: F401
from groktransfer.runs.rundir import Status
from groktransfer.utils.choices import Choice

#: the report's sections, in order (names in ``groktransfer.analysis.sections.SECTIONS``); a
#: section with nothing to say about a sweep's runs is left out and listed under "Sweep"
DEFAULT_SECTIONS = [
    "answer",
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
    include_statuses: list[str] = field(default_factory=lambda: [str(Status.COMPLETED)])
    # hold (keep a run's last value after its last eval) or drop
    after_end: AfterEnd = AfterEnd.hold
    # at most this many epochs on the common grid of a curve
    max_points: int = 400


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
    thresholds: list[float] | None = None
    # threshold of the stdout summary; falls back to the highest one available
    headline_threshold: float = 0.999
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    curves: CurveSettings = field(default_factory=CurveSettings)
    # measures.csv columns drawn in progress_measures.png; None = those the runs recorded (the
    # modular family's restricted/excluded loss, weight norm, key frequencies and Ginis first,
    # then a plugin family's own measures)
    measures: list[str] | None = None
    # a `running` run whose updated_at is older than this is listed as running/stale
    stale_after_s: float = 3600.0
    # use a log axis when max/min of the plotted positive values exceeds this
    log_span: float = 10.0
    # resolution of the PNG figures
    dpi: int = 130
    # the report's sections, in order: names registered in groktransfer.analysis.sections.SECTIONS
    sections: list[str] = field(default_factory=lambda: list(DEFAULT_SECTIONS))
    # more sections, placed before the closing ones (failed jobs, method, sweep, files): registered
    # names, or "package.module:function" providers returning a list of ReportSection
    extra_sections: list[str] = field(default_factory=list)
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
    checkpoint_p: int | None = None
    # with checkpoint=: which state dict of a file holding several (paper format); None = the last
    checkpoint_index: int | None = None
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    wandb: WandbSettings = field(default_factory=WandbSettings)


def register_analyze_config() -> None:
    """Register ``analyze_schema`` so ``conf/analyze.yaml`` can extend it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="analyze_schema", node=AnalyzeJobConfig)


def to_settings(cfg: Any) -> AnalyzeJobConfig:
    """A Hydra DictConfig, a (partial) plain dict, an ``AnalyzeJobConfig`` or None as settings."""
    return to_typed(AnalyzeJobConfig, cfg, label="analyze")

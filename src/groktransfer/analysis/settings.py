"""Typed settings of the analysis job, registered as a Hydra structured config.

Why a schema: ``conf/analyze.yaml`` names ``analyze_schema`` as its base, so a
misspelt key (``analysis.bootstrap.n_resample``) fails when Hydra composes the
config instead of being silently ignored. The same dataclasses give
``run_analysis`` its defaults when it is called from tests or from the quickstart
script without any Hydra config at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, List, Mapping, Optional, get_type_hints

DEFAULT_MEASURES = [
    "restricted_loss",
    "excluded_loss",
    "weight_norm_total",
    "n_key_freqs",
    "gini_W_E",
    "gini_W_L",
]


@dataclass
class BootstrapSettings:
    """Percentile bootstrap of the speed-up ratio (resampling runs within each condition)."""

    n_resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0


@dataclass
class CurveSettings:
    """How per-seed curves are put on a common epoch grid before taking median / IQR.

    ``after_end``: ``hold`` keeps a run's last value after its last eval (runs that
    stopped early did so because the last threshold had *held*, so holding is the
    faithful extrapolation of accuracy); ``drop`` lets the run stop contributing.
    """

    include_statuses: List[str] = field(default_factory=lambda: ["completed"])
    after_end: str = "hold"  # hold | drop
    max_points: int = 400


@dataclass
class AnalysisSettings:
    """What to compare, which thresholds, where to write."""

    out_dir: Optional[str] = None
    baseline: str = "random"
    compare: List[str] = field(default_factory=lambda: ["grokked", "memorized"])
    # None = every threshold found in the runs' status.json
    thresholds: Optional[List[float]] = None
    # threshold of the stdout summary; falls back to the highest one available
    headline_threshold: float = 0.999
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    curves: CurveSettings = field(default_factory=CurveSettings)
    measures: List[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    # a `running` run whose updated_at is older than this is listed as running/stale
    stale_after_s: float = 3600.0
    # use a log axis when max/min of the plotted positive values exceeds this
    log_span: float = 10.0
    dpi: int = 130
    # "module:function" callables returning list[ReportSection] (e.g. the circuits module)
    extra_sections: List[str] = field(default_factory=list)


@dataclass
class WandbSettings:
    """Optional W&B logging of the analysis as a run with job_type ``analysis``."""

    mode: str = "disabled"  # disabled | offline | online
    project: str = "groktransfer"
    entity: Optional[str] = None
    # None = the training runs' logger.group, else their experiment name
    group: Optional[str] = None
    name: Optional[str] = None


@dataclass
class AnalyzeJobConfig:
    """The whole analysis job. ``sweep_dir`` is a path, a glob, or a list of them."""

    sweep_dir: Any = None
    # circuit analysis of one checkpoint file instead of a sweep (this project's or the paper's format)
    checkpoint: Optional[str] = None
    checkpoint_task: Optional[str] = None
    checkpoint_p: Optional[int] = None
    checkpoint_index: Optional[int] = None
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    wandb: WandbSettings = field(default_factory=WandbSettings)


def register_analyze_config() -> None:
    """Register ``analyze_schema`` so ``conf/analyze.yaml`` can extend it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="analyze_schema", node=AnalyzeJobConfig)


def _fill(cls: type, values: Mapping[str, Any] | None) -> Any:
    """Build dataclass ``cls`` from a (possibly partial) mapping, recursing into nested ones."""
    values = dict(values or {})
    hints = get_type_hints(cls)
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {sorted(unknown)}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        v = values[f.name]
        if is_dataclass(hints[f.name]) and isinstance(v, Mapping):
            v = _fill(hints[f.name], v)
        kwargs[f.name] = v
    return cls(**kwargs)


def to_settings(cfg: Any) -> AnalyzeJobConfig:
    """Turn a Hydra DictConfig, a plain dict, an ``AnalyzeJobConfig`` or None into settings."""
    if cfg is None:
        return AnalyzeJobConfig()
    if isinstance(cfg, AnalyzeJobConfig):
        return cfg
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a hard dependency
        pass
    return _fill(AnalyzeJobConfig, cfg)

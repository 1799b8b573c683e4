"""Typed settings of the analysis job, registered as a Hydra structured config.

Why a schema: ``conf/analyze.yaml`` names ``analyze_schema`` as its base, so a
misspelt key (``analysis.bootstrap.n_resample``) fails when Hydra composes the
config instead of being silently ignored. The same dataclasses give
``run_analysis`` its defaults when it is called from tests or from the quickstart
script without any Hydra config at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from groktransfer.utils.choices import Choice
from groktransfer.config.schema import LoggerMode, to_typed
from groktransfer.runs.rundir import Status

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

    include_statuses: List[str] = field(default_factory=lambda: [str(Status.COMPLETED)])
    after_end: AfterEnd = AfterEnd.hold
    max_points: int = 400


class AblationKind(Choice):
    """What an ablated part is replaced by: 0, or its mean over all inputs."""

    zero = "zero"
    mean = "mean"


class HeadSite(Choice):
    """Which activation of a head is ablated: its output z, or its query / key / value input."""

    z = "z"
    q = "q"
    k = "k"
    v = "v"


@dataclass
class InterpSettings:
    """Which interpretability analyses (``groktransfer.interp``) run, on one checkpoint
    (``checkpoint=...``) and on every final model of a sweep. Defaults keep the
    quickstart's analysis to seconds per run."""

    enabled: bool = True
    # TransformerLens weight processing before any reading (fold LayerNorm, centre writing
    # weights and the unembedding, fold value biases); log-probabilities are unchanged
    process_weights: bool = True
    # the task family's hand-made readings and the seed analyses' findings (interp.families)
    readings: bool = True
    # head ablations: the kinds to run (zero / mean) and the sites (z = the head's output;
    # q, k, v = its query / key / value input); [] = none
    head_ablation: List[AblationKind] = field(default_factory=lambda: [AblationKind.mean])
    head_sites: List[HeadSite] = field(default_factory=lambda: list(HeadSite))
    dla: bool = True  # direct logit attribution per part and per output frequency
    embedding: bool = True  # PCA/SVD and Fourier norms of the operand embeddings
    # principal components of the embedding ablated one at a time (1 = PC1), with failure maps
    pc_ablation: List[int] = field(default_factory=lambda: [1, 2])
    spectra: bool = True  # singular values against a Gaussian control
    probes: bool = True  # ridge probes of the declared targets
    # hook points probed at the answer positions; {L} = every layer
    probe_hooks: List[str] = field(default_factory=lambda: ["blocks.{L}.hook_resid_mid", "blocks.{L}.hook_resid_post", "blocks.{L}.mlp.hook_post"])
    neurons: bool = True  # neuron clusters by frequency, correlations, top neuron maps
    key_freq_threshold: float = 0.85  # share of a neuron's variance at one frequency for it to count
    top_neurons: int = 6
    attention: bool = True  # attention patterns at each answer position
    in_sweep: bool = True  # also for every final model in the sweep report
    threads: int = 1  # torch threads while interpreting (its matmuls are small: more threads contend)
    # tasks without an (a, b) grid (digit tasks) are analysed on at most this many inputs
    # (a fixed random subset); 0 = all
    max_inputs: int = 4096


@dataclass
class AnalysisSettings:
    """What to compare, which thresholds, where to write."""

    out_dir: Optional[str] = None
    baseline: str = "random"
    compare: List[str] = field(default_factory=lambda: ["grokked", "memorized"])
    # None = every threshold found in the runs' status records
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
    interp: InterpSettings = field(default_factory=InterpSettings)
    # transfer starts: restricted_acc - test_acc above this (with a key frequency) = circuit forming
    circuit_flag_gap: float = 0.0


@dataclass
class WandbSettings:
    """Optional W&B logging of the analysis as a run with job_type ``analysis``."""

    mode: LoggerMode = LoggerMode.disabled
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


def to_settings(cfg: Any) -> AnalyzeJobConfig:
    """A Hydra DictConfig, a (partial) plain dict, an ``AnalyzeJobConfig`` or None as settings."""
    return to_typed(AnalyzeJobConfig, cfg, label="analyze")

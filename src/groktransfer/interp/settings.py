"""Which interpretability analyses run (``analysis.interp`` of ``conf/analyze.yaml``).

Part of the analysis job's schema (``groktransfer.analysis.settings`` re-exports these), but
kept here so that ``groktransfer.interp`` needs nothing from the analysis layer above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from groktransfer.config.ranges import bounded
from groktransfer.utils.choices import Choice


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

    # run the interpretability toolkit at all
    enabled: bool = True
    # TransformerLens weight processing before any reading (fold LayerNorm, centre writing
    # weights and the unembedding, fold value biases); log-probabilities are unchanged
    process_weights: bool = True
    # the task family's own readings and the seed analyses' findings (Reading.families in interp.readings)
    readings: bool = True
    # head ablations: the kinds to run (zero / mean) and the sites (z = the head's output;
    # q, k, v = its query / key / value input); [] = none
    head_ablation: list[AblationKind] = field(default_factory=lambda: [AblationKind.mean])
    head_sites: list[HeadSite] = field(default_factory=lambda: list(HeadSite))  # z, q, k, v: see head_ablation
    dla: bool = True  # direct logit attribution per part and per output frequency
    embedding: bool = True  # PCA/SVD and Fourier norms of the operand embeddings
    # principal components of the embedding ablated one at a time (1 = PC1), with failure maps
    pc_ablation: list[int] = field(default_factory=lambda: [1, 2])
    spectra: bool = True  # singular values against a Gaussian control
    probes: bool = True  # ridge probes of the declared targets
    # hook points probed at the answer positions; {L} = every layer
    probe_hooks: list[str] = field(
        default_factory=lambda: ["blocks.{L}.hook_resid_mid", "blocks.{L}.hook_resid_post", "blocks.{L}.mlp.hook_post"]
    )
    neurons: bool = True  # neuron clusters by frequency, correlations, top neuron maps
    key_freq_threshold: float = bounded(
        0.85, gt=0, le=1
    )  # share of a neuron's variance at one frequency for it to count
    # neurons whose (a, b) maps are drawn
    top_neurons: int = bounded(6, ge=0)
    attention: bool = True  # attention patterns at each answer position
    in_sweep: bool = True  # also for every final model in the sweep report
    threads: int = bounded(
        1, ge=1, le=1024
    )  # torch threads while interpreting one model (its matmuls are small: more threads contend)
    # a sweep's final models interpreted side by side, one thread each; 0 = one per core
    parallel_runs: int = bounded(0, ge=0)
    # tasks without an (a, b) grid (digit tasks) are analysed on at most this many inputs
    # (a fixed random subset); 0 = all
    max_inputs: int = bounded(4096, ge=0)

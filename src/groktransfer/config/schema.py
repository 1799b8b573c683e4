"""Structured-config schemas for every Hydra config group.

Each dataclass is registered in Hydra's ConfigStore (see ``register_configs``) as
the *base* of its group's YAML files, so a misspelt key or a value of the wrong
type fails when Hydra composes the config -- before any directory is created or
any epoch is trained. Semantic checks that a type system cannot express (p prime,
fractions in range, source/target shapes) live in ``groktransfer.config.validate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


@dataclass
class TaskConfig:
    """Which arithmetic problem, over which modulus, split how.

    ``data_seed`` is None unless given: then the job's top-level ``seed`` fills it,
    so a seed sweep changes the split *and* the init unless either is pinned.
    """

    name: str = MISSING  # add | subtract | multiply | divide | x2xyy2 | int_add
    p: int = 113
    frac_train: float = 0.3
    data_seed: Optional[int] = None


@dataclass
class ModelConfig:
    """Shape of the transformer, in TransformerLens' field names.

    ``d_vocab`` / ``d_vocab_out`` are None to mean "derived from the task"
    (p+1 input tokens with '=' = p; p outputs, or 2p for int_add).
    The ``*_bias`` flags say whether a bias is *trained*; untrained biases are
    kept at zero but still stored, so checkpoints load into HookedTransformer.
    """

    name: str = "one_layer"
    n_layers: int = 1
    n_heads: int = 4
    d_model: int = 128
    d_head: int = 32
    d_mlp: int = 512
    act: str = "relu"  # relu | gelu
    normalization: Optional[str] = None  # None | LN
    n_ctx: int = 3
    d_vocab: Optional[int] = None
    d_vocab_out: Optional[int] = None
    attn_bias: bool = False
    mlp_bias: bool = True
    unembed_bias: bool = False
    model_seed: Optional[int] = None


@dataclass
class OptimizerConfig:
    """AdamW with a linear warm-up, as in Nanda et al. (2023)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    warmup_steps: int = 10


@dataclass
class TrainConfig:
    """How long and how often: the loop's cadence and stopping rule."""

    max_epochs: int = 25000
    eval_every: int = 10
    checkpoint_every: int = 100
    thresholds: List[float] = field(default_factory=lambda: [0.9, 0.95, 0.99, 0.999])
    # stop once the *last* threshold has held this many epochs (0 = never stop early)
    patience: int = 500
    threads: int = 1
    # flush float32 denormals to zero: weight decay drives many weights into the denormal
    # range, where CPU arithmetic is several times slower (measured: a memorised-start
    # model trained at 0.118 s/step with denormals, 0.041 s/step without)
    flush_denormal: bool = True
    fast_path: bool = True
    progress_bar: bool = True
    # keep every periodic checkpoint (needed for circuit analysis over time) or only the last
    keep_checkpoints: bool = True
    # wall-clock budget for the training loop; exceeded -> the job is marked failed (timeout)
    timeout_minutes: Optional[float] = None


@dataclass
class CheckpointCriteria:
    """Rule that picks a checkpoint of the source run.

    A checkpoint qualifies when train accuracy >= ``min_train_acc`` and test
    accuracy lies in [``min_test_acc``, ``max_test_acc``] and, for ``held_for`` > 0,
    the same has held for that many epochs of evals before it. ``pick`` chooses
    among qualifying checkpoints: ``first`` or ``last``.
    """

    min_train_acc: float = 0.0
    min_test_acc: float = 0.0
    max_test_acc: float = 1.0
    held_for: int = 0
    pick: str = "first"


@dataclass
class SourceConfig:
    """The source run: trained once and cached, or an existing checkpoint file.

    Fields left None inherit the target's value (task p / frac_train, model,
    optimizer), so only what differs has to be spelt out.
    """

    task: str = "add"
    p: Optional[int] = None
    frac_train: Optional[float] = None
    source_seed: Optional[int] = None
    max_epochs: int = 25000
    # optimizer fields that differ for the source run (e.g. {lr: 3e-3}); the rest come from `optimizer`
    optimizer: Dict[str, Any] = field(default_factory=dict)
    # an existing checkpoint (this project's format or the original paper's); skips training
    path: Optional[str] = None
    # which checkpoint inside a file that holds several (paper format): index or 'last'
    path_index: Optional[int] = None


@dataclass
class TransferConfig:
    """Initial weights for the target run and how they are treated.

    ``components`` maps embed | pos_embed | attn | mlp | unembed to
    copy | reinit | freeze (freeze = copy and do not train).
    """

    name: str = MISSING  # random | grokked | memorized
    source: SourceConfig = field(default_factory=SourceConfig)
    grokked: CheckpointCriteria = field(
        default_factory=lambda: CheckpointCriteria(min_train_acc=0.999, min_test_acc=0.999, held_for=100)
    )
    memorized: CheckpointCriteria = field(
        default_factory=lambda: CheckpointCriteria(min_train_acc=0.999, max_test_acc=0.2, pick="first")
    )
    components: Dict[str, str] = field(
        default_factory=lambda: {
            "embed": "copy",
            "pos_embed": "copy",
            "attn": "copy",
            "mlp": "copy",
            "unembed": "copy",
        }
    )
    reset_optimizer: bool = True


@dataclass
class MeasuresConfig:
    """Progress measures computed at every checkpoint."""

    enabled: bool = True
    key_freq_threshold: float = 0.85


@dataclass
class LoggerConfig:
    """Weights & Biases sink. Local run files are always written regardless."""

    name: str = "wandb"
    mode: str = "offline"  # online | offline | disabled
    project: str = "groktransfer"
    entity: Optional[str] = None
    group: Optional[str] = None
    job_type: Optional[str] = None
    name_format: str = "{task}-{condition}-s{seed}"
    tags: List[str] = field(default_factory=list)
    log_checkpoint_artifact: bool = False


@dataclass
class PathsConfig:
    """Where outputs go. ``root`` is Hydra's sweep root (``multirun/``)."""

    root: str = "multirun"
    source_cache: str = "${paths.root}/.sources"
    run_index: str = "${paths.root}/.index"


@dataclass
class TrainJobConfig:
    """The whole job: one (task, model, optimizer, transfer, seed)."""

    task: TaskConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    transfer: TransferConfig = MISSING
    logger: LoggerConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    measures: MeasuresConfig = field(default_factory=MeasuresConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment_name: str = "default"
    seed: int = 0
    force: bool = False
    # test-only fault injection (issue: resilience); never set in normal use
    debug: Dict[str, Any] = field(default_factory=dict)


def register_configs() -> None:
    """Register the schemas so YAML files can name them in their defaults list."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainJobConfig)
    cs.store(group="task", name="task_schema", node=TaskConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)
    cs.store(group="transfer", name="transfer_schema", node=TransferConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)

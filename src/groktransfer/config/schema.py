"""Structured-config schemas for every Hydra config group.

Each dataclass is registered in Hydra's ConfigStore (see ``register_configs``) as
the *base* of its group's YAML files, so a misspelt key or a value of the wrong
type fails when Hydra composes the config -- before any directory is created or
any epoch is trained. Closed choices (activation, transfer condition and
component actions, checkpoint pick, logger name and mode) are Enums, so a wrong
choice fails at compose time too, listing the allowed values. Semantic checks that a
type system cannot express (p prime, fractions in range, source/target shapes) live
in ``groktransfer.config.validate``.

``to_typed`` is the one conversion from a composed DictConfig (or a plain mapping) to
these dataclasses; every default is written once, here.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from groktransfer.config.ranges import bounded
from groktransfer.utils.choices import Choice
from groktransfer.utils.errors import UserError
from groktransfer.utils.registry import load_plugins


class ConfigError(UserError, ValueError):
    """A config that cannot describe a valid job. The message lists every problem."""


# --------------------------------------------------------------------------- choices
class Schedule(Choice):
    """The learning rate after the linear warm-up: held, or a cosine decay to the last epoch."""

    constant = "constant"
    cosine = "cosine"


#: The built-in transformer's transfer components (``groktransfer.model.transformer``): the
#: default ``transfer.components`` block.
TRANSFORMER_COMPONENTS = ("embed", "pos_embed", "attn", "mlp", "unembed")


class ComponentAction(Choice):
    """copy; reinit = keep the fresh init; freeze = copy and do not train."""

    copy = "copy"
    reinit = "reinit"
    freeze = "freeze"


class Pick(Choice):
    """Which of the qualifying source checkpoints: the earliest or the latest."""

    first = "first"
    last = "last"


class CpuGemm(Choice):
    """Which library multiplies float32 matrices on CPU in the fast path (see groktransfer.model.gemm)."""

    auto = "auto"  # the faster of the two for each product shape (ties to onednn), measured once per CPU and cached
    onednn = "onednn"
    blas = "blas"


class LoggerName(Choice):
    wandb = "wandb"
    none = "none"


class LoggerMode(Choice):
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class TaskConfig:
    """The keys every task has. A task family's own keys (the modular tasks' ``p`` and
    ``frac_train``, the digit tasks' ``n_digits``, a plugin's) are its subclass of this
    schema, its ``TaskFamily.config_class``: Hydra composes it, validation checks it (a key
    the chosen family does not declare is refused, exit 2), the config reference documents it.

    ``data_seed`` is None unless given: then the job's top-level ``seed`` fills it,
    so a seed sweep changes the split *and* the init unless either is pinned.
    """

    # a registered task name (groktransfer.tasks.registry.TASKS; plugins add theirs), checked
    # with the list of registered names before anything is written
    name: str = MISSING
    # seed of the train/test split; None = the job's top-level seed
    data_seed: int | None = bounded(None, ge=0)

    @classmethod
    def schema_for(cls, data: Mapping[str, Any]) -> type[TaskConfig]:
        """The schema of the family that owns ``data['name']`` (this class for an unknown name)."""
        if not isinstance(data, Mapping):
            return cls
        load_plugins()
        return _TASK_SCHEMAS.get(str(data.get("name")), cls)

    @classmethod
    def unknown_choice(cls, data: Mapping[str, Any], label: str) -> str | None:
        """Why ``data`` names no registered schema (an unknown task), or None."""
        name = data.get("name")
        if name is None or isinstance(name, str) and name.startswith("???") or str(name) in _TASK_SCHEMAS:
            return None
        return f"{label}={str(name)!r}: unknown task; registered: {', '.join(sorted(_TASK_SCHEMAS))}"


@dataclass
class ModelConfig:
    """The keys every model has. An architecture's own keys (the transformer's widths, a
    plugin MLP's) are its subclass of this schema, the ``config_class`` of the model class
    registered under ``architecture`` (``groktransfer.model.registry.MODELS``)."""

    #: defaults that run identities compare against instead of the class's: an architecture's
    #: schema defaults ``architecture`` to its own name, but any architecture but the built-in
    #: one is part of every identity (it decides what the other keys mean)
    IDENTITY_DEFAULTS: ClassVar[dict[str, Any]] = {"architecture": "hooked_transformer"}

    # the preset's name (conf/model/<name>.yaml), recorded with the run
    name: str = ""
    # the registered model that trains (groktransfer.model.registry.MODELS; plugins add theirs)
    architecture: str = "hooked_transformer"
    # seed of the initial weights; None = the job's top-level seed
    model_seed: int | None = bounded(None, ge=0)

    @classmethod
    def schema_for(cls, data: Mapping[str, Any]) -> type[ModelConfig]:
        """The schema of the architecture ``data['architecture']`` names (default: the transformer)."""
        if not isinstance(data, Mapping):
            return cls
        load_plugins()
        return _MODEL_SCHEMAS.get(str(data.get("architecture") or "hooked_transformer"), cls)

    @classmethod
    def unknown_choice(cls, data: Mapping[str, Any], label: str) -> str | None:
        """Why ``data`` names no registered schema (an unknown architecture), or None."""
        name = str(data.get("architecture") or "hooked_transformer")
        if name in _MODEL_SCHEMAS:
            return None
        return (
            f"unknown model architecture {label}.architecture={name!r}; registered: {', '.join(sorted(_MODEL_SCHEMAS))}"
        )


#: task name -> its family's schema; family name -> schema (filled by ``register_task_schema``)
_TASK_SCHEMAS: dict[str, type[TaskConfig]] = {}
_FAMILY_SCHEMAS: dict[str, type[TaskConfig]] = {}
#: architecture -> its config schema (filled by ``register_model_schema``)
_MODEL_SCHEMAS: dict[str, type[ModelConfig]] = {}


def register_task_schema(family: str, task_names: Sequence[str], schema: type[TaskConfig]) -> None:
    """Declare the config schema of a task family (``groktransfer.tasks.registry.register_family`` calls it)."""
    if not (isinstance(schema, type) and issubclass(schema, TaskConfig)):
        raise TypeError(f"task family {family!r}: config_class must be a dataclass subclassing TaskConfig")
    _FAMILY_SCHEMAS[family] = schema
    for name in task_names:
        _TASK_SCHEMAS[str(name)] = schema


def register_model_schema(architecture: str, schema: type[ModelConfig]) -> None:
    """Declare the config schema of a model architecture (``groktransfer.model.registry`` calls it)."""
    if not (isinstance(schema, type) and issubclass(schema, ModelConfig)):
        raise TypeError(f"model {architecture!r}: config_class must be a dataclass subclassing ModelConfig")
    _MODEL_SCHEMAS[architecture] = schema


@dataclass
class SGDParams:
    """``optimizer=sgd``: torch's SGD (``lr`` and ``weight_decay`` -- coupled, L2 -- are the shared fields)."""

    # momentum factor (0 = plain SGD)
    momentum: float = bounded(0.9, ge=0, le=1)
    # dampening of the momentum's gradient term
    dampening: float = bounded(0.0, ge=0, le=1)
    # Nesterov momentum (needs momentum > 0 and dampening 0)
    nesterov: bool = False


@dataclass
class MuonParams:
    """``optimizer=muon``: torch.optim.Muon for the hidden weight matrices, AdamW for the rest.

    Which parameters get Muon is ``groktransfer.training.optimizers.muon_parameters``: every
    trainable matrix but the embeddings and the unembedding (attention weights seen as one
    [d_model, n_heads*d_head] matrix). The AdamW part uses the shared ``lr``, ``weight_decay``,
    ``betas`` and ``eps``; ``lr`` / ``weight_decay`` here default to those (null). With
    ``adjust_lr_fn: match_rms_adamw`` Muon's update has AdamW's RMS, so AdamW's lr and weight
    decay carry over (Liu et al. 2025, "Muon is scalable for LLM training").
    """

    lr: float | None = bounded(None, gt=0)  # None = optimizer.lr
    weight_decay: float | None = bounded(None, ge=0)  # None = optimizer.weight_decay
    # momentum of Muon's update
    momentum: float = bounded(0.95, ge=0, lt=1)
    # Nesterov momentum for Muon's update
    nesterov: bool = True
    # Newton-Schulz iterations that orthogonalise each update
    ns_steps: int = bounded(5, ge=1, le=100)
    # epsilon of the Newton-Schulz normalisation
    eps: float = bounded(1e-7, gt=0)
    adjust_lr_fn: str | None = "match_rms_adamw"  # or "original" (Keller Jordan's) or null (torch's default)


@dataclass
class OptimizerConfig:
    """The optimizer (a registered name: adamw, adam, sgd, muon; plugins add theirs) with a
    linear warm-up, as in Nanda et al. (2023), then a constant or decaying lr.

    ``lr``, ``weight_decay``, the warm-up and the schedule apply to every optimizer;
    ``betas`` / ``eps`` to the Adam family (and Muon's AdamW part). Hyperparameters of one
    optimizer only sit in its own block (``optimizer.sgd.momentum``, ``optimizer.muon.ns_steps``),
    read only when ``name`` selects it.

    ``schedule: cosine`` decays the lr from ``lr`` (at the end of the warm-up) to
    ``final_lr_frac * lr`` at the last step of ``train.max_epochs`` along half a cosine; the
    last percent of a minibatch run (ARENA's digit sums) needs the smaller steps.
    """

    # a registered optimizer (groktransfer.training.optimizers.OPTIMIZERS: adamw, adam, sgd,
    # muon), checked against the registered names before anything is written
    name: str = "adamw"
    # learning rate after the warm-up
    lr: float = bounded(1e-3, gt=0)
    # decoupled weight decay (AdamW)
    weight_decay: float = bounded(1.0, ge=0)
    # AdamW's (beta1, beta2)
    betas: list[float] = bounded(factory=lambda: [0.9, 0.98], ge=0, lt=1)
    # AdamW's epsilon
    eps: float = bounded(1e-8, ge=0)
    # optimizer steps of linear warm-up from 0 to lr
    warmup_steps: int = bounded(10, ge=0)
    # the lr after the warm-up: constant, or a cosine decay to final_lr_frac * lr at the last epoch
    schedule: Schedule = Schedule.constant
    final_lr_frac: float = bounded(0.0, ge=0, le=1)  # cosine only: the lr at the last step, as a fraction of lr
    # SGD's own settings, read only when name is sgd
    sgd: SGDParams = field(default_factory=SGDParams)
    # Muon's own settings (its hidden matrices), read only when name is muon
    muon: MuonParams = field(default_factory=MuonParams)


@dataclass
class EMAFilterParams:
    """Grokfast-EMA: mu <- alpha*mu + (1-alpha)*g, then g <- g + lamb*mu."""

    # EMA decay of the slow gradient, in [0, 1)
    alpha: float = bounded(0.98, ge=0, lt=1)
    # amplification: the gradient becomes g + lamb * EMA (>= 0)
    lamb: float = bounded(2.0, ge=0)


@dataclass
class MAFilterParams:
    """Grokfast-MA: g <- g + lamb * (mean of the last ``window`` gradients), once the window is full."""

    # gradients averaged (>= 1); nothing is added until the window is full
    window: int = bounded(100, ge=1)
    # amplification: the gradient becomes g + lamb * mean of the window (>= 0)
    lamb: float = bounded(5.0, ge=0)


@dataclass
class GradFilterConfig:
    """A filter applied to the gradients between backward and the optimizer step (Grokfast,
    Lee et al. 2024; ⊥Grad, Prieto et al. 2025): a registered name
    (groktransfer.training.gradfilters.GRADFILTERS: none, ema, ma, orthograd). Each filter's
    parameters sit in its own block, read only when selected.
    """

    # a registered filter (none, ema, ma, orthograd), checked against the registered names before anything is written
    name: str = "none"
    # Grokfast-EMA's settings, read only when name is ema
    ema: EMAFilterParams = field(default_factory=EMAFilterParams)
    # Grokfast-MA's settings, read only when name is ma
    ma: MAFilterParams = field(default_factory=MAFilterParams)


@dataclass
class TrainConfig:
    """How long and how often: the loop's cadence and stopping rule."""

    # upper limit of training epochs (a run that has not reached a threshold by then is censored)
    max_epochs: int = bounded(25000, ge=1)
    # epochs between evaluations (a row of metrics.csv; threshold epochs have this resolution)
    eval_every: int = bounded(10, ge=1)
    # epochs between checkpoints and progress measures
    checkpoint_every: int = bounded(100, ge=1)
    # test-accuracy thresholds whose first epoch is recorded (the last one drives early stopping)
    thresholds: list[float] = bounded(factory=lambda: [0.9, 0.95, 0.99, 0.999], gt=0, le=1)
    # stop once the *last* threshold has held this many epochs (0 = never stop early)
    patience: int = bounded(500, ge=0)
    # torch CPU threads of the job (two 1-thread jobs beat one 2-thread job on 2 cores)
    threads: int = bounded(1, ge=1, le=1024)
    # auto | cpu | cuda | cuda:N | mps (auto: CUDA when torch sees a GPU); see groktransfer.training.device
    device: str = "auto"
    # CUDA only: deterministic kernels and cuBLAS workspace (repeatable numbers; see groktransfer.training.device)
    deterministic: bool = True
    # flush float32 denormals to zero: weight decay drives many weights into the denormal
    # range, where CPU arithmetic is several times slower (measured: a memorised-start
    # model trained at 0.118 s/step with denormals, 0.041 s/step without)
    flush_denormal: bool = True
    # use the fused last-position forward (any depth; the full forward's function to float rounding)
    fast_path: bool = True
    # float32 GEMMs of the fast path on CPU: auto (per product shape, the faster of the two,
    # ties within 2% to oneDNN; measured once on this CPU and cached), onednn (about 2x MKL on an AVX-512 AMD EPYC) or
    # blas (torch's BLAS, MKL in the official wheels); the same products up to float rounding
    cpu_gemm: CpuGemm = CpuGemm.auto
    # examples per optimizer step; None = full batch (one step per epoch, as in Nanda et al.)
    batch_size: int | None = bounded(None, ge=1)
    # the loss minimised (groktransfer.training.losses.LOSSES): ce_float64 (cross-entropy in
    # float64, the paper's precision), ce_float32 (its softmax in float32: Softmax Collapse) or
    # stablemax (StableMax cross-entropy, Prieto et al. 2025); metrics.csv's losses report it
    loss: str = "ce_float64"
    # show a tqdm progress bar on the terminal
    progress_bar: bool = True
    # keep every periodic checkpoint (needed for circuit analysis over time) or only the last
    keep_checkpoints: bool = True
    # wall-clock budget for the training loop; exceeded -> the job is marked failed (timeout)
    timeout_minutes: float | None = bounded(None, gt=0)
    # run the torch profiler around this many epochs and write its trace into the run
    # directory (conf/debug/profile.yaml); 0 = off
    profile_epochs: int = bounded(0, ge=0)


@dataclass
class CheckpointCriteria:
    """Rule that picks a checkpoint of the source run.

    A checkpoint qualifies when train accuracy >= ``min_train_acc`` and test
    accuracy lies in [``min_test_acc``, ``max_test_acc``] and, for ``held_for`` > 0,
    the same has held for that many epochs of evals before it. ``pick`` chooses
    among qualifying checkpoints: ``first`` or ``last``.

    With ``relative_to_chance`` (the ``memorized`` block's default) the three accuracy limits
    are stated on the scale from the task's chance accuracy c (its family's
    ``chance_accuracy``: 1/p for the modular tasks, 1/2 for a binary one) to perfect: a limit
    a means c + a (1 - c). "Test accuracy at most 0.2" then means "at most a fifth of the way
    from guessing to perfect" for any task, where 0.2 in absolute terms is below chance for a
    binary one.
    """

    # train accuracy at least this
    min_train_acc: float = bounded(0.0, ge=0, le=1)
    # test accuracy at least this
    min_test_acc: float = bounded(0.0, ge=0, le=1)
    # test accuracy at most this
    max_test_acc: float = bounded(1.0, ge=0, le=1)
    # epochs the accuracy rule must have held before the checkpoint (0 = no wait)
    held_for: int = bounded(0, ge=0)
    # first or last of the qualifying checkpoints
    pick: Pick = Pick.first
    # limits on the checkpoint's own progress measures (None = no limit); a checkpoint that
    # meets the accuracy rule but fails one of these is refused, and the error names the measure.
    # restricted_test_gap = restricted_acc - test_acc: how far the key-frequency part of the logits
    # alone out-predicts the full model on held-out pairs, i.e. a circuit forming under memorisation.
    max_restricted_test_gap: float | None = bounded(None)
    # at most this many key frequencies at the checkpoint (None = no limit)
    max_n_key_freqs: int | None = bounded(None, ge=0)
    # the accuracy limits above are fractions of the way from chance accuracy to 1 (see above)
    relative_to_chance: bool = False


#: ``transfer.source.model``'s keys before architectures had schemas of their own: kept, at
#: None, so that the default block (and every recorded identity) reads as it always did.
SOURCE_MODEL_KEYS = ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "act")


@dataclass
class SourceConfig:
    """The source run: trained once and cached, or an existing checkpoint file.

    Fields left None inherit the target's value (task p / frac_train, model,
    optimizer), so only what differs has to be spelt out.
    """

    task: str = "add"  # a registered task name, like task.name
    # the source task's p (None = the target's)
    p: int | None = bounded(None, ge=2)
    # the source's training fraction (None = the target's)
    frac_train: float | None = bounded(None, gt=0, lt=1)
    # digit sources: train/test set sizes (None = the target's); n_digits and carry_out are the target's
    n_train: int | None = bounded(None, ge=1)
    n_test: int | None = bounded(None, ge=1)  # digit sources: test set size (None = the target's)
    # seed of the source run (its split and init); None = the job's top-level seed
    source_seed: int | None = bounded(None, ge=0)
    # epochs the source run trains for
    max_epochs: int = bounded(25000, ge=1)
    # optimizer fields that differ for the source run (e.g. {lr: 3e-3}, {name: sgd}); the rest come from `optimizer`
    optimizer: dict[str, Any] = field(default_factory=dict)
    # gradient-filter fields that differ for the source run (e.g. {name: none}); the rest come from `gradfilter`
    gradfilter: dict[str, Any] = field(default_factory=dict)
    # an existing checkpoint (this project's format or the original paper's); skips training
    path: str | None = None
    # which checkpoint inside a file that holds several (paper format): index or 'last'
    path_index: int | None = bounded(None)
    # transfer=checkpoint: start from the source run's saved checkpoint nearest this epoch
    epoch: int | None = bounded(None, ge=0)
    # model keys that differ for the source run (e.g. d_model=64 for embedding-only transfer; a
    # plugin model's own keys with +transfer.source.model.<key>=...); None = the target's value.
    # Checked against the source architecture's schema.
    model: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(SOURCE_MODEL_KEYS))
    # task keys of the source's family that differ from the target's (e.g. {subset: [0, 1, 2]}
    # for a parity plugin; p / frac_train / n_train / n_test above are the same, spelled out)
    task_keys: dict[str, Any] = field(default_factory=dict)


@dataclass
class TransferConfig:
    """Initial weights for the target run and how they are treated.

    ``components`` maps embed | pos_embed | attn | mlp | unembed to
    copy | reinit | freeze (freeze = copy and do not train).

    ``checkpoint`` starts from the source checkpoint nearest ``source.epoch`` (its
    criteria only carry measure limits). ``embed_map`` transfers the embedding as
    source W_E times a trainable linear map (Xu et al., ICLR 2025), so the source's
    d_model may differ; the ``embedding`` condition is that with every other
    component fresh, from the checkpoint its ``embedding`` criteria pick.
    """

    # a registered condition (groktransfer.config.conditions.CONDITIONS; plugins add theirs)
    name: str = MISSING
    source: SourceConfig = field(default_factory=SourceConfig)
    grokked: CheckpointCriteria = field(
        default_factory=lambda: CheckpointCriteria(min_train_acc=0.999, min_test_acc=0.999, held_for=100)
    )
    # relative to chance: at p = 113 test accuracy <= 0.207, for a binary task <= 0.6
    memorized: CheckpointCriteria = field(
        default_factory=lambda: CheckpointCriteria(
            min_train_acc=0.999, max_test_acc=0.2, pick=Pick.first, relative_to_chance=True
        )
    )
    checkpoint: CheckpointCriteria = field(default_factory=CheckpointCriteria)
    embedding: CheckpointCriteria = field(
        default_factory=lambda: CheckpointCriteria(min_train_acc=0.999, min_test_acc=0.999, held_for=100)
    )
    # transfer the embedding through a trainable linear map (any condition; lets d_model differ)
    embed_map: bool = False
    # per component of the model (the transformer's: embed, pos_embed, attn, mlp, unembed; a
    # plugin model names its own): copy, reinit (fresh init) or freeze (copy, do not train).
    # A component left out is copied; one the model does not have is refused.
    components: dict[str, ComponentAction] = field(
        default_factory=lambda: {c: ComponentAction.copy for c in TRANSFORMER_COMPONENTS}
    )
    # start the target with a fresh optimizer (false: carry the source's AdamW state)
    reset_optimizer: bool = True
    # criteria of conditions registered without a block of their own, by condition name:
    # CheckpointCriteria fields (plain mappings: OmegaConf cannot merge a new key into a
    # dict of structured values); checked by validation, unset fields take their defaults
    criteria: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class MeasuresConfig:
    """Progress measures computed at every checkpoint."""

    # compute the progress measures at every checkpoint
    enabled: bool = True
    # share of a neuron's variance at one frequency for it to count toward that key frequency
    key_freq_threshold: float = bounded(0.85, gt=0, le=1)


@dataclass
class LoggerConfig:
    """Weights & Biases sink. Local run files are always written regardless."""

    # wandb or none (no W&B at all)
    name: LoggerName = LoggerName.wandb
    # offline (files in <run_dir>/wandb, `wandb sync` later), online, or disabled
    mode: LoggerMode = LoggerMode.offline
    # W&B project
    project: str = "groktransfer"
    # W&B entity (team or user); None = your default
    entity: str | None = None
    # W&B group; None = experiment name and sweep time
    group: str | None = None
    # W&B job type; None = the transfer condition
    job_type: str | None = None
    # W&B run name, formatted with task, condition and seed
    name_format: str = "{task}-{condition}-s{seed}"
    # W&B tags
    tags: list[str] = field(default_factory=list)
    # upload the final checkpoint as a W&B artifact
    log_checkpoint_artifact: bool = False


@dataclass
class PathsConfig:
    """Where outputs go. ``root`` is Hydra's sweep root (``multirun/``)."""

    # root of every sweep, run and cache directory (on a cluster: a filesystem every node sees)
    root: str = "multirun"
    # cached source runs, one directory per content hash
    source_cache: str = "${paths.root}/.sources"
    # run identity -> run directory, for resume and reuse
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
    # Grokfast gradient filter between backward and the optimizer step (none by default)
    gradfilter: GradFilterConfig = field(default_factory=GradFilterConfig)
    measures: MeasuresConfig = field(default_factory=MeasuresConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # first level of the sweep directory (experiment presets set it)
    experiment_name: str = "default"
    # fills task.data_seed, model.model_seed and transfer.source.source_seed unless they are pinned
    seed: int = bounded(0, ge=0)
    # train again even if a completed run with this identity exists
    force: bool = False


def register_configs() -> None:
    """Register the schemas so YAML files can name them in their defaults list.

    Each task family's schema is ``<family>_schema`` in the ``task`` group (``modular_schema``,
    ``digit_schema``, a plugin's), each architecture's ``<architecture>_schema`` in the ``model``
    group (``hooked_transformer_schema``); a preset names the one it fills in.
    """
    from hydra.core.config_store import ConfigStore

    load_plugins()  # the built-in and installed families and models declare their schemas
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainJobConfig)
    for family, task_schema in sorted(_FAMILY_SCHEMAS.items()):
        cs.store(group="task", name=f"{family}_schema", node=task_schema)
    for architecture, model_schema in sorted(_MODEL_SCHEMAS.items()):
        cs.store(group="model", name=f"{architecture}_schema", node=model_schema)
    cs.store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)
    cs.store(group="gradfilter", name="gradfilter_schema", node=GradFilterConfig)
    cs.store(group="transfer", name="transfer_schema", node=TransferConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)


T = TypeVar("T")


def to_typed(schema: type[T], cfg: T | DictConfig | Mapping[str, Any] | None, label: str = "") -> T:
    """The one DictConfig/mapping -> dataclass conversion (``OmegaConf.to_object``).

    Merging onto the schema fills every default from the dataclass itself and checks
    types and Enum choices the same way Hydra does at compose time; a problem raises
    ``ConfigError`` naming the key (prefixed with ``label``) and, for a choice, the allowed
    values. A ``task`` or ``model`` block becomes its family's or architecture's own schema
    (``TaskConfig.schema_for``). A key that no schema declares is refused, naming the keys
    its block has: Hydra's ``+key=value`` adds keys even to structured nodes, so a typo
    (``+train.batchsize=512``) would otherwise be dropped without a word.
    """
    if isinstance(cfg, schema):
        return cfg
    prefix = f"{label}." if label else ""
    data: Any = cfg if cfg is not None else {}
    if isinstance(data, DictConfig):
        data = OmegaConf.to_container(data, resolve=False, enum_to_str=False)
    unknown = undeclared_keys(_concrete(schema, data), data, prefix)
    if unknown:
        raise ConfigError("; ".join(unknown))
    schema = _concrete(schema, data)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), _structured_children(schema, data))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ConfigKeyError as exc:
        raise ConfigError(f"unknown {label or schema.__name__} config key {prefix}{exc.full_key}") from None
    except ValidationError as exc:
        raise ConfigError(f"{prefix}{exc.full_key}: {_first_line(exc.msg)}") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{label or schema.__name__}: {_first_line(str(exc))}") from None


def _concrete(schema: type[Any], data: Any) -> type[Any]:
    """``schema``, or the subclass its ``schema_for`` picks for ``data`` (a family's task keys)."""
    pick = getattr(schema, "schema_for", None)
    return pick(data) if pick is not None and isinstance(data, Mapping) else schema


def _dataclass_fields(schema: type[Any]) -> dict[str, Any]:
    """Field name -> the dataclass type it holds (None for a plain value or a free-form dict)."""
    hints = typing.get_type_hints(schema)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is Union and len(args) == 1:
            hint = args[0]
        out[f.name] = hint if dataclasses.is_dataclass(hint) else None
    return out


def _structured_children(schema: type[Any], data: Any) -> Any:
    """``data`` with each polymorphic block as a structured node of its concrete schema, so
    the merge keeps its keys (OmegaConf merges a subclass into a field typed by its base)."""
    if not isinstance(data, Mapping):
        return data
    out: dict[str, Any] = dict(data)
    for name, child in _dataclass_fields(schema).items():
        if child is None or not isinstance(out.get(name), Mapping):
            continue
        concrete = _concrete(child, out[name])
        value = _structured_children(concrete, out[name])
        out[name] = OmegaConf.merge(OmegaConf.structured(concrete), value) if concrete is not child else value
    return out


def undeclared_keys(schema: type[Any], data: Any, prefix: str = "") -> list[str]:
    """Every key of ``data`` that ``schema`` (recursively, with each block's concrete schema)
    does not declare, as one readable message per block. Free-form mappings (``Dict`` fields
    such as ``transfer.source.optimizer``) are left to validation."""
    if not isinstance(data, Mapping) or not dataclasses.is_dataclass(schema):
        return []
    fields = _dataclass_fields(schema)
    problems: list[str] = []
    unknown = getattr(schema, "unknown_choice", None)
    why = unknown(data, prefix.rstrip(".") or schema.__name__) if unknown is not None else None
    if why:  # the block names a family / architecture nobody registered: its keys cannot be checked
        return [why]
    extra = [str(k) for k in data if str(k) not in fields]
    if extra:
        block = prefix.rstrip(".") or "the top level"
        what = getattr(schema, "KIND", "")
        keys = ", ".join(fields)
        problems.append(
            f"unknown config key{'s' if len(extra) > 1 else ''} {', '.join(prefix + k for k in extra)}: "
            f"{block}{f' ({what})' if what else ''} has {keys}"
        )
    for name, child in fields.items():
        if child is not None and isinstance(data.get(name), Mapping):
            problems += undeclared_keys(_concrete(child, data[name]), data[name], f"{prefix}{name}.")
    return problems


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0]


def to_plain(cfg: Any) -> dict[str, Any]:
    """A dataclass config (or DictConfig) as plain JSON-able data, choices as their names.

    What run identities, source-cache hashes, W&B and the run's config copy see: Enum members
    become the same strings the YAML files hold, so hashes do not depend on Python types.
    """
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    data = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    assert isinstance(data, dict)
    return data  # type: ignore[return-value]


def source_optimizer(cfg: TrainJobConfig) -> OptimizerConfig:
    """The source run's optimizer: the target's, with ``transfer.source.optimizer``'s fields merged in."""
    return _merged(OptimizerConfig, cfg.optimizer, cfg.transfer.source.optimizer, "transfer.source.optimizer")


def source_gradfilter(cfg: TrainJobConfig) -> GradFilterConfig:
    """The source run's gradient filter: the target's, with ``transfer.source.gradfilter``'s fields merged in."""
    return _merged(GradFilterConfig, cfg.gradfilter, cfg.transfer.source.gradfilter, "transfer.source.gradfilter")


def _merged(schema: type[T], base: Any, overrides: Mapping[str, Any], label: str) -> T:
    if not overrides:
        return base
    merged = OmegaConf.merge(OmegaConf.structured(base), dict(overrides))
    return to_typed(type(base) if isinstance(base, schema) else schema, merged, label)

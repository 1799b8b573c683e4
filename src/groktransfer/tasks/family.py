"""The task-family protocol: everything generic code may ask of a family of tasks.

A *task family* owns a set of task names (``add``, ``subtract``, ... for the modular
family; ``digit_add``, ``digit_sub`` for the digit family) and everything that differs
between families: what a task config means, its vocabularies and sequence layout, the
data and its split from ``data_seed``, the metric the thresholds read, and how a source
run's task is derived from a target's. Generic code (validation, training, run
directories, sources, ensembles, analysis) calls these methods and never asks which
family it holds.

The task object a family builds (``build``) is what the trainer and the measures read;
its attributes are listed in :class:`TaskLike`. A task with one answer at the last
position has ``labels`` [N]; a task with several answers has ``labels`` [N, k] and
``answer_positions`` [k] (the loss reads exactly those positions).

What a family adds *above* the task layer (its progress measures, its interpretability
view, its report sections) is registered by family name in the registries of those
layers (``groktransfer.measures.registry.CHECKPOINT_MEASURES``, ...), so this module
stays importable by the config and model layers.

Register a family with :func:`groktransfer.tasks.registry.register_family`; an installed
package does it from its ``groktransfer.plugins`` entry point (``examples/s5_plugin``).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from groktransfer.config.schema import TaskConfig, to_typed
from groktransfer.utils.choices import Choice

#: The most input/output pairs a full-batch task may hold: its logits in float64 for
#: p = sqrt(limit) outputs then need ~limit^1.5 * 8 bytes, so past ~4M pairs (p ~ 2000)
#: a job cannot fit a 24 GiB machine. Families check their own sizes against it.
MAX_EXAMPLES = 4_000_000


@dataclass(frozen=True)
class TaskShape:
    """What a model must read and write for a task, known from its config alone: what the
    model protocol's ``resolve_config`` / ``task_problems`` are given."""

    label: str  # for messages: "add, p=113"
    d_vocab: int  # input tokens
    d_vocab_out: int  # output classes
    seq_len: int  # tokens per example
    answer_positions: int = 1  # positions the loss reads
    # the loss reads the last position's logits (labels [N]); False: labels [N, k] read at the
    # family's answer positions (digit tasks), which only a model with logits at every position scores
    answer_at_last_position: bool = True
    exact_seq_len: bool = False  # a model must read exactly seq_len positions, not at least


class TaskCapability(Choice):
    """What a task's inputs and answers offer the interpretability readings (``groktransfer.interp``):
    a task lists those it has in a ``capabilities`` attribute, and the readings that need one it
    lacks do not run on it. A task that declares none needs nothing to be read: see
    :func:`task_capabilities` for what is assumed of it."""

    #: the inputs hold two operands, a and b, at ``operand_positions`` (probe targets, the
    #: operand embeddings, the (a, b) grid of a pair task)
    operands = "operands"
    #: the answer is read at the position of an '=' token (the answer rows are labelled '=')
    equals_answer = "equals_answer"
    #: the tokens are residues read in a Fourier basis (the modular group, or the ten digits)
    fourier = "fourier"


def task_capabilities(task: Any) -> frozenset[TaskCapability]:
    """The capabilities ``task`` declares. A task that declares none (a plugin's) is read by the
    project's pair layout when its inputs follow it -- three tokens ``[a, b, =]``, the last one
    the same for every example, one answer -- as operands a, b with the answer at '='; any other
    task then has none (no operands, no '=', no Fourier basis)."""
    declared = getattr(task, "capabilities", None)
    if declared is not None:
        return frozenset(TaskCapability(c) for c in declared)
    tokens, labels = getattr(task, "tokens", None), getattr(task, "labels", None)
    if isinstance(tokens, torch.Tensor) and tokens.dim() == 2 and tokens.shape[1] == 3 and tokens.shape[0] > 0:
        if bool((tokens[:, 2] == tokens[0, 2]).all()) and isinstance(labels, torch.Tensor) and labels.dim() == 1:
            return frozenset({TaskCapability.operands, TaskCapability.equals_answer})
    return frozenset()


class TaskLike(Protocol):
    """The attributes of a built task that generic code reads."""

    name: str
    family: str
    threshold_metric: str  # what train_acc/test_acc mean: "accuracy" or e.g. "exact_match"
    d_vocab: int
    d_vocab_out: int
    seq_len: int
    tokens: torch.Tensor  # [N, seq_len] long, the model's input
    labels: torch.Tensor  # [N] (answer at the last position) or [N, k] (at answer_positions)
    split: tuple[torch.Tensor, torch.Tensor]  # (train_idx, test_idx) into tokens, from data_seed only
    train_mask: torch.Tensor  # [N] bool
    group: str | None  # the Fourier group of the modular measures, None where there is none
    no_structure_reason: str | None
    # optional: ``capabilities`` (a set of TaskCapability, see task_capabilities)

    def describe(self) -> str: ...


class TaskFamily(ABC):
    """One family of tasks. Subclass it, set ``name`` and ``task_names``, and register it."""

    #: the family's name (``task.family`` of the tasks it builds)
    name: str = ""
    #: the ``task.name`` values this family owns
    task_names: tuple[str, ...] = ()
    #: the family's task keys: a dataclass subclassing TaskConfig (name and data_seed are
    #: every family's); Hydra composes it as the ``task`` block (``<name>_schema`` in the task
    #: group), validation refuses a key it does not declare, the config reference lists it,
    #: and a key is part of a run's identity only off its default
    config_class: type[TaskConfig] = TaskConfig
    #: whether a model must read exactly ``seq_len`` positions (model.n_ctx == seq_len), not at least
    exact_n_ctx: bool = False
    #: the answer is the label of the last position (labels [N]); False: its tasks' labels are
    #: [N, k], read at ``answer_positions`` inside the sequence (the digit family)
    answer_at_last_position: bool = True
    #: whether the sweep report's circuit section (the Fourier multiplication circuit of
    #: Nanda et al.: key frequencies, restricted/excluded loss) reads this family's runs
    fourier_circuit: bool = False

    @abstractmethod
    def build(self, task_cfg: Any, data_seed: int) -> TaskLike:
        """The task a (valid) task config describes, its split drawn from ``data_seed``."""

    @abstractmethod
    def shapes(self, task_cfg: Any) -> tuple[int, int, int] | None:
        """(d_vocab, d_vocab_out, seq_len) without building the data; None if the config is malformed."""

    def problems(self, task_cfg: Any, prefix: str = "task") -> list[str]:
        """Every reason ``task_cfg`` cannot make a task, each naming its key under ``prefix``
        (empty = valid). Checked before anything is written; sizes that cannot fit the
        machine are refused here, naming the limit.

        Each value's own range is declared beside its field (``config.ranges.bounded``) and
        checked for every family by the one range check, so a family whose keys are
        independent of each other has nothing to add here: the default finds no problem."""
        return []

    def n_examples(self, task_cfg: Any) -> int | None:
        """How many examples (train and test) a task of this config holds, from the config alone:
        the memory estimate made before anything is allocated reads it (None: unknown, and the
        estimate leaves the data and the evaluation out)."""
        return None

    def answer_positions(self, task_cfg: Any) -> int:
        """How many positions the loss reads (1: the answer at the last position)."""
        return 1

    def task_shape(self, task_cfg: Any) -> TaskShape | None:
        """The task's :class:`TaskShape` (None if the config is malformed)."""
        shapes = self.shapes(task_cfg)
        if shapes is None:
            return None
        return TaskShape(
            self.label(task_cfg),
            *shapes,
            answer_positions=self.answer_positions(task_cfg),
            answer_at_last_position=self.answer_at_last_position,
            exact_seq_len=self.exact_n_ctx,
        )

    def ignored_keys(self, task_cfg: Any) -> dict[str, str]:
        """TaskConfig keys this config does not read, each with the reason: setting one on the
        command line is refused (it would change nothing but the run's identity)."""
        return {}

    def label(self, task_cfg: Any) -> str:
        """A short description for error messages (``add, p=113``)."""
        return f"{task_cfg.name}, p={task_cfg.p}" if hasattr(task_cfg, "p") else str(task_cfg.name)

    def chance_accuracy(self, task_cfg: Any) -> float:
        """The accuracy of a model that guesses: what the start criteria are stated relative to
        (a memorised start has test accuracy near it). Default: one over the output classes."""
        shapes = self.shapes(task_cfg)
        return 1.0 / shapes[1] if shapes is not None and shapes[1] > 0 else 0.0

    def source_task(self, source_cfg: Any, target_task_cfg: Any, data_seed: int) -> dict[str, Any]:
        """The task config (a plain dict) of a source run whose task is in this family.

        Every key the family declares takes, in order: the target's value (where the target's
        task has that key), then ``transfer.source``'s shorthand (``p``, ``frac_train``,
        ``n_train``, ``n_test``) where given, then ``transfer.source.task_keys``; the name is
        ``transfer.source.task``, the split seed ``data_seed``.
        """
        keys = [f.name for f in dataclasses.fields(self.config_class) if f.name not in ("name", "data_seed")]
        out: dict[str, Any] = {k: getattr(target_task_cfg, k) for k in keys if hasattr(target_task_cfg, k)}
        for key in SOURCE_SHORTHANDS:
            value = getattr(source_cfg, key, None)
            if value is not None:
                out[key] = value
        out.update(dict(getattr(source_cfg, "task_keys", None) or {}))
        return {"name": str(source_cfg.task), **out, "data_seed": int(data_seed)}

    def task_config_for_model(self, task_name: str, model_cfg: Any) -> tuple[dict[str, Any], str] | None:
        """(task config dict, how it was inferred) for a checkpoint found without its run's
        config, read from the model's shape (``model_cfg``: n_ctx, d_vocab, ...); None when
        the shape does not say (the single-checkpoint analysis then asks for the run dir)."""
        return None

    def typed(self, task: dict[str, Any], label: str = "task") -> TaskConfig:
        """A plain task dict as this family's schema (unknown keys and wrong types: ConfigError)."""
        return to_typed(self.config_class, task, label)


#: ``transfer.source`` keys that set the source task's key of the same name (where given)
SOURCE_SHORTHANDS = ("p", "frac_train", "n_train", "n_test")

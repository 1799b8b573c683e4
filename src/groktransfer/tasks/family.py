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

from abc import ABC, abstractmethod
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Protocol, Tuple

import torch

from groktransfer.config.schema import TaskConfig

#: The most input/output pairs a full-batch task may hold: its logits in float64 for
#: p = sqrt(limit) outputs then need ~limit^1.5 * 8 bytes, so past ~4M pairs (p ~ 2000)
#: a job cannot fit a 24 GiB machine. Families check their own sizes against it.
MAX_EXAMPLES = 4_000_000


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
    split: Tuple[torch.Tensor, torch.Tensor]  # (train_idx, test_idx) into tokens, from data_seed only
    train_mask: torch.Tensor  # [N] bool
    group: Optional[str]  # the Fourier group of the modular measures, None where there is none
    no_structure_reason: Optional[str]

    def describe(self) -> str: ...


class TaskFamily(ABC):
    """One family of tasks. Subclass it, set ``name`` and ``task_names``, and register it."""

    #: the family's name (``task.family`` of the tasks it builds)
    name: str = ""
    #: the ``task.name`` values this family owns
    task_names: Tuple[str, ...] = ()
    #: TaskConfig keys beyond name/p/frac_train/data_seed that this family reads; the run
    #: identity hashes them for this family's tasks only, so other families' runs keep theirs
    config_keys: Tuple[str, ...] = ()
    #: whether a model must read exactly ``seq_len`` positions (model.n_ctx == seq_len), not at least
    exact_n_ctx: bool = False
    #: whether the sweep report's circuit section (the Fourier multiplication circuit of
    #: Nanda et al.: key frequencies, restricted/excluded loss) reads this family's runs
    fourier_circuit: bool = False

    @abstractmethod
    def build(self, task_cfg: Any, data_seed: int) -> TaskLike:
        """The task a (valid) task config describes, its split drawn from ``data_seed``."""

    @abstractmethod
    def shapes(self, task_cfg: Any) -> Optional[Tuple[int, int, int]]:
        """(d_vocab, d_vocab_out, seq_len) without building the data; None if the config is malformed."""

    @abstractmethod
    def problems(self, task_cfg: Any, prefix: str = "task") -> List[str]:
        """Every reason ``task_cfg`` cannot make a task, each naming its key under ``prefix``
        (empty = valid). Checked before anything is written; sizes that cannot fit the
        machine are refused here, naming the limit."""

    def ignored_keys(self, task_cfg: Any) -> Dict[str, str]:
        """TaskConfig keys this config does not read, each with the reason: setting one on the
        command line is refused (it would change nothing but the run's identity)."""
        return {}

    def label(self, task_cfg: Any) -> str:
        """A short description for error messages (``add, p=113``)."""
        return f"{task_cfg.name}, p={task_cfg.p}"

    def source_task(self, source_cfg: Any, target_task_cfg: Any, p: int, frac_train: float, data_seed: int) -> Dict[str, Any]:
        """The task config (a plain dict) of a source run whose task is in this family.

        ``p`` and ``frac_train`` are the source's (``transfer.source.p``/``frac_train`` or
        the target's). The default keeps only the keys every family has; a family with
        more (``config_keys``) says how a source inherits them from the target.
        """
        return {"name": str(source_cfg.task), "p": int(p), "frac_train": float(frac_train), "data_seed": int(data_seed)}

    def task_config_for_model(self, task_name: str, model_cfg: Any) -> Optional[Tuple[Dict[str, Any], str]]:
        """(task config dict, how it was inferred) for a checkpoint found without its run's
        config, read from the model's shape (``model_cfg``: n_ctx, d_vocab, ...); None when
        the shape does not say (the single-checkpoint analysis then asks for the run dir)."""
        return None

    def source_problems(self, source_cfg: Any, target_task_cfg: Any, p: int, frac_train: float) -> List[str]:
        """Problems of the source task a target's ``transfer.source`` describes."""
        task = dict(self.source_task(source_cfg, target_task_cfg, p, frac_train, 0))
        return self.problems(_Node({**_task_defaults(), **task}), prefix="transfer.source")


class _Node:
    """Attribute access over a plain dict (a TaskConfig-shaped source task)."""

    def __init__(self, data: Dict[str, Any]) -> None:
        self.__dict__.update(data)


def _task_defaults() -> Dict[str, Any]:
    return asdict(TaskConfig(name=""))

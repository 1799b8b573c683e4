"""Transfer conditions by name (``transfer.name``): where a target's initial weights come from.

A condition says whether it needs a source run, and how it picks that run's checkpoint:
by an epoch (``checkpoint``: nearest ``transfer.source.epoch``) or by accuracy criteria.
The built-in conditions with criteria read their own block (``transfer.grokked``,
``transfer.memorized``, ``transfer.embedding``); a condition a plugin registers reads
``transfer.criteria.<name>`` when the config gives it, else the criteria it registered::

    CONDITIONS.register("half_grokked", TransferCondition(
        criteria=CheckpointCriteria(min_train_acc=0.999, min_test_acc=0.5, max_test_acc=0.6)))

and ``transfer=random transfer.name=half_grokked`` (or a ``conf/transfer/half_grokked.yaml``)
starts from the first source checkpoint between 50% and 60% test accuracy. Which weights
are copied, re-initialised or frozen stays ``transfer.components``' choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from groktransfer.config.schema import CheckpointCriteria, to_plain, to_typed
from groktransfer.utils.registry import Registry


@dataclass(frozen=True)
class TransferCondition:
    """``needs_source``: False for a fresh start. ``by_epoch``: the checkpoint nearest
    ``transfer.source.epoch`` (its criteria block carries measure limits only).
    ``criteria``: the default rule of a registered condition without a block of its own."""

    needs_source: bool = True
    by_epoch: bool = False
    criteria: CheckpointCriteria | None = None


CONDITIONS: Registry[TransferCondition] = Registry("transfer condition", "transfer.name")
CONDITIONS.register("random", TransferCondition(needs_source=False))
CONDITIONS.register("grokked", TransferCondition())
CONDITIONS.register("memorized", TransferCondition())
CONDITIONS.register("checkpoint", TransferCondition(by_epoch=True))
CONDITIONS.register("embedding", TransferCondition())

#: conditions whose criteria are a block of TransferConfig itself
BUILT_IN_BLOCKS = ("grokked", "memorized", "checkpoint", "embedding")


def needs_source(name: Any) -> bool:
    return CONDITIONS.get(str(name)).needs_source


def criteria_of(transfer: dict[str, Any], name: str) -> dict[str, Any]:
    """The criteria (plain dict) condition ``name`` selects with, from a plain transfer config."""
    if name in BUILT_IN_BLOCKS:
        return transfer[name]
    given = (transfer.get("criteria") or {}).get(name)
    if given is not None:
        return to_plain(to_typed(CheckpointCriteria, given, f"transfer.criteria.{name}"))
    registered = CONDITIONS.get(name).criteria
    return to_plain(registered if registered is not None else CheckpointCriteria())

"""What a job's config implies before anything is built: its seeds, its source run's task and model.

Kept apart from validation so that the run identity (``groktransfer.runs.identity``) and the
checks (``groktransfer.config.validate``) derive these the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from groktransfer.config.schema import ModelConfig, TaskConfig, to_typed
from groktransfer.tasks.registry import family_of


@dataclass(frozen=True)
class ResolvedSeeds:
    """The three independent seeds of a job (docs/science.md: kept separate)."""

    data_seed: int
    model_seed: int
    source_seed: int


def resolve_seeds(cfg: Any) -> ResolvedSeeds:
    """``seed`` fills whichever of data/model/source seed is not pinned."""
    seed = int(cfg.seed)

    def pick(value: int | None) -> int:
        return seed if value is None else int(value)

    return ResolvedSeeds(
        data_seed=pick(cfg.task.data_seed),
        model_seed=pick(cfg.model.model_seed),
        source_seed=pick(cfg.transfer.source.source_seed),
    )


def source_task_config(cfg: Any, source_seed: int) -> TaskConfig:
    """The task a target job's source run trains on, as its family's schema: ``transfer.source``'s
    task, the target's keys it shares, the shorthand keys and ``task_keys`` given, split by
    ``source_seed`` (``TaskFamily.source_task``). An unknown task or key: ConfigError / UserError."""
    src = cfg.transfer.source
    family = family_of(src.task)
    return family.typed(family.source_task(src, cfg.task, int(source_seed)), "transfer.source")


def source_model_overrides(cfg: Any) -> dict[str, Any]:
    """``transfer.source.model``'s keys that are set (None = the target's value)."""
    return {str(k): v for k, v in dict(cfg.transfer.source.model or {}).items() if v is not None}


def source_model_config(cfg: Any) -> ModelConfig:
    """The source run's model config: the target's, with ``transfer.source.model``'s keys, and the
    vocabularies (``d_vocab`` / ``d_vocab_out``, where the architecture has them) left to the
    source's task. A key the architecture does not declare: ConfigError naming its keys."""
    model = cfg.model
    names = {f.name for f in dataclasses.fields(model)}
    vocab = {key: None for key in ("d_vocab", "d_vocab_out") if key in names}
    overrides = source_model_overrides(cfg)
    if not overrides:  # the common case, without OmegaConf's merge (identities are computed often)
        return dataclasses.replace(model, **vocab)
    data = {**{name: getattr(model, name) for name in names}, **vocab, **overrides}
    return to_typed(type(model), data, "transfer.source.model")

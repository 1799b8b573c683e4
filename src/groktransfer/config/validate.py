"""Semantic validation of a composed job config, before anything is trained or written.

Hydra's structured configs already reject unknown keys, wrong types and invalid
choices (Enums) at compose time. What they cannot express -- p prime, fractions in range, a checkpoint path
that exists, source and target shapes that agree on the copied components -- is
checked here, and every problem found is reported at once in one readable error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional

from groktransfer.config.schema import Component, ComponentAction, Condition, ConfigError, OptimizerConfig, to_plain
from groktransfer.tasks import TASKS, is_prime

__all__ = ["ConfigError", "ResolvedSeeds", "resolve_seeds", "validate_job_config"]

# transfer.<name> checkpoint rules (random has none)
CRITERIA = (Condition.grokked, Condition.memorized, Condition.checkpoint, Condition.embedding)


@dataclass(frozen=True)
class ResolvedSeeds:
    """The three independent seeds of a job (docs/science.md: kept separate)."""

    data_seed: int
    model_seed: int
    source_seed: int


def resolve_seeds(cfg: Any) -> ResolvedSeeds:
    """``seed`` fills whichever of data/model/source seed is not pinned."""
    seed = int(cfg.seed)

    def pick(value: Optional[int]) -> int:
        return seed if value is None else int(value)

    return ResolvedSeeds(
        data_seed=pick(cfg.task.data_seed),
        model_seed=pick(cfg.model.model_seed),
        source_seed=pick(cfg.transfer.source.source_seed),
    )


def _check_task(prefix: str, name: str, p: int, frac: float, errors: List[str]) -> None:
    if p < 2:
        errors.append(f"{prefix}.p={p}: must be at least 2")
    elif TASKS[name].needs_prime and not is_prime(p):
        errors.append(f"{prefix}.p={p}: must be prime for the modular task {name!r}")
    if not (0.0 < frac < 1.0):
        errors.append(f"{prefix}.frac_train={frac}: must lie strictly between 0 and 1")


def validate_job_config(cfg: Any) -> None:
    """Raise ConfigError listing every semantic problem of a job config.

    ``cfg`` is a ``TrainJobConfig`` or the DictConfig it came from (attribute access only).
    """
    errors: List[str] = []
    task = cfg.task
    _check_task("task", task.name, int(task.p), float(task.frac_train), errors)

    model = cfg.model
    for key in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp"):
        if int(getattr(model, key)) < 1:
            errors.append(f"model.{key}={getattr(model, key)}: must be positive")
    if int(model.n_ctx) != 3:
        errors.append(f"model.n_ctx={model.n_ctx}: the arithmetic tasks feed exactly 3 tokens (a b =)")
    if task.name in TASKS and int(task.p) >= 2:
        need_in = int(task.p) + 1
        need_out = TASKS[task.name].out_vocab(int(task.p))
        if model.d_vocab is not None and int(model.d_vocab) < need_in:
            errors.append(f"model.d_vocab={model.d_vocab}: task {task.name} with p={task.p} needs >= {need_in}")
        if model.d_vocab_out is not None and int(model.d_vocab_out) < need_out:
            errors.append(
                f"model.d_vocab_out={model.d_vocab_out}: task {task.name} with p={task.p} needs >= {need_out}"
            )

    opt = cfg.optimizer
    if float(opt.lr) <= 0:
        errors.append(f"optimizer.lr={opt.lr}: must be positive")
    if float(opt.weight_decay) < 0:
        errors.append(f"optimizer.weight_decay={opt.weight_decay}: must be >= 0")
    if len(opt.betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in opt.betas):
        errors.append(f"optimizer.betas={list(opt.betas)}: need two values in [0, 1)")
    if int(opt.warmup_steps) < 0:
        errors.append(f"optimizer.warmup_steps={opt.warmup_steps}: must be >= 0")

    train = cfg.train
    for key in ("max_epochs", "eval_every", "checkpoint_every", "threads"):
        if int(getattr(train, key)) < 1:
            errors.append(f"train.{key}={getattr(train, key)}: must be >= 1")
    if int(train.patience) < 0:
        errors.append(f"train.patience={train.patience}: must be >= 0")
    if int(train.checkpoint_every) % max(int(train.eval_every), 1) != 0:
        errors.append(
            f"train.checkpoint_every={train.checkpoint_every} must be a multiple of "
            f"train.eval_every={train.eval_every} (checkpoints carry the eval's accuracies)"
        )
    thresholds = [float(t) for t in train.thresholds]
    if not thresholds:
        errors.append("train.thresholds: give at least one threshold")
    if any(not (0.0 < t <= 1.0) for t in thresholds):
        errors.append(f"train.thresholds={thresholds}: each must lie in (0, 1]")
    if thresholds != sorted(set(thresholds)):
        errors.append(f"train.thresholds={thresholds}: must be strictly increasing")
    if not (0.0 < float(cfg.measures.key_freq_threshold) <= 1.0):
        errors.append(f"measures.key_freq_threshold={cfg.measures.key_freq_threshold}: must lie in (0, 1]")

    _validate_transfer(cfg, errors)

    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))


def _validate_transfer(cfg: Any, errors: List[str]) -> None:
    tr = cfg.transfer
    for crit_name in CRITERIA:
        crit = getattr(tr, crit_name)
        if crit.max_restricted_test_gap is not None and float(crit.max_restricted_test_gap) != float(crit.max_restricted_test_gap):
            errors.append(f"transfer.{crit_name}.max_restricted_test_gap is NaN")
        if crit.max_n_key_freqs is not None and int(crit.max_n_key_freqs) < 0:
            errors.append(f"transfer.{crit_name}.max_n_key_freqs={crit.max_n_key_freqs}: must be >= 0")
        for key in ("min_train_acc", "min_test_acc", "max_test_acc"):
            if not (0.0 <= float(getattr(crit, key)) <= 1.0):
                errors.append(f"transfer.{crit_name}.{key}={getattr(crit, key)}: must lie in [0, 1]")
        if float(crit.min_test_acc) > float(crit.max_test_acc):
            errors.append(f"transfer.{crit_name}: min_test_acc > max_test_acc selects nothing")
    if tr.name == Condition.random:
        return
    if tr.embed_map and tr.components.get(Component.embed, ComponentAction.copy) == ComponentAction.reinit:
        errors.append("transfer.embed_map=true maps the source embedding: transfer.components.embed must be copy or freeze")

    src = tr.source
    if tr.name == Condition.checkpoint:
        if src.epoch is None:
            errors.append("transfer=checkpoint needs transfer.source.epoch (e.g. transfer.source.epoch=1500)")
        elif int(src.epoch) < 0:
            errors.append(f"transfer.source.epoch={src.epoch}: must be >= 0")
        if src.path is not None:
            errors.append("transfer=checkpoint picks an epoch of a trained source run: unset transfer.source.path")
    _check_source_shape(cfg, errors)
    if src.path is not None:
        path = os.path.expanduser(str(src.path))
        if not os.path.isfile(path):
            errors.append(f"transfer.source.path={src.path!r}: no such file")
        return
    p = int(src.p if src.p is not None else cfg.task.p)
    frac = float(src.frac_train if src.frac_train is not None else cfg.task.frac_train)
    _check_task("transfer.source.task", src.task, p, frac, errors)
    unknown = set(src.optimizer) - set(OptimizerConfig.__dataclass_fields__)
    if unknown:
        errors.append(f"transfer.source.optimizer: unknown optimizer field(s) {sorted(unknown)}")
    if int(src.max_epochs) < 1:
        errors.append(f"transfer.source.max_epochs={src.max_epochs}: must be >= 1")
    if src.task in TASKS and cfg.task.name in TASKS:
        copied = {c for c, a in tr.components.items() if a != ComponentAction.reinit}
        src_in, tgt_in = p + 1, int(cfg.task.p) + 1
        if copied & {"embed"} and src_in != tgt_in:
            errors.append(
                f"transfer copies 'embed' but the source vocab ({src_in} tokens, p={p}) differs from the "
                f"target's ({tgt_in}, p={cfg.task.p}); set transfer.components.embed=reinit or match p"
            )
        src_out = TASKS[src.task].out_vocab(p)
        tgt_out = TASKS[cfg.task.name].out_vocab(int(cfg.task.p))
        if "unembed" in copied and src_out != tgt_out:
            errors.append(
                f"transfer copies 'unembed' but the source has {src_out} outputs ({src.task}, p={p}) and the "
                f"target {tgt_out} ({cfg.task.name}, p={cfg.task.p}); set transfer.components.unembed=reinit"
            )


def _check_source_shape(cfg: Any, errors: List[str]) -> None:
    """A source of another width can only hand over its embedding, through the map."""
    tr = cfg.transfer
    model = to_plain(cfg.model)
    differs = sorted(k for k, v in to_plain(tr.source.model).items() if v is not None and model[k] != v)
    if not differs:
        return
    copied = sorted(str(c) for c, a in tr.components.items() if a != ComponentAction.reinit)
    if tr.embed_map:
        copied = [c for c in copied if c != Component.embed]
    if copied:
        errors.append(
            f"transfer.source.model changes {differs}, so the source cannot initialise {copied} of this target: "
            "set those components to reinit (transfer=embedding does), keeping only the mapped embedding"
        )

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
from groktransfer.tasks.digits import DigitSettings, DigitTask, is_digit_task
from groktransfer.tasks.modular import TASKS, is_prime

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


def _digit_settings(name: str, task_cfg: Any, src: Any = None) -> DigitSettings:
    """Digit settings of the target task, or of a digit source (its own data sizes, the target's layout)."""

    def pick(key: str):
        value = getattr(src, key, None) if src is not None else None
        return getattr(task_cfg, key) if value is None else value

    return DigitSettings(
        name=str(name),
        n_digits=int(task_cfg.n_digits),
        carry_out=bool(task_cfg.carry_out),
        frac_train=float(pick("frac_train")),
        n_train=None if pick("n_train") is None else int(pick("n_train")),
        n_test=None if pick("n_test") is None else int(pick("n_test")),
    )


def task_shapes(name: str, p: int, task_cfg: Any) -> Optional[tuple]:
    """(d_vocab, d_vocab_out, seq_len) of a task, or None if it is malformed."""
    if is_digit_task(name):
        settings = _digit_settings(name, task_cfg)
        if settings.n_digits < 1:
            return None
        return DigitTask.d_vocab, DigitTask.d_vocab_out, settings.seq_len
    if name in TASKS and p >= 2:
        return p + 1, TASKS[name].out_vocab(p), 3
    return None


def _task_label(name: str, p: int, task_cfg: Any) -> str:
    return f"{name}, n_digits={task_cfg.n_digits}" if is_digit_task(name) else f"{name}, p={p}"


def _check_task(prefix: str, name: str, p: int, frac: float, errors: List[str]) -> None:
    if is_digit_task(name):
        return  # checked by DigitSettings.problems()
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
    if is_digit_task(task.name):
        errors.extend(_digit_settings(task.name, task).problems())

    model = cfg.model
    sizes = ("n_layers", "n_heads", "d_model", "d_head") + (() if model.attn_only else ("d_mlp",))
    for key in sizes:
        if int(getattr(model, key)) < 1:
            errors.append(f"model.{key}={getattr(model, key)}: must be positive")
    shapes = task_shapes(task.name, int(task.p), task)
    if model.n_ctx is not None and shapes is not None:
        if not is_digit_task(task.name) and int(model.n_ctx) != 3:
            errors.append(f"model.n_ctx={model.n_ctx}: the arithmetic tasks feed exactly 3 tokens (a b =)")
        elif int(model.n_ctx) < shapes[2]:
            errors.append(
                f"model.n_ctx={model.n_ctx}: shorter than the task's sequence ({shapes[2]} tokens for "
                f"{task.name} with n_digits={task.n_digits}); set model.n_ctx=null to take it from the task"
            )
    if shapes is not None:
        need_in, need_out = shapes[0], shapes[1]
        if model.d_vocab is not None and int(model.d_vocab) < need_in:
            errors.append(f"model.d_vocab={model.d_vocab}: task {task.name} needs >= {need_in}")
        if model.d_vocab_out is not None and int(model.d_vocab_out) < need_out:
            errors.append(
                f"model.d_vocab_out={model.d_vocab_out}: task {task.name} needs >= {need_out}"
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
    if not 0.0 <= float(opt.final_lr_frac) <= 1.0:
        errors.append(f"optimizer.final_lr_frac={opt.final_lr_frac}: must be in [0, 1]")

    train = cfg.train
    for key in ("max_epochs", "eval_every", "checkpoint_every", "threads"):
        if int(getattr(train, key)) < 1:
            errors.append(f"train.{key}={getattr(train, key)}: must be >= 1")
    if train.batch_size is not None and int(train.batch_size) < 1:
        errors.append(f"train.batch_size={train.batch_size}: must be >= 1 (or null for full batch)")
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
    if is_digit_task(src.task):
        errors.extend(f"transfer.source: {e}" for e in _digit_settings(src.task, cfg.task, src).problems())
    unknown = set(src.optimizer) - set(OptimizerConfig.__dataclass_fields__)
    if unknown:
        errors.append(f"transfer.source.optimizer: unknown optimizer field(s) {sorted(unknown)}")
    if int(src.max_epochs) < 1:
        errors.append(f"transfer.source.max_epochs={src.max_epochs}: must be >= 1")
    src_shapes = task_shapes(src.task, p, cfg.task)
    tgt_shapes = task_shapes(cfg.task.name, int(cfg.task.p), cfg.task)
    if src_shapes is None or tgt_shapes is None:
        return
    copied = {c for c, a in tr.components.items() if a != ComponentAction.reinit}
    src_label, tgt_label = _task_label(src.task, p, cfg.task), _task_label(cfg.task.name, int(cfg.task.p), cfg.task)
    if "embed" in copied and src_shapes[0] != tgt_shapes[0]:
        errors.append(
            f"transfer copies 'embed' but the source vocab ({src_shapes[0]} tokens, {src_label}) differs from the "
            f"target's ({tgt_shapes[0]}, {tgt_label}); set transfer.components.embed=reinit or match the tasks"
        )
    if "unembed" in copied and src_shapes[1] != tgt_shapes[1]:
        errors.append(
            f"transfer copies 'unembed' but the source has {src_shapes[1]} outputs ({src_label}) and the "
            f"target {tgt_shapes[1]} ({tgt_label}); set transfer.components.unembed=reinit"
        )
    if "pos_embed" in copied and cfg.model.n_ctx is None and src_shapes[2] != tgt_shapes[2]:
        errors.append(
            f"transfer copies 'pos_embed' but the source sequence has {src_shapes[2]} positions ({src_label}) and "
            f"the target's {tgt_shapes[2]} ({tgt_label}); set transfer.components.pos_embed=reinit or model.n_ctx"
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

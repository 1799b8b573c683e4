"""Semantic validation of a composed job config, before anything is trained or written.

Hydra's structured configs already reject unknown keys, wrong types and invalid
choices (Enums) at compose time. What they cannot express -- p prime, fractions in range, a checkpoint path
that exists, source and target shapes that agree on the copied components -- is
checked here, and every problem found is reported at once in one readable error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional

from groktransfer.config.schema import (
    CheckpointCriteria, Component, ComponentAction, ConfigError, GradFilterConfig, OptimizerConfig, TaskConfig,
    TrainJobConfig, source_gradfilter, source_optimizer, to_plain, to_typed,
)  # fmt: skip
from groktransfer.config.conditions import BUILT_IN_BLOCKS, CONDITIONS
from groktransfer.tasks.registry import TASKS

__all__ = ["ConfigError", "ResolvedSeeds", "resolve_seeds", "validate_job_config"]



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


def task_shapes(task_cfg: Any) -> Optional[tuple]:
    """(d_vocab, d_vocab_out, seq_len) of a task config, or None if it is malformed or unknown."""
    family = TASKS.find(str(task_cfg.name))
    return None if family is None else family.shapes(task_cfg)


def _task_problems(task_cfg: Any, prefix: str, errors: List[str]) -> bool:
    """Append the family's problems with ``task_cfg``; False when it cannot describe a task."""
    family = TASKS.find(str(task_cfg.name))
    if family is None:
        errors.append(f"{prefix}={task_cfg.name!r}: unknown task; registered: {', '.join(TASKS.names())}")
        return False
    found = family.problems(task_cfg, prefix)
    errors.extend(found)
    return not found


def _source_task_cfg(cfg: Any) -> Optional[Any]:
    """The source run's task config (TaskConfig-shaped), or None if its task is unknown."""
    src = cfg.transfer.source
    family = TASKS.find(str(src.task))
    if family is None:
        return None
    p = int(src.p if src.p is not None else cfg.task.p)
    frac = float(src.frac_train if src.frac_train is not None else cfg.task.frac_train)
    return to_typed(TaskConfig, family.source_task(src, cfg.task, p, frac, 0), "transfer.source")


def validate_job_config(cfg: Any, given: Iterable[str] = ()) -> None:
    """Raise ConfigError listing every semantic problem of a job config.

    ``cfg`` is a ``TrainJobConfig`` or the DictConfig it came from (attribute access only).
    ``given``: the dotted keys the user set on the command line; a given key the job does
    not read (``task.n_train`` of a 2-digit task) is refused rather than silently ignored.
    """
    errors: List[str] = []
    task = cfg.task
    task_ok = _task_problems(task, "task", errors)
    if task_ok:
        for key, why in sorted(TASKS.get(str(task.name)).ignored_keys(task).items()):
            if f"task.{key}" in set(given):
                errors.append(f"task.{key}={getattr(task, key)} is ignored by {task.name}: {why}; leave it out")

    model = cfg.model
    sizes = ("n_layers", "n_heads", "d_model", "d_head") + (() if model.attn_only else ("d_mlp",))
    for key in sizes:
        if int(getattr(model, key)) < 1:
            errors.append(f"model.{key}={getattr(model, key)}: must be positive")
    shapes = task_shapes(task) if task_ok else None
    if model.n_ctx is not None and shapes is not None:
        if TASKS.get(str(task.name)).exact_n_ctx and int(model.n_ctx) != shapes[2]:
            errors.append(f"model.n_ctx={model.n_ctx}: the {task.name} task feeds exactly {shapes[2]} tokens")
        elif int(model.n_ctx) < shapes[2]:
            errors.append(
                f"model.n_ctx={model.n_ctx}: shorter than the task's sequence ({shapes[2]} tokens for "
                f"{TASKS.get(str(task.name)).label(task)}); set model.n_ctx=null to take it from the task"
            )
    if shapes is not None:
        need_in, need_out = shapes[0], shapes[1]
        if model.d_vocab is not None and int(model.d_vocab) < need_in:
            errors.append(f"model.d_vocab={model.d_vocab}: task {task.name} needs >= {need_in}")
        if model.d_vocab_out is not None and int(model.d_vocab_out) < need_out:
            errors.append(
                f"model.d_vocab_out={model.d_vocab_out}: task {task.name} needs >= {need_out}"
            )

    _optimizer_problems(cfg.optimizer, "optimizer", errors)
    _gradfilter_problems(cfg.gradfilter, "gradfilter", errors)

    train = cfg.train
    for key in ("max_epochs", "eval_every", "checkpoint_every", "threads"):
        if int(getattr(train, key)) < 1:
            errors.append(f"train.{key}={getattr(train, key)}: must be >= 1")
    if train.batch_size is not None and int(train.batch_size) < 1:
        errors.append(f"train.batch_size={train.batch_size}: must be >= 1 (or null for full batch)")
    if int(train.patience) < 0:
        errors.append(f"train.patience={train.patience}: must be >= 0")
    if train.timeout_minutes is not None and not 0.0 < float(train.timeout_minutes) < float("inf"):
        errors.append(f"train.timeout_minutes={train.timeout_minutes}: must be a positive number of minutes (or null)")
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


def _optimizer_problems(opt: Any, prefix: str, errors: List[str]) -> None:
    """The optimizer's hyperparameters (its name is checked against the registry when the job is
    planned: ``groktransfer.training.optimizers.check_registered``, the registries being above this layer)."""
    if float(opt.lr) <= 0:
        errors.append(f"{prefix}.lr={opt.lr}: must be positive")
    if float(opt.weight_decay) < 0:
        errors.append(f"{prefix}.weight_decay={opt.weight_decay}: must be >= 0")
    if len(opt.betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in opt.betas):
        errors.append(f"{prefix}.betas={list(opt.betas)}: need two values in [0, 1)")
    if float(opt.eps) < 0:
        errors.append(f"{prefix}.eps={opt.eps}: must be >= 0")
    if int(opt.warmup_steps) < 0:
        errors.append(f"{prefix}.warmup_steps={opt.warmup_steps}: must be >= 0")
    if not 0.0 <= float(opt.final_lr_frac) <= 1.0:
        errors.append(f"{prefix}.final_lr_frac={opt.final_lr_frac}: must be in [0, 1]")
    sgd, muon = opt.sgd, opt.muon
    for block, key in (("sgd", "momentum"), ("sgd", "dampening"), ("muon", "momentum")):
        value = float(getattr(getattr(opt, block), key))
        if value < 0:
            errors.append(f"{prefix}.{block}.{key}={value}: must be >= 0")
    if bool(sgd.nesterov) and (float(sgd.momentum) <= 0 or float(sgd.dampening) != 0):
        errors.append(f"{prefix}.sgd.nesterov=true needs momentum > 0 and dampening 0")
    if muon.lr is not None and float(muon.lr) <= 0:
        errors.append(f"{prefix}.muon.lr={muon.lr}: must be positive (or null for {prefix}.lr)")
    if muon.weight_decay is not None and float(muon.weight_decay) < 0:
        errors.append(f"{prefix}.muon.weight_decay={muon.weight_decay}: must be >= 0")
    if int(muon.ns_steps) < 1:
        errors.append(f"{prefix}.muon.ns_steps={muon.ns_steps}: must be >= 1")
    if float(muon.eps) <= 0:
        errors.append(f"{prefix}.muon.eps={muon.eps}: must be positive")
    if muon.adjust_lr_fn is not None and str(muon.adjust_lr_fn) not in ("original", "match_rms_adamw"):
        errors.append(f"{prefix}.muon.adjust_lr_fn={muon.adjust_lr_fn!r}: one of original, match_rms_adamw, null")


def _gradfilter_problems(gf: Any, prefix: str, errors: List[str]) -> None:
    """The gradient filter's parameters (Grokfast's alpha, lamb, window)."""
    if not 0.0 <= float(gf.ema.alpha) < 1.0:
        errors.append(f"{prefix}.ema.alpha={gf.ema.alpha}: must lie in [0, 1)")
    for block in ("ema", "ma"):
        if float(getattr(gf, block).lamb) < 0:
            errors.append(f"{prefix}.{block}.lamb={getattr(gf, block).lamb}: must be >= 0")
    if int(gf.ma.window) < 1:
        errors.append(f"{prefix}.ma.window={gf.ma.window}: must be >= 1")


def _source_training_problems(cfg: Any, errors: List[str]) -> None:
    """The source run's optimizer and gradient filter: the target's with ``transfer.source``'s fields merged in."""
    typed = to_typed(TrainJobConfig, cfg)
    for label, merge, check in (
        ("transfer.source.optimizer", source_optimizer, _optimizer_problems),
        ("transfer.source.gradfilter", source_gradfilter, _gradfilter_problems),
    ):
        try:
            merged = merge(typed)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        if merged is not getattr(typed, label.rsplit(".", 1)[-1]):
            check(merged, label, errors)


def _validate_transfer(cfg: Any, errors: List[str]) -> None:
    tr = cfg.transfer
    if str(tr.name) not in CONDITIONS:
        errors.append(f"transfer.name={str(tr.name)!r}: unknown transfer condition; registered: {', '.join(CONDITIONS.names())}")
        return
    blocks = {name: getattr(tr, name) for name in BUILT_IN_BLOCKS}
    for name, given in (tr.criteria or {}).items():
        try:
            blocks[f"criteria.{name}"] = to_typed(CheckpointCriteria, given, f"transfer.criteria.{name}")
        except ConfigError as exc:
            errors.append(str(exc))
    for crit_name, crit in blocks.items():
        if crit.max_restricted_test_gap is not None and float(crit.max_restricted_test_gap) != float(crit.max_restricted_test_gap):
            errors.append(f"transfer.{crit_name}.max_restricted_test_gap is NaN")
        if crit.max_n_key_freqs is not None and int(crit.max_n_key_freqs) < 0:
            errors.append(f"transfer.{crit_name}.max_n_key_freqs={crit.max_n_key_freqs}: must be >= 0")
        for key in ("min_train_acc", "min_test_acc", "max_test_acc"):
            if not (0.0 <= float(getattr(crit, key)) <= 1.0):
                errors.append(f"transfer.{crit_name}.{key}={getattr(crit, key)}: must lie in [0, 1]")
        if float(crit.min_test_acc) > float(crit.max_test_acc):
            errors.append(f"transfer.{crit_name}: min_test_acc > max_test_acc selects nothing")
        if int(crit.held_for) < 0:
            errors.append(f"transfer.{crit_name}.held_for={crit.held_for}: must be >= 0 (epochs)")
    condition = CONDITIONS.get(str(tr.name))
    if not condition.needs_source:
        return
    if tr.embed_map and tr.components.get(Component.embed, ComponentAction.copy) == ComponentAction.reinit:
        errors.append("transfer.embed_map=true maps the source embedding: transfer.components.embed must be copy or freeze")

    src = tr.source
    if condition.by_epoch:
        if src.epoch is None:
            errors.append(f"transfer={tr.name} needs transfer.source.epoch (e.g. transfer.source.epoch=1500)")
        elif int(src.epoch) < 0:
            errors.append(f"transfer.source.epoch={src.epoch}: must be >= 0")
        elif src.path is None and int(src.epoch) > int(src.max_epochs):
            errors.append(f"transfer.source.epoch={src.epoch}: beyond the source run's transfer.source.max_epochs={src.max_epochs}")
        if src.path is not None:
            errors.append(f"transfer={tr.name} picks an epoch of a trained source run: unset transfer.source.path")
    _check_source_shape(cfg, errors)
    if src.path is not None:
        path = os.path.expanduser(str(src.path))
        if not os.path.isfile(path):
            errors.append(f"transfer.source.path={src.path!r}: no such file")
        return
    source_task = _source_task_cfg(cfg)
    if source_task is None:
        errors.append(f"transfer.source.task={src.task!r}: unknown task; registered: {', '.join(TASKS.names())}")
        return
    source_ok = _task_problems(source_task, "transfer.source", errors)
    unknown = set(src.optimizer) - set(OptimizerConfig.__dataclass_fields__)
    if unknown:
        errors.append(f"transfer.source.optimizer: unknown optimizer field(s) {sorted(unknown)}")
    unknown_filter = set(src.gradfilter) - set(GradFilterConfig.__dataclass_fields__)
    if unknown_filter:
        errors.append(f"transfer.source.gradfilter: unknown gradient-filter field(s) {sorted(unknown_filter)}")
    if not unknown and not unknown_filter:
        _source_training_problems(cfg, errors)
    if int(src.max_epochs) < 1:
        errors.append(f"transfer.source.max_epochs={src.max_epochs}: must be >= 1")
    src_shapes = task_shapes(source_task) if source_ok else None
    tgt_shapes = task_shapes(cfg.task) if TASKS.find(str(cfg.task.name)) else None
    if src_shapes is None or tgt_shapes is None:
        return
    copied = {c for c, a in tr.components.items() if a != ComponentAction.reinit}
    src_label = TASKS.get(str(source_task.name)).label(source_task)
    tgt_label = TASKS.get(str(cfg.task.name)).label(cfg.task)
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
    overrides = {k: v for k, v in to_plain(tr.source.model).items() if v is not None}
    for key, value in sorted(overrides.items()):
        if isinstance(value, int) and value < 1:
            errors.append(f"transfer.source.model.{key}={value}: must be positive")
    differs = sorted(k for k, v in overrides.items() if model[k] != v)
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

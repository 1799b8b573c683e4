"""Semantic validation of a composed job config, before anything is trained or written.

Hydra's structured configs and ``to_typed`` already reject unknown keys, wrong types and
invalid choices (Enums). What they cannot express -- p prime, fractions in range, a
checkpoint path that exists, a model that can read the task, source and target shapes that
agree on the copied components -- is checked here, and every problem found is reported at
once in one readable error. The model's part is asked of the model's class (the model
protocol: ``config_problems``, ``task_problems``, ``parameter_shapes`` on PyTorch's meta
device), so a plugin model is checked like the transformer, before any source is trained.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

from groktransfer.config.conditions import BUILT_IN_BLOCKS, CONDITIONS
from groktransfer.config.ranges import range_problems
from groktransfer.config.resolve import ResolvedSeeds, resolve_seeds, source_model_config, source_task_config
from groktransfer.config.schema import (
    TRANSFORMER_COMPONENTS,
    CheckpointCriteria,
    ComponentAction,
    ConfigError,
    GradFilterConfig,
    OptimizerConfig,
    TrainJobConfig,
    source_gradfilter,
    source_optimizer,
    to_typed,
)
from groktransfer.model.registry import MODELS
from groktransfer.tasks.family import TaskShape
from groktransfer.tasks.registry import TASKS, family_of
from groktransfer.utils.errors import UserError

__all__ = ["ConfigError", "ResolvedSeeds", "resolve_seeds", "validate_job_config"]


def task_shapes(task_cfg: Any) -> tuple | None:
    """(d_vocab, d_vocab_out, seq_len) of a task config, or None if it is malformed or unknown."""
    family = TASKS.find(str(task_cfg.name))
    return None if family is None else family.shapes(task_cfg)


def _task_problems(task_cfg: Any, prefix: str, errors: list[str]) -> bool:
    """Append the family's problems with ``task_cfg``; False when it cannot describe a task.

    A key already out of its declared range is reported once, by the range, and the family
    checks the others with that key at its default (a family need not survive n_digits = 2**70).
    """
    family = TASKS.find(str(task_cfg.name))
    if family is None:
        errors.append(f"{prefix}={task_cfg.name!r}: unknown task; registered: {', '.join(TASKS.names())}")
        return False
    out_of_range = {
        e.split("=", 1)[0].split("[", 1)[0][len(prefix) + 1 :] for e in range_problems(task_cfg, f"{prefix}.")
    }
    defaults = type(task_cfg)(name=task_cfg.name)
    checked = dataclasses.replace(task_cfg, **{k: getattr(defaults, k) for k in out_of_range})
    found = family.problems(checked, prefix)
    errors.extend(e for e in found if e.split("=", 1)[0][len(prefix) + 1 :] not in out_of_range)
    return not found and not out_of_range


def validate_job_config(cfg: Any, given: Iterable[str] = ()) -> None:
    """Raise ConfigError listing every semantic problem of a job config.

    ``cfg`` is a ``TrainJobConfig`` or the DictConfig it came from. ``given``: the dotted keys
    the user set on the command line; a given key the job does not read (``task.n_train`` of a
    2-digit task) is refused rather than silently ignored.
    """
    cfg = to_typed(TrainJobConfig, cfg)  # unknown keys, wrong types and choices: one line each
    errors: list[str] = range_problems(cfg)  # every number against the range declared beside its field
    task = cfg.task
    task_ok = _task_problems(task, "task", errors)
    if task_ok:
        for key, why in sorted(family_of(task.name).ignored_keys(task).items()):
            if f"task.{key}" in set(given):
                errors.append(f"task.{key}={getattr(task, key)} is ignored by {task.name}: {why}; leave it out")

    model_class = _model_problems(cfg, task_ok, errors)
    _optimizer_problems(cfg.optimizer, "optimizer", errors)

    train = cfg.train
    if int(train.checkpoint_every) % max(int(train.eval_every), 1) != 0:
        errors.append(
            f"train.checkpoint_every={train.checkpoint_every} must be a multiple of "
            f"train.eval_every={train.eval_every} (checkpoints carry the eval's accuracies)"
        )
    thresholds = [float(t) for t in train.thresholds]
    if not thresholds:
        errors.append("train.thresholds: give at least one threshold")
    if thresholds != sorted(set(thresholds)):
        errors.append(f"train.thresholds={thresholds}: must be strictly increasing")

    _validate_transfer(cfg, model_class, errors)

    if errors:
        raise ConfigError(problems_message(errors))


def problems_message(errors: list[str]) -> str:
    """Every problem on one line: what a refused command prints (exit 2)."""
    unique = list(dict.fromkeys(errors))
    return "invalid config: " + " | ".join(unique)


def _model_class(cfg: Any, prefix: str, errors: list[str]) -> type | None:
    architecture = str(cfg.architecture)
    if architecture not in MODELS:
        errors.append(
            f"{prefix}.architecture={architecture!r}: unknown model architecture; registered: {', '.join(MODELS.names())}"
        )
        return None
    return MODELS.get(architecture)


def _model_problems(cfg: TrainJobConfig, task_ok: bool, errors: list[str]) -> type | None:
    """The model's own checks and whether it can read the task (its protocol answers both);
    None when the model cannot be asked (an unknown architecture, a value out of its range)."""
    cls = _model_class(cfg.model, "model", errors)
    if cls is None or any(e.startswith("model.") for e in errors):
        return None
    errors.extend(cls.config_problems(cfg.model, "model"))
    if task_ok:
        errors.extend(cls.task_problems(cfg.model, family_of(cfg.task.name).task_shape(cfg.task)))
    return cls


def _optimizer_problems(opt: Any, prefix: str, errors: list[str]) -> None:
    """The optimizer's rules beyond its fields' ranges (its name is checked against the registry
    when the job is planned: ``groktransfer.training.optimizers.check_registered``)."""
    if len(opt.betas) != 2:
        errors.append(f"{prefix}.betas={list(opt.betas)}: need two values in [0, 1)")
    sgd, muon = opt.sgd, opt.muon
    if bool(sgd.nesterov) and (float(sgd.momentum) <= 0 or float(sgd.dampening) != 0):
        errors.append(f"{prefix}.sgd.nesterov=true needs momentum > 0 and dampening 0")
    if muon.adjust_lr_fn is not None and str(muon.adjust_lr_fn) not in ("original", "match_rms_adamw"):
        errors.append(f"{prefix}.muon.adjust_lr_fn={muon.adjust_lr_fn!r}: one of original, match_rms_adamw, null")


def _source_training_problems(cfg: Any, errors: list[str]) -> None:
    """The source run's optimizer and gradient filter: the target's with ``transfer.source``'s fields merged in."""
    typed = to_typed(TrainJobConfig, cfg)
    for label, merge, check in (
        ("transfer.source.optimizer", source_optimizer, _optimizer_problems),
        ("transfer.source.gradfilter", source_gradfilter, None),
    ):
        try:
            merged = merge(typed)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        if merged is not getattr(typed, label.rsplit(".", 1)[-1]):
            errors.extend(range_problems(merged, label + "."))
            if check is not None:
                check(merged, label, errors)


def _validate_transfer(cfg: TrainJobConfig, model_class: type | None, errors: list[str]) -> None:
    tr = cfg.transfer
    if str(tr.name) not in CONDITIONS:
        errors.append(
            f"transfer.name={str(tr.name)!r}: unknown transfer condition; registered: {', '.join(CONDITIONS.names())}"
        )
        return
    blocks = {name: getattr(tr, name) for name in BUILT_IN_BLOCKS}
    for name, given in (tr.criteria or {}).items():
        try:
            blocks[f"criteria.{name}"] = to_typed(CheckpointCriteria, given, f"transfer.criteria.{name}")
            errors.extend(range_problems(blocks[f"criteria.{name}"], f"transfer.criteria.{name}."))
        except ConfigError as exc:
            errors.append(str(exc))
    for crit_name, crit in blocks.items():
        if float(crit.min_test_acc) > float(crit.max_test_acc):
            errors.append(f"transfer.{crit_name}: min_test_acc > max_test_acc selects nothing")
    condition = CONDITIONS.get(str(tr.name))
    if not condition.needs_source:
        return
    if model_class is not None:
        _component_problems(tr, model_class, errors)

    src = tr.source
    if condition.by_epoch:
        if src.epoch is None:
            errors.append(f"transfer={tr.name} needs transfer.source.epoch (e.g. transfer.source.epoch=1500)")
        elif src.path is None and 0 <= int(src.epoch) and int(src.epoch) > int(src.max_epochs):
            errors.append(
                f"transfer.source.epoch={src.epoch}: beyond the source run's transfer.source.max_epochs={src.max_epochs}"
            )
        if src.path is not None:
            errors.append(f"transfer={tr.name} picks an epoch of a trained source run: unset transfer.source.path")
    if src.path is not None:
        path = os.path.expanduser(str(src.path))
        if not os.path.isfile(path):
            errors.append(f"transfer.source.path={src.path!r}: no such file")
        return  # the file's shapes are checked when it is read, before the target trains
    try:
        source_task = source_task_config(cfg, 0)
    except UserError as exc:
        errors.append(
            str(exc)
            if str(src.task) in TASKS
            else f"transfer.source.task={src.task!r}: unknown task; registered: {', '.join(TASKS.names())}"
        )
        return
    errors.extend(e for e in range_problems(source_task, "transfer.source.") if e not in errors)
    source_ok = _task_problems(source_task, "transfer.source", errors)
    unknown = set(src.optimizer) - set(OptimizerConfig.__dataclass_fields__)
    if unknown:
        errors.append(f"transfer.source.optimizer: unknown optimizer field(s) {sorted(unknown)}")
    unknown_filter = set(src.gradfilter) - set(GradFilterConfig.__dataclass_fields__)
    if unknown_filter:
        errors.append(f"transfer.source.gradfilter: unknown gradient-filter field(s) {sorted(unknown_filter)}")
    if not unknown and not unknown_filter:
        _source_training_problems(cfg, errors)
    if model_class is None:
        return
    try:
        source_model = source_model_config(cfg)
    except ConfigError as exc:
        errors.append(str(exc))
        return
    source_class = _model_class(source_model, "transfer.source.model", errors)
    if source_class is None:
        return
    before = len(errors)
    errors.extend(range_problems(source_model, "transfer.source.model."))
    errors.extend(source_class.config_problems(source_model, "transfer.source.model"))
    if not source_ok or len(errors) > before or not _task_ok(cfg.task):
        return
    source_shape = family_of(source_task.name).task_shape(source_task)
    target_shape = family_of(cfg.task.name).task_shape(cfg.task)
    errors.extend(source_class.task_problems(source_model, source_shape))
    if len(errors) == before:
        _shape_problems(cfg, (model_class, target_shape), (source_class, source_model, source_shape), errors)


def _task_ok(task_cfg: Any) -> bool:
    family = TASKS.find(str(task_cfg.name))
    return family is not None and not family.problems(task_cfg)


def _component_problems(tr: Any, model_class: type, errors: list[str]) -> None:
    """Components the model does not have, and an embedding map on a model without one.

    The default block names the transformer's components, all ``copy``: for another model
    those entries are no-ops and pass; any other name, or another action on one of them, is
    refused with the model's own components.
    """
    own = tuple(model_class.components)
    for component, action in sorted((str(c), a) for c, a in tr.components.items()):
        default = component in TRANSFORMER_COMPONENTS and ComponentAction(action) == ComponentAction.copy
        if component not in own and not default:
            errors.append(
                f"transfer.components.{component}={ComponentAction(action)}: the {model_class.architecture} model has no "
                f"component {component!r}; its components are {', '.join(own)}"
            )
    if tr.embed_map:
        if not model_class.embedding_map:
            errors.append(f"transfer.embed_map=true: the {model_class.architecture} model has no embedding map")
        elif ComponentAction(tr.components.get("embed", ComponentAction.copy)) == ComponentAction.reinit:
            errors.append(
                "transfer.embed_map=true maps the source embedding: transfer.components.embed must be copy or freeze"
            )


def _shape_problems(
    cfg: TrainJobConfig, target: tuple[type, TaskShape], source: tuple[type, Any, TaskShape], errors: list[str]
) -> None:
    """Every copied parameter must have the same shape in the source and the target model, checked
    on PyTorch's meta device (no memory), before the source run is trained."""
    target_class, target_shape = target
    source_class, source_model, source_shape = source
    tr = cfg.transfer
    target_model = target_class.resolve_config(
        cfg.model, target_shape.d_vocab, target_shape.d_vocab_out, target_shape.seq_len
    )
    source_model = source_class.resolve_config(
        source_model, source_shape.d_vocab, source_shape.d_vocab_out, source_shape.seq_len
    )
    if target_class is not source_class:
        copied = [
            c
            for c, a in tr.components.items()
            if ComponentAction(a) != ComponentAction.reinit and c in target_class.components
        ]
        if copied:
            errors.append(
                f"transfer.source.model.architecture={source_class.architecture} differs from the target's "
                f"({target_class.architecture}): set transfer.components.{{{','.join(copied)}}}=reinit"
            )
        return
    probe = target_class.on_meta_device(target_model)
    want = {name: tuple(p.shape) for name, p in probe.named_parameters()}
    have = {name: tuple(p.shape) for name, p in source_class.on_meta_device(source_model).named_parameters()}
    mapped = bool(tr.embed_map)
    by_component: dict[str, list[str]] = {}
    for name, shape in want.items():
        component = probe.component_of(name)
        action = ComponentAction(tr.components.get(component, ComponentAction.copy))
        if action == ComponentAction.reinit:
            continue
        if name not in have:
            by_component.setdefault(component, []).append(f"{name}: the source model has none")
        elif mapped and component == "embed":
            if have[name][0] != shape[0]:  # the map changes width, not vocabulary
                by_component.setdefault(component, []).append(f"{name} rows {have[name][0]} vs {shape[0]} (tokens)")
        elif have[name] != shape:
            by_component.setdefault(component, []).append(f"{name} {have[name]} vs {shape}")
    labels = f"source {source_shape.label} -> target {target_shape.label}"
    for component, lines in by_component.items():
        errors.append(
            f"transfer copies component {component!r} but the source and target models differ ({labels}): "
            f"{'; '.join(lines[:3])}{' ...' if len(lines) > 3 else ''}; set transfer.components.{component}=reinit "
            "or make them match"
        )

"""Transfer: copy / re-initialise / freeze a model's components from a source state.

A model names its transfer components (the model protocol: ``GrokModel.components`` and
``component_of``; the transformer's are embed, pos_embed, attn, mlp, unembed, with each
LayerNorm in the sublayer it feeds). Each component of the target is copied from the chosen
source checkpoint, kept at its fresh init (``reinit``) or copied and frozen (``freeze``), as
configured. Shapes are checked per parameter (before the source is trained, by
``config.validate``; again here, against the file) and a mismatch names the parameter.
Optionally the source's Adam moments are carried over for the copied, trainable parameters
(``reset_optimizer: false``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from groktransfer.config.schema import ComponentAction
from groktransfer.model.protocol import GrokModel
from groktransfer.utils.errors import UserError

log = logging.getLogger(__name__)


class TransferError(UserError, ValueError):
    """The source cannot initialise this target (shapes, vocab, missing parameters)."""


def _action(components: Mapping[str, Any], component: str) -> ComponentAction:
    return ComponentAction(components.get(component, ComponentAction.copy))


def set_component_trainable(model: GrokModel, component: str, trainable: bool) -> None:
    """Freeze or unfreeze a component; parameters the model config keeps fixed stay frozen."""
    for name, param in model.component_parameters(component).items():
        param.requires_grad_(trainable and model.trainable_by_config(name))


def freeze_components(model: GrokModel, components: Mapping[str, Any]) -> list[str]:
    """Freeze every component whose action is ``freeze``; returns the frozen parameter names.

    Used when a transfer is applied and again when a resumed run rebuilds its model.
    Components the model does not have are ignored (validation refused any action on them but copy).
    """
    frozen: list[str] = []
    for component in model.components:
        if _action(components, component) == ComponentAction.freeze:
            set_component_trainable(model, component, False)
            frozen += list(model.component_parameters(component))
    return sorted(frozen)


@dataclass
class TransferPlan:
    """What happened to each parameter; written to the run's source record."""

    copied: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        return {
            "copied": self.copied,
            "frozen": self.frozen,
            "reinitialised": self.reinitialised,
            "notes": self.notes,
        }


def apply_transfer(
    model: GrokModel, source_state: dict[str, torch.Tensor], components: Mapping[str, Any]
) -> TransferPlan:
    """Copy / keep fresh / freeze each component of ``model`` from ``source_state`` in place.

    Parameters are transferred; buffers are constants of the architecture (the transformer's
    attention mask) and stay the target's.
    """
    plan = TransferPlan()
    source_state = model.adapt_source_state(dict(source_state), plan.notes)
    params = dict(model.named_parameters())
    mismatches: list[str] = []
    missing: list[str] = []
    for name, param in params.items():
        component = model.component_of(name)
        if _action(components, component) == ComponentAction.reinit:
            plan.reinitialised.append(name)
            continue
        if name not in source_state:
            missing.append(f"{name} (component {component})")
        elif tuple(source_state[name].shape) != tuple(param.shape):
            mismatches.append(
                f"{name}: source {tuple(source_state[name].shape)} vs target {tuple(param.shape)} (component {component})"
            )
    if missing or mismatches:
        lines = [f"shape mismatch {m}" for m in mismatches] + [f"source lacks {m}" for m in missing]
        raise TransferError(
            "the source checkpoint cannot initialise this target model:\n  - "
            + "\n  - ".join(lines)
            + f"\n(re-initialise the affected components with transfer.components.<name>=reinit -- this model's "
            f"components are {', '.join(model.components)} -- or match the model shape / task vocabulary)"
        )
    with torch.no_grad():
        for name, param in params.items():
            if _action(components, model.component_of(name)) == ComponentAction.reinit:
                continue
            param.copy_(source_state[name].to(param.dtype))
            plan.copied.append(name)
    plan.frozen = freeze_components(model, components)
    return plan


def apply_embedding_map(
    model: GrokModel, source_state: dict[str, torch.Tensor], action: ComponentAction, seed: int, plan: TransferPlan
) -> None:
    """Embedding-only transfer: the target's token embedding is the source's times a map
    (Xu et al. 2025), trained unless ``action`` is freeze (models with ``embedding_map``)."""
    trainable = ComponentAction(action) != ComponentAction.freeze
    try:
        copied, map_names, note = model.attach_embedding_map(source_state, seed, trainable=trainable)
    except (KeyError, ValueError) as exc:
        raise TransferError(f"embedding map: {exc}") from exc
    plan.copied += copied
    if not trainable:
        plan.frozen += map_names
    plan.notes.append(note)


def carry_optimizer_state(
    optimizer: torch.optim.Optimizer,
    model: torch.nn.Module,
    named_state: dict[str, dict[str, torch.Tensor]],
    names: Iterable[str],
) -> int:
    """Seed AdamW's moments for ``names`` from the source's saved state; returns how many."""
    params = dict(model.named_parameters())
    carried = 0
    for name in names:
        param = params.get(name)
        if param is None or not param.requires_grad or name not in named_state:
            continue
        src = named_state[name]
        if src["exp_avg"].shape != param.shape:
            raise TransferError(f"optimizer state for {name} has shape {tuple(src['exp_avg'].shape)}")
        step = src["step"].clone().float() if torch.is_tensor(src["step"]) else torch.tensor(float(src["step"]))
        optimizer.state[param] = {  # on the parameter's device: the fused AdamW kernel requires it
            "step": step.to(param.device),
            "exp_avg": src["exp_avg"].to(param.device, copy=True),
            "exp_avg_sq": src["exp_avg_sq"].to(param.device, copy=True),
        }
        carried += 1
    return carried


def named_optimizer_state(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """AdamW state keyed by parameter name (portable across models and processes)."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, dict[str, Any]] = {}
    for param, state in optimizer.state.items():
        name = by_id.get(id(param))
        if name is not None and "exp_avg" in state:
            out[name] = {
                "step": torch.as_tensor(state["step"]).detach().cpu().clone(),
                "exp_avg": state["exp_avg"].detach().cpu().clone(),
                "exp_avg_sq": state["exp_avg_sq"].detach().cpu().clone(),
            }
    return out

"""Transfer: which component a parameter belongs to, and copy / re-initialise / freeze.

A transfer condition treats the model as five components (``Component``: embed,
pos_embed, attn, mlp, unembed); LayerNorms travel with the sublayer they feed (``ln1``
with attn, ``ln2`` with mlp, ``ln_final`` with unembed). Each component of the target
is copied from the chosen source checkpoint, kept at its fresh init (``reinit``) or
copied and frozen (``freeze``), as configured. Shapes are checked per parameter and a
mismatch names the parameter. Optionally the source's AdamW moments are carried over
for the copied, trainable parameters (``reset_optimizer: false``).

This module is the one place that knows component membership and freezing; the model
uses ``component_parameters`` for its per-component initialisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping

import torch

from groktransfer.config.schema import Component, ComponentAction
from groktransfer.utils.errors import UserError
from groktransfer.transfer.embedding_map import attach_embedding_map

log = logging.getLogger(__name__)


class TransferError(UserError, ValueError):
    """The source cannot initialise this target (shapes, vocab, missing parameters)."""


def component_of(param_name: str) -> Component:
    """Which transfer component a TransformerLens-named parameter (or buffer) belongs to."""
    parts = param_name.split(".")
    if parts[0] in ("embed", "pos_embed", "unembed"):
        return Component(parts[0])
    if parts[0] == "ln_final":
        return Component.unembed
    if parts[0] == "blocks" and len(parts) > 2:
        if parts[2] in ("attn", "ln1"):
            return Component.attn
        if parts[2] in ("mlp", "ln2"):
            return Component.mlp
    raise TransferError(f"parameter {param_name!r} belongs to no transfer component of {Component.values()}")


def component_parameters(model: torch.nn.Module, component: str) -> Dict[str, torch.nn.Parameter]:
    """Parameters of one component (``attn``/``mlp`` span every layer)."""
    component = Component(component)
    return {n: p for n, p in model.named_parameters() if component_of(n) == component}


def set_component_trainable(model: torch.nn.Module, component: str, trainable: bool) -> None:
    """Freeze or unfreeze a component; biases the model config keeps at zero stay frozen."""
    for name, param in component_parameters(model, component).items():
        param.requires_grad_(trainable and model.trainable_by_config(name))


def freeze_components(model: torch.nn.Module, components: Mapping[str, str]) -> List[str]:
    """Freeze every component whose action is ``freeze``; returns the frozen parameter names.

    Used when a transfer is applied and again when a resumed run rebuilds its model.
    """
    frozen: List[str] = []
    for component, action in components.items():
        if action == ComponentAction.freeze:
            set_component_trainable(model, component, False)
            frozen += list(component_parameters(model, component))
    return sorted(frozen)


@dataclass
class TransferPlan:
    """What happened to each parameter; written to the run's source record."""

    copied: List[str] = field(default_factory=list)
    frozen: List[str] = field(default_factory=list)
    reinitialised: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def as_record(self) -> Dict[str, Any]:
        return {
            "copied": self.copied,
            "frozen": self.frozen,
            "reinitialised": self.reinitialised,
            "notes": self.notes,
        }


def adapt_paper_unembed(
    source_state: Dict[str, torch.Tensor], target_state: Dict[str, torch.Tensor], plan: TransferPlan
) -> Dict[str, torch.Tensor]:
    """The original paper's models output p+1 logits (one for '='); drop that column.

    The '=' output is never a label, so dropping it keeps the argmax on every
    input and lets a released checkpoint initialise a p-output target.
    """
    out = dict(source_state)
    for name in ("unembed.W_U", "unembed.b_U"):
        if name in out and name in target_state:
            src, tgt = out[name], target_state[name]
            if src.shape[-1] == tgt.shape[-1] + 1 and src.shape[:-1] == tgt.shape[:-1]:
                out[name] = src[..., :-1].contiguous()
                plan.notes.append(f"{name}: dropped the source's '=' output column ({src.shape} -> {tgt.shape})")
    return out


def apply_transfer(
    model: torch.nn.Module,
    source_state: Dict[str, torch.Tensor],
    components: Dict[str, str],
) -> TransferPlan:
    """Copy / keep fresh / freeze each component of ``model`` from ``source_state`` in place."""
    plan = TransferPlan()
    target_state = model.state_dict()
    mismatches: List[str] = []
    missing: List[str] = []
    for name, tensor in target_state.items():
        action = components.get(component_of(name), ComponentAction.copy)
        if action == ComponentAction.reinit:
            plan.reinitialised.append(name)
            continue
        if name not in source_state:
            missing.append(name)
            continue
        if tuple(source_state[name].shape) != tuple(tensor.shape):
            mismatches.append(f"{name}: source {tuple(source_state[name].shape)} vs target {tuple(tensor.shape)}")
    if missing or mismatches:
        lines = [f"shape mismatch {m}" for m in mismatches] + [f"source lacks {m}" for m in missing]
        raise TransferError(
            "the source checkpoint cannot initialise this target model:\n  - "
            + "\n  - ".join(lines)
            + "\n(re-initialise the affected components with transfer.components.<name>=reinit, "
            "or match the model shape / task vocabulary)"
        )
    with torch.no_grad():
        for name, tensor in target_state.items():
            if components.get(component_of(name), ComponentAction.copy) == ComponentAction.reinit:
                continue
            tensor.copy_(source_state[name].to(tensor.dtype))
            plan.copied.append(name)
    plan.frozen = freeze_components(model, components)
    return plan


def apply_embedding_map(
    model: torch.nn.Module, source_state: Dict[str, torch.Tensor], action: str, seed: int, plan: TransferPlan
) -> None:
    """Embedding-only transfer: target W_E = source W_E @ W_map (W_map trained unless ``action`` is freeze)."""
    if "embed.W_E" not in source_state:
        raise TransferError("embedding map: the source checkpoint has no embed.W_E")
    W_source = source_state["embed.W_E"]  # [d_vocab, d_source]
    try:
        mapped = attach_embedding_map(model, W_source, seed, trainable=action != "freeze")
    except ValueError as exc:
        raise TransferError(str(exc)) from exc
    plan.copied.append("embed.W_E")
    if action == "freeze":
        plan.frozen.append("embed.W_map")
    plan.notes.append(
        f"embed.W_E = source W_E {tuple(W_source.shape)} @ W_map {tuple(mapped.W_map.shape)} "
        f"({'frozen' if action == 'freeze' else 'trained'}; semi-orthogonal init from seed {seed})"
    )


def carry_optimizer_state(
    optimizer: torch.optim.Optimizer,
    model: torch.nn.Module,
    named_state: Dict[str, Dict[str, torch.Tensor]],
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


def named_optimizer_state(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> Dict[str, Dict[str, Any]]:
    """AdamW state keyed by parameter name (portable across models and processes)."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    out: Dict[str, Dict[str, Any]] = {}
    for param, state in optimizer.state.items():
        name = by_id.get(id(param))
        if name is not None and "exp_avg" in state:
            out[name] = {
                "step": torch.as_tensor(state["step"]).detach().cpu().clone(),
                "exp_avg": state["exp_avg"].detach().cpu().clone(),
                "exp_avg_sq": state["exp_avg_sq"].detach().cpu().clone(),
            }
    return out


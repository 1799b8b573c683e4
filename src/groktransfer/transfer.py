"""Build the target job's starting point from its transfer condition.

``random``: a fresh model from ``model_seed``. ``grokked`` / ``memorized``: the
same fresh model, then each component (embed, pos_embed, attn, mlp, unembed) is
copied from the chosen source checkpoint, kept fresh (``reinit``) or copied and
frozen (``freeze``), as configured. Shapes are checked per parameter and a
mismatch names the parameter. Optionally the source's AdamW moments are carried
over for the copied, trainable parameters (``reset_optimizer: false``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List

import torch

from groktransfer.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


class TransferError(ValueError):
    """The source cannot initialise this target (shapes, vocab, missing parameters)."""


def component_of(param_name: str) -> str:
    """Which transfer component a TransformerLens-named parameter belongs to."""
    if param_name.startswith("embed."):
        return "embed"
    if param_name.startswith("pos_embed."):
        return "pos_embed"
    if param_name.startswith("unembed.") or param_name.startswith("ln_final."):
        return "unembed"
    if param_name.startswith("blocks."):
        part = param_name.split(".")[2]
        if part in ("attn", "ln1"):
            return "attn"
        if part in ("mlp", "ln2"):
            return "mlp"
    raise TransferError(f"parameter {param_name!r} belongs to no transfer component")


@dataclass
class TransferPlan:
    """What happened to each parameter; written to source.json for the record."""

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
        action = components.get(component_of(name), "copy")
        if action == "reinit":
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
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in target_state.items():
            action = components.get(component_of(name), "copy")
            if action == "reinit":
                continue
            tensor.copy_(source_state[name].to(tensor.dtype))
            plan.copied.append(name)
            if action == "freeze" and name in params:
                params[name].requires_grad_(False)
                plan.frozen.append(name)
    return plan


def load_source_weights(path: Path) -> Dict[str, Any]:
    """Weights and metadata of a checkpoint file, in this project's layout."""
    loaded = load_checkpoint(path)
    return {
        "state_dict": loaded.state_dict,
        "epoch": loaded.epoch,
        "metrics": loaded.metrics,
        "format": loaded.source_format,
    }


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
        optimizer.state[param] = {
            "step": src["step"].clone().float() if torch.is_tensor(src["step"]) else torch.tensor(float(src["step"])),
            "exp_avg": src["exp_avg"].clone(),
            "exp_avg_sq": src["exp_avg_sq"].clone(),
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
                "step": torch.as_tensor(state["step"]).clone(),
                "exp_avg": state["exp_avg"].detach().clone(),
                "exp_avg_sq": state["exp_avg_sq"].detach().clone(),
            }
    return out


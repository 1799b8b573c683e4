"""Weight processing with TransformerLens semantics, so attributions read cleanly.

Why: direct logit attribution and weight-based readings (e.g. of W_E or W_U) are only
meaningful once the parts of the weights that cannot change the output are removed.
TransformerLens' ``process_weights`` does this; the same four steps are here, on this
project's state dicts, and ``tests/test_transformer_lens_compat.py`` checks that they
give TransformerLens' numbers on the same model.

* :func:`fold_layer_norm` -- a LayerNorm's gain and bias move into the weights that read
  its output (W_Q/W_K/W_V, W_in, W_U and their biases); the reading weights are then
  centred over d_model (LayerNorm's output has zero mean, so that component is unread).
  The LayerNorm keeps only its centring and scaling: gain 1, bias 0, which is exactly
  TransformerLens' ``LNPre``.
* :func:`center_writing_weights` -- everything that writes into the residual stream
  (W_E, W_pos, W_O, b_O, W_out, b_out) loses its mean over d_model. Only with LayerNorm,
  which subtracts that mean anyway before anything reads it.
* :func:`center_unembed` -- W_U and b_U lose their mean over outputs: every logit of a
  position moves by the same constant, so log-probabilities are unchanged.
* :func:`fold_value_biases` -- b_V reaches the output only as b_V @ W_O (attention
  patterns sum to 1), so it is folded into b_O.

The processed model gives the same log-probabilities as the original (logits up to a
per-position constant).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]


def _layers(sd: StateDict) -> int:
    return 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))


def _has_ln(sd: StateDict) -> bool:
    return "ln_final.w" in sd


def fold_layer_norm(sd: StateDict, center_weights: bool = True) -> StateDict:
    """Fold every LayerNorm's gain and bias into the weights it feeds (see module doc)."""
    sd = dict(sd)
    if not _has_ln(sd):
        return sd
    for layer in range(_layers(sd)):
        pre = f"blocks.{layer}"
        w, b = sd[f"{pre}.ln1.w"], sd[f"{pre}.ln1.b"]
        for m in "QKV":
            W = sd[f"{pre}.attn.W_{m}"]  # [h, d, e]
            sd[f"{pre}.attn.b_{m}"] = sd[f"{pre}.attn.b_{m}"] + torch.einsum("hde,d->he", W, b)
            W = W * w[None, :, None]
            sd[f"{pre}.attn.W_{m}"] = W - W.mean(dim=1, keepdim=True) if center_weights else W
        sd[f"{pre}.ln1.w"], sd[f"{pre}.ln1.b"] = torch.ones_like(w), torch.zeros_like(b)
        if f"{pre}.mlp.W_in" in sd and f"{pre}.ln2.w" in sd:
            w, b = sd[f"{pre}.ln2.w"], sd[f"{pre}.ln2.b"]
            W = sd[f"{pre}.mlp.W_in"]  # [d, m]
            sd[f"{pre}.mlp.b_in"] = sd[f"{pre}.mlp.b_in"] + b @ W
            W = W * w[:, None]
            sd[f"{pre}.mlp.W_in"] = W - W.mean(dim=0, keepdim=True) if center_weights else W
            sd[f"{pre}.ln2.w"], sd[f"{pre}.ln2.b"] = torch.ones_like(w), torch.zeros_like(b)
    w, b = sd["ln_final.w"], sd["ln_final.b"]
    W = sd["unembed.W_U"]  # [d, v]
    sd["unembed.b_U"] = sd["unembed.b_U"] + b @ W
    W = W * w[:, None]
    sd["unembed.W_U"] = W - W.mean(dim=0, keepdim=True) if center_weights else W
    sd["ln_final.w"], sd["ln_final.b"] = torch.ones_like(w), torch.zeros_like(b)
    return sd


def center_writing_weights(sd: StateDict) -> StateDict:
    """Remove the d_model mean of everything that writes to the residual stream (LN models only)."""
    sd = dict(sd)
    if not _has_ln(sd):
        return sd
    for key in ("embed.W_E", "pos_embed.W_pos"):
        sd[key] = sd[key] - sd[key].mean(dim=-1, keepdim=True)
    for layer in range(_layers(sd)):
        pre = f"blocks.{layer}"
        names = [f"{pre}.attn.W_O", f"{pre}.attn.b_O"]
        if f"{pre}.mlp.W_out" in sd:
            names += [f"{pre}.mlp.W_out", f"{pre}.mlp.b_out"]
        for key in names:
            sd[key] = sd[key] - sd[key].mean(dim=-1, keepdim=True)
    return sd


def center_unembed(sd: StateDict) -> StateDict:
    """Remove the mean over outputs of W_U and b_U (a per-position constant in the logits)."""
    sd = dict(sd)
    sd["unembed.W_U"] = sd["unembed.W_U"] - sd["unembed.W_U"].mean(dim=-1, keepdim=True)
    sd["unembed.b_U"] = sd["unembed.b_U"] - sd["unembed.b_U"].mean()
    return sd


def fold_value_biases(sd: StateDict) -> StateDict:
    """b_O += sum_h b_V[h] @ W_O[h]; b_V = 0."""
    sd = dict(sd)
    for layer in range(_layers(sd)):
        pre = f"blocks.{layer}.attn"
        b_V, W_O = sd[f"{pre}.b_V"], sd[f"{pre}.W_O"]  # [h, e], [h, e, d]
        sd[f"{pre}.b_O"] = sd[f"{pre}.b_O"] + torch.einsum("he,hed->d", b_V, W_O)
        sd[f"{pre}.b_V"] = torch.zeros_like(b_V)
    return sd


def process_state_dict(
    sd: StateDict,
    fold_ln: bool = True,
    center_writing: bool = True,
    center_unembed_: bool = True,
    fold_value_biases_: bool = True,
) -> StateDict:
    """TransformerLens' ``process_weights`` order: fold LN, centre writing weights,
    centre the unembedding, fold value biases."""
    sd = {k: v.detach().clone() for k, v in sd.items()}
    if fold_ln:
        sd = fold_layer_norm(sd)
    if center_writing:
        sd = center_writing_weights(sd)
    if center_unembed_:
        sd = center_unembed(sd)
    if fold_value_biases_:
        sd = fold_value_biases(sd)
    return sd


@torch.no_grad()
def process_weights(model: Any, **flags: bool) -> Any:
    """A processed copy of ``model`` (the original is untouched); see :func:`process_state_dict`
    for ``flags``. Folded LayerNorms stay as modules with gain 1 and bias 0."""
    out = copy.deepcopy(model)
    out.load_state_dict(process_state_dict(model.state_dict(), **flags))
    return out

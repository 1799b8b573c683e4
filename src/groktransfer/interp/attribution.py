"""Direct logit attribution (DLA): how much each part writes the correct answer's logit.

The final residual stream at an answer position is a sum of parts: the token and
position embeddings, each head's output (z @ W_O), each attention layer's b_O, each MLP
neuron group's output (post @ W_out) and b_out. Everything after it (the final
LayerNorm, with its per-example scale read from ``ln_final.hook_scale`` and frozen,
then W_U) is linear, so the correct answer's logit is exactly

    logit[c] = sum over parts of (part's direct contribution) + bias terms

(bias terms: ln_final.b @ W_U[:, c] + b_U[c]). :func:`direct_logit_attribution` returns
the parts and the residual of that identity (the completeness check). With
``centre=True`` the attribution is to logit[c] minus the mean logit over outputs, which
is what the softmax sees.

:func:`fourier_attribution` splits each part's contribution over the output's Fourier
basis (mod p, 2p for int_add, 10 for digits): part's logits over all outputs ->
Fourier components -> each frequency's share of the correct answer's logit. The
frequencies sum back to the part's contribution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from groktransfer.tasks.fourier import fourier_basis

from .answers import answer_set
from .forward import answer_logits, has_mlp, n_layers_heads, run_cache

#: neuron groups per layer: {layer: {group name: neuron indices}}
NeuronGroups = Mapping[int, Mapping[str, Sequence[int]]]


@dataclass(frozen=True)
class Attribution:
    """Per-part direct contributions at every answer position.

    ``parts`` {name: [n, n_answers, d_vocab_out]}: each part's logits over all outputs
    (after the frozen final LayerNorm); ``bias`` [n, n_answers, d_vocab_out]: the bias
    terms; ``logits``: the model's logits (centred over outputs when ``centre``).
    """

    parts: dict[str, torch.Tensor]
    bias: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor  # [n, n_answers]
    answer_names: Sequence[str]
    centre: bool

    def correct(self, x: torch.Tensor) -> torch.Tensor:
        """[n, n_answers, v] -> [n, n_answers] value at the correct answer."""
        return x.gather(-1, self.labels[..., None]).squeeze(-1)

    def completeness_error(self) -> float:
        """max |sum of parts + bias - logit| at the correct answers (should be float round-off)."""
        total = sum(self.parts.values()) + self.bias
        return float((self.correct(total) - self.correct(self.logits)).abs().max())

    def table(self) -> pd.DataFrame:
        """One row per (answer position, part): mean and std over inputs of the direct
        contribution to the correct answer, and its share of the mean correct logit."""
        rows = []
        for j, answer in enumerate(self.answer_names):
            mean_logit = float(self.correct(self.logits)[:, j].mean())
            for name, x in list(self.parts.items()) + [("bias", self.bias)]:
                c = self.correct(x)[:, j].double()
                rows.append(
                    dict(
                        answer=answer,
                        part=name,
                        mean=float(c.mean()),
                        std=float(c.std()) if c.numel() > 1 else 0.0,
                        share=float(c.mean()) / mean_logit if mean_logit else float("nan"),
                    )
                )
        return pd.DataFrame(rows)


def _need(sd: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    """A weight the attribution cannot do without (a KeyError naming it otherwise)."""
    if key not in sd:
        raise KeyError(f"the model has no {key}: not a TransformerLens-style model")
    return sd[key].detach().double()


def _w(sd: Mapping[str, torch.Tensor], key: str) -> torch.Tensor | None:
    return sd[key].detach().double() if key in sd else None


@torch.no_grad()
def direct_logit_attribution(
    model: Any, task: Any, neuron_groups: NeuronGroups | None = None, centre: bool = True
) -> Attribution:
    """Decompose the correct answer's logit into parts (see module doc).

    ``neuron_groups``: per MLP layer, named groups of neurons (e.g. from
    ``representations.neuron_clusters``); neurons in no group form ``L{l} mlp other``.
    Default: one group per MLP layer, ``L{l} mlp``.
    """
    aset = answer_set(task)
    sd = model.state_dict()
    n_layers, n_heads = n_layers_heads(model)
    names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    mlp_layers = [layer for layer in range(n_layers) if has_mlp(model, layer)]
    names += [f"blocks.{layer}.mlp.hook_post" for layer in mlp_layers]
    use_ln = "ln_final.hook_scale" in model.hook_dict
    if use_ln:
        names.append("ln_final.hook_scale")
    logits, cache = run_cache(model, aset, names)
    pos = list(aset.positions)
    at = {k: v[:, pos].double() for k, v in cache.items()}  # [n, n_answers, ...]

    resid: dict[str, torch.Tensor] = {"embed": at["hook_embed"], "pos_embed": at["hook_pos_embed"]}
    for layer in range(n_layers):
        W_O = _need(sd, f"blocks.{layer}.attn.W_O")  # [h, e, d]
        per_head = torch.einsum("bahe,hed->bahd", at[f"blocks.{layer}.attn.hook_z"], W_O)
        for h in range(n_heads):
            resid[f"L{layer}H{h}"] = per_head[:, :, h]
        resid[f"L{layer} b_O"] = _need(sd, f"blocks.{layer}.attn.b_O").expand_as(resid["embed"])
        if layer in mlp_layers:
            post, W_out = at[f"blocks.{layer}.mlp.hook_post"], _need(sd, f"blocks.{layer}.mlp.W_out")
            groups = dict((neuron_groups or {}).get(layer, {})) or {f"L{layer} mlp": range(W_out.shape[0])}
            used = torch.zeros(W_out.shape[0], dtype=torch.bool)
            for gname, members in groups.items():
                idx = torch.as_tensor(list(members), dtype=torch.long)
                assert not bool(used[idx].any()), f"neuron groups of layer {layer} overlap"
                used[idx] = True
                resid[gname] = post[..., idx] @ W_out[idx]
            if not bool(used.all()):
                resid[f"L{layer} mlp other"] = post[..., ~used] @ W_out[~used]
            resid[f"L{layer} b_out"] = _need(sd, f"blocks.{layer}.mlp.b_out").expand_as(resid["embed"])

    W_U = _need(sd, "unembed.W_U")  # [d, v]
    b_U = _need(sd, "unembed.b_U")
    ln_w, ln_b = _w(sd, "ln_final.w"), _w(sd, "ln_final.b")
    if use_ln:
        scale = at["ln_final.hook_scale"]  # [n, n_answers, 1]
        gain = ln_w if ln_w is not None else torch.ones(W_U.shape[0], dtype=torch.float64)
        read = lambda x: ((x - x.mean(-1, keepdim=True)) / scale * gain) @ W_U  # noqa: E731
        bias = (ln_b @ W_U + b_U) if ln_b is not None else b_U
    else:
        read = lambda x: x @ W_U  # noqa: E731
        bias = b_U
    parts = {k: read(v) for k, v in resid.items()}
    bias = bias.expand(*logits.shape[:2], -1).clone() if torch.is_tensor(bias) else bias
    logits = logits.double()
    if centre:
        parts = {k: v - v.mean(-1, keepdim=True) for k, v in parts.items()}
        bias = bias - bias.mean(-1, keepdim=True)
        logits = logits - logits.mean(-1, keepdim=True)
    return Attribution(parts, bias, logits, aset.labels, aset.answer_names, centre)


def fourier_attribution(attr: Attribution, modulus: int, parts: Sequence[str] | None = None) -> pd.DataFrame:
    """Each part's contribution to the correct logit split by output frequency (mod ``modulus``).

    Rows: (answer, part, freq) with the mean contribution over inputs (freq 0 = the
    constant). Only outputs 0..modulus-1 enter the basis (the answers); for every part the
    frequencies sum to its contribution from those outputs' logits. Inputs whose answer
    is >= ``modulus`` are skipped.
    """
    basis = fourier_basis(int(modulus))
    B = basis.matrix  # [M, M] rows orthonormal
    keep = (attr.labels < modulus).all(dim=1)
    labels = attr.labels[keep]
    rows: list[dict[str, Any]] = []
    for name in parts or list(attr.parts) + ["bias"]:
        x = (attr.bias if name == "bias" else attr.parts[name])[keep][..., :modulus]  # [n, a, M]
        coef = x @ B.T  # [n, a, M]: component r
        at_label = coef * B.T[labels]  # [n, a, M]: component r's value at the correct output
        per_freq = torch.zeros(*at_label.shape[:2], basis.max_freq + 1, dtype=torch.float64)
        per_freq.index_add_(2, basis.freqs, at_label)
        mean = per_freq.mean(dim=0)  # [a, W+1]
        for j, answer in enumerate(attr.answer_names):
            rows += [dict(answer=answer, part=name, freq=w, mean=float(mean[j, w])) for w in range(basis.max_freq + 1)]
    return pd.DataFrame(rows)


def head_attribution_matrix(attr: Attribution, n_layers: int, n_heads: int, answer: int = 0) -> torch.Tensor:
    """[n_layers, n_heads] mean direct contribution of each head to the correct logit."""
    out = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for layer in range(n_layers):
        for h in range(n_heads):
            out[layer, h] = attr.correct(attr.parts[f"L{layer}H{h}"])[:, answer].mean()
    return out


def logits_of(model: Any, task: Any) -> torch.Tensor:
    """Answer logits of every input ([n, n_answers, v]); a convenience for notebooks."""
    return answer_logits(model, answer_set(task))

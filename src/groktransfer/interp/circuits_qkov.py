"""QK and OV circuits of attention-only models, and the direct logit attribution of paths.

Why these three: in a small attention-only model (ARENA's digit-sum model) there is no MLP
to hide computation, so the weights say almost everything.

* :func:`mean_query_qk` -- where each head looks when the inputs' content is averaged
  away: the attention of every query position to every key position computed from the
  mean query and the mean key over all inputs. If a head's queries hardly depend on the
  input (mean-ablating them changes nothing), this matrix *is* its attention, and it says
  which positions (e.g. the corresponding digits of both operands) the head reads.
* :func:`ov_circuit` / :func:`ov_composition` -- what a head writes to the output logits
  for each input token: ``W_E · OV · W_U`` for one head, ``W_E · OV(l0 head) · OV(l1 head)
  · W_U`` for the path through a layer-0 head then a layer-1 head (digit rows, digit
  columns). Read on processed weights (``processing.process_weights``), where the
  LayerNorm gains are inside W_V and W_U; the per-example LayerNorm scales are left out.
* :func:`path_attribution` -- the correct answer's logit split exactly into the parts
  that reach the final residual stream directly and the parts that go through one head of
  the last layer first (``L0H1 → L1H2``), with LayerNorm scales and attention patterns
  frozen at their values on each input; the parts plus bias terms reproduce the logit
  (completeness check, as for :func:`attribution.direct_logit_attribution`).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from .answers import answer_set
from .attribution import Attribution
from .forward import has_mlp, n_layers_heads, run_cache


def _attn_scale(model: Any) -> float:
    cfg = getattr(model, "cfg", None) or model.config
    scale = getattr(cfg, "attn_scale", None)
    return float(scale) if scale else math.sqrt(int(cfg.d_head))


def _ln_eps(model: Any) -> float:
    cfg = getattr(model, "cfg", None) or model.config
    return float(getattr(cfg, "eps", 1e-5))


@torch.no_grad()
def mean_query_qk(model: Any, task: Any, layer: int = 0) -> torch.Tensor:
    """[n_heads, seq, seq] attention from query position i (row) to key position j (column)
    with the query and the key of every position replaced by their mean over all inputs;
    causal (j <= i), each row sums to 1."""
    aset = answer_set(task)
    q_name, k_name = f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"
    _, cache = run_cache(model, aset, [q_name, k_name])
    q, k = cache[q_name].double().mean(0), cache[k_name].double().mean(0)  # [seq, head, d_head]
    scores = torch.einsum("qhe,khe->hqk", q, k) / _attn_scale(model)
    seq = scores.shape[-1]
    causal = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
    return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)


def corresponding_digit_share(qk: torch.Tensor, task: Any) -> pd.DataFrame:
    """For a digit task: per head and answer digit, the share of the mean-query attention
    (from the position predicting that digit) on the two operand digits of the same place
    value -- a "corresponding digit" head puts most of it there. Answer digit i of an
    n-digit sum sits at place value n-1-i (most significant first); with a carry-out digit
    the first answer digit has no corresponding operand digits and is left out."""
    aset = answer_set(task)
    n = len(aset.operand_positions) // 2
    offset = aset.n_answers - n  # 1 with a carry-out digit
    rows = []
    for j in range(offset, aset.n_answers):
        i = j - offset
        reads = [aset.operand_positions[i], aset.operand_positions[n + i]]
        q = aset.positions[j]
        for h in range(qk.shape[0]):
            rows.append(
                dict(
                    head=h,
                    answer=aset.answer_names[j],
                    query_pos=q,
                    key_pos=f"{reads[0]},{reads[1]}",
                    share=float(qk[h, q, reads].sum()),
                )
            )
    return pd.DataFrame(rows)


def _sd(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().double() for k, v in model.state_dict().items()}


def ov_circuit(model: Any, task: Any, layer: int, head: int) -> torch.Tensor:
    """[m_in, m_out] ``W_E[operand tokens] · W_V W_O (layer, head) · W_U[:, answer tokens]``:
    the logits the head writes for each input token it attends to."""
    aset = answer_set(task)
    sd = _sd(model)
    a = f"blocks.{layer}.attn."
    ov = sd[a + "W_V"][head] @ sd[a + "W_O"][head]
    return sd["embed.W_E"][: aset.input_modulus] @ ov @ sd["unembed.W_U"][:, : aset.out_modulus]


def ov_composition(model: Any, task: Any, first: tuple[int, int], second: tuple[int, int]) -> torch.Tensor:
    """[m_in, m_out] ``W_E · OV(first) · OV(second) · W_U``: the logits of the path where
    ``first`` = (layer, head) moves a token's embedding and ``second`` moves that head's
    output on (e.g. a layer-0 head then a layer-1 head)."""
    aset = answer_set(task)
    sd = _sd(model)
    ovs = []
    for layer, head in (first, second):
        a = f"blocks.{layer}.attn."
        ovs.append(sd[a + "W_V"][head] @ sd[a + "W_O"][head])
    return sd["embed.W_E"][: aset.input_modulus] @ ovs[0] @ ovs[1] @ sd["unembed.W_U"][:, : aset.out_modulus]


def frequency_share(M: torch.Tensor) -> torch.Tensor:
    """[rows, m] -> [m // 2 + 1] share of the power of each row, centred over the m columns,
    at each frequency of the column axis (frequency 1 = one turn over the m columns)."""
    M = M.double() - M.double().mean(dim=1, keepdim=True)
    m = M.shape[1]
    power = torch.fft.rfft(M, dim=1).abs().square().sum(dim=0)
    power[1 : (m + 1) // 2] *= 2  # rfft keeps one of each conjugate pair; (m even) the alternating term has none
    return power / power.sum().clamp_min(1e-300)


def ov_circuit_table(model: Any, task: Any) -> pd.DataFrame:
    """One row per head: its own OV circuit ``W_E · OV · W_U`` (digit rows, digit columns):
    size and share of its power at frequency 1 over the output digits (and at its strongest)."""
    n_layers, n_heads = n_layers_heads(model)
    rows = []
    for layer in range(n_layers):
        for head in range(n_heads):
            M = ov_circuit(model, task, layer, head)
            share = frequency_share(M)
            rows.append(
                dict(
                    head=f"L{layer}H{head}",
                    norm=float(M.norm()),
                    freq1_share=float(share[1]),
                    top_freq=int(share[1:].argmax()) + 1,
                    top_share=float(share[1:].max()),
                )
            )
    return pd.DataFrame(rows)


def ov_composition_table(model: Any, task: Any) -> pd.DataFrame:
    """One row per (layer-0 head, layer-1 head): the composed circuit's size and the share of
    its power at frequency 1 over the output digits (and at its strongest frequency)."""
    n_layers, n_heads = n_layers_heads(model)
    rows = []
    for h0 in range(n_heads):
        for h1 in range(n_heads):
            M = ov_composition(model, task, (0, h0), (n_layers - 1, h1))
            share = frequency_share(M)
            rows.append(
                dict(
                    path=f"L0H{h0} → L{n_layers - 1}H{h1}",
                    norm=float(M.norm()),
                    freq1_share=float(share[1]),
                    top_freq=int(share[1:].argmax()) + 1,
                    top_share=float(share[1:].max()),
                )
            )
    return pd.DataFrame(rows)


@torch.no_grad()
def path_attribution(model: Any, task: Any, centre: bool = True) -> Attribution:
    """The correct logit by path: each part entering the last layer (embeddings, earlier
    heads, earlier b_O) directly, and through each head of the last layer (see module doc).

    Attention-only models only: an MLP would be a path this split does not follow."""
    aset = answer_set(task)
    n_layers, n_heads = n_layers_heads(model)
    if any(has_mlp(model, layer) for layer in range(n_layers)):
        raise ValueError("path attribution follows attention-only models; this model has MLP layers")
    last = n_layers - 1
    sd = _sd(model)
    use_ln = "ln_final.hook_scale" in model.hook_dict
    names = ["hook_embed", "hook_pos_embed", f"blocks.{last}.attn.hook_pattern"]
    names += [f"blocks.{layer}.attn.hook_z" for layer in range(last)]
    if use_ln:  # the last layer's LN1 scale is recomputed from its input: TransformerLens runs ln1 once per
        # q/k/v input, so that hook fires three times a pass
        names += ["ln_final.hook_scale", f"blocks.{last}.hook_resid_pre"]
    logits, cache = run_cache(model, aset, names)
    c = {k: v.double() for k, v in cache.items()}

    entering: dict[str, torch.Tensor] = {"embed": c["hook_embed"], "pos_embed": c["hook_pos_embed"]}  # [n, seq, d]
    for layer in range(last):
        per_head = torch.einsum("bshe,hed->bshd", c[f"blocks.{layer}.attn.hook_z"], sd[f"blocks.{layer}.attn.W_O"])
        for h in range(n_heads):
            entering[f"L{layer}H{h}"] = per_head[:, :, h]
        entering[f"L{layer} b_O"] = sd[f"blocks.{layer}.attn.b_O"].expand_as(c["hook_embed"])

    a = f"blocks.{last}."
    pattern = c[a + "attn.hook_pattern"]  # [n, head, q, k]
    W_V, W_O, b_V = sd[a + "attn.W_V"], sd[a + "attn.W_O"], sd[a + "attn.b_V"]
    d = W_V.shape[1]
    ln1_w = sd.get(a + "ln1.w", torch.ones(d, dtype=torch.float64))
    ln1_b = sd.get(a + "ln1.b", torch.zeros(d, dtype=torch.float64))

    if use_ln:
        pre = c[a + "hook_resid_pre"]
        ln1_scale = ((pre - pre.mean(-1, keepdim=True)).square().mean(-1, keepdim=True) + _ln_eps(model)).sqrt()

    def normalised(x: torch.Tensor) -> torch.Tensor:  # LN1 of the last layer, scale frozen, bias left out
        return (x - x.mean(-1, keepdim=True)) / ln1_scale * ln1_w if use_ln else x

    pos = list(aset.positions)
    resid: dict[str, torch.Tensor] = {k: v[:, pos] for k, v in entering.items()}  # [n, answers, d]
    for name, x in entering.items():
        v = torch.einsum("bkd,hde->bkhe", normalised(x), W_V)
        out = torch.einsum("bhqk,bkhe,hed->bqhd", pattern[:, :, pos], v, W_O)  # [n, answers, head, d]
        for h in range(n_heads):
            resid[f"{name} → L{last}H{h}"] = out[:, :, h]
    head_bias = torch.einsum("he,hed->hd", (ln1_b @ W_V if use_ln else 0.0) + b_V, W_O)  # pattern rows sum to 1
    for h in range(n_heads):
        resid[f"L{last}H{h} bias"] = head_bias[h].expand_as(resid["embed"])
    resid[f"L{last} b_O"] = sd[a + "attn.b_O"].expand_as(resid["embed"])

    W_U, b_U = sd["unembed.W_U"], sd["unembed.b_U"]
    if use_ln:
        scale = c["ln_final.hook_scale"][:, pos]
        gain = sd.get("ln_final.w", torch.ones(d, dtype=torch.float64))
        parts = {k: ((x - x.mean(-1, keepdim=True)) / scale * gain) @ W_U for k, x in resid.items()}
        bias = sd.get("ln_final.b", torch.zeros(d, dtype=torch.float64)) @ W_U + b_U
    else:
        parts = {k: x @ W_U for k, x in resid.items()}
        bias = b_U
    bias = bias.expand(*logits.shape[:2], -1).clone()
    logits = logits.double()
    if centre:
        parts = {k: v - v.mean(-1, keepdim=True) for k, v in parts.items()}
        bias = bias - bias.mean(-1, keepdim=True)
        logits = logits - logits.mean(-1, keepdim=True)
    return Attribution(parts, bias, logits, aset.labels, aset.answer_names, centre)

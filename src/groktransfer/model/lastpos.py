"""Last-position logits of a one-layer, LayerNorm-free transformer, for one model or many.

This is the training hot path. Every input is ``[a, b, =]`` and the loss reads only the
last position, so nothing of shape ``[batch, pos, d_model]`` is needed:

* Without LayerNorm the residual stream at position j is ``W_E[t_j] + W_pos[j]``, a
  function of (position, token) alone, and there are only ``pos * d_vocab`` such pairs
  (3 * 114 at p=113) against thousands of examples. Everything before the
  attention-weighted sum is tabulated once per call and gathered by token:
  the last query's score against key j depends on (last token, j, t_j), a
  ``[d_vocab, pos * d_vocab, head]`` table; values are a ``[pos * d_vocab, head * d_head]``
  table. The last query sees every key, so no causal mask applies.
* What remains per example is the weighted sum of values, W_O, the MLP and the
  unembedding, on ``[batch, d_model]``-sized tensors, each one fused multiply-add
  (:func:`groktransfer.model.gemm.member_addmm`: oneDNN's GEMM on CPU, ``baddbmm``
  elsewhere) with its bias or residual as the addend: no separate bias adds.
* Biases enter exactly as in the full forward: b_Q/b_K/b_V inside the tables (b_V
  reaches the output through W_O because the pattern sums to 1), b_O added to the
  last position's residual-table row, and b_out folded into the unembedding's bias
  (``(r + b_out) @ W_U + b_U == r @ W_U + (b_out @ W_U + b_U)``).

Every tensor carries a leading *member* axis: a seed ensemble of K models is one
call, and a single model is K = 1 (``HookedGrokTransformer.forward_last`` passes its
parameters unsqueezed). Members never mix: every product is a batched matmul over members,
every gather indexes inside one member's slice of a table. That keeps one code path
and lets an ensemble member reproduce a separate run.

Shape comments use the names ``member, batch, pos, head, d_head, d_model, d_mlp,
d_vocab, d_vocab_out`` (TransformerLens' names; ``p`` is reserved for the modulus).
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional

import torch
import torch.nn.functional as F

from groktransfer.model.gemm import member_addmm

#: Parameter names the fast path reads (TransformerLens names, one layer).
PARAM_NAMES = (
    "embed.W_E",
    "pos_embed.W_pos",
    "blocks.0.attn.W_Q",
    "blocks.0.attn.W_K",
    "blocks.0.attn.W_V",
    "blocks.0.attn.W_O",
    "blocks.0.attn.b_Q",
    "blocks.0.attn.b_K",
    "blocks.0.attn.b_V",
    "blocks.0.attn.b_O",
    "blocks.0.mlp.W_in",
    "blocks.0.mlp.b_in",
    "blocks.0.mlp.W_out",
    "blocks.0.mlp.b_out",
    "unembed.W_U",
    "unembed.b_U",
)


def _per_head_table(resid: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``resid @ W[head] + b[head]`` for every head in one batched matmul.

    [member, n, d_model], [member, head, d_model, d_head], [member, head, d_head] -> [member, n, head * d_head]
    """
    k, n_heads, d_model, d_head = W.shape
    W_all_heads = W.transpose(1, 2).reshape(k, d_model, n_heads * d_head)
    return torch.baddbmm(b.reshape(k, 1, n_heads * d_head), resid, W_all_heads)


def last_position_logits(
    params: Mapping[str, torch.Tensor],
    tokens: torch.Tensor,
    act: str = "relu",
    cache: Optional[Dict[str, torch.Tensor]] = None,
) -> torch.Tensor:
    """Last-position logits: params with a leading member axis, tokens [member, batch, pos] -> [member, batch, d_vocab_out].

    ``params`` maps the names in :data:`PARAM_NAMES` to tensors shaped like the model's
    parameters with a leading member axis (``W_in`` is [member, d_model, d_mlp]). ``act`` is the MLP
    activation (``relu`` or ``gelu``). A ``cache`` dict receives the last position's
    ``blocks.0.mlp.hook_post`` [member, batch, d_mlp] (what the progress measures read).
    """
    W_E, W_pos = params["embed.W_E"], params["pos_embed.W_pos"]
    W_Q = params["blocks.0.attn.W_Q"]
    n_members, d_vocab, d_model = W_E.shape
    _, n_heads, _, d_head = W_Q.shape
    assert tokens.ndim == 3 and tokens.shape[0] == n_members, (tuple(tokens.shape), n_members)
    _, batch, n_pos = tokens.shape
    n_rows = n_pos * d_vocab  # rows of the (position, token) tables
    member = torch.arange(n_members, device=tokens.device)[:, None, None]  # [member, 1, 1]

    # Residual stream for every (position j, token t): row j * d_vocab + t of a [member, pos * d_vocab, d_model] table.
    resid_table = (W_pos[:, :n_pos, None, :] + W_E[:, None, :, :]).reshape(n_members, n_rows, d_model)
    last_rows = resid_table[:, (n_pos - 1) * d_vocab :].contiguous()  # [member, d_vocab, d_model]: the last position's rows
    rows = tokens + torch.arange(n_pos, device=tokens.device) * d_vocab  # [member, batch, pos]

    # Attention pattern of the last query: gathered from a [member, d_vocab, pos * d_vocab, head] score table.
    # Products are laid out as [member * head]-batched matmuls of contiguous operands, so a member's
    # numbers do not depend on how many members share the call (einsum's layout would).
    q_table = _per_head_table(last_rows, W_Q, params["blocks.0.attn.b_Q"])  # [member, d_vocab, head * d_head]
    k_table = _per_head_table(resid_table, params["blocks.0.attn.W_K"], params["blocks.0.attn.b_K"])
    q_by_head = q_table.view(n_members, d_vocab, n_heads, d_head).transpose(1, 2).reshape(-1, d_vocab, d_head)
    k_by_head = k_table.view(n_members, n_rows, n_heads, d_head).permute(0, 2, 3, 1).reshape(-1, d_head, n_rows)
    scores = torch.bmm(q_by_head, k_by_head) * (d_head**-0.5)  # [member * head, d_vocab, pos * d_vocab]
    score_table = scores.view(n_members, n_heads, d_vocab * n_rows).transpose(1, 2).reshape(-1, n_heads)
    score_rows = (member * d_vocab + tokens[:, :, -1:]) * n_rows + rows  # [member, batch, pos]
    pattern = F.embedding(score_rows, score_table).softmax(dim=2)  # [member, batch, key pos, head]

    # Weighted sum of values, gathered from a [member, pos * d_vocab, head * d_head] table.
    v_table = _per_head_table(resid_table, params["blocks.0.attn.W_V"], params["blocks.0.attn.b_V"])
    v = F.embedding(rows + member * n_rows, v_table.reshape(-1, n_heads * d_head))  # [member, batch, pos, head * d_head]
    z = (pattern.unsqueeze(-1) * v.view(n_members, batch, n_pos, n_heads, d_head)).sum(dim=2)  # [member, batch, head, d_head]

    # resid_mid = resid_pre[last] + b_O + z @ W_O
    last_table = (last_rows + params["blocks.0.attn.b_O"][:, None, :]).reshape(-1, d_model)  # [member * d_vocab, d_model]
    resid_pre = F.embedding(tokens[:, :, -1] + member[:, :, 0] * d_vocab, last_table)  # [member, batch, d_model]
    W_O = params["blocks.0.attn.W_O"].reshape(n_members, n_heads * d_head, d_model)
    resid_mid = member_addmm(resid_pre, z.reshape(n_members, batch, n_heads * d_head), W_O)  # [member, batch, d_model]

    # MLP; b_out is folded into the unembedding bias below.
    b_in, W_in = params["blocks.0.mlp.b_in"][:, None, :], params["blocks.0.mlp.W_in"]
    if act == "relu":  # fused into the product
        post = member_addmm(b_in, resid_mid, W_in, relu=True)  # [member, batch, d_mlp]
    else:
        post = _activation(act)(member_addmm(b_in, resid_mid, W_in))
    if cache is not None:
        cache["blocks.0.mlp.hook_post"] = post
    resid_post_no_b_out = member_addmm(resid_mid, post, params["blocks.0.mlp.W_out"])  # [member, batch, d_model]

    W_U = params["unembed.W_U"]
    # b_out @ W_U as a reduction, not a 1-row matmul: BLAS picks 1-row kernels by batch size
    logit_bias = params["unembed.b_U"] + (params["blocks.0.mlp.b_out"][:, :, None] * W_U).sum(dim=1)  # [member, d_vocab_out]
    return member_addmm(logit_bias[:, None, :], resid_post_no_b_out, W_U)  # [member, batch, d_vocab_out]


def _activation(act: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Activations other than ReLU (which :func:`member_addmm` fuses into its product)."""
    if act == "gelu":
        return F.gelu
    raise ValueError(f"unknown activation {act!r}")

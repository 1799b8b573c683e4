"""Last-position logits of a transformer, for one model or many, without the positions the loss never reads.

This is the training hot path. Every input of a single-answer task is ``[a, b, =]`` (more
generally ``pos`` tokens) and the loss reads only the last position, so the last block needs
its query, attention output and MLP only there (its keys and values at every position), and
every earlier block runs as usual. Two facts make even that cheaper:

* The residual stream entering block 0 is ``W_E[t_j] + W_pos[j]``, a function of (position,
  token); with a LayerNorm before attention it still is. There are only ``pos * d_vocab``
  such pairs (3 * 98 at p = 97) against hundreds or thousands of examples, so block 0's
  queries, keys and values are computed once per (position, token) row and gathered.
* Attention is causal: position 0 attends only to itself, so its stream is a function of
  its token *in every block*. Position 0 runs as ``d_vocab`` table rows, gathered where a
  later position attends to it; only positions 1.. run per example.

Two algorithms, one per shape of model (:func:`last_position_logits` picks):

* **One layer with an MLP, no LayerNorm** (Nanda et al.'s model): the whole residual is a
  function of (position, token), so even the last query's score against key j is a
  ``[d_vocab, pos * d_vocab, head]`` table gathered by token, and values a
  ``[pos * d_vocab, head * d_head]`` table; what remains per example is the weighted sum of
  values, W_O, the MLP and the unembedding on ``[batch, d_model]`` tensors. Biases enter
  exactly as in the full forward: b_Q/b_K/b_V inside the tables (b_V reaches the output
  through W_O because the pattern sums to 1), b_O added to the last position's
  residual-table row, and b_out folded into the unembedding's bias
  (``(r + b_out) @ W_U + b_U == r @ W_U + (b_out @ W_U + b_U)``). This path's numbers are
  those of every one-layer run trained so far; it is kept as it was.
* **Any other depth, LayerNorm or not, ReLU or GELU, with or without MLPs**: block 0 from
  the (position, token) table; blocks 0..L-2 on *rows* -- ``d_vocab`` position-0 rows, then
  positions 1.. of each example -- with each query attending to keys and values gathered
  from those rows; the last block's query, attention output, MLP, final LayerNorm and
  unembedding at the last position only (:func:`_any_depth_logits`). At p = 97 in
  minibatches of 512 that is about half the FLOPs of the full forward.

Every product is a fused multiply-add (:func:`groktransfer.model.gemm.member_addmm`:
oneDNN's GEMM on CPU, ``baddbmm`` elsewhere) with its bias or residual as the addend.

Every tensor carries a leading *member* axis: a seed ensemble of K models is one call, and
a single model is K = 1 (``HookedGrokTransformer.forward_last`` passes its parameters
unsqueezed). Members never mix: every product is a batched matmul over members, every
gather indexes inside one member's slice of a table. That keeps one code path and lets an
ensemble member reproduce a separate run.

Shape comments use the names ``member, batch, pos, head, d_head, d_model, d_mlp,
d_vocab, d_vocab_out`` (TransformerLens' names; ``p`` is reserved for the modulus).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from groktransfer.model.gemm import member_addmm

#: Activations the fast path computes (ReLU is fused into its product).
ACTIVATIONS = ("relu", "gelu")
#: LayerNorm's epsilon, as in the model's (TransformerLens') LayerNorm.
LN_EPS = 1e-5


def fast_last_supported(cfg: Any) -> bool:
    """Whether :func:`last_position_logits` computes the model ``cfg`` describes.

    ``cfg`` is a :class:`~groktransfer.model.transformer.TransformerConfig` (or anything with its
    ``n_layers``, ``normalization``, ``act`` and ``attn_only``): any depth, no normalization
    or a pre-sublayer LayerNorm, ReLU or GELU, with or without MLPs. The model and the
    ensemble ask this instead of testing shapes themselves, so a model this function learns
    to compute is fast everywhere at once.
    """
    return (
        int(cfg.n_layers) >= 1
        and (cfg.normalization is None or str(cfg.normalization) == "LN")
        and (bool(cfg.attn_only) or str(cfg.act) in ACTIVATIONS)
    )


def param_names(cfg: Any) -> tuple[str, ...]:
    """The parameter names :func:`last_position_logits` reads for ``cfg`` (TransformerLens names)."""
    names = ["embed.W_E", "pos_embed.W_pos"]
    for layer in range(int(cfg.n_layers)):
        block = f"blocks.{layer}"
        names += [f"{block}.attn.{w}" for w in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")]
        if not cfg.attn_only:
            names += [f"{block}.mlp.{w}" for w in ("W_in", "b_in", "W_out", "b_out")]
        if cfg.normalization is not None:
            names += [f"{block}.{ln}.{w}" for ln in (("ln1",) if cfg.attn_only else ("ln1", "ln2")) for w in ("w", "b")]
    if cfg.normalization is not None:
        names += ["ln_final.w", "ln_final.b"]
    return (*names, "unembed.W_U", "unembed.b_U")


def last_position_logits(
    params: Mapping[str, torch.Tensor],
    tokens: torch.Tensor,
    cfg: Any,
    cache: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Last-position logits: params with a leading member axis, tokens [member, batch, pos] -> [member, batch, d_vocab_out].

    ``params`` maps the names in :func:`param_names` to tensors shaped like the model's
    parameters with a leading member axis (``W_in`` is [member, d_model, d_mlp]); ``cfg``
    says the model's shape (:func:`fast_last_supported` must hold). A ``cache`` dict receives
    the last position's ``blocks.{L-1}.mlp.hook_post`` [member, batch, d_mlp] (what the progress
    measures read) when the model has MLPs.
    """
    if not fast_last_supported(cfg):
        raise ValueError(f"the fast last-position path does not compute this model ({cfg})")
    assert tokens.ndim == 3 and tokens.shape[0] == params["embed.W_E"].shape[0], (
        tuple(tokens.shape),
        params["embed.W_E"].shape,
    )
    if int(cfg.n_layers) == 1 and cfg.normalization is None and not cfg.attn_only:
        return _one_layer_logits(params, tokens, str(cfg.act), cache)
    return _any_depth_logits(params, tokens, cfg, cache)


def _per_head_table(resid: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``resid @ W[head] + b[head]`` for every head in one batched matmul.

    [member, n, d_model], [member, head, d_model, d_head], [member, head, d_head] -> [member, n, head * d_head]
    """
    k, n_heads, d_model, d_head = W.shape
    W_all_heads = W.transpose(1, 2).reshape(k, d_model, n_heads * d_head)
    return torch.baddbmm(b.reshape(k, 1, n_heads * d_head), resid, W_all_heads)


def _one_layer_logits(
    params: Mapping[str, torch.Tensor], tokens: torch.Tensor, act: str, cache: dict[str, torch.Tensor] | None
) -> torch.Tensor:
    """One layer with an MLP, no LayerNorm: every product before the attention-weighted sum is a table (module docstring)."""
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
    last_rows = resid_table[
        :, (n_pos - 1) * d_vocab :
    ].contiguous()  # [member, d_vocab, d_model]: the last position's rows
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
    v = F.embedding(
        rows + member * n_rows, v_table.reshape(-1, n_heads * d_head)
    )  # [member, batch, pos, head * d_head]
    z = (pattern.unsqueeze(-1) * v.view(n_members, batch, n_pos, n_heads, d_head)).sum(
        dim=2
    )  # [member, batch, head, d_head]

    # resid_mid = resid_pre[last] + b_O + z @ W_O
    last_table = (last_rows + params["blocks.0.attn.b_O"][:, None, :]).reshape(
        -1, d_model
    )  # [member * d_vocab, d_model]
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
    logit_bias = params["unembed.b_U"] + (params["blocks.0.mlp.b_out"][:, :, None] * W_U).sum(
        dim=1
    )  # [member, d_vocab_out]
    return member_addmm(logit_bias[:, None, :], resid_post_no_b_out, W_U)  # [member, batch, d_vocab_out]


def _any_depth_logits(
    params: Mapping[str, torch.Tensor], tokens: torch.Tensor, cfg: Any, cache: dict[str, torch.Tensor] | None
) -> torch.Tensor:
    """Any depth: the stream as position-0 rows (one per token) and per-example rows of positions 1..;
    blocks 0..L-2 on both, the last block at the last position."""
    W_E, W_pos = params["embed.W_E"], params["pos_embed.W_pos"]
    n_members, d_vocab, d_model = W_E.shape
    n_pos = tokens.shape[2]
    n_layers = int(cfg.n_layers)
    # Block 0's input for every (position j, token t): row j * d_vocab + t of a [member, pos * d_vocab, d_model] table.
    table = (W_pos[:, :n_pos, None, :] + W_E[:, None, :, :]).reshape(n_members, n_pos * d_vocab, d_model)
    rows = (tokens + torch.arange(n_pos, device=tokens.device) * d_vocab).transpose(1, 2)  # [member, pos, batch]
    first_tokens = tokens[:, :, 0]  # [member, batch]: which position-0 row each example reads
    if n_layers == 1:
        return _last_block_from_table(params, "blocks.0", table, rows, cfg, cache)
    first, rest = _block0(params, table, rows, cfg)
    for layer in range(1, n_layers - 1):
        first, rest = _block(params, f"blocks.{layer}", first, rest, first_tokens, cfg)
    return _last_block(params, f"blocks.{n_layers - 1}", first, rest, first_tokens, cfg, cache)


# A stream between blocks is two tensors: ``first`` [member, d_vocab, d_model], position 0's stream
# for each token (position 0 attends only to itself, in every block), and ``rest``
# [member, pos - 1, batch, d_model], positions 1.. of each example, position-major so that one
# position's rows are one contiguous [member, batch, d_model] slice.


def _block0(
    params: Mapping[str, torch.Tensor], table: torch.Tensor, rows: torch.Tensor, cfg: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block 0 (not the last): queries, keys and values from the (position, token) table, gathered per example."""
    n_members, n_pos, batch = rows.shape
    d_vocab = table.shape[1] // n_pos
    width, heads = _width(params, "blocks.0")
    h = _norm(table, params, "blocks.0.ln1", cfg)
    # Separate products for the query and key/value tables: a gather from a column slice of one
    # table would read strided rows, several times slower than from a contiguous table.
    q_table = _project(params, "blocks.0", "Q", h[:, d_vocab:])  # positions 1.. (position 0 needs no query)
    kv_table = _project(params, "blocks.0", "KV", h)
    q = _gather_rows(q_table, rows[:, 1:] - d_vocab)  # [member, pos - 1, batch, head * d_head]
    k, v = _gather_rows(kv_table, rows).unflatten(-1, (2, *heads)).unbind(3)  # [member, pos, batch, head, d_head]
    z_rest = _attend(q.unflatten(-1, heads), k, v, first_query=1)
    first, rest = table[:, :d_vocab], _gather_rows(table, rows[:, 1:])
    z_first = kv_table[:, :d_vocab, width:]  # position 0 attends to itself alone: its value is its attention output
    return _attention_out_and_mlp(params, "blocks.0", first, rest, z_first, z_rest, cfg)


def _block(
    params: Mapping[str, torch.Tensor],
    block: str,
    first: torch.Tensor,
    rest: torch.Tensor,
    first_tokens: torch.Tensor,
    cfg: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A block between block 0 and the last: queries at positions 1.., keys and values everywhere."""
    width, heads = _width(params, block)
    kv_first = _project(params, block, "KV", _norm(first, params, f"{block}.ln1", cfg))
    qkv = _project(params, block, "QKV", _norm(rest, params, f"{block}.ln1", cfg))
    q, k_rest, v_rest = qkv.unflatten(-1, (3, *heads)).unbind(3)  # [member, pos - 1, batch, head, d_head]
    k_first, v_first = _gather_rows(kv_first, first_tokens[:, None]).unflatten(-1, (2, *heads)).unbind(3)
    z_rest = _attend(q, torch.cat([k_first, k_rest], dim=1), torch.cat([v_first, v_rest], dim=1), first_query=1)
    return _attention_out_and_mlp(params, block, first, rest, kv_first[..., width:], z_rest, cfg)


def _attention_out_and_mlp(
    params: Mapping[str, torch.Tensor],
    block: str,
    first: torch.Tensor,
    rest: torch.Tensor,
    z_first: torch.Tensor,
    z_rest: torch.Tensor,
    cfg: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``resid + z @ W_O + b_O``, then the MLP, on the position-0 rows and on the per-example rows."""
    W_O, b_O = params[f"{block}.attn.W_O"].flatten(1, 2), params[f"{block}.attn.b_O"][:, None, :]
    first = member_addmm(first + b_O, z_first, W_O)
    rest = _rows_addmm(rest + b_O[:, None], z_rest.flatten(-2), W_O)
    if cfg.attn_only:
        return first, rest
    return _mlp(params, block, first, cfg)[0], _mlp(params, block, rest, cfg)[0]


def _last_block(
    params: Mapping[str, torch.Tensor],
    block: str,
    first: torch.Tensor,
    rest: torch.Tensor,
    first_tokens: torch.Tensor,
    cfg: Any,
    cache: dict[str, torch.Tensor] | None,
) -> torch.Tensor:
    """The last block of a deeper model: the query, attention output and MLP at the last position only."""
    width, heads = _width(params, block)
    n_members, batch = first_tokens.shape
    kv_first = _project(params, block, "KV", _norm(first, params, f"{block}.ln1", cfg))
    k_first, v_first = _gather_rows(kv_first, first_tokens[:, None]).unflatten(-1, (2, *heads)).unbind(3)
    if rest.shape[1] == 0:  # one position: it attends to itself
        return _last_position_tail(
            params, block, _gather_rows(first, first_tokens), v_first.flatten(-2)[:, 0], cfg, cache
        )
    h_rest = _norm(rest, params, f"{block}.ln1", cfg)
    k_rest, v_rest = _project(params, block, "KV", h_rest).unflatten(-1, (2, *heads)).unbind(3)
    q = _project(params, block, "Q", h_rest[:, -1])  # [member, batch, head * d_head]
    n_pos = rest.shape[1] + 1
    z = _attend(
        q.unflatten(-1, heads)[:, None],
        torch.cat([k_first, k_rest], dim=1),
        torch.cat([v_first, v_rest], dim=1),
        first_query=n_pos - 1,
    )
    return _last_position_tail(params, block, rest[:, -1], z.reshape(n_members, batch, width), cfg, cache)


def _last_block_from_table(
    params: Mapping[str, torch.Tensor],
    block: str,
    table: torch.Tensor,
    rows: torch.Tensor,
    cfg: Any,
    cache: dict[str, torch.Tensor] | None,
) -> torch.Tensor:
    """A one-layer model's only block (with LayerNorm, or attention-only): everything before the
    attention-weighted sum from the (position, token) table."""
    n_members, n_pos, batch = rows.shape
    d_vocab = table.shape[1] // n_pos
    width, heads = _width(params, block)
    h = _norm(table, params, f"{block}.ln1", cfg)
    k, v = _gather_rows(_project(params, block, "KV", h), rows).unflatten(-1, (2, *heads)).unbind(3)
    q_table = _project(params, block, "Q", h[:, (n_pos - 1) * d_vocab :])  # the last position's rows
    q = _gather_rows(q_table, rows[:, -1] - (n_pos - 1) * d_vocab)  # [member, batch, head * d_head]
    z = _attend(q.unflatten(-1, heads)[:, None], k, v, first_query=n_pos - 1).reshape(n_members, batch, width)
    return _last_position_tail(params, block, _gather_rows(table, rows[:, -1]), z, cfg, cache)


def _last_position_tail(
    params: Mapping[str, torch.Tensor],
    block: str,
    resid: torch.Tensor,
    z: torch.Tensor,
    cfg: Any,
    cache: dict[str, torch.Tensor] | None,
) -> torch.Tensor:
    """From the last position's residual [member, batch, d_model] and attention output z: W_O, the MLP, the
    final LayerNorm and the unembedding."""
    W_O, b_O = params[f"{block}.attn.W_O"].flatten(1, 2), params[f"{block}.attn.b_O"][:, None, :]
    resid = member_addmm(resid + b_O, z, W_O)
    if not cfg.attn_only:
        resid, post = _mlp(params, block, resid, cfg)
        if cache is not None:
            cache[f"{block}.mlp.hook_post"] = post
    return member_addmm(params["unembed.b_U"][:, None, :], _norm(resid, params, "ln_final", cfg), params["unembed.W_U"])


def _mlp(
    params: Mapping[str, torch.Tensor], block: str, resid: torch.Tensor, cfg: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``resid + MLP(ln2(resid))`` and the MLP's activations (``hook_post``), on [member, rows, d_model]
    or [member, pos, batch, d_model]."""
    mlp = f"{block}.mlp"
    h = _norm(resid, params, f"{block}.ln2", cfg)
    b_in, W_in = params[f"{mlp}.b_in"][:, None, :], params[f"{mlp}.W_in"]
    product = member_addmm if resid.ndim == 3 else _rows_addmm
    if str(cfg.act) == "relu":  # fused into the product
        post = product(b_in, h, W_in, relu=True)
    else:
        post = _activation(str(cfg.act))(product(b_in, h, W_in))
    b_out = params[f"{mlp}.b_out"][:, None, :]
    return product(resid + (b_out if resid.ndim == 3 else b_out[:, None]), post, params[f"{mlp}.W_out"]), post


def _rows_addmm(addend: torch.Tensor, x: torch.Tensor, W: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """:func:`member_addmm` on [member, pos, batch, k] rows: one product over every position's rows."""
    if addend.ndim == 4:  # a residual [member, pos, batch, n]; a bias is [member, 1, n]
        addend = addend.flatten(1, 2)
    return member_addmm(addend, x.flatten(1, 2), W, relu=relu).view(*x.shape[:3], W.shape[-1])


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, first_query: int) -> torch.Tensor:
    """Causal attention of each example's queries at positions ``first_query..`` over its keys.

    q [member, query, batch, head, d_head], k and v [member, pos, batch, head, d_head] ->
    z [member, query, batch, head, d_head]. With a handful of positions the products are
    elementwise: a matmul per (example, head) would be a 3-by-32 one.
    """
    n_queries, n_pos, d_head = q.shape[1], k.shape[1], q.shape[-1]
    scores = (q.unsqueeze(2) * k.unsqueeze(1)).sum(dim=-1) * (
        1.0 / math.sqrt(d_head)
    )  # [member, query, key, batch, head]
    if first_query < n_pos - 1:  # some key lies in a query's future (decided on the host: no device sync)
        future = torch.ones(n_queries, n_pos, dtype=torch.bool, device=q.device).triu(first_query + 1)  # [query, key]
        scores = scores.masked_fill(future[:, :, None, None], float("-inf"))
    pattern = scores.softmax(dim=2)
    return (pattern.unsqueeze(-1) * v.unsqueeze(1)).sum(dim=2)


def _width(params: Mapping[str, torch.Tensor], block: str) -> tuple[int, tuple[int, int]]:
    """(head * d_head, (head, d_head)) of a block's attention."""
    n_heads, d_head = params[f"{block}.attn.W_Q"].shape[1:4:2]
    return n_heads * d_head, (n_heads, d_head)


def _project(params: Mapping[str, torch.Tensor], block: str, which: str, x: torch.Tensor) -> torch.Tensor:
    """The queries/keys/values ``which`` names (``"QKV"``, ``"KV"``, ``"Q"``) of rows x
    [member, rows, d_model] or [member, pos, batch, d_model], heads side by side in one product."""
    attn = f"{block}.attn"
    weights = [params[f"{attn}.W_{c}"].transpose(1, 2).flatten(2, 3) for c in which]  # [member, d_model, head * d_head]
    biases = [params[f"{attn}.b_{c}"].flatten(1, 2)[:, None, :] for c in which]  # [member, 1, head * d_head]
    W, b = (weights[0], biases[0]) if len(which) == 1 else (torch.cat(weights, dim=2), torch.cat(biases, dim=2))
    return member_addmm(b, x, W) if x.ndim == 3 else _rows_addmm(b, x, W)


def _norm(x: torch.Tensor, params: Mapping[str, torch.Tensor], name: str, cfg: Any) -> torch.Tensor:
    """The model's LayerNorm ``name`` on [member, ..., d_model] (x itself without normalization)."""
    if cfg.normalization is None:
        return x
    w, b = params[f"{name}.w"], params[f"{name}.b"]
    if x.device.type == "cpu" or x.shape[0] == 1:
        # torch's fused LayerNorm takes one gain and bias: one call per member, so a member's
        # numbers do not depend on how many share the call
        parts = [F.layer_norm(x[m : m + 1], (x.shape[-1],), w[m], b[m], eps=LN_EPS) for m in range(x.shape[0])]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    shape = (w.shape[0], *([1] * (x.ndim - 2)), w.shape[1])  # a GPU's ensemble: one call for all members
    return torch.addcmul(b.view(shape), F.layer_norm(x, (x.shape[-1],), eps=LN_EPS), w.view(shape))


def _gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each member's own rows: table [member, rows, c], index [member, ...] into rows -> [member, ..., c]."""
    n_members, n_rows, width = table.shape
    if n_members == 1:  # index [1, ...] keeps the member axis
        return F.embedding(index, table[0])
    offset = torch.arange(n_members, device=index.device).view(-1, *([1] * (index.ndim - 1))) * n_rows
    return F.embedding(index + offset, table.reshape(n_members * n_rows, width))


def _activation(act: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Activations other than ReLU (which :func:`member_addmm` fuses into its product)."""
    if act == "gelu":
        return F.gelu
    raise ValueError(f"unknown activation {act!r}")

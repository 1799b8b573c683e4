"""One pass of a model over every input, keeping only what the circuit analysis reads.

Why a dedicated pass instead of ``run_with_cache``: the analysis needs three things
from all p^2 inputs -- the last-position logits, the last-position MLP activations and
the attention pattern of the last query -- and nothing else. Capturing them with hooks
that slice the last position as the forward runs keeps memory at [n, d_mlp] instead of
caching [n, pos, ...] tensors for every hook point, and the pass is chunked so p=113
(12,769 inputs) never materialises more than a few MB at a time.

Only the hook-point names and ``model.hooks(fwd_hooks)`` are used, so the same function
runs unchanged on a ``transformer_lens.HookedTransformer`` holding our weights (that is
how the compatibility test checks the analysis reads the same numbers from both).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch

from .attention import mean_last_query_attention

_PATTERN = re.compile(r"^blocks\.(\d+)\.attn\.hook_pattern$")
_MLP_POST = re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$")


@dataclass(frozen=True)
class AllInputsOutputs:
    """What the circuit analysis reads from a model, for every row of ``tokens``.

    ``logits`` [n, d_vocab_out] and ``neuron_acts`` [n, d_mlp] are at the last position
    (the only one the loss reads); ``attention`` [n_layers, n_heads, n_ctx] is the mean
    over inputs of the last query's attention pattern (each row sums to 1).
    """

    logits: torch.Tensor
    neuron_acts: torch.Tensor
    attention: torch.Tensor
    mlp_block: int


def _blocks_with(model: Any, pattern: re.Pattern) -> List[int]:
    return sorted(int(m.group(1)) for name in model.hook_dict if (m := pattern.match(name)))


@torch.no_grad()
def run_all_inputs(
    model: Any, tokens: torch.Tensor, mlp_block: Optional[int] = None, chunk: int = 4096
) -> AllInputsOutputs:
    """Run ``model`` on ``tokens`` [n, n_ctx] in chunks and keep the analysed activations.

    The activations are exactly those of a full forward at the last position (the
    residual stream is truncated to that position after the last attention layer,
    which nothing at that position depends on).

    ``mlp_block`` defaults to the last block with an MLP: in a one-layer model the only
    one, and in general the one with a direct path to the unembedding, which is the MLP
    whose neurons ``measures.compute_progress_measures`` reads.
    """
    mlp_blocks = _blocks_with(model, _MLP_POST)
    attn_blocks = _blocks_with(model, _PATTERN)
    if not mlp_blocks:
        raise ValueError("model has no blocks.{i}.mlp.hook_post hook point: no MLP neurons to analyse")
    block = mlp_blocks[-1] if mlp_block is None else int(mlp_block)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    store: Dict[str, List[torch.Tensor]] = {"acts": []}
    attn_sum: Dict[int, torch.Tensor] = {}

    def keep_acts(act: torch.Tensor, hook: Any) -> None:
        store["acts"].append(act[:, -1].detach().float())

    def add_pattern(layer: int):
        def fn(pattern: torch.Tensor, hook: Any) -> None:  # [batch, head, q_pos, k_pos]
            last = mean_last_query_attention(pattern.detach()) * pattern.shape[0]
            attn_sum[layer] = attn_sum.get(layer, 0) + last

        return fn

    hooks = [(f"blocks.{block}.mlp.hook_post", keep_acts)]
    last_block = max(attn_blocks + mlp_blocks)
    if block == last_block and f"blocks.{block}.hook_resid_mid" in model.hook_dict:
        # Everything after the last block's attention is per position and only the last
        # position is read: keep just that one, so the MLP and unembedding run on
        # [n, 1, d] instead of [n, n_ctx, d] (the MLP is most of a forward's cost).
        hooks.append((f"blocks.{block}.hook_resid_mid", lambda resid, hook: resid[:, -1:]))
    hooks += [(f"blocks.{i}.attn.hook_pattern", add_pattern(i)) for i in attn_blocks]
    logits: List[torch.Tensor] = []
    try:
        with model.hooks(hooks):
            for start in range(0, tokens.shape[0], chunk):
                logits.append(model(tokens[start : start + chunk])[:, -1].detach().float())
    finally:
        model.train(was_training)
    n = tokens.shape[0]
    attention = torch.stack([attn_sum[i] / n for i in attn_blocks]).float() if attn_blocks else torch.zeros(0)
    return AllInputsOutputs(
        logits=torch.cat(logits), neuron_acts=torch.cat(store["acts"]), attention=attention, mlp_block=block
    )

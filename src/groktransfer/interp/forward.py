"""Chunked forward passes over every input of a task, and scoring at the answer positions.

The one place a model is run over a task's inputs for reading: the answer logits with hooks
attached (ablations), the clean activations of any hook points (with a scoped memo), the
circuit analysis' last-position pass, and the last-position logits of a model read on
another task. With hooks, only TransformerLens hook names and ``model.hooks(...)`` /
``run_with_hooks`` are used, so every function runs on any model offering hook points (the
built-in transformer) and on a TransformerLens ``HookedTransformer`` holding the same weights; a model without hook points
(the model protocol's plain forwards) is run through ``forward_last`` / ``forward``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .answers import AnswerSet
from .circuit.attention import mean_last_query_attention

FwdHooks = Sequence[tuple[Any, Callable[..., Any]]]
CHUNK = 4096


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _plain_forward(model: Any, tokens: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """[n, n_answers, v] logits of a model without hook points, at ``positions``."""
    if tuple(positions) == (tokens.shape[1] - 1,):
        return model.forward_last(tokens)[:, None]
    return model(tokens)[:, list(positions)]


@torch.no_grad()
def answer_logits(model: Any, aset: AnswerSet, fwd_hooks: FwdHooks = (), chunk: int = CHUNK) -> torch.Tensor:
    """Logits at each answer position: [n, n_answers, d_vocab_out], with ``fwd_hooks``
    (TransformerLens ``(name, fn)`` pairs) attached for the whole pass."""
    pos = torch.tensor(aset.positions)
    hooked = hasattr(model, "run_with_hooks")
    if fwd_hooks and not hooked:
        raise ValueError(f"{type(model).__name__} has no hook points to attach {len(fwd_hooks)} hook(s) to")
    out: list[torch.Tensor] = []
    with _eval_mode(model):
        for start in range(0, aset.n, chunk):
            batch = aset.tokens[start : start + chunk]
            if hooked:
                logits = model.run_with_hooks(batch, fwd_hooks=list(fwd_hooks))[:, pos]
            else:
                logits = _plain_forward(model, batch, aset.positions)
            out.append(logits.detach().float())
    return torch.cat(out)


@torch.no_grad()
def last_logits(model: Any, tokens: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Last-position logits of ``model`` on every row of ``tokens`` (the fast path, eval mode)."""
    with _eval_mode(model):
        return torch.cat([model.forward_last(tokens[i : i + chunk]) for i in range(0, tokens.shape[0], chunk)])


_MEMO: ContextVar[dict[tuple[int, int], dict[str, torch.Tensor]] | None] = ContextVar("interp_memo", default=None)
_LOGITS = "__answer_logits__"


@contextmanager
def reuse_activations() -> Iterator[None]:
    """Within this block, :func:`run_cache` remembers the clean activations of each
    (model, inputs) and answers repeated requests without another forward pass.

    Why a scoped memo: one interpretation asks for the same clean activations many times
    (DLA, probes, clusters, means for ablations); a pass over all p^2 inputs is the cost.
    Outside the block nothing is kept, so an edited model is never read from a stale cache."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _run(model: Any, aset: AnswerSet, names: Sequence[str], chunk: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    store: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    # keyed by the name asked for, not ``hook.name``: a TransformerLens 4 bridge's
    # ``blocks.0.attn.hook_z`` is an alias of a hook point named ``blocks.0.attn.o.hook_in``
    def keep(name: str) -> Callable[..., None]:
        return lambda act, hook: store[name].append(act.detach().float().clone())

    logits = answer_logits(model, aset, [(name, keep(name)) for name in names], chunk)
    return logits, {name: torch.cat(parts) for name, parts in store.items()}


@torch.no_grad()
def run_cache(
    model: Any, aset: AnswerSet, names: Sequence[str], chunk: int = CHUNK
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(answer logits [n, n_answers, v], {hook name: activation over all n inputs}) of the
    clean model.

    Activations keep TransformerLens shapes, batch first (patterns are [n, head, q, k])."""
    memo = _MEMO.get()
    if memo is None:
        return _run(model, aset, names, chunk)
    seen = memo.setdefault((id(model), id(aset.tokens)), {})
    missing = [n for n in names if n not in seen]
    if missing or _LOGITS not in seen:
        logits, cache = _run(model, aset, missing, chunk)
        seen.update(cache)
        seen[_LOGITS] = logits
    return seen[_LOGITS], {n: seen[n] for n in names}


@dataclass(frozen=True)
class Score:
    """Loss and accuracy of answer logits, per answer position and per example."""

    ce: torch.Tensor  # [n, n_answers] float64 cross-entropy
    correct: torch.Tensor  # [n, n_answers] bool

    @property
    def loss(self) -> torch.Tensor:  # [n_answers]
        return self.ce.mean(dim=0)

    @property
    def acc(self) -> torch.Tensor:  # [n_answers]
        return self.correct.double().mean(dim=0)

    @property
    def all_correct(self) -> torch.Tensor:  # [n] every answer of the example right
        return self.correct.all(dim=1)


def score(logits: torch.Tensor, labels: torch.Tensor) -> Score:
    """Score [n, n_answers, v] logits against [n, n_answers] labels (float64 loss)."""
    v = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, v).double(), labels.reshape(-1), reduction="none")
    correct = logits.argmax(dim=-1) == labels
    return Score(ce.reshape(labels.shape), correct)


def n_layers_heads(model: Any) -> tuple[int, int]:
    """(n_layers, n_heads) from the model's config (ours or TransformerLens'); (0, 0) for a model without heads."""
    cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
    return int(getattr(cfg, "n_layers", 0) or 0), int(getattr(cfg, "n_heads", 0) or 0)


def has_mlp(model: Any, layer: int) -> bool:
    return f"blocks.{layer}.mlp.hook_post" in getattr(model, "hook_dict", {})


# --------------------------------------------------------------------------- the circuit analysis' pass
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


def _blocks_with(model: Any, pattern: re.Pattern) -> list[int]:
    return sorted(int(m.group(1)) for name in model.hook_dict if (m := pattern.match(name)))


@torch.no_grad()
def run_all_inputs(
    model: Any, tokens: torch.Tensor, mlp_block: int | None = None, chunk: int = 4096
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
    store: dict[str, list[torch.Tensor]] = {"acts": []}
    attn_sum: dict[int, torch.Tensor] = {}

    def keep_acts(act: torch.Tensor, hook: Any) -> None:
        store["acts"].append(act[:, -1].detach().float())

    def add_pattern(layer: int):
        def fn(pattern: torch.Tensor, hook: Any) -> None:  # [batch, head, q_pos, k_pos]
            last = mean_last_query_attention(pattern.detach()) * pattern.shape[0]
            attn_sum[layer] = attn_sum.get(layer, 0) + last

        return fn

    hooks: list[tuple[str, Callable[..., Any]]] = [(f"blocks.{block}.mlp.hook_post", keep_acts)]
    last_block = max(attn_blocks + mlp_blocks)
    if block == last_block and f"blocks.{block}.hook_resid_mid" in model.hook_dict:
        # Everything after the last block's attention is per position and only the last
        # position is read: keep just that one, so the MLP and unembedding run on
        # [n, 1, d] instead of [n, n_ctx, d] (the MLP is most of a forward's cost).
        hooks.append((f"blocks.{block}.hook_resid_mid", lambda resid, hook: resid[:, -1:]))
    hooks += [(f"blocks.{i}.attn.hook_pattern", add_pattern(i)) for i in attn_blocks]
    logits: list[torch.Tensor] = []
    with _eval_mode(model), model.hooks(hooks):
        for start in range(0, tokens.shape[0], chunk):
            logits.append(model(tokens[start : start + chunk])[:, -1].detach().float())
    n = tokens.shape[0]
    attention = torch.stack([attn_sum[i] / n for i in attn_blocks]).float() if attn_blocks else torch.zeros(0)
    return AllInputsOutputs(
        logits=torch.cat(logits), neuron_acts=torch.cat(store["acts"]), attention=attention, mlp_block=block
    )

"""Chunked forward passes over every input of a task, and scoring at the answer positions.

Only TransformerLens hook names and ``model.hooks(...)`` / ``run_with_hooks`` are used,
so every function here runs on ``HookedGrokTransformer`` and on a TransformerLens
``HookedTransformer`` holding the same weights.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .answers import AnswerSet

FwdHooks = Sequence[Tuple[Any, Callable[..., Any]]]
CHUNK = 4096


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def answer_logits(model: Any, aset: AnswerSet, fwd_hooks: FwdHooks = (), chunk: int = CHUNK) -> torch.Tensor:
    """Logits at each answer position: [n, n_answers, d_vocab_out], with ``fwd_hooks``
    (TransformerLens ``(name, fn)`` pairs) attached for the whole pass."""
    pos = torch.tensor(aset.positions)
    out: List[torch.Tensor] = []
    with _eval_mode(model):
        for start in range(0, aset.n, chunk):
            logits = model.run_with_hooks(aset.tokens[start : start + chunk], fwd_hooks=list(fwd_hooks))
            out.append(logits[:, pos].detach().float())
    return torch.cat(out)


_MEMO: ContextVar[Optional[Dict[Tuple[int, int], Dict[str, torch.Tensor]]]] = ContextVar("interp_memo", default=None)
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


def _run(model: Any, aset: AnswerSet, names: Sequence[str], chunk: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    store: Dict[str, List[torch.Tensor]] = {name: [] for name in names}

    # keyed by the name asked for, not ``hook.name``: a TransformerLens 4 bridge's
    # ``blocks.0.attn.hook_z`` is an alias of a hook point named ``blocks.0.attn.o.hook_in``
    def keep(name: str) -> Callable[..., None]:
        return lambda act, hook: store[name].append(act.detach().float().clone())

    logits = answer_logits(model, aset, [(name, keep(name)) for name in names], chunk)
    return logits, {name: torch.cat(parts) for name, parts in store.items()}


@torch.no_grad()
def run_cache(model: Any, aset: AnswerSet, names: Sequence[str], chunk: int = CHUNK) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
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


def n_layers_heads(model: Any) -> Tuple[int, int]:
    """(n_layers, n_heads) from the model's config (ours or TransformerLens')."""
    cfg = getattr(model, "cfg", None) or model.config
    return int(cfg.n_layers), int(cfg.n_heads)


def has_mlp(model: Any, layer: int) -> bool:
    return f"blocks.{layer}.mlp.hook_post" in model.hook_dict

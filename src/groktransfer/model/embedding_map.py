"""Embedding-only transfer: the target's W_E is the source's W_E times a trainable map.

Xu et al., "Let Me Grok for You" (ICLR 2025) accelerate grokking by handing a
target model only the source's token embedding, through a learned linear map so
the two models' widths may differ:

    W_E[target]  =  W_source @ W_map        # [d_vocab, d_source] @ [d_source, d_model]

``W_source`` is a fixed buffer (the source checkpoint's ``embed.W_E``); ``W_map`` is
the only embedding parameter the optimizer sees. Everything downstream reads
``model.embed.W_E`` (a property here), so the fast path, ``hook_embed`` and the
progress measures see the composed embedding, and gradients reach ``W_map``.

Checkpoint files stay in TransformerLens names and shapes: ``transformer_lens_state``
writes the composed ``embed.W_E`` and leaves out the map's own tensors, which live
only in ``resume.pt`` (so an interrupted run resumes with its map).
"""

from __future__ import annotations

import torch
from torch import nn

# state-dict entries that exist only while the map is attached (never in checkpoint files)
MAP_KEYS = ("embed.W_source", "embed.W_map")


class MappedEmbed(nn.Module):
    """Token embedding ``W_source @ W_map``; a drop-in for the model's ``embed``."""

    def __init__(self, W_source: torch.Tensor, d_model: int, seed: int) -> None:
        super().__init__()
        assert W_source.ndim == 2, f"W_source must be [d_vocab, d_source], got {tuple(W_source.shape)}"
        self.register_buffer("W_source", W_source.detach().clone().float())  # [d_vocab, d_source]
        self.W_map = nn.Parameter(torch.empty(W_source.shape[1], d_model))  # [d_source, d_model]
        # semi-orthogonal: the source's token geometry (norms, angles) survives the map at step 0
        nn.init.orthogonal_(self.W_map, generator=torch.Generator().manual_seed(int(seed)))
        self._register_state_dict_hook(_add_composed_embedding)
        self._register_load_state_dict_pre_hook(_drop_composed_embedding)

    @property
    def W_E(self) -> torch.Tensor:  # [d_vocab, d_model]
        return self.W_source @ self.W_map

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [batch, pos] -> [batch, pos, d_model]
        return self.W_E[tokens]


def _add_composed_embedding(module: MappedEmbed, state: dict[str, torch.Tensor], prefix: str, _meta) -> None:
    """state_dict() also carries the composed W_E, so measures and checkpoints read it as usual."""
    state[prefix + "W_E"] = module.W_E.detach()


def _drop_composed_embedding(state, prefix, *_args) -> None:
    """W_E is derived from the map: loading it back would be redundant (and an unexpected key)."""
    state.pop(prefix + "W_E", None)


def attach_embedding_map(model: nn.Module, W_source: torch.Tensor, seed: int, trainable: bool = True) -> MappedEmbed:
    """Replace ``model.embed`` with ``W_source @ W_map`` (W_map fresh, from ``seed``); returns the new module."""
    d_vocab, d_model = model.embed.W_E.shape
    if W_source.shape[0] != d_vocab:
        raise ValueError(
            f"embedding map: the source embedding has {W_source.shape[0]} tokens, the target {d_vocab} "
            "(the map changes width, not vocabulary: source and target need the same p)"
        )
    mapped = MappedEmbed(W_source, d_model, seed)
    mapped.W_map.requires_grad_(trainable)
    model.embed = mapped
    return mapped


def has_embedding_map(model: nn.Module) -> bool:
    return isinstance(getattr(model, "embed", None), MappedEmbed)


def transformer_lens_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in TransformerLens names only (the map's own tensors left out)."""
    return {k: v for k, v in model.state_dict().items() if k not in MAP_KEYS}

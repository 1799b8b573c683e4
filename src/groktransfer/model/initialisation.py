"""How the transformer's parameters start: initialisations by name (``model.init``).

Why a choice at all: a seed names a model only together with the rule that turns it into
weights. groktransfer's own rule (``groktransfer``, the default) draws each transfer
component from its own generator, so re-initialising one component gives what a fresh
model holds there. A notebook that built its model with TransformerLens'
``HookedTransformer(HookedTransformerConfig(..., init_weights=True, seed=s))`` used another
rule, and its seed's model can only be trained here with that rule: ``transformer_lens``
reproduces it parameter for parameter (tests/test_init_transformer_lens.py compares every
parameter with TransformerLens itself).

An initialisation maps (config, seed, the parameters of one component) to their initial
values. Biases start at 0 and LayerNorm at gain 1, bias 0 under both built-in rules.

* ``groktransfer`` -- Nanda et al.'s scales: weights N(0, 1/d_model), W_U N(0, 1/d_vocab_out),
  each component from a generator seeded by (seed, component) (``component_seed``).
* ``transformer_lens`` -- TransformerLens 3.x's default (``init_mode="gpt2"``):
  ``torch.manual_seed(seed)``, then every weight whose name holds ``W_`` draws
  N(0, (0.8/sqrt(d_model))^2) in the order ``HookedTransformer.named_parameters()`` lists
  them (:func:`transformer_lens_weight_order`). One stream runs through every component,
  so a component's values are read from the whole model's stream.

Register another with ``INITIALISATIONS.register(name, Initialisation(values))``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from groktransfer.utils.registry import Registry

#: (model config, seed, component name, {parameter name: parameter}) -> {parameter name: initial value}
ValuesFn = Callable[[Any, int, str, Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Initialisation:
    """``values(cfg, seed, component, params)``: the initial value of each of ``params``
    (the parameters of ``component``), the same for the same arguments in any process."""

    values: ValuesFn


INITIALISATIONS: Registry[Initialisation] = Registry("initialisation", "model.init")


def component_seed(seed: int, component: str) -> int:
    """Seed of one component's generator, derived from the model seed.

    A stable hash (not Python's salted ``hash``) keeps it identical across processes.
    """
    digest = hashlib.sha256(f"groktransfer/init/{component}/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _fixed_value(name: str, shape: torch.Size) -> torch.Tensor:
    """What no rule draws: LayerNorm's gain 1, every bias (and LayerNorm's b) 0."""
    return torch.ones(shape) if name.rsplit(".", 1)[-1] == "w" else torch.zeros(shape)


def _groktransfer_value(name: str, shape: torch.Size, cfg: Any, gen: torch.Generator) -> torch.Tensor:
    """Nanda et al.'s init: weights N(0, 1/d_model), W_U N(0, 1/d_vocab_out), biases 0, LN (1, 0)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "W_U":
        return torch.randn(shape, generator=gen) / math.sqrt(cfg.d_vocab_out)
    if leaf.startswith("W_"):
        return torch.randn(shape, generator=gen) / math.sqrt(cfg.d_model)
    return _fixed_value(name, shape)


def groktransfer_values(
    cfg: Any, seed: int, component: str, params: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(component_seed(seed, component))
    return {name: _groktransfer_value(name, p.shape, cfg, gen) for name, p in params.items()}


def transformer_lens_weight_order(cfg: Any) -> list[str]:
    """The weights TransformerLens 3.x's ``init_weights`` draws, in its order: its attention
    registers W_Q, W_O, then W_K, W_V (biases between them draw nothing), then the MLP's
    W_in, W_out, layer by layer; W_E and W_pos first, W_U last."""
    names = ["embed.W_E", "pos_embed.W_pos"]
    for i in range(int(cfg.n_layers)):
        names += [f"blocks.{i}.attn.W_Q", f"blocks.{i}.attn.W_O", f"blocks.{i}.attn.W_K", f"blocks.{i}.attn.W_V"]
        if not cfg.attn_only:
            names += [f"blocks.{i}.mlp.W_in", f"blocks.{i}.mlp.W_out"]
    return names + ["unembed.W_U"]


def transformer_lens_values(
    cfg: Any, seed: int, component: str, params: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    order = transformer_lens_weight_order(cfg)
    wanted = {name for name in params if name.rsplit(".", 1)[-1].startswith("W_")}
    unknown = sorted(wanted - set(order))
    if unknown:
        raise ValueError(f"model.init=transformer_lens: {unknown} are not weights TransformerLens initialises")
    std = 0.8 / math.sqrt(int(cfg.d_model))  # HookedTransformerConfig's initializer_range for init_mode gpt2
    gen = torch.Generator().manual_seed(int(seed))  # torch.manual_seed(seed) seeds the same stream
    drawn: dict[str, torch.Tensor] = {}
    for name in order[: max((order.index(n) for n in wanted), default=-1) + 1]:  # the stream up to the last one needed
        shape = _weight_shape(name, cfg)
        value = torch.empty(shape).normal_(0.0, std, generator=gen)
        if name in wanted:
            drawn[name] = value
    out = {}
    for name, p in params.items():
        value = drawn.get(name, None)
        if value is not None and value.shape != p.shape:
            raise ValueError(
                f"model.init=transformer_lens: {name} has shape {tuple(p.shape)}, TransformerLens' has {tuple(value.shape)}"
            )
        out[name] = value if value is not None else _fixed_value(name, p.shape)
    return out


def _weight_shape(name: str, cfg: Any) -> torch.Size:
    """The TransformerLens shape of a weight in :func:`transformer_lens_weight_order`."""
    h, d, e = int(cfg.n_heads), int(cfg.d_model), int(cfg.d_head)
    leaf = name.rsplit(".", 1)[-1]
    shapes = {
        "W_E": (cfg.d_vocab, d),
        "W_pos": (cfg.n_ctx, d),
        "W_Q": (h, d, e),
        "W_K": (h, d, e),
        "W_V": (h, d, e),
        "W_O": (h, e, d),
        "W_in": (d, cfg.d_mlp),
        "W_out": (cfg.d_mlp, d),
        "W_U": (d, cfg.d_vocab_out),
    }
    return torch.Size(int(s) for s in shapes[leaf])


INITIALISATIONS.register("groktransfer", Initialisation(groktransfer_values))
INITIALISATIONS.register("transformer_lens", Initialisation(transformer_lens_values))

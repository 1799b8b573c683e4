"""The transformer of Nanda et al. (2023), laid out exactly like TransformerLens.

Why a re-implementation rather than ``transformer_lens.HookedTransformer``?

* **Speed.** Training a one-layer model for tens of thousands of full-batch epochs is
  the whole cost of a sweep. Every input is ``[a, b, =]`` and the loss only reads the
  last position, so :meth:`HookedGrokTransformer.forward_last` computes exactly that
  logit row without materialising ``[batch, pos, d_model]`` activations (~10x faster
  on one CPU thread than a full forward).
* **Portability.** Parameter names, shapes and hook names follow TransformerLens
  (see ``docs/architecture.md``), so a saved ``state_dict`` loads into
  ``HookedTransformer`` with the config from :meth:`hooked_transformer_config_dict`,
  and analysis code written against TransformerLens reads our caches unchanged.
* **Reproducibility.** Initialisation is a pure function of an explicit seed; each
  component draws from its own generator, so re-initialising one component with seed
  ``s`` gives bit-for-bit what a fresh model with seed ``s`` holds there. That is what
  makes a transfer run's "reinit" condition comparable with the "random" condition.

Shapes in comments use TransformerLens' names: ``batch``, ``pos`` (positions), ``head``,
``d_head``, ``d_model``, ``d_mlp``, ``d_vocab`` / ``d_vocab_out``; ``p`` always means the
modulus, never positions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from groktransfer.config.schema import Component, ModelConfig, to_typed
from groktransfer.transfer.components import component_parameters
from groktransfer.model.lastpos import fast_last_supported, last_position_logits

#: Sequence length of the modular tasks ([a, b, =]); a ModelConfig with n_ctx=None and no task gets it.
MODULAR_SEQ_LEN = 3

#: A forward-hook function: receives the activation and its HookPoint, returns a
#: replacement activation or None to leave it unchanged (TransformerLens' convention).
HookFn = Callable[..., Optional[torch.Tensor]]
NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]

_ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "gelu": F.gelu}

# Biases whose training is switched by a ModelConfig flag. All of them always exist as
# parameters (HookedTransformer expects them); an untrained one stays at zero.
_BIAS_FLAGS: Dict[str, str] = {
    "attn.b_Q": "attn_bias",
    "attn.b_K": "attn_bias",
    "attn.b_V": "attn_bias",
    "attn.b_O": "attn_bias",
    "mlp.b_in": "mlp_bias",
    "mlp.b_out": "mlp_bias",
    "unembed.b_U": "unembed_bias",
}


# --------------------------------------------------------------------------- config
def _check_config(cfg: ModelConfig) -> None:
    """Fail early and clearly on a config the model cannot be built from."""
    for name in ("d_vocab", "d_vocab_out"):
        if getattr(cfg, name) is None:
            raise ValueError(
                f"ModelConfig.{name} is None: resolve it from the task (Task.{name}) before building the model"
            )
    sizes = ("n_layers", "n_heads", "d_model", "d_head", "n_ctx", "d_vocab", "d_vocab_out")
    for name in sizes if cfg.attn_only else (*sizes, "d_mlp"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
    if cfg.act not in _ACTIVATIONS:
        raise ValueError(f"ModelConfig.act must be one of {sorted(_ACTIVATIONS)}, got {cfg.act!r}")
    if cfg.normalization not in (None, "LN"):
        raise ValueError(f"ModelConfig.normalization must be None or 'LN', got {cfg.normalization!r}")


# --------------------------------------------------------------------------- hooks
class HookPoint(nn.Module):
    """Identity module marking a named activation, as in TransformerLens.

    Hooks are ordinary PyTorch forward hooks on this module; ``name`` is the module's
    dotted path in the model (filled in by :class:`HookedGrokTransformer`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return repr(self.name)


# --------------------------------------------------------------------------- layers
def _empty_param(*shape: int, trainable: bool = True) -> nn.Parameter:
    """Uninitialised parameter; values are written by ``_init_component``."""
    return nn.Parameter(torch.empty(*shape), requires_grad=trainable)


class Embed(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.W_E = _empty_param(cfg.d_vocab, cfg.d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [batch, pos] -> [batch, pos, d_model]
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.W_pos = _empty_param(cfg.n_ctx, cfg.d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [batch, pos] -> [batch, pos, d_model] (a broadcast view)
        batch, n_pos = tokens.shape
        return self.W_pos[:n_pos].unsqueeze(0).expand(batch, n_pos, -1)


class LayerNorm(nn.Module):
    """TransformerLens' LayerNorm (eps 1e-5), with its ``hook_scale`` / ``hook_normalized``."""

    def __init__(self, cfg: ModelConfig, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.w = _empty_param(cfg.d_model)
        self.b = _empty_param(cfg.d_model)
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b  # TL (3.x) hooks before the affine map


class Attention(nn.Module):
    """Causal multi-head attention with TransformerLens' per-head weight layout."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.n_heads, self.d_head = h, e
        self.W_Q = _empty_param(h, d, e)
        self.W_K = _empty_param(h, d, e)
        self.W_V = _empty_param(h, d, e)
        self.W_O = _empty_param(h, e, d)
        self.b_Q = _empty_param(h, e, trainable=cfg.attn_bias)
        self.b_K = _empty_param(h, e, trainable=cfg.attn_bias)
        self.b_V = _empty_param(h, e, trainable=cfg.attn_bias)
        self.b_O = _empty_param(d, trainable=cfg.attn_bias)
        # Same buffers as HookedTransformer's attention, so state dicts match key for key.
        self.register_buffer("mask", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)))
        self.register_buffer("IGNORE", torch.tensor(-float("inf")))
        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # [batch, head, q_pos, k_pos], masked entries = -inf
        self.hook_pattern = HookPoint()  # [batch, head, q_pos, k_pos]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.d_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_model] -> [batch, pos, d_model]
        q = self.hook_q(torch.einsum("bpd,hde->bphe", x, self.W_Q) + self.b_Q)
        k = self.hook_k(torch.einsum("bpd,hde->bphe", x, self.W_K) + self.b_K)
        v = self.hook_v(torch.einsum("bpd,hde->bphe", x, self.W_V) + self.b_V)
        n_pos = x.shape[1]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * self.scale
        scores = self.hook_attn_scores(scores.masked_fill(~self.mask[:n_pos, :n_pos], self.IGNORE))
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        return torch.einsum("bqhe,hed->bqd", z, self.W_O) + self.b_O


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.W_in = _empty_param(cfg.d_model, cfg.d_mlp)
        self.b_in = _empty_param(cfg.d_mlp, trainable=cfg.mlp_bias)
        self.W_out = _empty_param(cfg.d_mlp, cfg.d_model)
        self.b_out = _empty_param(cfg.d_model, trainable=cfg.mlp_bias)
        self.act = _ACTIVATIONS[cfg.act]
        self.hook_pre = HookPoint()  # [..., d_mlp]
        self.hook_post = HookPoint()  # [..., d_mlp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., d_model] -> [..., d_model]
        pre = self.hook_pre(x @ self.W_in + self.b_in)
        post = self.hook_post(self.act(pre))
        return post @ self.W_out + self.b_out


class TransformerBlock(nn.Module):
    """Pre-LN residual block: resid += attn(ln1(resid)); resid += mlp(ln2(resid)).

    With ``attn_only`` the block has no ln2, MLP, ``hook_resid_mid`` or
    ``hook_mlp_out`` -- exactly TransformerLens' ``attn_only=True`` block, so its state
    dict and hook names match ``HookedTransformer`` key for key.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        use_ln = cfg.normalization == "LN"
        self.attn_only = bool(cfg.attn_only)
        self.ln1: nn.Module = LayerNorm(cfg) if use_ln else nn.Identity()
        self.attn = Attention(cfg)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        if not self.attn_only:
            self.ln2: nn.Module = LayerNorm(cfg) if use_ln else nn.Identity()
            self.mlp = MLP(cfg)
            self.hook_resid_mid = HookPoint()
            self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid: torch.Tensor) -> torch.Tensor:  # [b, p, d] -> [b, p, d]
        resid = self.hook_resid_pre(resid)
        if self.attn_only:
            return self.hook_resid_post(resid + self.hook_attn_out(self.attn(self.ln1(resid))))
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.attn(self.ln1(resid))))
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(resid))))


class Unembed(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.W_U = _empty_param(cfg.d_model, cfg.d_vocab_out)
        self.b_U = _empty_param(cfg.d_vocab_out, trainable=cfg.unembed_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., d_model] -> [..., d_vocab_out]
        return x @ self.W_U + self.b_U


# --------------------------------------------------------------------------- components & init
def component_seed(seed: int, component: str) -> int:
    """Seed of one component's generator, derived from the model seed.

    A stable hash (not Python's salted ``hash``) keeps it identical across processes.
    """
    digest = hashlib.sha256(f"groktransfer/init/{component}/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _initial_value(name: str, shape: torch.Size, cfg: ModelConfig, gen: torch.Generator) -> torch.Tensor:
    """Nanda et al.'s init: weights N(0, 1/d_model), W_U N(0, 1/d_vocab_out), biases 0, LN (1, 0)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "W_U":
        return torch.randn(shape, generator=gen) / math.sqrt(cfg.d_vocab_out)
    if leaf.startswith("W_"):
        return torch.randn(shape, generator=gen) / math.sqrt(cfg.d_model)
    if leaf == "w":  # LayerNorm gain
        return torch.ones(shape)
    return torch.zeros(shape)  # every bias, and LayerNorm's b


# --------------------------------------------------------------------------- the model
class HookedGrokTransformer(nn.Module):
    """Nanda et al.'s modular-arithmetic transformer with TransformerLens names and hooks.

    ``forward`` is the general full-sequence path (fires every hook); ``forward_last``
    returns only the last position's logits and is the fast training path.
    ``run_with_cache`` / ``run_with_hooks`` always use the full path.
    """

    def __init__(self, cfg: Union[ModelConfig, Mapping[str, Any]], seed: int) -> None:
        super().__init__()
        cfg = to_typed(ModelConfig, cfg, label="model")
        if cfg.n_ctx is None:  # "the task's sequence length": jobs resolve it; a bare config means [a, b, =]
            cfg = dataclasses.replace(cfg, n_ctx=MODULAR_SEQ_LEN)
        _check_config(cfg)
        if seed is None or isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int (initialisation is a function of it), got {seed!r}")
        self.config = cfg
        self.seed = seed
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()
        self.pos_embed = PosEmbed(cfg)
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_final: nn.Module = LayerNorm(cfg) if cfg.normalization == "LN" else nn.Identity()
        self.unembed = Unembed(cfg)
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
        self._hook_points: Dict[str, HookPoint] = {
            name: m for name, m in self.named_modules() if isinstance(m, HookPoint)
        }
        for component in Component:
            self.reinit_component(component, seed)

    # ---- forward paths ------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits at every position: [batch, pos] -> [batch, pos, d_vocab_out]."""
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            resid = block(resid)
        return self.unembed(self.ln_final(resid))

    def forward_last(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits at the last position only: [batch, pos] -> [batch, d_vocab_out].

        The same function as ``forward(tokens)[:, -1]``. With no hooks attached, and a shape
        :func:`~groktransfer.model.lastpos.fast_last_supported` computes (every shape this
        class builds), it takes the fast path (:meth:`_forward_last_fast`); otherwise it runs
        the full forward, so an attached hook is never silently skipped.
        """
        if self._fast_path_applies():
            return self._forward_last_fast(tokens)
        return self.forward(tokens)[:, -1]

    def _fast_path_applies(self) -> bool:
        return fast_last_supported(self.config) and not self.has_hooks()

    def _forward_last_fast(self, tokens: torch.Tensor) -> torch.Tensor:
        """Last-position logits without computing what the last position does not read.

        The model is a one-member ensemble of :func:`groktransfer.model.lastpos.last_position_logits`
        (see there for how it works); the unsqueezed parameters are views, so gradients
        reach the parameters unchanged.
        """
        return last_position_logits(self._one_member_params(), tokens.unsqueeze(0), self.config)[0]

    def _one_member_params(self) -> Dict[str, torch.Tensor]:
        """The parameters with a leading member axis of 1 (views: gradients reach the parameters).

        ``embed.W_E`` is read through ``self.embed`` because it need not be a parameter: an
        embedding-only transfer composes it from a fixed source embedding and a trained map.
        """
        params = {name: param.unsqueeze(0) for name, param in self.named_parameters()}
        params["embed.W_E"] = self.embed.W_E.unsqueeze(0)
        return params

    @torch.no_grad()
    def last_position_activations(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Last position's logits [batch, d_vocab_out] and final-layer MLP output ``hook_post`` [batch, d_mlp].

        What the progress measures read. The fast path computes both without the positions
        the last one does not need (3x less MLP work at n_ctx 3); with hooks attached it
        is ``run_with_cache``.
        """
        hook = f"blocks.{self.config.n_layers - 1}.mlp.hook_post"
        if self._fast_path_applies() and not self.config.attn_only:
            cache: Dict[str, torch.Tensor] = {}
            logits = last_position_logits(self._one_member_params(), tokens.unsqueeze(0), self.config, cache=cache)
            return logits[0], cache[hook][0]
        logits, acts = self.run_with_cache(tokens, names_filter=hook)
        return logits[:, -1], acts[hook][:, -1]

    # ---- hooks ----------------------------------------------------------------
    @property
    def hook_dict(self) -> Dict[str, HookPoint]:
        """Every hook point by its TransformerLens name."""
        return dict(self._hook_points)

    @property
    def hook_names(self) -> List[str]:
        return list(self._hook_points)

    def has_hooks(self) -> bool:
        """True if any hook point has a forward hook attached."""
        return any(hp._forward_hooks for hp in self._hook_points.values())

    def _select_hooks(self, names_filter: NamesFilter) -> List[str]:
        if names_filter is None:
            return self.hook_names
        if isinstance(names_filter, str):
            selected = [names_filter]
        elif callable(names_filter):
            return [n for n in self._hook_points if names_filter(n)]
        else:
            selected = list(names_filter)
        unknown = [n for n in selected if n not in self._hook_points]
        if unknown:
            raise KeyError(f"unknown hook name(s) {unknown}; see model.hook_names")
        return selected

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[Tuple[Union[str, Callable[[str], bool]], HookFn]]) -> Iterator[None]:
        """Attach ``(name_or_filter, fn)`` forward hooks for the duration of a ``with`` block.

        ``fn(activation, hook=hook_point)`` may return a replacement activation. Hooks are
        removed on exit, including when the block raises.
        """
        handles = []
        try:
            for name_or_filter, fn in fwd_hooks:
                for name in self._select_hooks(name_or_filter):
                    hook_point = self._hook_points[name]
                    handles.append(
                        hook_point.register_forward_hook(lambda module, _inputs, out, fn=fn: fn(out, hook=module))
                    )
            yield
        finally:
            for handle in handles:
                handle.remove()

    def run_with_hooks(
        self, tokens: torch.Tensor, fwd_hooks: Sequence[Tuple[Union[str, Callable[[str], bool]], HookFn]] = ()
    ) -> torch.Tensor:
        """Full forward with temporary hooks, e.g. ablations; returns [batch, pos, d_vocab_out] logits."""
        with self.hooks(fwd_hooks):
            return self(tokens)

    def run_with_cache(
        self, tokens: torch.Tensor, names_filter: NamesFilter = None
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Full forward that also returns the (detached) activation at each selected hook."""
        cache: Dict[str, torch.Tensor] = {}

        def save(activation: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = activation.detach()

        with self.hooks([(name, save) for name in self._select_hooks(names_filter)]):
            logits = self(tokens)
        return logits, cache

    # ---- init ---------------------------------------------------------------
    def trainable_by_config(self, name: str) -> bool:
        """False only for a bias the config keeps at zero (its ``*_bias`` flag is off)."""
        for suffix, flag in _BIAS_FLAGS.items():
            if name.endswith(suffix):
                return bool(getattr(self.config, flag))
        return True

    @torch.no_grad()
    def reinit_component(self, component: str, seed: int) -> None:
        """Re-initialise one component in place, deterministically from ``seed``.

        Gives exactly the values ``HookedGrokTransformer(cfg, seed)`` holds for that
        component, whatever the other components are. Parameters keep their identity,
        dtype, device and ``requires_grad``, so an optimizer built earlier still owns them.
        """
        gen = torch.Generator().manual_seed(component_seed(seed, component))
        for name, param in component_parameters(self, component).items():
            param.copy_(_initial_value(name, param.shape, self.config, gen))

    # ---- TransformerLens interop ----------------------------------------------
    def hooked_transformer_config_dict(self) -> Dict[str, Any]:
        """Fields of ``transformer_lens.HookedTransformerConfig`` describing this model.

        ``HookedTransformer(HookedTransformerConfig(**d)).load_state_dict(sd)`` then
        accepts our state dict as is.
        """
        cfg = self.config
        return {
            "n_layers": cfg.n_layers,
            "d_model": cfg.d_model,
            "n_ctx": cfg.n_ctx,
            "d_head": cfg.d_head,
            "n_heads": cfg.n_heads,
            "d_mlp": None if cfg.attn_only else cfg.d_mlp,
            "d_vocab": cfg.d_vocab,
            "d_vocab_out": cfg.d_vocab_out,
            "act_fn": str(cfg.act),
            "normalization_type": None if cfg.normalization is None else str(cfg.normalization),
            "positional_embedding_type": "standard",
            "attn_only": bool(cfg.attn_only),
            "default_prepend_bos": False,
            "original_architecture": "groktransfer.HookedGrokTransformer",
            "model_name": cfg.name,
            "seed": self.seed,
            "init_weights": True,
        }

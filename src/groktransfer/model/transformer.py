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
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from groktransfer.config.ranges import bounded, range_problems
from groktransfer.config.schema import TRANSFORMER_COMPONENTS, ModelConfig, to_typed
from groktransfer.model.embedding_map import MAP_KEYS, attach_embedding_map
from groktransfer.model.initialisation import INITIALISATIONS, component_seed  # noqa: F401 (component_seed: re-exported)
from groktransfer.model.lastpos import fast_last_supported, last_position_logits
from groktransfer.model.protocol import GrokModel, Reading, StackedForward
from groktransfer.tasks.family import TaskShape
from groktransfer.utils.choices import Choice

#: A forward-hook function: receives the activation and its HookPoint, returns a
#: replacement activation or None to leave it unchanged (TransformerLens' convention).
HookFn = Callable[..., torch.Tensor | None]
NamesFilter = None | str | Sequence[str] | Callable[[str], bool]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "gelu": F.gelu}

# Biases whose training is switched by a ModelConfig flag. All of them always exist as
# parameters (HookedTransformer expects them); an untrained one stays at zero.
_BIAS_FLAGS: dict[str, str] = {
    "attn.b_Q": "attn_bias",
    "attn.b_K": "attn_bias",
    "attn.b_V": "attn_bias",
    "attn.b_O": "attn_bias",
    "mlp.b_in": "mlp_bias",
    "mlp.b_out": "mlp_bias",
    "unembed.b_U": "unembed_bias",
}


# --------------------------------------------------------------------------- config
class Activation(Choice):
    relu = "relu"
    gelu = "gelu"


class Normalization(Choice):
    LN = "LN"


@dataclass
class TransformerConfig(ModelConfig):
    """Shape of the transformer, in TransformerLens' field names (``model.architecture:
    hooked_transformer``, the default; Hydra's ``hooked_transformer_schema``).

    ``d_vocab`` / ``d_vocab_out`` are None to mean "derived from the task"
    (p+1 input tokens with '=' = p; p outputs, or 2p for int_add).
    The ``*_bias`` flags say whether a bias is *trained*; untrained biases are
    kept at zero but still stored, so checkpoints load into HookedTransformer.
    """

    KIND: ClassVar[str] = "the hooked_transformer model"
    #: fields hashed into run identities whatever their value (groktransfer.runs.identity)
    RECORDED_FIELDS: ClassVar[tuple[str, ...]] = (
        "name",
        "n_layers",
        "n_heads",
        "d_model",
        "d_head",
        "d_mlp",
        "act",
        "normalization",
        "n_ctx",
        "d_vocab",
        "d_vocab_out",
        "attn_bias",
        "mlp_bias",
        "unembed_bias",
        "model_seed",
    )
    #: None-valued fields hashed as the task's value they resolve to (n_ctx: the sequence length)
    RESOLVED_FROM_TASK: ClassVar[tuple[str, ...]] = ("n_ctx",)

    # the preset's name (conf/model/<name>.yaml), recorded with the run
    name: str = "one_layer"
    # transformer blocks
    n_layers: int = bounded(1, ge=1)
    # attention heads per block
    n_heads: int = bounded(4, ge=1)
    # width of the residual stream
    d_model: int = bounded(128, ge=1)
    # width of each attention head
    d_head: int = bounded(32, ge=1)
    # hidden neurons of each MLP
    d_mlp: int = bounded(512, ge=1)
    # MLP activation
    act: Activation = Activation.relu
    # None = no LayerNorm (Nanda et al.); LN = LayerNorm before each sublayer and the unembedding
    normalization: Normalization | None = None
    # no MLP sublayer (TransformerLens attn_only=True); d_mlp is then ignored
    attn_only: bool = False
    # None = the task's sequence length (3 for the modular tasks; 3n+2 for n-digit sums)
    n_ctx: int | None = bounded(None, ge=1)
    # input tokens; None = from the task (p+1 for the modular tasks, '=' = p)
    d_vocab: int | None = bounded(None, ge=1)
    # output classes; None = from the task (p, or 2p for int_add)
    d_vocab_out: int | None = bounded(None, ge=1)
    # train the attention biases (else kept at zero)
    attn_bias: bool = False
    # train the MLP biases
    mlp_bias: bool = True
    # train the unembedding bias
    unembed_bias: bool = False
    # the initialisation (groktransfer.model.initialisation.INITIALISATIONS): groktransfer (Nanda
    # et al.'s scales, one generator per component) or transformer_lens (exactly what
    # HookedTransformer(init_weights=True, seed=model_seed) holds, parameter for parameter)
    init: str = "groktransfer"


#: Sequence length of the modular tasks ([a, b, =]); a config with n_ctx=None and no task gets it.
MODULAR_SEQ_LEN = 3


def config_problems(cfg: TransformerConfig, prefix: str = "model") -> list[str]:
    """Every reason ``cfg`` cannot build a transformer, each naming its key: the declared ranges
    (positive sizes) and a registered initialisation."""
    problems = range_problems(cfg, f"{prefix}.")
    if str(cfg.init) not in INITIALISATIONS:
        problems.append(
            f"{prefix}.init={cfg.init!r}: unknown initialisation; registered: {', '.join(INITIALISATIONS.names())}"
        )
    return problems


def _check_config(cfg: TransformerConfig) -> None:
    """Fail early and clearly on a config the model cannot be built from."""
    for name in ("d_vocab", "d_vocab_out"):
        if getattr(cfg, name) is None:
            raise ValueError(
                f"TransformerConfig.{name} is None: resolve it from the task (Task.{name}) before building the model"
            )
    problems = config_problems(cfg, prefix="TransformerConfig")
    if problems:
        raise ValueError("; ".join(problems))
    if cfg.n_ctx is None:
        raise ValueError("TransformerConfig.n_ctx is None: resolve it from the task first")
    if cfg.act not in _ACTIVATIONS:
        raise ValueError(f"TransformerConfig.act must be one of {sorted(_ACTIVATIONS)}, got {cfg.act!r}")
    if cfg.normalization not in (None, "LN"):
        raise ValueError(f"TransformerConfig.normalization must be None or 'LN', got {cfg.normalization!r}")


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
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.W_E = _empty_param(cfg.d_vocab, cfg.d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [batch, pos] -> [batch, pos, d_model]
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.W_pos = _empty_param(cfg.n_ctx, cfg.d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [batch, pos] -> [batch, pos, d_model] (a broadcast view)
        batch, n_pos = tokens.shape
        return self.W_pos[:n_pos].unsqueeze(0).expand(batch, n_pos, -1)


class LayerNorm(nn.Module):
    """TransformerLens' LayerNorm (eps 1e-5), with its ``hook_scale`` / ``hook_normalized``."""

    def __init__(self, cfg: TransformerConfig, eps: float = 1e-5) -> None:
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

    def __init__(self, cfg: TransformerConfig) -> None:
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
    def __init__(self, cfg: TransformerConfig) -> None:
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

    def __init__(self, cfg: TransformerConfig) -> None:
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
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.W_U = _empty_param(cfg.d_model, cfg.d_vocab_out)
        self.b_U = _empty_param(cfg.d_vocab_out, trainable=cfg.unembed_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., d_model] -> [..., d_vocab_out]
        return x @ self.W_U + self.b_U


# --------------------------------------------------------------------------- components & init
# component_seed and the initialisations live in groktransfer.model.initialisation (model.init)


# --------------------------------------------------------------------------- the model
class HookedGrokTransformer(GrokModel):
    """Nanda et al.'s modular-arithmetic transformer with TransformerLens names and hooks.

    ``forward`` is the general full-sequence path (fires every hook); ``forward_last``
    returns only the last position's logits and is the fast training path.
    ``run_with_cache`` / ``run_with_hooks`` always use the full path.

    Its transfer components are ``embed``, ``pos_embed``, ``attn`` (every layer's attention
    with its LayerNorm ``ln1``), ``mlp`` (every layer's MLP with ``ln2``) and ``unembed``
    (with ``ln_final``).
    """

    config_class = TransformerConfig
    components = TRANSFORMER_COMPONENTS
    readings = frozenset(
        {
            Reading.neurons,
            Reading.token_embedding,
            Reading.neuron_logits,
            Reading.unembedding,
            Reading.attention,
            Reading.transformer_lens,
        }
    )
    every_position = True
    embedding_map = True

    def __init__(self, cfg: TransformerConfig | Mapping[str, Any], seed: int) -> None:
        super().__init__()
        cfg = to_typed(TransformerConfig, cfg, label="model")
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
        self._hook_points: dict[str, HookPoint] = {
            name: m for name, m in self.named_modules() if isinstance(m, HookPoint)
        }
        if cfg.attn_only:  # no MLP, so no neurons to read
            self.readings = self.readings - {Reading.neurons, Reading.neuron_logits}
        for component in self.components:
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

    def _one_member_params(self) -> dict[str, torch.Tensor]:
        """The parameters with a leading member axis of 1 (views: gradients reach the parameters).

        ``embed.W_E`` is read through ``self.embed`` because it need not be a parameter: an
        embedding-only transfer composes it from a fixed source embedding and a trained map.
        """
        params = {name: param.unsqueeze(0) for name, param in self.named_parameters()}
        params["embed.W_E"] = self.embed.W_E.unsqueeze(0)
        return params

    @torch.no_grad()
    def last_position_activations(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last position's logits [batch, d_vocab_out] and final-layer MLP output ``hook_post`` [batch, d_mlp].

        What the progress measures read. The fast path computes both without the positions
        the last one does not need (3x less MLP work at n_ctx 3); with hooks attached it
        is ``run_with_cache``.
        """
        hook = f"blocks.{self.config.n_layers - 1}.mlp.hook_post"
        if self._fast_path_applies() and not self.config.attn_only:
            cache: dict[str, torch.Tensor] = {}
            logits = last_position_logits(self._one_member_params(), tokens.unsqueeze(0), self.config, cache=cache)
            return logits[0], cache[hook][0]
        logits, acts = self.run_with_cache(tokens, names_filter=hook)
        return logits[:, -1], acts[hook][:, -1]

    # ---- hooks ----------------------------------------------------------------
    @property
    def hook_dict(self) -> dict[str, HookPoint]:
        """Every hook point by its TransformerLens name."""
        return dict(self._hook_points)

    @property
    def hook_names(self) -> list[str]:
        return list(self._hook_points)

    def has_hooks(self) -> bool:
        """True if any hook point has a forward hook attached."""
        return any(hp._forward_hooks for hp in self._hook_points.values())

    def _select_hooks(self, names_filter: NamesFilter) -> list[str]:
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
    def hooks(self, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]]) -> Iterator[None]:
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
        self, tokens: torch.Tensor, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = ()
    ) -> torch.Tensor:
        """Full forward with temporary hooks, e.g. ablations; returns [batch, pos, d_vocab_out] logits."""
        with self.hooks(fwd_hooks):
            return self(tokens)

    def run_with_cache(
        self, tokens: torch.Tensor, names_filter: NamesFilter = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Full forward that also returns the (detached) activation at each selected hook."""
        cache: dict[str, torch.Tensor] = {}

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
        component, whatever the other components are, under the config's initialisation
        (``model.init``; groktransfer.model.initialisation). Parameters keep their identity,
        dtype, device and ``requires_grad``, so an optimizer built earlier still owns them.
        """
        params = self.component_parameters(component)
        values = INITIALISATIONS.get(str(self.config.init)).values(self.config, seed, component, params)
        for name, param in params.items():
            param.copy_(values[name])

    # ---- TransformerLens interop ----------------------------------------------
    def hooked_transformer_config_dict(self) -> dict[str, Any]:
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

    # ---- the model protocol (groktransfer.model.protocol) ------------------------
    @classmethod
    def resolve_config(cls, cfg: Any, d_vocab: int, d_vocab_out: int, seq_len: int) -> Any:
        return dataclasses.replace(
            cfg, d_vocab=cfg.d_vocab or d_vocab, d_vocab_out=cfg.d_vocab_out or d_vocab_out, n_ctx=cfg.n_ctx or seq_len
        )

    @classmethod
    def task_problems(cls, cfg: Any, task: TaskShape) -> list[str]:
        """The context must hold the task's sequence (exactly, where the task says so) and the
        vocabularies its tokens and answers."""
        problems = super().task_problems(cfg, task)
        if cfg.n_ctx is not None:
            if task.exact_seq_len and int(cfg.n_ctx) != task.seq_len:
                problems.append(f"model.n_ctx={cfg.n_ctx}: the {task.label} task feeds exactly {task.seq_len} tokens")
            elif int(cfg.n_ctx) < task.seq_len:
                problems.append(
                    f"model.n_ctx={cfg.n_ctx}: shorter than the task's sequence ({task.seq_len} tokens for "
                    f"{task.label}); set model.n_ctx=null to take it from the task"
                )
        if cfg.d_vocab is not None and int(cfg.d_vocab) < task.d_vocab:
            problems.append(f"model.d_vocab={cfg.d_vocab}: task {task.label} needs >= {task.d_vocab}")
        if cfg.d_vocab_out is not None and int(cfg.d_vocab_out) < task.d_vocab_out:
            problems.append(f"model.d_vocab_out={cfg.d_vocab_out}: task {task.label} needs >= {task.d_vocab_out}")
        return problems

    @classmethod
    def stacked_forward_last(cls, cfg: Any) -> StackedForward | None:
        """The fused last-position forward over a member axis (:mod:`groktransfer.model.lastpos`),
        for every shape it computes (any depth, LayerNorm or not, attention-only or not)."""
        if not fast_last_supported(cfg):
            return None
        neurons = None if cfg.attn_only else f"blocks.{cfg.n_layers - 1}.mlp.hook_post"

        def forward(
            params: dict[str, torch.Tensor], tokens: torch.Tensor, cache: dict[str, torch.Tensor] | None = None
        ) -> torch.Tensor:
            inner: dict[str, torch.Tensor] | None = {} if cache is not None else None
            logits = last_position_logits(params, tokens, cfg, cache=inner)
            if cache is not None and inner is not None and neurons is not None:
                cache["neurons"] = inner[neurons]
            return logits

        return forward

    @classmethod
    def parameter_bytes(cls, cfg: Any) -> int:
        """In closed form: building a deep model even on the meta device takes seconds."""
        d, h, e, m, L = cfg.d_model, cfg.n_heads, cfg.d_head, 0 if cfg.attn_only else cfg.d_mlp, cfg.n_layers
        ln = 2 * d if cfg.normalization is not None else 0
        block = 4 * h * d * e + 3 * h * e + d + (2 * d * m + m + d if m else 0) + ln * (1 if cfg.attn_only else 2)
        outer = cfg.d_vocab * d + cfg.n_ctx * d + d * cfg.d_vocab_out + cfg.d_vocab_out + ln
        return 4 * (L * block + outer)

    @classmethod
    def activation_bytes(cls, cfg: Any, batch: int, task: TaskShape, training: bool) -> int:
        """The full forward's tensors per example in closed form (an upper bound of the fast path):
        per layer the residual stream and its LayerNorm, queries, keys, values, scores and pattern,
        the heads' outputs and the MLP's; then the logits (float32 and the float64 loss copy).
        Training keeps every layer's tensors for the backward and as much again for their
        gradients; evaluation holds about one layer at a time."""
        n, d, h, e, m = task.seq_len, cfg.d_model, cfg.n_heads, cfg.d_head, 0 if cfg.attn_only else cfg.d_mlp
        per_layer = 4 * (n * (6 * d + 4 * h * e + 2 * m) + 2 * h * n * n)
        logits = n * cfg.d_vocab_out * (4 + 8)
        if training:
            return batch * (2 * cfg.n_layers * per_layer + 2 * logits)
        return batch * (2 * per_layer + logits)

    def component_of(self, name: str) -> str:
        """``embed``, ``pos_embed``, ``attn`` (with ``ln1``), ``mlp`` (with ``ln2``) or ``unembed``
        (with ``ln_final``), from a TransformerLens parameter name."""
        return transformer_component_of(name)

    def adapt_source_state(self, state: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
        """The original paper's models output p+1 logits (one for '='): drop that column.

        The '=' output is never a label, so dropping it keeps the argmax on every input and
        lets a released checkpoint initialise a p-output target.
        """
        out = dict(state)
        target = self.state_dict()
        for name in ("unembed.W_U", "unembed.b_U"):
            if name in out and name in target:
                src, tgt = out[name], target[name]
                if src.shape[-1] == tgt.shape[-1] + 1 and src.shape[:-1] == tgt.shape[:-1]:
                    out[name] = src[..., :-1].contiguous()
                    notes.append(
                        f"{name}: dropped the source's '=' output column ({tuple(src.shape)} -> {tuple(tgt.shape)})"
                    )
        return out

    def attach_embedding_map(
        self, source_state: dict[str, torch.Tensor], seed: int, trainable: bool
    ) -> tuple[list[str], list[str], str]:
        """``embed.W_E`` = source ``embed.W_E`` @ ``W_map`` (semi-orthogonal init from ``seed``).

        ``source_state`` is a source checkpoint's state, or a resumed map run's own state (whose
        ``embed.W_source`` is the source embedding; its saved ``W_map`` is loaded afterwards).
        """
        W_source = source_state.get("embed.W_source", source_state.get("embed.W_E"))  # [d_vocab, d_source]
        if W_source is None:
            raise KeyError("the source checkpoint has no embed.W_E")
        mapped = attach_embedding_map(self, W_source, seed, trainable=trainable)
        note = (
            f"embed.W_E = source W_E {tuple(W_source.shape)} @ W_map {tuple(mapped.W_map.shape)} "
            f"({'trained' if trainable else 'frozen'}; semi-orthogonal init from seed {seed})"
        )
        return ["embed.W_E"], ["embed.W_map"], note

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The state dict in TransformerLens names only: an embedding map's own tensors are left
        out and the composed ``embed.W_E`` is kept, so the file loads into HookedTransformer."""
        return {k: v for k, v in self.state_dict().items() if k not in MAP_KEYS}

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"config": self.hooked_transformer_config_dict()}

    @classmethod
    def complete_state(cls, state: dict[str, torch.Tensor], cfg: Any) -> dict[str, torch.Tensor]:
        """Set the attention ``mask`` / ``IGNORE`` buffers to their canonical values.

        They are constants of the architecture, not learned: TransformerLens stores them,
        a hand-made state dict may not, the paper's mask is a float tril. Writing ours
        means no file is rejected over them.
        """
        out = dict(state)
        for i in range(cfg.n_layers):
            out[f"blocks.{i}.attn.mask"] = torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool))
            out[f"blocks.{i}.attn.IGNORE"] = torch.tensor(-float("inf"))
        return out

    def token_embedding(self) -> torch.Tensor:
        return self.embed.W_E

    def unembedding(self) -> torch.Tensor:
        return self.unembed.W_U

    def neuron_logit_weights(self) -> torch.Tensor:
        """W_L = W_out @ W_U of the last block's MLP: each neuron's direct path to the logits."""
        mlp = self.blocks[self.config.n_layers - 1].mlp
        return mlp.W_out.double() @ self.unembed.W_U.double()  # float64, as the measures read it

    def weight_groups(self) -> dict[str, list[str]]:
        """The measures' columns: embed, pos_embed, attn, mlp, unembed, ln (LayerNorms), other."""
        groups: dict[str, list[str]] = {}
        for name, value in self.checkpoint_state().items():
            group = weight_group(name, value)
            if group is not None:
                groups.setdefault(group, []).append(name)
        return groups


#: Weights in TransformerLens naming end in W_*, b_* or (LayerNorm) w / b; buffers (attn.mask,
#: attn.IGNORE) are not weights.
_WEIGHT_LEAF = re.compile(r"^(W_\w+|b_\w+|w|b)$")
_WEIGHT_GROUPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("embed", re.compile(r"^embed\.")),
    ("pos_embed", re.compile(r"^pos_embed\.")),
    ("attn", re.compile(r"^blocks\.\d+\.attn\.")),
    ("mlp", re.compile(r"^blocks\.\d+\.mlp\.")),
    ("unembed", re.compile(r"^unembed\.")),
    ("ln", re.compile(r"(^|\.)ln(\d+|_final)\.")),
)
#: the transformer's weight groups (``weight_norm_<group>`` in measures.csv), "other" last
WEIGHT_GROUP_NAMES: tuple[str, ...] = (*(g for g, _ in _WEIGHT_GROUPS), "other")


def weight_group(name: str, value: torch.Tensor) -> str | None:
    """The group a TransformerLens-named tensor's squared weight is reported under, None for a
    buffer (attn.mask, attn.IGNORE) or anything that is not a float weight."""
    if not _WEIGHT_LEAF.match(name.rsplit(".", 1)[-1]) or not torch.is_floating_point(value):
        return None
    return next((g for g, pattern in _WEIGHT_GROUPS if pattern.search(name)), "other")


def transformer_component_of(param_name: str) -> str:
    """Which transfer component a TransformerLens-named parameter (or buffer) belongs to."""
    parts = param_name.split(".")
    if parts[0] in ("embed", "pos_embed", "unembed"):
        return parts[0]
    if parts[0] == "ln_final":
        return "unembed"
    if parts[0] == "blocks" and len(parts) > 2:
        if parts[2] in ("attn", "ln1"):
            return "attn"
        if parts[2] in ("mlp", "ln2"):
            return "mlp"
    raise ValueError(f"parameter {param_name!r} belongs to no transfer component of {TRANSFORMER_COMPONENTS}")

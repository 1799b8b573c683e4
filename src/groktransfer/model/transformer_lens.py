"""TransformerLens interop across its major versions: export our models, import its files.

Why one module: TransformerLens 4.0 removed ``HookedTransformer`` (the class our checkpoints
were laid out for) in favour of ``TransformerBridge``, and its state dicts changed layout
with it. Everything that depends on which TransformerLens is installed lives here; the rest
of the package keeps TransformerLens 3's names (``blocks.0.attn.W_Q``, ``hook_pattern``).

Export (:func:`to_transformer_lens`) builds TransformerLens' own model holding our weights:

* 3.x (and 2.x): ``HookedTransformer(HookedTransformerConfig(**config))`` +
  ``load_state_dict`` -- our state dict is already in its names and shapes.
* 4.x: ``TransformerBridge.boot_native(config)`` (TransformerLens' own small transformer,
  no HuggingFace model) + ``load_state_dict(convert_tl_checkpoint(state_dict, bridge.cfg))``,
  the converter TransformerLens 4 ships for HookedTransformer-layout checkpoints. The
  bridge exposes every hook name of ours (``blocks.0.attn.hook_pattern``,
  ``blocks.0.mlp.hook_post``, ``blocks.0.hook_resid_post``, ...) as an alias with the same
  values, except ``hook_attn_scores``: TransformerLens 4.0-4.3 fire it with the softmaxed
  pattern (see :data:`TL4_DIVERGENT_HOOKS`).

Import (:func:`from_bridge_layout`): TransformerLens 4 saves ``bridge.state_dict()``
(``embed.weight``, ``blocks.0.attn.q.weight`` as [n_heads * d_head, d_model], ...; its
``tools/training.py`` checkpoints are exactly that). :func:`hooked_state_dict` inverts
``convert_tl_checkpoint`` in plain torch, so loading such a file needs no TransformerLens.
The flattened attention weights do not record how ``n_heads * d_head`` splits into heads,
so the number of heads comes from the caller's ``TransformerConfig`` or from a ``config`` saved
next to the weights (``{"state_dict": ..., "config": {...}}`` in TransformerLens' field
names, as :func:`bridge_checkpoint` writes it).
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from groktransfer.model.transformer import HookedGrokTransformer, TransformerConfig

#: Hooks whose value a TransformerLens 4 bridge reports differently from ours (and from
#: HookedTransformer). ``hook_attn_scores``: 4.0-4.3's ``AttentionBridge`` fires it with the
#: attention module's second output, which for ``boot_native`` models is the post-softmax
#: pattern (transformer_lens/model_bridge/generalized_components/attention.py, the
#: ``_fire_post_hoc_hook(self.hook_attn_scores, second_element, ...)`` call, 4.3.0 line 894).
TL4_DIVERGENT_HOOKS = ("hook_attn_scores",)

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def installed_major() -> int | None:
    """Major version of the installed ``transformer-lens`` distribution; None if absent.

    Read from the package metadata, not from the module: on 4.x even
    ``hasattr(transformer_lens, "HookedTransformer")`` raises ImportError (its
    ``__getattr__`` points removed names at the migration guide).
    """
    try:
        version = metadata.version("transformer-lens")
    except metadata.PackageNotFoundError:
        return None
    match = re.match(r"(\d+)", version)
    major = int(match.group(1)) if match else None
    if major == 0:  # a source checkout says 0.0.0: 4.x is the one without the HookedTransformer module
        major = 3 if importlib.util.find_spec("transformer_lens.HookedTransformer") is not None else 4
    return major


# --------------------------------------------------------------------------- export
def _as_model(source: Any) -> HookedGrokTransformer:
    if isinstance(source, (str, Path)):
        from groktransfer.model.checkpoint import load_checkpoint  # checkpoint.py imports this module

        source = load_checkpoint(source)
    if hasattr(source, "build_model"):  # a LoadedCheckpoint
        source = source.build_model()
    if not hasattr(source, "hooked_transformer_config_dict"):
        raise TypeError(
            f"cannot export a {type(source).__name__} to TransformerLens: expected a HookedGrokTransformer, "
            "a LoadedCheckpoint or a checkpoint path"
        )
    return source


def to_transformer_lens(source: Any, device: str | torch.device | None = None) -> torch.nn.Module:
    """TransformerLens' model holding ``source``'s weights, in eval mode.

    ``source``: a :class:`~groktransfer.model.transformer.HookedGrokTransformer`, a
    ``LoadedCheckpoint`` or a checkpoint path (any format ``load_checkpoint`` reads).
    Returns a ``HookedTransformer`` under TransformerLens 2.x/3.x and a ``TransformerBridge``
    under 4.x; both give our logits and, at our hook names, our activations.
    ``device`` defaults to the device of ``source``'s weights. The global RNG is left as
    it was (the weights are all overwritten, so no initialisation is drawn from it).
    """
    model = _as_model(source)
    if device is None:
        device = next(model.parameters()).device
    config = {**model.hooked_transformer_config_dict(), "device": str(device)}
    state = {k: v.detach() for k, v in model.checkpoint_state().items()}
    major = installed_major()
    if major is None:
        raise ImportError(
            "TransformerLens is not installed: pip install -c constraints.txt -e '.[tl]' (3.x) or '.[tl4]' (4.x)"
        )
    if major in (2, 3):
        import transformer_lens

        # init_weights=False and no seed: HookedTransformerConfig(seed=...) reseeds every
        # global RNG (torch, numpy, random), and initialisation would be overwritten anyway.
        hooked = transformer_lens.HookedTransformer(
            transformer_lens.HookedTransformerConfig(**{**config, "seed": None, "init_weights": False})
        )
        hooked.load_state_dict(state, strict=True)
        return hooked.eval()
    if major == 4:
        from transformer_lens import TransformerBridge
        from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

        # boot_native forks the RNG around its (seeded) initialisation, so the caller's RNG stays put.
        bridge = TransformerBridge.boot_native(config, device=device)
        bridge.load_state_dict(convert_tl_checkpoint(state, bridge.cfg), strict=True)
        return bridge.eval()
    raise ImportError(f"TransformerLens {metadata.version('transformer-lens')} is not supported (3.x and 4.x are)")


# --------------------------------------------------------------------------- import
def _heads(t: torch.Tensor, n_heads: int, key: str, pattern: str) -> torch.Tensor:
    """Unflatten TransformerLens 4's [.., (n_heads d_head), ..] to TransformerLens 3's per-head layout."""
    width = t.shape[0] if pattern == "q" else t.shape[-1]
    if width % n_heads:
        raise ValueError(f"{key!r} has shape {tuple(t.shape)}: its width {width} does not split into {n_heads} heads")
    d_head = width // n_heads
    if pattern == "q":  # q/k/v weight [(h e), d] -> [h, d, e]; bias [(h e)] -> [h, e]
        return t.reshape(n_heads, d_head, *t.shape[1:]).transpose(1, 2) if t.ndim == 2 else t.reshape(n_heads, d_head)
    return t.T.reshape(n_heads, d_head, t.shape[0])  # o weight [d, (h e)] -> [h, e, d]


#: bridge-layout suffix -> (HookedTransformer suffix, how the tensor changes), the inverse of
#: transformer_lens.utilities.tl_checkpoint_conversion._SUFFIX_CONVERSIONS for our architecture.
_SUFFIXES: tuple[tuple[str, str, str], ...] = (
    (".attn.q.weight", ".attn.W_Q", "heads"),
    (".attn.k.weight", ".attn.W_K", "heads"),
    (".attn.v.weight", ".attn.W_V", "heads"),
    (".attn.o.weight", ".attn.W_O", "out_heads"),
    (".attn.q.bias", ".attn.b_Q", "heads"),
    (".attn.k.bias", ".attn.b_K", "heads"),
    (".attn.v.bias", ".attn.b_V", "heads"),
    (".attn.o.bias", ".attn.b_O", "same"),
    (".mlp.in.weight", ".mlp.W_in", "transpose"),
    (".mlp.in.bias", ".mlp.b_in", "same"),
    (".mlp.out.weight", ".mlp.W_out", "transpose"),
    (".mlp.out.bias", ".mlp.b_out", "same"),
    (".weight", ".w", "same"),  # ln1 / ln2 (a block's only other parameters)
    (".bias", ".b", "same"),
)
_TOP = {
    "embed.weight": ("embed.W_E", "same"),
    "pos_embed.weight": ("pos_embed.W_pos", "same"),
    "ln_final.weight": ("ln_final.w", "same"),
    "ln_final.bias": ("ln_final.b", "same"),
    "unembed.weight": ("unembed.W_U", "transpose"),
    "unembed.bias": ("unembed.b_U", "same"),
}


def is_bridge_state_dict(obj: Any) -> bool:
    """True for a TransformerLens 4 ``bridge.state_dict()`` (``embed.weight``, ``blocks.0.attn.q.weight``)."""
    return isinstance(obj, Mapping) and "embed.weight" in obj and "blocks.0.attn.q.weight" in obj


def hooked_state_dict(sd: Mapping[str, Any], n_heads: int) -> dict[str, torch.Tensor]:
    """A TransformerLens 4 bridge state dict in TransformerLens 3 (``HookedTransformer``) names and shapes.

    The inverse of TransformerLens 4's ``convert_tl_checkpoint`` for the architectures
    ``HookedGrokTransformer`` has; a key it does not know (gated MLP, RMS norm scale
    without bias, rotary tables, ...) is refused by name rather than dropped.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        key = str(key)
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{key!r} is a {type(value).__name__}, not a tensor")
        if key in _TOP:
            name, how = _TOP[key]
        elif _BLOCK.match(key) and (hit := next((s for s in _SUFFIXES if key.endswith(s[0])), None)):
            name, how = key[: -len(hit[0])] + hit[1], hit[2]
            if hit[0] in (".weight", ".bias") and not re.match(r"^blocks\.\d+\.ln[12]\.(weight|bias)$", key):
                unknown.append(key)
                continue
        else:
            unknown.append(key)
            continue
        if how == "transpose" and value.ndim == 2:
            value = value.T
        elif how == "heads":
            value = _heads(value, n_heads, key, "q")
        elif how == "out_heads":
            value = _heads(value, n_heads, key, "o")
        out[name] = value.detach().to(torch.float32).contiguous()
    if unknown:
        raise ValueError(f"parameters a groktransfer model does not have: {sorted(unknown)}")
    return out


# A saved TransformerBridgeConfig / HookedTransformerConfig field -> the values under which
# our model computes the same function (anything else is refused, never approximated).
def _config_problems(cfg: Mapping[str, Any]) -> list:
    d_head = cfg.get("d_head")
    checks = {
        "positional_embedding_type": lambda v: v == "standard",
        "act_fn": lambda v: v in ("relu", "gelu"),
        "normalization_type": lambda v: v in (None, "LN"),
        "eps": lambda v: v == 1e-5,
        "gated_mlp": lambda v: not v,
        "final_rms": lambda v: not v,
        "n_key_value_heads": lambda v: v is None or v == cfg.get("n_heads"),
        "attention_dir": lambda v: v == "causal",
        "use_attn_scale": lambda v: bool(v),
        "attn_scale": lambda v: v == -1 or (isinstance(d_head, int) and math.isclose(float(v), math.sqrt(d_head))),
        "attn_scores_soft_cap": lambda v: v is None or v <= 0,
        "output_logits_soft_cap": lambda v: v is None or v <= 0,
    }
    return [f"{k}={cfg[k]!r}" for k, ok in checks.items() if k in cfg and not ok(cfg[k])]


def _model_config(sd: Mapping[str, torch.Tensor], cfg: Mapping[str, Any]) -> TransformerConfig:
    """Our TransformerConfig for a bridge state dict (already in TransformerLens 3 names) and its saved config."""
    problems = _config_problems(cfg)
    if problems:
        raise ValueError(f"its config describes a model groktransfer does not compute: {', '.join(problems)}")
    from groktransfer.model.checkpoint import infer_transformer_lens_config  # the shapes, as for a TL 3 file

    inferred = infer_transformer_lens_config(sd, act=str(cfg.get("act_fn", "relu")))
    stated = {k: cfg[k] for k in ("n_layers", "n_heads", "d_model", "d_head", "n_ctx", "d_vocab") if k in cfg}
    wrong = [
        f"{k}={v!r} (the weights have {getattr(inferred, k)})" for k, v in stated.items() if v != getattr(inferred, k)
    ]
    if wrong:
        raise ValueError(f"its config does not match its weights: {', '.join(wrong)}")
    return inferred


def bridge_checkpoint(bridge: Any) -> dict[str, Any]:
    """What to ``torch.save`` of a TransformerLens 4 model so that ``load_checkpoint`` reads it alone.

    ``{"state_dict": bridge.state_dict(), "config": <its config's plain fields>}``: the
    config's torch dtype and numpy scalars are left out or made Python numbers, because
    ``torch.load(weights_only=True)`` -- the only way this project reads a file -- refuses them.
    """
    config: dict[str, Any] = {}
    for key, value in bridge.cfg.to_dict().items():
        if value is None or type(value) in (bool, int, float, str):
            config[key] = value
        elif isinstance(value, float):  # numpy.float64 and friends
            config[key] = float(value)
    return {"state_dict": {k: v.detach().cpu() for k, v in bridge.state_dict().items()}, "config": config}


def from_bridge_layout(obj: Any, model_config: TransformerConfig | None) -> tuple[Any, TransformerConfig | None]:
    """A loaded file in TransformerLens 4's layout, as the TransformerLens 3 state dict it stands for.

    ``obj``: what ``torch.load`` returned. A bare ``bridge.state_dict()`` needs
    ``model_config`` (for the number of heads); ``{"state_dict": bridge.state_dict(),
    "config": {...}}`` carries its own (TransformerLens field names; ``n_heads`` at least).
    A given ``model_config`` (a job's model, as for a TransformerLens 3 file) takes precedence
    over a saved one. Returns ``(state dict in HookedTransformer names, the model's config)``;
    anything not in TransformerLens 4's layout comes back unchanged, with ``model_config``.
    Raises ValueError (the caller names the file) on a layout our model cannot hold.
    """
    wrapped = isinstance(obj, Mapping) and "format" not in obj and is_bridge_state_dict(obj.get("state_dict"))
    if not (wrapped or is_bridge_state_dict(obj)):
        return obj, model_config
    sd, saved = (obj["state_dict"], obj.get("config")) if wrapped else (obj, None)
    if model_config is None and not isinstance(saved, Mapping):
        width = tuple(sd["blocks.0.attn.q.weight"].shape)
        raise ValueError(
            f"a TransformerLens 4 state dict does not record its number of heads (blocks.0.attn.q.weight is "
            f"{width} = [n_heads * d_head, d_model]): pass the model's shape (load_checkpoint(path, model_config=...)) "
            "or save the weights with their config: torch.save(groktransfer.model.transformer_lens.bridge_checkpoint(bridge), path)"
        )
    n_heads = model_config.n_heads if model_config is not None else saved.get("n_heads")
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"its config's n_heads must be a positive int, got {n_heads!r}")
    hooked = hooked_state_dict(sd, n_heads)
    return hooked, model_config if model_config is not None else _model_config(hooked, saved)

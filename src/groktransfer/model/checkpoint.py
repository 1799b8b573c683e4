"""Checkpoints: this project's format, and import of the original paper's.

Our format (``"format": "groktransfer/2"``) is a plain dict that
``torch.load(path, weights_only=True)`` reads without this package::

    {"format", "architecture" (the registered model: ``model.architecture``),
     "state_dict" (the model's ``checkpoint_state``: for the transformer, TransformerLens
     names and shapes), "model_config" (the architecture's config as a dict), "epoch",
     "metrics", **the model's checkpoint_extras (the transformer's: "config", its
     HookedTransformerConfig fields), **extra}

Loading rebuilds the class the file names and checks every key and shape against it, so a
plugin model's files load like the transformer's. Version 1 files (before ``architecture``
was recorded) are the transformer's and read as such.

Loading never unpickles arbitrary objects: a checkpoint can come from a shared
directory or the internet (the paper's released runs), and ``weights_only=True`` is what
keeps a crafted file from executing code. Any failure -- missing, truncated, corrupt,
pickled objects, wrong keys or shapes -- is a :class:`CheckpointError` naming the file.

The original format of Nanda et al. (2023, github.com/mechanistic-interpretability-grokking/
progress-measures-paper) stores each weight in a different layout (``W_E`` transposed,
``W_O`` as one [d_model, heads * d_head] matrix, ...). :func:`convert_nanda2023_state_dict`
maps it onto ours; the imported model then computes the same logits as the original.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union

import torch

from groktransfer.config.schema import ModelConfig, to_typed
from groktransfer.model.protocol import GrokModel
from groktransfer.model.registry import MODELS, model_class
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.transformer_lens import from_bridge_layout
from groktransfer.utils.atomic import atomic_open
from groktransfer.utils.errors import UserError

FORMAT = "groktransfer/2"
#: versions this code reads: 1 is 2 without "architecture" (every version-1 file is the transformer's)
READABLE_FORMATS = ("groktransfer/1", FORMAT)
#: the architecture of a file that does not name one
DEFAULT_ARCHITECTURE = "hooked_transformer"
SourceFormat = Literal["groktransfer", "nanda2023", "transformer_lens"]
PathLike = Union[str, "os.PathLike[str]"]

#: Keys save_checkpoint owns; ``extra`` may not override them.
_RESERVED_KEYS = ("format", "architecture", "state_dict", "config", "model_config", "epoch", "metrics")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file could not be read, recognised or matched to its config."""


@dataclass
class LoadedCheckpoint:
    """A checkpoint in our layout, whatever format the file was in."""

    path: str
    state_dict: dict[str, torch.Tensor]
    model_config: ModelConfig
    epoch: int | None
    metrics: dict[str, Any]
    source_format: SourceFormat
    raw: dict[str, Any] = field(default_factory=dict)  # every other top-level entry of the file

    @property
    def architecture(self) -> str:
        return str(self.model_config.architecture)

    def build_model(self) -> GrokModel:
        """A model holding exactly these weights (the init seed is irrelevant: all are overwritten)."""
        model = model_class(self.model_config)(self.model_config, seed=0)
        model.load_state_dict(self.state_dict)
        return model


# --------------------------------------------------------------------------- saving
def _plain(value: Any, where: str) -> Any:
    """Recursively convert to types ``weights_only=True`` accepts; refuse anything else.

    Refusing at save time (rather than at load time, epochs later) names the offending
    entry while the caller can still fix it.
    """
    if isinstance(value, Enum):  # a config choice: stored as its plain string
        return str(value.value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return value.item()  # numpy scalars
    raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a weights-only checkpoint")


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through ``atomic_open``: a reader (or a job killed mid-write) sees
    the old file or the complete new one, never a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def save_checkpoint(
    path: PathLike,
    model: GrokModel,
    epoch: int,
    metrics: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` atomically in the ``groktransfer/2`` format; returns the path."""
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra may not override checkpoint key(s) {clash}")
    extras = dict(model.checkpoint_extras())
    unknown = sorted(set(extras) - {"config"})
    if unknown:
        raise ValueError(f"{type(model).__name__}.checkpoint_extras may only fill 'config', not {unknown}")
    payload = {
        "format": FORMAT,
        "architecture": str(model.config.architecture),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.checkpoint_state().items()},
        **_plain(extras, "checkpoint_extras"),
        "model_config": _plain(asdict(model.config), "model_config"),
        "epoch": int(epoch),
        "metrics": _plain(dict(metrics), "metrics"),
        **_plain(extra, "extra"),
    }
    path = Path(path)
    _atomic_torch_save(payload, path)
    return path


# --------------------------------------------------------------------------- loading
def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message suggests weights_only=False; keep only the line naming the object.
        detail = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln), str(exc).strip())
        raise CheckpointError(
            f"checkpoint {path} was refused by torch.load(weights_only=True): it contains pickled "
            f"Python objects beyond tensors and plain containers, which this project never loads "
            f"because unpickling can run arbitrary code. Re-save it as plain dicts/tensors. ({detail})"
        ) from exc
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise CheckpointError(
            f"checkpoint {path} could not be read (truncated or corrupt?): {type(exc).__name__}: {exc}"
        ) from exc


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "embed.W_E" in obj


def detect_format(obj: Any) -> SourceFormat:
    """Which format a loaded checkpoint object is in.

    ``groktransfer``: our ``format`` tag. ``nanda2023``: a ``model`` state dict or a
    ``state_dicts`` list whose ``W_O`` is 2-D ([d_model, heads * d_head]) -- the layout
    is recognised by shape, not by a tag the paper's files do not have.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict at the top level, found {type(obj).__name__}")
    if (
        _is_state_dict(obj)
        and isinstance(obj.get("blocks.0.attn.W_O"), torch.Tensor)
        and obj["blocks.0.attn.W_O"].ndim == 3
    ):
        return "transformer_lens"  # a bare HookedTransformer.state_dict()
    fmt = obj.get("format")
    if isinstance(fmt, str) and fmt.startswith("groktransfer/"):
        if fmt not in READABLE_FORMATS:
            raise CheckpointError(
                f"unsupported checkpoint version {fmt!r} (this code reads {', '.join(READABLE_FORMATS)})"
            )
        return "groktransfer"
    candidates: list[Any] = []
    if "model" in obj:
        candidates.append(obj["model"])
    if isinstance(obj.get("state_dicts"), (list, tuple)) and obj["state_dicts"]:
        candidates.append(obj["state_dicts"][-1])
    for sd in candidates:
        if _is_state_dict(sd):
            W_O = sd.get("blocks.0.attn.W_O")
            if isinstance(W_O, torch.Tensor) and W_O.ndim == 2:
                return "nanda2023"
    if (
        _is_state_dict(obj)
        and isinstance(obj.get("blocks.0.attn.W_O"), torch.Tensor)
        and obj["blocks.0.attn.W_O"].ndim == 3
    ):
        return "transformer_lens"  # a bare HookedTransformer.state_dict(), e.g. ARENA's sum_model.pt
    raise CheckpointError(
        f"unrecognised checkpoint layout (top-level keys {sorted(map(str, obj))[:12]}); expected "
        f"'format': {FORMAT!r} or the original paper's 'model'/'state_dicts' with a 2-D attn.W_O"
    )


def validate_state_dict(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig, source: str = "") -> None:
    """Check keys and shapes against what ``cfg``'s architecture builds; name every mismatch."""
    expected = model_class(cfg).state_shapes(cfg)
    prefix = f"checkpoint {source}: " if source else ""
    problems: list[str] = []
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing:
        problems.append(f"missing parameter(s) {missing}")
    if unexpected:
        problems.append(f"unexpected parameter(s) {unexpected}")
    for name in sorted(set(expected) & set(state_dict)):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):
            problems.append(f"parameter {name!r} is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != expected[name]:
            problems.append(
                f"parameter {name!r} has shape {tuple(value.shape)} but the config expects {expected[name]}"
            )
    if problems:
        raise CheckpointError(prefix + "; ".join(problems))


def _with_default_buffers(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The state with the architecture's constants (the transformer's attention mask) filled in."""
    return model_class(cfg).complete_state(dict(state_dict), cfg)


def model_config_from_hooked_transformer_config(tl: Mapping[str, Any]) -> TransformerConfig:
    """Fallback for a checkpoint that has only HookedTransformerConfig fields.

    The ``*_bias`` training flags are not part of that config; ModelConfig's defaults
    (Nanda et al.'s: only the MLP biases trained) are assumed.
    """
    try:
        return TransformerConfig(
            name=str(tl.get("model_name", "one_layer")),
            n_layers=int(tl["n_layers"]),
            n_heads=int(tl["n_heads"]),
            d_model=int(tl["d_model"]),
            d_head=int(tl["d_head"]),
            d_mlp=int(tl["d_mlp"]),
            act=str(tl.get("act_fn", "relu")),
            normalization=tl.get("normalization_type"),
            n_ctx=int(tl["n_ctx"]),
            d_vocab=int(tl["d_vocab"]),
            d_vocab_out=int(tl.get("d_vocab_out") or tl["d_vocab"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"incomplete HookedTransformerConfig in checkpoint: {exc}") from exc


def _load_groktransfer(obj: Mapping[str, Any], path: Path) -> LoadedCheckpoint:
    state_dict = obj.get("state_dict")
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"checkpoint {path} has no 'state_dict' dict")
    try:
        if isinstance(obj.get("model_config"), Mapping):
            data = dict(obj["model_config"])
            architecture = str(obj.get("architecture") or data.get("architecture") or DEFAULT_ARCHITECTURE)
            if architecture not in MODELS:
                raise CheckpointError(
                    f"its model architecture {architecture!r} is not registered here (registered: "
                    f"{', '.join(MODELS.names())}); install the plugin that provides it"
                )
            cfg = to_typed(
                MODELS.get(architecture).config_class, {**data, "architecture": architecture}, label="model_config"
            )
        elif isinstance(obj.get("config"), Mapping):
            cfg = model_config_from_hooked_transformer_config(obj["config"])
        else:
            raise CheckpointError("neither 'model_config' nor 'config' is present")
        state_dict = _with_default_buffers({str(k): v for k, v in state_dict.items()}, cfg)
        validate_state_dict(state_dict, cfg)
    except (CheckpointError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    epoch = obj.get("epoch")
    return LoadedCheckpoint(
        path=str(path),
        state_dict=state_dict,
        model_config=cfg,
        epoch=None if epoch is None else int(epoch),
        metrics=dict(obj.get("metrics") or {}),
        source_format="groktransfer",
        raw={k: v for k, v in obj.items() if k != "state_dict"},
    )


# --------------------------------------------------------------------------- the paper's format
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")
_PAPER_IGNORED_BUFFERS = ("attn.mask",)


def infer_nanda2023_config(
    state_dict: Mapping[str, torch.Tensor], paper_config: Mapping[str, Any]
) -> TransformerConfig:
    """ModelConfig of a paper-format state dict, from its shapes (cross-checked with its config).

    The paper's unembedding has p+1 outputs (its loss ran over all of them, '=' included),
    so the imported model keeps ``d_vocab_out = p + 1``.
    """
    d_model, d_vocab = state_dict["embed.W_E"].shape
    n_heads, d_head, _ = state_dict["blocks.0.attn.W_Q"].shape
    d_mlp = state_dict["blocks.0.mlp.W_in"].shape[0]
    n_layers = 1 + max(int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k)))
    act_type = str(paper_config.get("act_type", "ReLU")).lower()
    if act_type not in ("relu", "gelu"):
        raise CheckpointError(f"unsupported act_type {paper_config.get('act_type')!r} (expected ReLU or GeLU)")
    cfg = TransformerConfig(
        name="nanda2023",
        n_layers=n_layers,
        n_heads=int(n_heads),
        d_model=int(d_model),
        d_head=int(d_head),
        d_mlp=int(d_mlp),
        act=act_type,
        normalization=None,
        n_ctx=int(state_dict["pos_embed.W_pos"].shape[0]),
        d_vocab=int(d_vocab),
        d_vocab_out=int(state_dict["unembed.W_U"].shape[1]),
        attn_bias=False,
        mlp_bias=True,
        unembed_bias=False,
    )
    stated = {
        "d_model": cfg.d_model,
        "num_heads": cfg.n_heads,
        "d_mlp": cfg.d_mlp,
        "n_ctx": cfg.n_ctx,
        "num_layers": cfg.n_layers,
        "d_head": cfg.d_head,
    }
    for key, actual in stated.items():
        if key in paper_config and int(paper_config[key]) != actual:
            raise CheckpointError(f"config says {key}={paper_config[key]} but the weights have {actual}")
    if "p" in paper_config and int(paper_config["p"]) + 1 != cfg.d_vocab:
        raise CheckpointError(f"config says p={paper_config['p']} but W_E has {cfg.d_vocab} tokens (expected p+1)")
    return cfg


def _check_paper_shapes(sd: Mapping[str, torch.Tensor], cfg: TransformerConfig) -> None:
    """Every weight must have the paper-layout shape implied by the inferred config."""
    h, e, d, m = cfg.n_heads, cfg.d_head, cfg.d_model, cfg.d_mlp
    expected: dict[str, tuple[int, ...]] = {
        "embed.W_E": (d, cfg.d_vocab),
        "pos_embed.W_pos": (cfg.n_ctx, d),
        "unembed.W_U": (d, cfg.d_vocab_out),
    }
    for i in range(cfg.n_layers):
        a, b = f"blocks.{i}.attn.", f"blocks.{i}.mlp."
        expected.update({a + w: (h, e, d) for w in ("W_Q", "W_K", "W_V")})
        expected.update({a + "W_O": (d, h * e), b + "W_in": (m, d), b + "b_in": (m,)})
        expected.update({b + "W_out": (d, m), b + "b_out": (d,)})
    wrong = [
        f"parameter {name!r} has shape {tuple(sd[name].shape)} but the paper layout implies {shape}"
        for name, shape in expected.items()
        if tuple(sd[name].shape) != shape
    ]
    if wrong:
        raise CheckpointError("; ".join(wrong))


def convert_nanda2023_state_dict(sd: Mapping[str, torch.Tensor], cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    """Map the paper's parameter layout onto ours (TransformerLens').

    Paper -> ours: ``W_E`` [d, v] -> [v, d]; ``W_Q/K/V`` [h, e, d] -> [h, d, e];
    ``W_O`` [d, h*e] with head-major columns -> ``W_O.T`` viewed as [h, e, d];
    ``W_in`` [m, d] -> [d, m]; ``W_out`` [d, m] -> [m, d]; ``W_U`` unchanged. The paper
    has no attention or unembedding biases: ours are zero.
    """
    h, e, d = cfg.n_heads, cfg.d_head, cfg.d_model
    out: dict[str, torch.Tensor] = {
        "embed.W_E": sd["embed.W_E"].T,
        "pos_embed.W_pos": sd["pos_embed.W_pos"],
        "unembed.W_U": sd["unembed.W_U"],
        "unembed.b_U": torch.zeros(cfg.d_vocab_out),
    }
    for i in range(cfg.n_layers):
        a, m = f"blocks.{i}.attn.", f"blocks.{i}.mlp."
        for w in ("W_Q", "W_K", "W_V"):
            out[a + w] = sd[a + w].transpose(1, 2)
        out[a + "W_O"] = sd[a + "W_O"].T.reshape(h, e, d)
        for b in ("b_Q", "b_K", "b_V"):
            out[a + b] = torch.zeros(h, e)
        out[a + "b_O"] = torch.zeros(d)
        out[m + "W_in"] = sd[m + "W_in"].T
        out[m + "b_in"] = sd[m + "b_in"]
        out[m + "W_out"] = sd[m + "W_out"].T
        out[m + "b_out"] = sd[m + "b_out"]
    out = {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}
    return _with_default_buffers(out, cfg)


def _check_paper_keys(sd: Mapping[str, Any]) -> None:
    """Refuse what the conversion would silently drop (LayerNorm, unknown weights)."""
    known = {"embed.W_E", "pos_embed.W_pos", "unembed.W_U"}
    block_params = ("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.b_in", "mlp.W_out", "mlp.b_out")
    layers = {int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k))}
    for i in layers:
        known |= {f"blocks.{i}.{p}" for p in block_params}
        known |= {f"blocks.{i}.{b}" for b in _PAPER_IGNORED_BUFFERS}
    missing = sorted(k for k in known if k not in sd and not k.endswith(_PAPER_IGNORED_BUFFERS))
    unknown = sorted(set(sd) - known)
    if missing:
        raise CheckpointError(f"paper-format state dict lacks {missing}")
    if unknown:
        hint = " (LayerNorm models, use_ln=True, are not supported)" if any("ln" in k for k in unknown) else ""
        raise CheckpointError(f"paper-format state dict has parameters this import does not know: {unknown}{hint}")


def _load_nanda2023(obj: Mapping[str, Any], path: Path, index: int | None) -> LoadedCheckpoint:
    epoch: int | None = None
    if isinstance(obj.get("state_dicts"), (list, tuple)) and obj["state_dicts"]:
        state_dicts = obj["state_dicts"]
        i = len(state_dicts) - 1 if index is None else index
        if not -len(state_dicts) <= i < len(state_dicts):
            raise CheckpointError(
                f"checkpoint {path} holds {len(state_dicts)} state dicts; index {index} is out of range"
            )
        sd = state_dicts[i]
        epochs = obj.get("epochs", obj.get("checkpoint_epochs"))
        if isinstance(epochs, (list, tuple)) and len(epochs) == len(state_dicts):
            epoch = int(epochs[i])
    else:
        sd = obj["model"]
        if isinstance(obj.get("epoch"), int):
            epoch = obj["epoch"]
    paper_config = obj.get("config") if isinstance(obj.get("config"), Mapping) else {}
    try:
        if paper_config.get("use_ln"):
            raise CheckpointError("the paper's LayerNorm variant (use_ln=True) is not supported")
        _check_paper_keys(sd)
        cfg = infer_nanda2023_config(sd, paper_config)
        _check_paper_shapes(sd, cfg)
        state_dict = convert_nanda2023_state_dict(sd, cfg)
        validate_state_dict(state_dict, cfg)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path} (original paper format): {exc}") from exc
    except (KeyError, IndexError, RuntimeError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} (original paper format): inconsistent weights: {type(exc).__name__}: {exc}"
        ) from exc
    return LoadedCheckpoint(
        path=str(path),
        state_dict=state_dict,
        model_config=cfg,
        epoch=epoch,
        metrics={k: float(obj[k]) for k in ("train_loss", "test_loss") if isinstance(obj.get(k), (int, float))},
        source_format="nanda2023",
        raw={k: v for k, v in obj.items() if k not in ("model", "state_dicts")},
    )


def _load_transformer_lens_shaped(obj: Mapping[str, Any], path: Path, cfg: TransformerConfig) -> LoadedCheckpoint:
    """A bare TransformerLens state dict read with the shape given in config (the job's model)."""
    try:
        state_dict = _with_default_buffers({str(k): v for k, v in obj.items()}, cfg)
        validate_state_dict(state_dict, cfg)
    except (CheckpointError, TypeError, ValueError) as exc:
        W_U = obj.get("unembed.W_U")
        hint = ""
        if (
            isinstance(W_U, torch.Tensor)
            and W_U.ndim == 2
            and cfg.d_vocab_out is not None
            and W_U.shape[1] > cfg.d_vocab_out
        ):
            hint = f" (the file has {W_U.shape[1]} outputs: set model.d_vocab_out={W_U.shape[1]})"
        raise CheckpointError(f"checkpoint {path} (plain TransformerLens state dict): {exc}{hint}") from exc
    return LoadedCheckpoint(
        path=str(path),
        state_dict=state_dict,
        model_config=cfg,
        epoch=None,
        metrics={},
        source_format="transformer_lens",
    )


def load_checkpoint(
    path: PathLike, index: int | None = None, model_config: ModelConfig | None = None
) -> LoadedCheckpoint:
    """Load a checkpoint of any known format into our layout (CPU, ``weights_only=True``).

    ``index`` picks one of several state dicts in a paper-format ``state_dicts`` file
    (default: the last); it is ignored for single-model files. ``model_config`` is the
    shape of a plain TransformerLens state dict (which carries none); the other formats
    carry their own.
    """
    path = Path(path)
    obj = _torch_load(path)
    try:  # TransformerLens 4's layout, as the TransformerLens 3 state dict it stands for; other files unchanged
        obj, model_config = from_bridge_layout(obj, model_config)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} (TransformerLens 4 state dict): {exc}") from exc
    try:
        fmt = detect_format(obj)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    if fmt == "groktransfer":
        return _load_groktransfer(obj, path)
    if fmt == "transformer_lens":
        if model_config is None:  # the shape from the weights
            return _load_transformer_lens(obj, path)
        return _load_transformer_lens_shaped(obj, path, model_config)
    return _load_nanda2023(obj, path, index)


def infer_transformer_lens_config(sd: Mapping[str, torch.Tensor], act: str = "relu") -> TransformerConfig:
    """ModelConfig of a bare TransformerLens state dict, from its shapes.

    What shapes cannot tell: the activation (``act``, default relu) and whether a
    LayerNorm was folded away (``LNPre``: no ``ln*`` keys) -- such a dict reads as a model
    without LayerNorm, which is wrong; fold nothing before saving, or use our format.
    No ``mlp`` key in any block means TransformerLens' ``attn_only=True`` (ARENA's digit-sum
    model); MLP keys in some blocks only cannot be such a model and are refused.
    """
    layers = sorted({int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k))})
    W_Q = sd["blocks.0.attn.W_Q"]
    if not isinstance(W_Q, torch.Tensor) or W_Q.ndim != 3:
        raise CheckpointError("blocks.0.attn.W_Q must be a [n_heads, d_model, d_head] tensor")
    n_heads, d_model, d_head = (int(x) for x in W_Q.shape)
    with_mlp = [i for i in layers if f"blocks.{i}.mlp.W_in" in sd]
    if with_mlp and len(with_mlp) != len(layers):
        raise CheckpointError(
            f"blocks {with_mlp} have an MLP and the others do not: neither a full nor an attention-only model"
        )
    attn_only = not with_mlp
    return TransformerConfig(
        name="transformer_lens",
        n_layers=len(layers),
        n_heads=n_heads,
        d_model=d_model,
        d_head=d_head,
        d_mlp=1 if attn_only else int(sd["blocks.0.mlp.W_in"].shape[1]),
        act=act,
        attn_only=attn_only,
        normalization="LN" if "ln_final.w" in sd else None,
        n_ctx=int(sd["pos_embed.W_pos"].shape[0]),
        d_vocab=int(sd["embed.W_E"].shape[0]),
        d_vocab_out=int(sd["unembed.W_U"].shape[1]),
        attn_bias=True,
        unembed_bias=True,
    )


def _load_transformer_lens(obj: Mapping[str, Any], path: Path) -> LoadedCheckpoint:
    try:
        sd = {str(k): v for k, v in obj.items()}
        cfg = infer_transformer_lens_config(sd)
        state_dict = _with_default_buffers(sd, cfg)
        validate_state_dict(state_dict, cfg)
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} (bare TransformerLens state dict): {exc}") from exc
    return LoadedCheckpoint(
        path=str(path),
        state_dict=state_dict,
        model_config=cfg,
        epoch=None,
        metrics={},
        source_format="transformer_lens",
        raw={},
    )


def load_into(model: GrokModel, loaded: LoadedCheckpoint) -> None:
    """Copy a loaded checkpoint into an existing model, refusing any key or shape mismatch.

    The parameters keep their identity (an optimizer built on them stays valid) and
    their ``requires_grad``.
    """
    validate_state_dict(loaded.state_dict, model.config, loaded.path)
    model.load_state_dict(loaded.state_dict, strict=True)

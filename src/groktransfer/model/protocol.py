"""The model protocol: what a registered architecture provides, and what it gets for free.

groktransfer trains, transfers, resumes, ensembles, checkpoints and analyses any model that
subclasses :class:`GrokModel` and is registered under a name (``model.architecture``;
:func:`groktransfer.model.registry.register_model`). Generic code -- training, run
directories, transfer, jobs, analysis -- talks to a model only through this class: it never
imports the built-in transformer or asks for TransformerLens parameter names. The built-in
:class:`~groktransfer.model.transformer.HookedGrokTransformer` is one implementation;
``examples/parity_plugin`` has a plain MLP as another.

What a model **must** provide:

* ``config_class``: its config dataclass, a subclass of
  :class:`~groktransfer.config.schema.ModelConfig` (Hydra composes it as the ``model`` block;
  a key it does not declare is refused, exit 2) and ``__init__(cfg, seed)``: initialisation is
  a pure function of the seed;
* :meth:`GrokModel.resolve_config` (sizes the task implies) and
  :meth:`GrokModel.config_problems` (every reason a config cannot build, checked before
  anything is written);
* :meth:`GrokModel.forward_last`: the logits of the answer read at the last position,
  ``[batch, pos] -> [batch, d_vocab_out]``;
* ``components`` and :meth:`GrokModel.component_of`: the named parts a transfer condition
  copies, re-initialises or freezes, and :meth:`GrokModel.reinit_component`.

What it **may** provide (each is a declared capability, so callers choose by what a model
offers, never by its class):

* ``every_position`` and ``forward``: logits at every position, ``[batch, pos, d_vocab_out]``
  (tasks with several answer positions need it: the digit sums);
* :meth:`GrokModel.stacked_forward_last`: a seed ensemble's forward over parameters with a
  leading member axis (``training.ensemble`` trains members together only with it);
* ``readings``: what the measures and the interpretability toolkit may read (:class:`Reading`);
* ``embedding_map``: ``transfer.embed_map`` can hand it a source embedding through a map;
* checkpoint extras (:meth:`GrokModel.checkpoint_extras`: the transformer stores a
  ``HookedTransformerConfig`` so TransformerLens loads its files) and state completion
  (:meth:`GrokModel.complete_state`: constant buffers a file may leave out).

What it gets for free: checkpoints (``groktransfer/2``: its state dict, its config and its
architecture's name; loading rebuilds *that* class and checks every key and shape against it),
resume after a kill, the source cache, grokked / memorized / any-epoch starts with shape
checks run before a source is trained, ensembles where it can stack, the optimizers and
gradient filters, W&B, the sweep report's answer, curves and measures.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from groktransfer.config.schema import ModelConfig
from groktransfer.tasks.family import TaskShape
from groktransfer.utils.choices import Choice

#: A seed ensemble's forward: parameters ``{name: [member, ...]}``, tokens
#: ``[member, batch, pos]`` -> logits ``[member, batch, d_vocab_out]``; a ``cache`` dict, when
#: given, receives ``"neurons"`` ``[member, batch, n_neurons]`` (what :attr:`Reading.neurons` reads).
StackedForward = Callable[..., torch.Tensor]


class Reading(Choice):
    """What analysis code may read from a model; a model lists those it supports in ``readings``.

    Each reading is a method (or a convention) with a fixed meaning, so a measure or a report
    section asks ``Reading.x in model.readings`` and then reads it the same way from any model.
    """

    #: :meth:`GrokModel.last_position_activations`: last-position logits and the activations of
    #: the neurons that write (through :meth:`GrokModel.neuron_logit_weights`) to the output
    neurons = "neurons"
    #: :meth:`GrokModel.token_embedding`: ``[d_vocab, d_embed]``, one row per input token
    token_embedding = "token_embedding"
    #: :meth:`GrokModel.neuron_logit_weights`: ``[n_neurons, d_vocab_out]``, each neuron's direct
    #: effect on the logits (the transformer's W_L = W_out @ W_U)
    neuron_logits = "neuron_logits"
    #: :meth:`GrokModel.unembedding`: ``[d_model, d_vocab_out]``
    unembedding = "unembedding"
    #: attention patterns at TransformerLens hook names (``blocks.{i}.attn.hook_pattern``) through
    #: ``run_with_cache``
    attention = "attention"
    #: every TransformerLens hook name through ``run_with_cache`` / ``run_with_hooks``, and its
    #: parameters by TransformerLens names (``state_dict``)
    transformer_lens = "transformer_lens"


class GrokModel(nn.Module):
    """Base class of every registered model (see the module docstring for the protocol)."""

    #: the name ``model.architecture`` selects it by (set when registered)
    architecture: ClassVar[str] = ""
    #: its config schema (a ModelConfig subclass)
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: named transfer components, in order
    components: ClassVar[tuple[str, ...]] = ()
    #: what analysis may read (see :class:`Reading`)
    readings: ClassVar[frozenset[Reading]] = frozenset()
    #: ``forward(tokens)`` gives logits at every position (tasks with several answer positions)
    every_position: ClassVar[bool] = False
    #: ``transfer.embed_map`` can hand it a source embedding (:meth:`attach_embedding_map`)
    embedding_map: ClassVar[bool] = False

    config: Any
    seed: int

    # ---- config (class level: checked before anything is built or written) ----------------
    @classmethod
    def resolve_config(cls, cfg: Any, d_vocab: int, d_vocab_out: int, seq_len: int) -> Any:
        """``cfg`` with what the task implies filled in (vocabularies, context length); the default
        fills ``d_vocab`` / ``d_vocab_out`` / ``n_ctx`` where the config has them and they are None."""
        values = {"d_vocab": d_vocab, "d_vocab_out": d_vocab_out, "n_ctx": seq_len}
        names = {f.name for f in dataclasses.fields(cfg)}
        fill = {k: v for k, v in values.items() if k in names and getattr(cfg, k) is None}
        return dataclasses.replace(cfg, **fill) if fill else cfg

    @classmethod
    def config_problems(cls, cfg: Any, prefix: str = "model") -> list[str]:
        """Every reason ``cfg`` cannot build this model beyond the ranges declared on its config's
        fields (validation checks those for every model: ``groktransfer.config.ranges``), each
        naming its key under ``prefix``."""
        return []

    @classmethod
    def task_problems(cls, cfg: Any, task: TaskShape) -> list[str]:
        """Reasons a model of this (unresolved) config cannot read the task: the default refuses
        a task answered inside the sequence (at several positions, or at one that is not the
        last) when the model gives logits at the last position only."""
        if (task.answer_positions > 1 or not task.answer_at_last_position) and not cls.every_position:
            return [
                f"model.architecture={cls.architecture}: {task.label} is answered at {task.answer_positions} "
                "position(s) inside the sequence, and this model gives logits at the last position only"
            ]
        return []

    @classmethod
    def on_meta_device(cls, cfg: Any) -> GrokModel:
        """A model of this config on PyTorch's meta device: every shape, no memory. What the
        shape checks of transfer and of checkpoint files read, before anything is trained."""
        with torch.device("meta"):
            return cls(cfg, seed=0)

    @classmethod
    def parameter_bytes(cls, cfg: Any) -> int:
        """Bytes of the parameters a model of this config holds (counted on the meta device)."""
        return sum(p.numel() * p.element_size() for p in cls.on_meta_device(cfg).parameters())

    @classmethod
    def activation_bytes(cls, cfg: Any, batch: int, task: TaskShape, training: bool) -> int:
        """Peak bytes of the intermediate tensors of one step on ``batch`` examples: forward, float64
        loss and backward when ``training``, else the forward alone. What the memory estimate made
        before anything is allocated reads (``groktransfer.training.memory``).

        The default traces the step on the meta device at batch 1 and 2 and extrapolates
        linearly (activations grow with the batch; the rest does not). A model whose step is
        expensive to trace (many layers) says it in closed form instead.
        """
        if batch <= 0:
            return 0
        model = cls.on_meta_device(cfg)
        one, two = (_traced_step_bytes(model, b, task, training) for b in (1, 2))
        return max(0, one + (two - one) * (batch - 1))

    @classmethod
    def state_shapes(cls, cfg: Any) -> dict[str, tuple[int, ...]]:
        """The shape of every entry of the state dict a model of this config has."""
        return {name: tuple(t.shape) for name, t in cls.on_meta_device(cfg).state_dict().items()}

    # ---- forwards -------------------------------------------------------------------------
    def forward_last(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the answer at the last position: ``[batch, pos] -> [batch, d_vocab_out]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_last")

    @classmethod
    def stacked_forward_last(cls, cfg: Any) -> StackedForward | None:
        """The forward of a seed ensemble of models of this config, or None (members then train
        as separate jobs). Members must never mix: member i's logits equal its own model's."""
        return None

    # ---- transfer -------------------------------------------------------------------------
    def component_of(self, name: str) -> str:
        """The transfer component a parameter (or buffer) belongs to."""
        raise NotImplementedError(f"{type(self).__name__} must implement component_of")

    def component_parameters(self, component: str) -> dict[str, nn.Parameter]:
        """The parameters of one component."""
        return {n: p for n, p in self.named_parameters() if self.component_of(n) == component}

    def reinit_component(self, component: str, seed: int) -> None:
        """Re-initialise one component in place, exactly as ``type(self)(cfg, seed)`` holds it
        there (what makes a transfer's ``reinit`` comparable with a random start)."""
        raise NotImplementedError(f"{type(self).__name__} must implement reinit_component")

    def trainable_by_config(self, name: str) -> bool:
        """False for a parameter the config keeps fixed (the transformer's untrained biases)."""
        return True

    def adapt_source_state(self, state: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
        """A source state dict adapted to this model where the adaptation loses nothing (the
        original paper's extra '=' output column); each adaptation appends a note."""
        return state

    def attach_embedding_map(
        self, source_state: dict[str, torch.Tensor], seed: int, trainable: bool
    ) -> tuple[list[str], list[str], str]:
        """Replace the token embedding by the source's (from its state dict) times a fresh map
        (models with ``embedding_map``). Returns what the run's source record says: the names
        taken from the source, the map's own parameter names, and a note."""
        raise NotImplementedError(f"{type(self).__name__} has no embedding map")

    # ---- checkpoints ----------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint file holds (default: the state dict)."""
        return self.state_dict()

    def checkpoint_extras(self) -> dict[str, Any]:
        """Plain data stored beside the weights for other tools (the transformer's
        ``HookedTransformerConfig`` dict under ``config``)."""
        return {}

    @classmethod
    def complete_state(cls, state: dict[str, torch.Tensor], cfg: Any) -> dict[str, torch.Tensor]:
        """A state dict read from a file with the constants of the architecture filled in."""
        return state

    # ---- readings -------------------------------------------------------------------------
    def has_hooks(self) -> bool:
        """Whether anything is attached that a fused path would skip (the ensemble refuses then)."""
        return False

    def last_position_activations(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:attr:`Reading.neurons`: last-position logits ``[batch, d_vocab_out]`` and neuron activations ``[batch, n_neurons]``."""
        raise NotImplementedError(f"{type(self).__name__} does not offer the '{Reading.neurons}' reading")

    def token_embedding(self) -> torch.Tensor:
        """:attr:`Reading.token_embedding`: ``[d_vocab, d_embed]``."""
        raise NotImplementedError(f"{type(self).__name__} does not offer the '{Reading.token_embedding}' reading")

    def neuron_logit_weights(self) -> torch.Tensor:
        """:attr:`Reading.neuron_logits`: ``[n_neurons, d_vocab_out]``."""
        raise NotImplementedError(f"{type(self).__name__} does not offer the '{Reading.neuron_logits}' reading")

    def unembedding(self) -> torch.Tensor:
        """:attr:`Reading.unembedding`: ``[d_model, d_vocab_out]``."""
        raise NotImplementedError(f"{type(self).__name__} does not offer the '{Reading.unembedding}' reading")

    def weight_groups(self) -> dict[str, list[str]]:
        """Parameter names by the group their sum of squares is reported under
        (``weight_norm_<group>`` in measures.csv): by transfer component unless overridden."""
        groups: dict[str, list[str]] = {}
        for name, _ in self.named_parameters():
            groups.setdefault(self.component_of(name), []).append(name)
        return groups


def model_class_of(model: nn.Module) -> type[GrokModel]:
    """The registered class of a model (a TypeError for a module that is not a GrokModel)."""
    if not isinstance(model, GrokModel):
        raise TypeError(
            f"{type(model).__name__} is not a groktransfer model (subclass groktransfer.model.protocol.GrokModel)"
        )
    return type(model)


class _PeakTracker(TorchDispatchMode):
    """The peak bytes of tensors alive at once while active (meta tensors too): an op's output
    counts until it is freed; views share their base's memory and are not counted again."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _release(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and not t._is_view():
                n = t.numel() * t.element_size()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._release, n)
        return out


def _traced_step_bytes(model: GrokModel, batch: int, task: TaskShape, training: bool) -> int:
    """Peak live bytes of one step on the meta device, less the parameters' gradients (counted apart)."""
    import torch.nn.functional as F

    tokens = torch.zeros(batch, task.seq_len, dtype=torch.long, device="meta")
    tracker = _PeakTracker()
    with tracker, torch.set_grad_enabled(training):
        if task.answer_positions > 1:
            logits = model(tokens)[:, -task.answer_positions :].double().flatten(0, 1)
        else:
            logits = model.forward_last(tokens).double()
        if training:
            F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device="meta")).backward()
        del logits
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad) if training else 0
    return max(0, tracker.peak - grads)

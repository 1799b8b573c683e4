"""A multilayer perceptron on one-hot tokens (``model.architecture: onehot_mlp``).

Why a second built-in model: the grokking papers that are not about transformers train an
MLP on the concatenated one-hot codes of the operands -- Prieto et al. (ICLR 2025,
"Grokking at the edge of numerical stability") put most of their results on
``Linear(2p, 200) -> ReLU -> Linear(200, 200) -> ReLU -> Linear(200, p)`` without biases.
This is that network for any task of the pair family: it reads every position but the last
(the answer is read at ``=``, which carries no information), each as a one-hot code of
width ``d_input``, so ``[a, b, =]`` is the 2p-wide input of their code.

The first layer is stored as their ``Linear(n_inputs * d_input, d_hidden[0])``: row
``i * d_input + t`` holds token ``t`` at position ``i``, and the forward gathers those rows
instead of multiplying by a one-hot matrix (the same numbers, without the zeros).
Initialisation is PyTorch's default for a linear layer (uniform within ±1/sqrt(fan_in) for
weights and biases), drawn per transfer component from its own generator, so re-initialising
one component gives a fresh model's values there. Components: ``input`` (the first layer),
``hidden`` (the layers between) and ``readout`` (the last).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from groktransfer.config.ranges import bounded, range_problems
from groktransfer.config.schema import ModelConfig, to_typed
from groktransfer.model.protocol import GrokModel, Reading, StackedForward
from groktransfer.tasks.family import TaskShape


@dataclass
class OneHotMLPConfig(ModelConfig):
    """The one-hot MLP's keys (Hydra's ``onehot_mlp_schema`` in the model group)."""

    KIND: ClassVar[str] = "the onehot_mlp model"

    # the preset's name (conf/model/<name>.yaml), recorded with the run
    name: str = "onehot_mlp"
    # the registered model that trains
    architecture: str = "onehot_mlp"
    # positions read (every one but the last); None = the task's sequence length minus one
    n_inputs: int | None = bounded(None, ge=1)
    # width of each position's one-hot code; None = the task's input vocabulary. The modular
    # tasks' operands are below p, so d_input = p gives Prieto et al.'s 2p-wide input
    d_input: int | None = bounded(None, ge=1)
    # widths of the hidden ReLU layers (Prieto et al.: [200, 200])
    d_hidden: list[int] = bounded(factory=lambda: [200, 200], ge=1)
    # every layer has a bias (Prieto et al.'s MLP on modular tasks has none)
    bias: bool = False
    # output classes; None = the task's
    d_vocab_out: int | None = bounded(None, ge=1)


def _seed(seed: int, component: str) -> int:
    digest = hashlib.sha256(f"groktransfer/onehot_mlp/{component}/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class _Layer(nn.Module):
    """``x @ W (+ b)``, W [d_in, d_out]: torch's Linear transposed, so products need no copy."""

    def __init__(self, d_in: int, d_out: int, bias: bool) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(d_in, d_out))
        if bias:
            self.b = nn.Parameter(torch.empty(d_out))


def stacked_logits(
    params: Mapping[str, torch.Tensor],
    tokens: torch.Tensor,
    n_inputs: int,
    d_input: int,
    n_hidden: int,
    cache: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits of K models at once: params ``{name: [K, ...]}``, tokens ``[K, batch, pos]`` -> ``[K, batch, out]``.

    Every product is batched over the member axis, so member k's numbers are its own model's.
    """
    W_in = params["input.W"]  # [K, n_inputs * d_input, d0]
    k, _batch = tokens.shape[0], tokens.shape[1]
    rows = tokens[:, :, :n_inputs] + torch.arange(n_inputs, device=tokens.device) * d_input  # [K, batch, n]
    members = torch.arange(k, device=tokens.device)[:, None, None]
    x = W_in[members, rows].sum(dim=2)  # [K, batch, d0]: the one-hot product as a gather
    if "input.b" in params:
        x = x + params["input.b"][:, None, :]
    x = F.relu(x)
    for i in range(n_hidden):
        W = params[f"hidden.{i}.W"]
        b = params.get(f"hidden.{i}.b")
        x = F.relu(torch.bmm(x, W) if b is None else torch.baddbmm(b[:, None, :], x, W))
    if cache is not None:
        cache["neurons"] = x
    W, b = params["readout.W"], params.get("readout.b")
    return torch.bmm(x, W) if b is None else torch.baddbmm(b[:, None, :], x, W)


class OneHotMLP(GrokModel):
    """One-hot codes of the operand positions in, logits out (see the module docstring)."""

    config_class = OneHotMLPConfig
    components = ("input", "hidden", "readout")
    readings = frozenset({Reading.neurons, Reading.neuron_logits, Reading.token_embedding})

    def __init__(self, cfg: OneHotMLPConfig | Mapping[str, Any], seed: int) -> None:
        super().__init__()
        cfg = to_typed(OneHotMLPConfig, cfg, label="model")
        problems = self.config_problems(cfg)
        if problems or cfg.n_inputs is None or cfg.d_input is None or cfg.d_vocab_out is None:
            raise ValueError("; ".join(problems) or "resolve n_inputs, d_input and d_vocab_out from the task first")
        self.config, self.seed = cfg, int(seed)
        widths = [int(w) for w in cfg.d_hidden]
        self.input = _Layer(int(cfg.n_inputs) * int(cfg.d_input), widths[0], cfg.bias)
        self.hidden = nn.ModuleList(_Layer(a, b, cfg.bias) for a, b in zip(widths, widths[1:]))
        self.readout = _Layer(widths[-1], int(cfg.d_vocab_out), cfg.bias)
        for component in self.components:
            self.reinit_component(component, seed)

    # ---- config ---------------------------------------------------------------------
    @classmethod
    def resolve_config(cls, cfg: Any, d_vocab: int, d_vocab_out: int, seq_len: int) -> Any:
        return dataclasses.replace(
            cfg,
            n_inputs=cfg.n_inputs or max(seq_len - 1, 1),
            d_input=cfg.d_input or d_vocab,
            d_vocab_out=cfg.d_vocab_out or d_vocab_out,
        )

    @classmethod
    def config_problems(cls, cfg: Any, prefix: str = "model") -> list[str]:
        """The declared ranges (positive sizes), and at least one hidden layer."""
        problems = range_problems(cfg, f"{prefix}.")
        if not list(cfg.d_hidden or []):
            problems.append(f"{prefix}.d_hidden=[]: at least one hidden layer")
        return problems

    @classmethod
    def task_problems(cls, cfg: Any, task: TaskShape) -> list[str]:
        """The last position is read as the answer's; the positions before it must fit ``d_input``
        (the built-in tasks' '=' is their largest token, so d_vocab - 1 values precede it)."""
        problems = super().task_problems(cfg, task)
        if cfg.n_inputs is not None and int(cfg.n_inputs) > task.seq_len - 1:
            problems.append(
                f"model.n_inputs={cfg.n_inputs}: {task.label} has {task.seq_len - 1} positions before the answer"
            )
        if cfg.d_input is not None and int(cfg.d_input) < task.d_vocab - 1:
            problems.append(
                f"model.d_input={cfg.d_input}: {task.label} feeds tokens up to {task.d_vocab - 2} before '='"
            )
        if cfg.d_vocab_out is not None and int(cfg.d_vocab_out) < task.d_vocab_out:
            problems.append(f"model.d_vocab_out={cfg.d_vocab_out}: task {task.label} needs >= {task.d_vocab_out}")
        return problems

    # ---- forwards -------------------------------------------------------------------
    def _stacked_params(self) -> dict[str, torch.Tensor]:
        return {name: p.unsqueeze(0) for name, p in self.named_parameters()}  # views: gradients flow

    def _logits(self, tokens: torch.Tensor, cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        cfg = self.config
        return stacked_logits(
            self._stacked_params(), tokens.unsqueeze(0), int(cfg.n_inputs), int(cfg.d_input), len(self.hidden), cache
        )[0]

    def forward_last(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._logits(tokens)

    forward = forward_last  # one answer per input: nn.Module's call is the last-position forward

    @classmethod
    def stacked_forward_last(cls, cfg: Any) -> StackedForward | None:
        n_inputs, d_input, n_hidden = int(cfg.n_inputs), int(cfg.d_input), len(cfg.d_hidden) - 1

        def forward(
            params: dict[str, torch.Tensor], tokens: torch.Tensor, cache: dict[str, torch.Tensor] | None = None
        ) -> torch.Tensor:
            return stacked_logits(params, tokens, n_inputs, d_input, n_hidden, cache)

        return forward

    # ---- transfer -------------------------------------------------------------------
    def component_of(self, name: str) -> str:
        component = name.split(".", 1)[0]
        if component not in self.components:
            raise ValueError(f"parameter {name!r} belongs to no component of {self.components}")
        return component

    @torch.no_grad()
    def reinit_component(self, component: str, seed: int) -> None:
        """PyTorch's default for ``nn.Linear``: weights and biases uniform within ±1/sqrt(fan_in)."""
        gen = torch.Generator().manual_seed(_seed(seed, component))
        layers = list(self.hidden) if component == "hidden" else [getattr(self, component)]
        for layer in layers:
            bound = 1.0 / math.sqrt(layer.W.shape[0])
            layer.W.copy_((torch.rand(layer.W.shape, generator=gen) * 2 - 1) * bound)
            if hasattr(layer, "b"):
                layer.b.copy_((torch.rand(layer.b.shape, generator=gen) * 2 - 1) * bound)

    # ---- readings -------------------------------------------------------------------
    @torch.no_grad()
    def last_position_activations(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cache: dict[str, torch.Tensor] = {}
        logits = self._logits(tokens, cache)
        return logits, cache["neurons"][0]

    def neuron_logit_weights(self) -> torch.Tensor:
        return self.readout.W

    def token_embedding(self) -> torch.Tensor:
        """The first operand's rows of the first layer, ``[d_input, d_hidden[0]]``: what a token
        adds to the first hidden layer (the transformer's W_E role, for the Fourier measures)."""
        return self.input.W[: int(self.config.d_input)]

"""A plain two-layer ReLU MLP over bit strings, as a groktransfer model.

``logits = relu(x @ W_in + b_in) @ W_out + b_out`` with ``x`` the input bits as +-1. It is a
:class:`groktransfer.model.protocol.GrokModel`: the protocol's required parts (config schema,
``forward_last``, components, ``reinit_component``) and three capabilities -- a stacked
forward (so seed ensembles train as one process), and the ``neurons`` and ``neuron_logits``
readings (so the measures can read its hidden units). Everything else (training, checkpoints,
transfer with shape checks before a source trains, resume, ensembles, analysis) is
groktransfer's, unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from groktransfer.config.schema import ModelConfig, to_typed
from groktransfer.model.protocol import GrokModel, Reading, StackedForward


@dataclass
class ParityMLPConfig(ModelConfig):
    """The MLP's keys (Hydra's ``parity_mlp_schema`` in the model group)."""

    KIND: ClassVar[str] = "the parity_mlp model"

    name: str = "parity_mlp"
    architecture: str = "parity_mlp"
    # input bits; None = the task's sequence length
    n_inputs: Optional[int] = None
    # hidden ReLU units
    d_hidden: int = 512
    # output classes; None = the task's
    d_vocab_out: Optional[int] = None


def _seed(seed: int, component: str) -> int:
    """A stable per-component seed: re-initialising one component gives a fresh model's values there."""
    digest = hashlib.sha256(f"groktransfer-parity/{component}/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class _Linear(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(d_in, d_out))
        self.b = nn.Parameter(torch.empty(d_out))


def stacked_logits(params: Mapping[str, torch.Tensor], tokens: torch.Tensor,
                   cache: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:  # fmt: skip
    """Logits of K models at once: params ``{name: [K, ...]}``, tokens ``[K, batch, n]`` -> ``[K, batch, out]``.

    One batched product per layer over the member axis, so a member's numbers are its own
    model's (a single model is K = 1: ``ParityMLP.forward_last``).
    """
    x = tokens.to(params["hidden.W"].dtype) * 2 - 1  # bits as +-1
    hidden = F.relu(torch.baddbmm(params["hidden.b"][:, None, :], x, params["hidden.W"]))
    if cache is not None:
        cache["neurons"] = hidden
    return torch.baddbmm(params["readout.b"][:, None, :], hidden, params["readout.W"])


class ParityMLP(GrokModel):
    """Bits in, two logits out; components ``hidden`` (W_in, b_in) and ``readout`` (W_out, b_out)."""

    config_class = ParityMLPConfig
    components = ("hidden", "readout")
    readings = frozenset({Reading.neurons, Reading.neuron_logits})

    def __init__(self, cfg: Union[ParityMLPConfig, Mapping[str, Any]], seed: int) -> None:
        super().__init__()
        cfg = to_typed(ParityMLPConfig, cfg, label="model")
        problems = self.config_problems(cfg)
        if problems or cfg.n_inputs is None or cfg.d_vocab_out is None:
            raise ValueError("; ".join(problems) or "resolve n_inputs and d_vocab_out from the task first")
        self.config, self.seed = cfg, int(seed)
        self.hidden = _Linear(cfg.n_inputs, cfg.d_hidden)
        self.readout = _Linear(cfg.d_hidden, cfg.d_vocab_out)
        for component in self.components:
            self.reinit_component(component, seed)

    # ---- config ---------------------------------------------------------------------
    @classmethod
    def resolve_config(cls, cfg: Any, d_vocab: int, d_vocab_out: int, seq_len: int) -> Any:
        return dataclasses.replace(cfg, n_inputs=cfg.n_inputs or seq_len, d_vocab_out=cfg.d_vocab_out or d_vocab_out)

    @classmethod
    def config_problems(cls, cfg: Any, prefix: str = "model") -> List[str]:
        return [
            f"{prefix}.{key}={getattr(cfg, key)}: must be positive"
            for key in ("n_inputs", "d_hidden", "d_vocab_out")
            if getattr(cfg, key) is not None and int(getattr(cfg, key)) < 1
        ]

    @classmethod
    def task_problems(cls, cfg: Any, task: Any) -> List[str]:
        problems = super().task_problems(cfg, task)
        if task.d_vocab != 2:
            problems.append(f"model.architecture=parity_mlp reads bit strings (2 tokens); {task.label} has {task.d_vocab}")
        if cfg.n_inputs is not None and int(cfg.n_inputs) != task.seq_len:
            problems.append(f"model.n_inputs={cfg.n_inputs}: {task.label} has {task.seq_len} bits")
        return problems

    # ---- forwards -------------------------------------------------------------------
    def _stacked_params(self) -> Dict[str, torch.Tensor]:
        return {name: p.unsqueeze(0) for name, p in self.named_parameters()}  # views: gradients flow

    def forward_last(self, tokens: torch.Tensor) -> torch.Tensor:
        return stacked_logits(self._stacked_params(), tokens.unsqueeze(0))[0]

    forward = forward_last  # one answer per input: nn.Module's call is the last-position forward

    @classmethod
    def stacked_forward_last(cls, cfg: Any) -> Optional[StackedForward]:
        return stacked_logits

    # ---- transfer -------------------------------------------------------------------
    def component_of(self, name: str) -> str:
        component = name.split(".", 1)[0]
        if component not in self.components:
            raise ValueError(f"parameter {name!r} belongs to no component of {self.components}")
        return component

    @torch.no_grad()
    def reinit_component(self, component: str, seed: int) -> None:
        """PyTorch's default for a linear layer with ReLU after it: W ~ N(0, 2 / fan_in), b = 0."""
        layer = getattr(self, component)
        gen = torch.Generator().manual_seed(_seed(seed, component))
        fan_in = layer.W.shape[0]
        layer.W.copy_(torch.randn(layer.W.shape, generator=gen) * math.sqrt(2.0 / fan_in))
        layer.b.zero_()

    # ---- readings -------------------------------------------------------------------
    @torch.no_grad()
    def last_position_activations(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        cache: Dict[str, torch.Tensor] = {}
        logits = stacked_logits(self._stacked_params(), tokens.unsqueeze(0), cache)[0]
        return logits, cache["neurons"][0]

    def neuron_logit_weights(self) -> torch.Tensor:
        return self.readout.W

    def input_weights(self) -> torch.Tensor:
        """[n_inputs, d_hidden]: how strongly each input bit feeds each hidden unit (the measures read it)."""
        return self.hidden.W

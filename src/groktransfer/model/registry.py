"""Model architectures by name (``model.architecture``): what a job trains.

A builder takes the job's resolved ``ModelConfig`` (vocabularies and context length already
filled from the task) and the model seed, and returns the module to train. The trainer,
the measures, transfer and the analysis read models through TransformerLens parameter and
hook names (``embed.W_E``, ``blocks.{i}.attn.W_Q``, ...), so a registered model keeps them;
with ``train.fast_path`` it also provides ``forward_last`` and
``last_position_activations`` as :class:`~groktransfer.model.transformer.HookedGrokTransformer`
does. Checkpoints store the weights in those names, so analysis reloads them as a
``HookedGrokTransformer``: a model with parameters of its own must say how it is read.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.utils.registry import Registry

ModelBuilder = Callable[[Any, int], torch.nn.Module]

MODELS: Registry[ModelBuilder] = Registry("model architecture", "model.architecture")
MODELS.register("hooked_transformer", HookedGrokTransformer)


def build_model(model_cfg: Any, seed: int) -> torch.nn.Module:
    """The model ``model_cfg.architecture`` names, initialised from ``seed``."""
    return MODELS.get(str(model_cfg.architecture))(model_cfg, seed=seed)

"""Model architectures by name (``model.architecture``): what a job trains.

An architecture is a :class:`~groktransfer.model.protocol.GrokModel` subclass registered with
:func:`register_model` (a plugin does it from its ``groktransfer.plugins`` entry point). Its
``config_class`` becomes the schema of the ``model`` block when ``model.architecture`` names it
(Hydra's ``<architecture>_schema`` in the ``model`` group). Generic code builds and reads
models only through this registry and the protocol.
"""

from __future__ import annotations

from typing import Any

import torch

from groktransfer.config.schema import register_model_schema
from groktransfer.model.mlp import OneHotMLP
from groktransfer.model.protocol import GrokModel
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.utils.registry import Registry

MODELS: Registry[type[GrokModel]] = Registry("model architecture", "model.architecture")


def register_model(name: str, model_class: type[GrokModel]) -> type[GrokModel]:
    """Register a model class under ``name``: its config schema, its transfer components and
    its forwards become available to every job whose ``model.architecture`` is ``name``."""
    if not (isinstance(model_class, type) and issubclass(model_class, GrokModel)):
        raise TypeError(f"model {name!r}: {model_class!r} must subclass groktransfer.model.protocol.GrokModel")
    if not model_class.components:
        raise TypeError(f"model {name!r}: {model_class.__name__}.components names no transfer component")
    model_class.architecture = name
    register_model_schema(name, model_class.config_class)
    return MODELS.register(name, model_class)


def model_class(model_cfg: Any) -> type[GrokModel]:
    """The class ``model_cfg.architecture`` names (an unknown name: a UserError listing the registered ones)."""
    return MODELS.get(str(model_cfg.architecture))


def build_model(model_cfg: Any, seed: int) -> torch.nn.Module:
    """The model ``model_cfg.architecture`` names, initialised from ``seed``."""
    return model_class(model_cfg)(model_cfg, seed=seed)


register_model("hooked_transformer", HookedGrokTransformer)
register_model("onehot_mlp", OneHotMLP)

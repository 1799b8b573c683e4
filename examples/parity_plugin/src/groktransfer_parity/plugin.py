"""The plugin's entry point (``groktransfer.plugins`` in ``pyproject.toml``): importing it
registers the ``parity`` task family, the ``parity_mlp`` model and the family's measures.
Nothing under groktransfer's ``src/`` names any of them."""

from __future__ import annotations

from groktransfer.measures.registry import CHECKPOINT_MEASURES, FamilyMeasures
from groktransfer.model.registry import register_model
from groktransfer.tasks.registry import register_family
from groktransfer_parity.measures import parity_measures
from groktransfer_parity.model import ParityMLP
from groktransfer_parity.task import ParityFamily

register_family(ParityFamily())
register_model("parity_mlp", ParityMLP)
CHECKPOINT_MEASURES.register("parity", FamilyMeasures(parity_measures))

"""The report sections by name: ``SECTIONS``, and the built-in sections registered in it.

``analysis.sections`` (default: ``settings.DEFAULT_SECTIONS``) lists the report's sections by
these names, in order; ``analysis.extra_sections`` adds more before the closing ones. A plugin
adds a section as it adds a task family, from its ``groktransfer.plugins`` entry point::

    from groktransfer.analysis.sections import SECTIONS
    SECTIONS.register("my_section", MySection())   # a groktransfer.analysis.section.Section

and names it in ``analysis.extra_sections=[my_section]`` (or in ``analysis.sections``).
"""

from __future__ import annotations

from collections.abc import Iterator

from groktransfer.utils.registry import Registry, load_plugins

from . import core
from .circuits.section import CircuitsSection
from .digit_section import DigitsSection
from .interp_section import InterpretabilitySection
from .matrix import MatrixSection
from .section import ProviderSection, Section, load_provider
from .source_cost import SourceCostSection
from .starts import StartsSection
from .trajectory import TrajectorySection


class SectionRegistry(Registry[Section]):
    """The registry of report sections; ``in_order()`` keeps registration order (the docs list them so)."""

    def in_order(self) -> Iterator[tuple[str, Section]]:
        load_plugins()
        return iter(list(self._entries.items()))


SECTIONS = SectionRegistry("report section", "analysis.sections")

for _name, _section in (
    ("answer", core.AnswerSection()),
    ("source_cost", SourceCostSection()),
    ("speedup", core.SpeedupSection()),
    ("thresholds", core.ThresholdSection()),
    ("curves", core.CurvesSection()),
    ("starts", StartsSection()),
    ("trajectory", TrajectorySection()),
    ("matrix", MatrixSection()),
    ("circuits", CircuitsSection()),
    ("interpretability", InterpretabilitySection()),
    ("digits", DigitsSection()),
    ("damaged_files", core.DamagedFilesSection()),
    ("incomplete", core.IncompleteSection()),
    ("method", core.MethodSection()),
    ("sweep", core.OverviewSection()),
    ("files", core.FilesSection()),
):
    SECTIONS.register(_name, _section)


def section_for(spec: str) -> Section:
    """The section a name of ``analysis.sections`` / ``extra_sections`` stands for: a registered
    name, or ``package.module:function`` (a provider function, or a ``Section`` object)."""
    if ":" not in spec:
        return SECTIONS.get(spec)
    loaded = load_provider(spec)
    if isinstance(loaded, Section):
        return loaded
    for _, section in SECTIONS.in_order():  # a built-in section's own provider, named by its path
        if getattr(section, "provider", None) is loaded:
            return section
    return ProviderSection(loaded, spec)

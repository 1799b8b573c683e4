"""Post-hoc analysis of sweeps: reads run directories only (docs/architecture.md).

Public API:
- ``run_analysis(sweep_dirs, out_dir=None, cfg=None, extra_sections=()) -> AnalysisResult``
- ``Section`` / ``Sweep`` and ``SECTIONS``: the report's sections by name (a plugin registers its own)
- ``ReportSection`` / ``ReportTable`` / ``ReportFigure``: what a section returns
- ``SweepInputError``: raised, before anything is written, for missing or empty sweep dirs
  and unknown section names
"""

from .collect import RunRecord, SweepInputError
from .main import AnalysisResult, run_analysis
from .report import ReportFigure, ReportSection, ReportTable
from .section import Section, Sweep
from .sections import SECTIONS

__all__ = [
    "SECTIONS",
    "AnalysisResult",
    "ReportFigure",
    "ReportSection",
    "ReportTable",
    "RunRecord",
    "Section",
    "Sweep",
    "SweepInputError",
    "run_analysis",
]

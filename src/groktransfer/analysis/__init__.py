"""Post-hoc analysis of sweeps: reads run directories only (docs/architecture.md).

Public API:
- ``run_analysis(sweep_dirs, out_dir=None, cfg=None, extra_sections=()) -> AnalysisResult``
- ``ReportSection`` / ``ReportTable`` / ``ReportFigure``: extra report sections (circuits hook)
- ``SweepInputError``: raised, before anything is written, for missing or empty sweep dirs
"""

from .collect import RunRecord, SweepInputError
from .main import AnalysisResult, run_analysis
from .report import ReportFigure, ReportSection, ReportTable

__all__ = [
    "AnalysisResult",
    "ReportFigure",
    "ReportSection",
    "ReportTable",
    "RunRecord",
    "SweepInputError",
    "run_analysis",
]

"""Rendering shared by the analysis report and the interpretability write-up: markdown tables,
markdown to HTML, figure files and the one look every figure has.

Why one package: the sweep report, the single-checkpoint summary and the interpretability
toolkit all write tables, HTML and PNGs; done once here, a table escapes a ``|`` the same way
and a condition has the same colour in every figure. It imports nothing else of groktransfer.
"""

from .figures import apply_theme, save_figure
from .markdown import markdown_table, markdown_to_html
from .style import FALLBACK_COLORS, FIXED_COLORS, PREFERRED_ORDER, SOURCE_COLOR, condition_colors

__all__ = [
    "FALLBACK_COLORS",
    "FIXED_COLORS",
    "PREFERRED_ORDER",
    "SOURCE_COLOR",
    "apply_theme",
    "condition_colors",
    "markdown_table",
    "markdown_to_html",
    "save_figure",
]

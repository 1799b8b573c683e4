"""Markdown tables (pandas' ``to_markdown``) and markdown to HTML (the ``markdown`` package).

Cells are formatted before the table is laid out, so a number reads the same in every
table (``floatfmt``), a missing value is ``–`` and a ``|`` inside a cell is escaped rather
than ending the cell. Raw HTML in report text is shown as text, never interpreted: the text
carries run names and error messages from files the analysis did not write.
"""

from __future__ import annotations

import math
from typing import Any

import markdown as _markdown
import pandas as pd

MISSING = "–"


def _cell(value: Any, floatfmt: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub pipe table of ``df`` (without its index); ``_(none)_`` for an empty frame."""
    if df.empty:
        return "_(none)_"
    cells = df.astype(object).map(lambda v: _cell(v, floatfmt))
    cells.columns = [_cell(c, floatfmt) for c in df.columns]
    return cells.to_markdown(index=False, disable_numparse=True, stralign=None, numalign=None)  # unpadded cells


def markdown_to_html(text: str) -> str:
    """HTML of light markdown (paragraphs, ``-`` lists, `code`, **bold**, tables); raw HTML escaped."""
    md = _markdown.Markdown(extensions=["tables"])
    md.preprocessors.deregister("html_block")  # <x> in the text is text, not markup
    md.inlinePatterns.deregister("html")
    return md.convert(text.strip())

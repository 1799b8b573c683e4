"""One visual identity per condition, shared by every figure.

Why fixed: a reader compares the epochs-to-threshold panel with the curves below it by
colour; if ``random`` were grey in one figure and orange in the next the report would
mislead. Known conditions get fixed colours (grokked blue, memorized orange, random grey,
the source model green); unknown ones draw from a colour-blind palette in sorted order, so
the mapping is deterministic for a given set of conditions.
"""

from __future__ import annotations

from collections.abc import Iterable

FIXED_COLORS = {
    "grokked": "#1f77b4",  # blue
    "memorized": "#e07b00",  # orange
    "random": "#7f7f7f",  # grey
}
#: the source model of a transfer sweep (circuit figures), distinct from the conditions
SOURCE_COLOR = "#2ca02c"
# colour-blind-friendly fallbacks that avoid the fixed hues above
FALLBACK_COLORS = ["#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#f0e442", "#000000", "#8c564b", "#17becf"]

PREFERRED_ORDER = ("grokked", "memorized", "random")


def condition_colors(conditions: Iterable[str]) -> dict[str, str]:
    """Colour of each condition: fixed for known ones, fallback palette for the rest."""
    conditions = list(conditions)
    out: dict[str, str] = {c: FIXED_COLORS[c] for c in conditions if c in FIXED_COLORS}
    unknown = sorted({c for c in conditions if c not in FIXED_COLORS})
    for i, c in enumerate(unknown):
        out[c] = FALLBACK_COLORS[i % len(FALLBACK_COLORS)]
    return out

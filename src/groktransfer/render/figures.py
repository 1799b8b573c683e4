"""Figure files: the headless backend, the theme, and the one way a figure is saved.

Every figure of the analysis and of the interpretability toolkit is written through
:func:`save_figure`, so each is closed after saving (a sweep report draws dozens) and lands in
a folder that exists.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def apply_theme() -> None:
    """Seaborn's white grid with slightly smaller text: the look of every figure of a report."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)


def save_figure(fig: Figure, path: Path, dpi: int, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` (folders made), close it and return the path.

    ``tight=False`` keeps the figure's own margins: a tight bounding box costs one more draw,
    which the circuit figures (laid out in inches) save.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path

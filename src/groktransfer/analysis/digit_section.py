"""Report section for digit-task sweeps: measures per answer position and per carry class.

The ``digits`` section. It reads only the run directories (the status record's final block and
the measures table) and applies to a sweep only where runs recorded per-answer-position
accuracies in the status record's final block -- what they recorded, not the task's name: any
family that records these measures, a plugin's included, gets the section.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from groktransfer.render import condition_colors
from groktransfer.runs.rundir import MEASURES_FILE, Status
from groktransfer.tasks.digits import CARRY_CLASS_NAMES, EXAMPLE_CLASS_NAMES

from .collect import RunRecord
from .curves import load_tables
from .plots import plot_measures
from .report import ReportFigure, ReportSection, ReportTable
from .section import Section, Sweep

_POSITION = re.compile(r"^pos(\d+)_acc_test$")


def digit_columns(columns: Sequence[str]) -> dict[str, list[str]]:
    """The digit measures present, grouped: per position, per carry class, per example class, W_U."""
    index = {c: int(m.group(1)) for c in columns if (m := _POSITION.match(c))}
    positions = sorted(index, key=index.__getitem__)
    return {
        "position": positions,
        "carry": [f"acc_{n}_test" for n in CARRY_CLASS_NAMES if f"acc_{n}_test" in columns],
        "example": [f"exact_{n}_test" for n in EXAMPLE_CLASS_NAMES if f"exact_{n}_test" in columns],
        "fourier": [c for c in ("wu_fourier_top_frac", "mean_prob_correct_test") if c in columns],
    }


def final_table(runs: Sequence[RunRecord], columns: Sequence[str]) -> pd.DataFrame:
    """Median [min-max] over seeds of each final measure, one row per condition."""
    rows = []
    for cond in dict.fromkeys(r.condition for r in runs):
        group = [r for r in runs if r.condition == cond]
        row: dict[str, Any] = {"condition": cond, "n": len(group)}
        for col in columns:
            vals = np.array([float(r.final[col]) for r in group if r.final.get(col) is not None], dtype=float)
            vals = vals[np.isfinite(vals)]
            row[col] = (
                "–"
                if vals.size == 0
                else f"{np.median(vals):.4f}"
                if vals.size == 1
                else f"{np.median(vals):.4f} [{vals.min():.4f}–{vals.max():.4f}]"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def digit_runs_of(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Completed runs that recorded per-answer-position accuracies."""
    return [r for r in runs if r.completed and any(_POSITION.match(k) for k in (r.final or {}))]


def digit_sections(runs: Sequence[RunRecord], out_dir: Path, settings: Any = None) -> list[ReportSection]:
    """'Digit measures' section: final per-position / per-carry-class accuracy and their curves."""
    digit_runs = digit_runs_of(runs)
    if not digit_runs:
        return []
    conditions = list(dict.fromkeys(r.condition or "unknown" for r in digit_runs))
    tables = load_tables(digit_runs, MEASURES_FILE, [Status.COMPLETED])
    present = sorted({c for dfs in tables.values() for df in dfs for c in df.columns})
    groups = digit_columns(present)
    final_cols = groups["position"] + groups["carry"] + groups["example"] + groups["fourier"]
    table = final_table(digit_runs, final_cols)
    table.to_csv(Path(out_dir) / "digit_summary.csv", index=False)
    colors = condition_colors(conditions)
    dpi = int(getattr(getattr(settings, "analysis", settings), "dpi", 130) or 130)
    figures = []
    for name, cols, caption in (
        ("digit_positions", groups["position"], "Test accuracy per answer digit (0 = most significant)"),
        (
            "digit_carries",
            groups["carry"] + groups["example"],
            "Test accuracy per carry class: answer digits without / with a direct / with a cascading incoming "
            "carry, and exact match of examples without carries, with carries, with a cascade",
        ),
    ):
        path = plot_measures(tables, cols, conditions, colors, Path(out_dir) / f"{name}.png", dpi=dpi, title=caption)
        if path is not None:
            figures.append(ReportFigure(path, caption + " (median and inter-quartile band over seeds)."))
    text = (
        "Digit tasks score every answer digit; the threshold metric (`test_acc`) is exact match, all digits "
        "right. Below: the final values per condition (median [min–max] over seeds) of the test accuracy at "
        "each answer position (`pos<i>_acc_test`, 0 = most significant), per carry class of an answer digit "
        "(`acc_no_carry/direct/cascade_test`; a cascade is a carry passed on by a digit pair summing to 9, as in "
        "999+1), exact match per example class (`exact_none/carries/cascades_test`), the share of the "
        "non-constant power of W_U in its strongest Fourier frequency over the ten digits "
        "(`wu_fourier_top_frac`, 1 = the digits are read as phases of one frequency) and the mean probability "
        "of the right digit. A class with no test examples shows '–'. All columns: `digit_summary.csv`."
    )
    return [
        ReportSection(
            "Digit measures: per position and per carry class",
            text,
            [ReportTable(table, "Final digit measures per condition")],
            figures,
        )
    ]


class DigitsSection(Section):
    """Measures per answer position and per carry class (digit tasks)."""

    title = "Digit measures"
    writes = ("digit_summary.csv", "digit_positions.png", "digit_carries.png")
    provider = staticmethod(digit_sections)

    def applies(self, sweep: Sweep) -> str | None:
        return None if digit_runs_of(sweep.runs) else "no completed run recorded per-answer-position accuracies"

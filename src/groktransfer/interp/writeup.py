"""Markdown and JSON of an :class:`~groktransfer.interp.reading.Interpretation`: the
interpretability part of the single-checkpoint summary (``scripts/analyze.py checkpoint=...``).

Each reading that ran shows itself (``Reading.markdown``), in the order the readings run;
the findings come first, and the notes (what did not apply, and why) last.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from groktransfer.render import markdown_table

from . import plots
from .findings import findings_table
from .reading import READINGS, Interpretation, interpret

md_table = markdown_table  # the one markdown table of the package (groktransfer.render)


def sections(res: Interpretation) -> list[str]:
    """Markdown paragraphs and tables, one block per reading that ran."""
    out: list[str] = ["## Interpretability", ""]
    clean = res.measurements.select("clean_acc")
    out += [
        f"Clean model on every input ({res.task}): "
        + ", ".join(f"{a}: acc {v:.4f}" for a, v in zip(clean.answer, clean.value))
        + ".",
        "",
    ]
    findings = findings_table(res.family, res.measurements)
    if not findings.empty:
        out += [
            "### Findings",
            "",
            "Each claim the seed analysis makes about its own model, checked on this one "
            "(the criterion is in the claim):",
            "",
            md_table(findings),
            "",
        ]
    ran = set(res.ran)
    for reading in READINGS.in_order():
        if reading.name in ran:
            out += reading.markdown(res)
    out += [f"- {n}" for n in res.notes]
    return out


def summary_json(res: Interpretation) -> dict[str, Any]:
    """What ``summary.json`` holds of the interpretation: findings, every measurement by flat name, notes."""
    return {
        "task": res.task,
        "family": res.family,
        "findings": findings_table(res.family, res.measurements).to_dict("records"),
        "scalars": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in res.scalars.items()},
        "key_freqs": res.arrays.get("key_freqs"),
        "readings": list(res.ran),
        "notes": res.notes,
    }


def write_interpretation(model: Any, task: Any, out: Path, settings: Any = None, dpi: int = 130) -> dict[str, Any]:
    """Run :func:`interpret`, write figures and CSV tables under ``out``; return
    ``{"result", "figures", "markdown", "json"}``."""
    res = interpret(model, task, settings)
    out.mkdir(parents=True, exist_ok=True)
    figs = plots.plot_all(res, out, dpi)
    for name, table in res.tables.items():
        table.to_csv(out / f"interp_{name}.csv", index=False)
    md = "\n".join(sections(res))
    md += "\n" + "\n".join(f"![{k}]({v.name})" for k, v in figs.items()) + "\n"
    return {"result": res, "figures": figs, "markdown": md, "json": summary_json(res)}

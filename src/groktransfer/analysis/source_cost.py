"""Is a source worth its cost? What a transfer start saves per target against what its source
run cost to reach the checkpoint it starts from, and the number of targets that repays it.

A grokked start is only cheap if the source run that grokked is paid for once and used
many times. For each transfer condition (a start from a source run's checkpoint) at the
headline threshold:

* **source cost** -- the epochs of the source run up to the chosen checkpoint (the
  ``chosen.epoch`` of each target's ``source.json``) and their seconds: those epochs times
  the source run's own seconds per epoch (its training loop, evaluations and progress
  measures included, on the device and thread count it ran with); the median over the
  distinct source runs when there are several;
* **saving per target** -- median epochs of the baseline minus median epochs of the
  condition, and in seconds times the targets' median seconds per epoch. A censored median
  makes it a bound (``≥`` when only the baseline's is, indeterminate when the condition's is);
* **break-even** -- source seconds / saving per target, rounded up: the number of targets
  after which the source has paid for itself (never, when there is no saving).

Starts from a file (``transfer.source.path``) have no source run here and no cost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from groktransfer.runs.reader import read_run

from .collect import RunRecord
from .report import ReportSection, ReportTable
from .section import Section, Sweep
from .stats import format_epochs, threshold_key


@dataclass
class SourceCost:
    condition: str
    n_sources: int
    source_epochs: float  # epochs of the source run to the chosen checkpoint (median over sources)
    source_seconds: float  # those epochs' seconds (median over sources)
    saving_epochs: float  # median baseline epochs - median condition epochs
    saving_seconds: float
    saving_bound: str  # exact | lower bound | indeterminate
    target_seconds_per_epoch: float
    break_even_targets: int | None  # None: never (no saving) or not determinable
    sentence: str


def _source_of(run: RunRecord) -> tuple[str, float] | None:
    """(source run dir, chosen epoch) of a start from a cached source run, else None (the run's
    source record as the run-directory reader read it)."""
    record = run.contents.source if run.contents is not None else None
    if record is None or not record.source_run_dir or record.start is None or record.start.epoch is None:
        return None
    return str(record.source_run_dir), float(record.start.epoch)


def _run_seconds_per_epoch(run: RunRecord) -> float:
    status = run.contents.status if run.contents is not None else None
    value = getattr(status, "seconds_per_epoch", None)
    return float(value) if value else math.nan


@lru_cache(maxsize=256)
def _source_seconds_per_epoch(run_dir: str) -> float:
    """The source run's own seconds per epoch (its status record, read by the run-directory
    reader; NaN where it recorded none or cannot be read)."""
    status = read_run(run_dir).status
    value = getattr(status, "seconds_per_epoch", None)
    return float(value) if value else math.nan


def source_costs(
    runs: Sequence[RunRecord], summary: pd.DataFrame, headline: float | None, baseline: str
) -> list[SourceCost]:
    """One :class:`SourceCost` per condition that starts from a source run's checkpoint."""
    if headline is None or summary.empty:
        return []
    s = summary[summary.threshold == headline].set_index("condition")
    if baseline not in s.index:
        return []
    out = []
    for cond in [c for c in s.index if c != baseline]:
        mine = [r for r in runs if r.condition == cond and r.completed]
        sources = {src for src in (_source_of(r) for r in mine) if src is not None}
        if not sources:
            continue
        epochs = [e for _, e in sources]
        seconds = [e * _source_seconds_per_epoch(d) for d, e in sources]
        per_epoch = float(
            np.nanmedian([_run_seconds_per_epoch(r) for r in runs if r.completed and r.condition in (cond, baseline)])
        )
        b, c = s.loc[baseline], s.loc[cond]
        saving = float(b["median"]) - float(c["median"])
        bound = (
            "indeterminate"
            if bool(c["median_lower_bound"])
            else "lower bound"
            if bool(b["median_lower_bound"])
            else "exact"
        )
        cost = SourceCost(
            condition=cond,
            n_sources=len(sources),
            source_epochs=float(np.median(epochs)),
            source_seconds=float(np.nanmedian(seconds)),
            saving_epochs=saving,
            saving_seconds=saving * per_epoch,
            saving_bound=bound,
            target_seconds_per_epoch=per_epoch,
            break_even_targets=None,
            sentence="",
        )
        if bound != "indeterminate" and saving > 0 and cost.saving_seconds > 0 and math.isfinite(cost.source_seconds):
            cost.break_even_targets = int(math.ceil(cost.source_seconds / cost.saving_seconds))
        cost.sentence = _sentence(cost, baseline, headline)
        out.append(cost)
    return out


def _sentence(c: SourceCost, baseline: str, t: float) -> str:
    what = f"{c.condition} source{'s' if c.n_sources > 1 else ''}"
    cost = f"{what} cost {format_epochs(c.source_epochs)} epochs ({c.source_seconds:,.0f} s) to {'their' if c.n_sources > 1 else 'its'} chosen checkpoint"
    if c.saving_bound == "indeterminate":
        return f"{cost}; what a {c.condition} start saves per target is not determinable (its median is censored)."
    at_least = "at least " if c.saving_bound == "lower bound" else ""
    if c.saving_epochs <= 0:
        return (
            f"{cost}; a {c.condition} start saves nothing per target against {baseline} at {100 * t:.10g}% "
            f"({format_epochs(-c.saving_epochs)} more epochs), so it never pays off."
        )
    tail = (
        f"it pays for itself after {c.break_even_targets} target{'s' if c.break_even_targets != 1 else ''}"
        if c.break_even_targets is not None
        else "its break-even is not determinable (no seconds per epoch recorded)"
    )
    if c.break_even_targets is not None and c.saving_bound == "lower bound":
        tail = (
            f"it pays for itself after at most {c.break_even_targets} target{'s' if c.break_even_targets != 1 else ''}"
        )
    return (
        f"{cost}; a {c.condition} start saves {at_least}{format_epochs(c.saving_epochs)} epochs "
        f"({at_least}{c.saving_seconds:,.0f} s) per target against {baseline} at {100 * t:.10g}%: {tail}."
    )


def source_cost_section(costs: Sequence[SourceCost], baseline: str, headline: float | None) -> ReportSection | None:
    """The report's "Is the source worth its cost?" section (None when no start came from a source run)."""
    if not costs or headline is None:
        return None
    lines = [f"- {c.sentence[0].upper() + c.sentence[1:]}" for c in costs]
    lines += [
        "",
        "Seconds are each run's training loop (evaluations and progress measures included) on the device "
        "and threads it ran with; the source is trained once and shared by every target that starts from it.",
    ]
    table = pd.DataFrame(
        {
            "condition": [c.condition for c in costs],
            "source epochs": [format_epochs(c.source_epochs) for c in costs],
            "source seconds": [f"{c.source_seconds:,.0f}" for c in costs],
            f"saved per target (epochs vs {baseline})": [_bounded(c, format_epochs(c.saving_epochs)) for c in costs],
            "saved per target (s)": [_bounded(c, f"{c.saving_seconds:,.0f}") for c in costs],
            "break-even (targets)": [_break_even(c) for c in costs],
        }
    )
    caption = f"At test accuracy ≥ {threshold_key(headline)}: source cost against what a start saves per target"
    return ReportSection("Is the source worth its cost?", "\n".join(lines), [ReportTable(table, caption)])


def _bounded(c: SourceCost, text: str) -> str:
    return "–" if c.saving_bound == "indeterminate" else ("≥ " if c.saving_bound == "lower bound" else "") + text


def _break_even(c: SourceCost) -> str:
    if c.saving_bound == "indeterminate":
        return "–"
    if c.saving_epochs <= 0:
        return "never"
    if c.break_even_targets is None:
        return "–"
    return ("≤ " if c.saving_bound == "lower bound" else "") + str(c.break_even_targets)


def write_source_costs(costs: Sequence[SourceCost], baseline: str, headline: float | None, path: Path) -> Path:
    """``source_cost.json``: the section's numbers (NaN as null)."""

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    data = {
        "baseline": baseline,
        "threshold": headline,
        "conditions": [{k: clean(v) for k, v in asdict(c).items()} for c in costs],
    }
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


class SourceCostSection(Section):
    """The report's "Is the source worth its cost?" section and ``source_cost.json``."""

    title = "Is the source worth its cost?"
    writes = ("source_cost.json",)

    def applies(self, sweep: Sweep) -> str | None:
        if not any(_source_of(r) for r in sweep.completed):
            return "no completed start came from a source run of this sweep's source cache"
        return None

    def build(self, sweep: Sweep) -> list[ReportSection]:
        a = sweep.analysis
        _source_seconds_per_epoch.cache_clear()  # a source run may have gone on since the last report
        costs = source_costs(sweep.runs, sweep.summary, sweep.headline, a.baseline)
        write_source_costs(costs, a.baseline, sweep.headline, sweep.out_dir / "source_cost.json")
        section = source_cost_section(costs, a.baseline, sweep.headline)
        return [section] if section is not None else []

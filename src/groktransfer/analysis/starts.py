"""What each transfer start was, and whether the comparison with random is fair.

Two checks a reader needs before trusting a speed-up:

* **Fair baselines** -- the random baseline's learning rate and weight decay beside
  every transfer condition's. A condition trained with other optimizer settings
  than its baseline confounds "where it started" with "how it was trained"; the
  report warns whenever a comparison mixes them.
* **Was the memorised start memorised?** -- every transfer start records the source
  checkpoint's progress measures in ``source.json`` (``chosen.measures``). A
  ``memorized`` start whose key frequencies already carry a generalising signal
  (``restricted_test_gap`` = restricted_acc - test_acc above ``circuit_flag_gap``,
  with at least one key frequency) is flagged: circuit formation was under way, so
  it is a partly-grokked start, not a memorised one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from groktransfer.runs.rundir import SOURCE_FILE

from .collect import RunRecord
from .report import ReportSection, ReportTable
from .settings import AnalyzeJobConfig

# restricted_acc - test_acc above this (with >= 1 key frequency) = circuit formation under way
CIRCUIT_FLAG_GAP = 0.0


def start_record(run: RunRecord) -> dict[str, Any]:
    """What a run started from: the ``chosen`` record of its ``source.json`` (a cached source run's
    checkpoint), or for a start from a checkpoint file (``transfer.source.path``) the file's epoch and
    the measures computed on it at the start. Empty when the run has neither."""
    try:
        record = json.loads((run.run_dir / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if record.get("chosen"):
        return record["chosen"]
    if record.get("source_path"):
        return {"epoch": record.get("epoch"), "measures": record.get("measures") or {}, "checkpoint": record["source_path"]}
    return {}


def optimizer_frame(runs: Sequence[RunRecord], baseline: str) -> tuple[pd.DataFrame, list[str]]:
    """Per (target task, condition): the lr and weight decay values used; warnings for mixed comparisons."""
    rows, warnings = [], []
    tasks = sorted({r.task for r in runs if r.task})
    for task in tasks:
        here = [r for r in runs if r.task == task]
        base = {(r.lr, r.weight_decay) for r in here if r.condition == baseline}
        for cond in sorted({r.condition for r in here if r.condition}):
            settings = {(r.lr, r.weight_decay) for r in here if r.condition == cond}
            rows.append({
                "target task": task, "condition": cond,
                "lr": ", ".join(sorted({f"{lr:g}" for lr, _ in settings if lr is not None})) or "–",
                "weight decay": ", ".join(sorted({f"{wd:g}" for _, wd in settings if wd is not None})) or "–",
                "n runs": sum(r.condition == cond for r in here),
            })  # fmt: skip
            if cond != baseline and base and settings != base:
                warnings.append(
                    f"`{cond}` on `{task}` was trained with (lr, weight decay) {sorted(settings)} but its "
                    f"`{baseline}` baseline with {sorted(base)}: the speed-up mixes start and optimizer."
                )
        if len(base) > 1:
            warnings.append(f"the `{baseline}` runs on `{task}` themselves mix (lr, weight decay) {sorted(base)}.")
    return pd.DataFrame(rows), warnings


def start_frame(runs: Sequence[RunRecord], flag_gap: float = CIRCUIT_FLAG_GAP) -> pd.DataFrame:
    """One row per distinct transfer start (condition, source task, source epoch) with its measures."""
    rows: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        chosen = start_record(r)
        if not chosen:
            continue
        m = chosen.get("measures") or {}
        key = (r.condition, r.source_task, chosen.get("epoch"))
        if key in rows:
            rows[key]["n runs"] += 1
            continue
        gap = m.get("restricted_test_gap")
        forming = gap is not None and gap > flag_gap and (m.get("n_key_freqs") or 0) >= 1
        rows[key] = {
            "condition": r.condition, "source task": r.source_task, "source epoch": chosen.get("epoch"),
            "requested epoch": chosen.get("requested_epoch"),
            "test acc": m.get("test_acc", chosen.get("test_acc")), "restricted loss": m.get("restricted_loss"),
            "restricted acc": m.get("restricted_acc"), "excluded loss": m.get("excluded_loss"),
            "key freqs": m.get("key_freqs", ""), "restricted−test gap": gap,
            "circuit forming": bool(forming), "n runs": 1,
        }  # fmt: skip
    return pd.DataFrame(list(rows.values()))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return "–" if value is None else str(value)


def start_sections(runs: Sequence[RunRecord], out_dir: Path, settings: AnalyzeJobConfig) -> list[ReportSection]:
    """Report provider: fair-baseline table and warnings; transfer starts' measures and flags."""
    a = settings.analysis
    opt, warnings = optimizer_frame(runs, a.baseline)
    sections = []
    if not opt.empty:
        text = (f"Learning rate and weight decay of the `{a.baseline}` baseline beside every condition, per target "
                "task (a speed-up is a fair comparison only when they match).")  # fmt: skip
        text += "\n\n" + ("\n".join(f"- **Warning:** {w}" for w in warnings) if warnings else "All comparisons use the baseline's optimizer settings.")
        sections.append(ReportSection("Fair baselines", text, [ReportTable(opt, "")]))
    starts = start_frame(runs, a.circuit_flag_gap)
    if starts.empty:
        return sections
    starts.to_csv(out_dir / "starts.csv", index=False)
    flagged = starts[(starts.condition == "memorized") & starts["circuit forming"]]
    text = ("The source checkpoint each transfer start came from, with its progress measures as recorded at the "
            f"start (`{SOURCE_FILE}`). `restricted−test gap` = restricted accuracy − test accuracy: above "
            f"{a.circuit_flag_gap:g} with at least one key frequency, the key frequencies alone already "
            "out-predict the model on held-out pairs, i.e. circuit formation is under way.")  # fmt: skip
    if len(flagged):
        text += "\n\n" + "\n".join(
            f"- **Flag:** the `memorized` start at source epoch {int(e)} ({s}) shows circuit formation under way "
            f"(restricted−test gap {g:.3f}, key freqs {k}): it is not a purely memorised start."
            for e, s, g, k in zip(flagged["source epoch"], flagged["source task"], flagged["restricted−test gap"], flagged["key freqs"])
        )  # fmt: skip
    elif (starts.condition == "memorized").any():
        text += "\n\nNo `memorized` start shows circuit formation under way."
    shown = starts.map(_fmt) if hasattr(starts, "map") else starts.applymap(_fmt)
    sections.append(ReportSection("Transfer starts", text, [ReportTable(shown, "")]))
    return sections

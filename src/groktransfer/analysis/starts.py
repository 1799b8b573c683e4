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

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from groktransfer.runs.reader import ChosenStart, read_run
from groktransfer.runs.rundir import SOURCE_FILE

from .collect import RunRecord
from .report import ReportSection, ReportTable
from .section import Section, Sweep
from .settings import AnalyzeJobConfig

# restricted_acc - test_acc above this (with >= 1 key frequency) = circuit formation under way
CIRCUIT_FLAG_GAP = 0.0


def start_record(run: RunRecord) -> ChosenStart | None:
    """What a run started from (its source record's start: a cached source run's chosen checkpoint,
    or a checkpoint file's epoch and the measures computed on it); None when it has neither."""
    contents = run.contents if run.contents is not None else read_run(run.run_dir)
    return contents.source.start if contents.source is not None else None


def optimizer_frame(runs: Sequence[RunRecord], baseline: str) -> tuple[pd.DataFrame, list[str]]:
    """Per (target task, condition): the lr and weight decay values used; warnings for mixed comparisons."""
    rows, warnings = [], []
    tasks = sorted({r.task for r in runs if r.task})
    for task in tasks:
        here = [r for r in runs if r.task == task]
        base = {(r.lr, r.weight_decay) for r in here if r.condition == baseline}
        for cond in sorted({r.condition for r in here if r.condition}):
            settings = {(r.lr, r.weight_decay) for r in here if r.condition == cond}
            rows.append(
                {
                    "target task": task,
                    "condition": cond,
                    "lr": ", ".join(sorted({f"{lr:g}" for lr, _ in settings if lr is not None})) or "–",
                    "weight decay": ", ".join(sorted({f"{wd:g}" for _, wd in settings if wd is not None})) or "–",
                    "n runs": sum(r.condition == cond for r in here),
                }
            )
            if cond != baseline and base and settings != base:
                warnings.append(
                    f"`{cond}` on `{task}` was trained with (lr, weight decay) {sorted(settings)} but its "
                    f"`{baseline}` baseline with {sorted(base)}: the speed-up mixes start and optimizer."
                )
        if len(base) > 1:
            warnings.append(f"the `{baseline}` runs on `{task}` themselves mix (lr, weight decay) {sorted(base)}.")
    return pd.DataFrame(rows), warnings


#: the measures of a start shown first, where recorded (the modular family's), then every other
#: number the start's family recorded (a plugin's own measures)
START_COLUMNS = (
    ("test_acc", "test acc"),
    ("restricted_loss", "restricted loss"),
    ("restricted_acc", "restricted acc"),
    ("excluded_loss", "excluded loss"),
    ("key_freqs", "key freqs"),
    ("restricted_test_gap", "restricted−test gap"),
)
#: recorded with every start, and shown elsewhere (key freqs) or saying little about what the start is
HIDDEN_MEASURES = frozenset({"epoch", "n_key_freqs", "train_loss", "test_loss", "excluded_acc"})


def start_frame(runs: Sequence[RunRecord], flag_gap: float = CIRCUIT_FLAG_GAP) -> pd.DataFrame:
    """One row per distinct transfer start (condition, source task, source epoch) with its measures.

    Columns are the measures the starts recorded: a measure no start recorded is not a column,
    and ``circuit forming`` is a column only where the restricted−test gap was measured.
    """
    rows: dict[tuple, dict[str, Any]] = {}
    measured: list[str] = []
    for r in runs:
        chosen = start_record(r)
        if chosen is None:
            continue
        m = chosen.measures
        key = (r.condition, r.source_task, chosen.epoch)
        if key in rows:
            rows[key]["n runs"] += 1
            continue
        row: dict[str, Any] = {
            "condition": r.condition,
            "source task": r.source_task,
            "source epoch": chosen.epoch,
            "requested epoch": chosen.requested_epoch,
            "test acc": m.get("test_acc", chosen.test_acc),
        }
        for name, label in START_COLUMNS[1:]:
            row[label] = m.get(name)
        for name, value in m.items():
            if name not in HIDDEN_MEASURES and name not in dict(START_COLUMNS) and isinstance(value, (int, float)):
                row[name] = value
                measured.append(name)
        gap = m.get("restricted_test_gap")
        if gap is not None:
            row["circuit forming"] = bool(gap > flag_gap and (m.get("n_key_freqs") or 0) >= 1)
        row["n runs"] = 1
        rows[key] = row
    df = pd.DataFrame(list(rows.values()))
    if df.empty:
        return df
    fixed = ["condition", "source task", "source epoch", "requested epoch"]
    shown = [label for _, label in START_COLUMNS] + list(dict.fromkeys(measured))
    keep = [c for c in shown if c in df and df[c].notna().any()]
    flag = ["circuit forming"] if "circuit forming" in df else []
    if df["requested epoch"].isna().all():
        fixed.remove("requested epoch")
    return df[fixed + keep + flag + ["n runs"]]


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
        text = (
            f"Learning rate and weight decay of the `{a.baseline}` baseline beside every condition, per target "
            "task (a speed-up is a fair comparison only when they match)."
        )
        text += "\n\n" + (
            "\n".join(f"- **Warning:** {w}" for w in warnings)
            if warnings
            else "All comparisons use the baseline's optimizer settings."
        )
        sections.append(ReportSection("Fair baselines", text, [ReportTable(opt, "")]))
    starts = start_frame(runs, a.circuit_flag_gap)
    if starts.empty:
        return sections
    starts.to_csv(out_dir / "starts.csv", index=False)
    text = (
        "The source checkpoint each transfer start came from, with its progress measures as recorded at the "
        f"start (`{SOURCE_FILE}`)."
    )
    if "circuit forming" not in starts:
        shown = starts.map(_fmt)
        sections.append(ReportSection("Transfer starts", text, [ReportTable(shown, "")]))
        return sections
    text += (
        f" `restricted−test gap` = restricted accuracy − test accuracy: above {a.circuit_flag_gap:g} with at "
        "least one key frequency, the key frequencies alone already out-predict the model on held-out pairs, "
        "i.e. circuit formation is under way."
    )
    flagged = starts[(starts.condition == "memorized") & (starts["circuit forming"] == True)]  # noqa: E712
    if len(flagged):
        text += "\n\n" + "\n".join(
            f"- **Flag:** the `memorized` start at source epoch {int(e)} ({s}) shows circuit formation under way "
            f"(restricted−test gap {g:.3f}, key freqs {k}): it is not a purely memorised start."
            for e, s, g, k in zip(
                flagged["source epoch"], flagged["source task"], flagged["restricted−test gap"], flagged["key freqs"]
            )
        )
    elif (starts.condition == "memorized").any():
        text += "\n\nNo `memorized` start shows circuit formation under way."
    sections.append(ReportSection("Transfer starts", text, [ReportTable(starts.map(_fmt), "")]))
    return sections


class StartsSection(Section):
    """Fair baselines (the optimizer of every condition beside the baseline's) and the transfer starts."""

    title = "Fair baselines and transfer starts"
    writes = ("starts.csv",)
    provider = staticmethod(start_sections)

    def applies(self, sweep: Sweep) -> str | None:
        if any(r.lr is not None or r.weight_decay is not None for r in sweep.runs):
            return None
        if any(start_record(r) is not None for r in sweep.runs):
            return None
        return "the runs record neither optimizer settings nor transfer starts"

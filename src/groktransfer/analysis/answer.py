"""The report's first section: the answer, before any detail.

For each compared condition, at the headline threshold: the speed-up over the baseline
with its bootstrap CI, how many runs it rests on (n, censored), and one sentence saying
what that means -- "grokked starts reach 99.9% test accuracy 3.2× sooner than random
starts [95% CI 1.7, 7.0]" or "memorized starts are not distinguishable from random starts
with 3 seeds". The sentence is chosen by where the CI lies relative to 1, so it never
claims more than the interval supports.

Why its own module: the wording rules (bounds from censoring, infinite ratios, missing
baselines) are the part of the report most worth testing on a sweep whose answer is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .report import ReportSection, ReportTable
from .stats import format_ratio, threshold_key
from .tables import ci_label


@dataclass
class Answer:
    """One condition's answer at the headline threshold."""

    condition: str
    ratio: float
    ci_low: float
    ci_high: float
    bound: str
    n: int
    n_censored: int
    n_baseline: int
    n_baseline_censored: int
    median: str
    median_baseline: str
    verdict: str  # faster | slower | indistinguishable | at_start | bound | none
    sentence: str


def percent(t: float) -> str:
    """0.999 -> '99.9%'."""
    return f"{100 * t:.10g}%"


def _x(v: float) -> str:
    if math.isinf(v):
        return "∞"
    return f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _verdict(sp: pd.Series, cond: str, baseline: str, t: float, conf: float) -> tuple[str, str]:
    """(verdict, sentence) for one speed-up row."""
    reach = f"reach {percent(t)} test accuracy"
    ci = f"[{ci_label(conf)} {_x(sp.ci_low)}, {_x(sp.ci_high)}]"
    if sp.n == 0 or sp.n_baseline == 0:
        missing = cond if sp.n == 0 else baseline
        return "none", f"{cond}: no answer, `{missing}` has no completed run."
    if math.isnan(sp.ratio):
        return "none", f"{cond} and {baseline} starts both begin at {percent(t)}: no speed-up to measure."
    if math.isinf(sp.ratio):
        return (
            "at_start",
            f"{cond} starts are at {percent(t)} test accuracy from the start (median 0 epochs); {baseline} starts need {sp.median_baseline_text}.",
        )
    if sp.bound == "indeterminate":
        return "bound", (
            f"{cond} and {baseline} starts cannot be ranked at {percent(t)}: both medians are censored "
            f"(runs that never reached it), so the ratio {_x(sp.ratio)}× is only indicative."
        )
    if sp.ci_low > 1:
        at_least = "at least " if sp.bound == "lower bound" else ""
        return "faster", f"{cond} starts {reach} {at_least}{_x(sp.ratio)}× sooner than {baseline} starts {ci}."
    if sp.ci_high < 1:
        at_most = "at most " if sp.bound == "upper bound" else ""
        return "slower", (
            f"{cond} starts {reach} later than {baseline} starts: speed-up {at_most}{_x(sp.ratio)}× {ci}, "
            f"i.e. about {_x(1 / sp.ratio)}× the epochs."
        )
    n = min(int(sp.n), int(sp.n_baseline))
    return "indistinguishable", (
        f"{cond} starts are not distinguishable from {baseline} starts with {_seeds(n)} "
        f"(speed-up {_x(sp.ratio)}× {ci} includes 1)."
    )


def answers(
    summary: pd.DataFrame, speedup: pd.DataFrame, headline: float | None, baseline: str, confidence: float = 0.95
) -> list[Answer]:
    """One ``Answer`` per compared condition at the headline threshold (empty if there is none)."""
    if headline is None or speedup.empty:
        return []
    sp = speedup[speedup.threshold == headline]
    s = summary[summary.threshold == headline].set_index("condition")

    def censored(cond: str) -> int:
        return int(s.loc[cond, "n_censored"]) if cond in s.index else 0

    def median(cond: str) -> str:
        return str(s.loc[cond, "median_display"]) if cond in s.index else "–"

    out = []
    for _, row in sp.iterrows():
        row = row.copy()
        row["median_baseline_text"] = f"{median(baseline)} epochs (median)"
        verdict, sentence = _verdict(row, row.condition, baseline, headline, confidence)
        out.append(
            Answer(
                condition=row.condition,
                ratio=row.ratio,
                ci_low=row.ci_low,
                ci_high=row.ci_high,
                bound=row.bound,
                n=int(row.n),
                n_censored=censored(row.condition),
                n_baseline=int(row.n_baseline),
                n_baseline_censored=censored(baseline),
                median=median(row.condition),
                median_baseline=median(baseline),
                verdict=verdict,
                sentence=sentence,
            )
        )
    return out


def answer_section(
    summary: pd.DataFrame,
    speedup: pd.DataFrame,
    headline: float | None,
    baseline: str,
    present: list[str],
    confidence: float = 0.95,
    n_excluded: int = 0,
) -> ReportSection:
    """The report's opening section: one sentence and one row per compared condition."""
    title = "Answer"
    if headline is None:
        return ReportSection(title, "No threshold was recorded by any run: nothing to compare yet.")
    found = answers(summary, speedup, headline, baseline, confidence)
    if not found:
        why = (
            f"the baseline condition `{baseline}` has no runs"
            if baseline not in present
            else f"no condition other than `{baseline}` has runs"
        )
        return ReportSection(title, f"No speed-up at {percent(headline)}: {why}.")
    lines = [
        f"**Speed-up over `{baseline}` starts at {percent(headline)} test accuracy** "
        f"(median epochs of {baseline} / median epochs of the condition; > 1 = faster):",
        "",
    ]
    lines += [f"- {a.sentence[0].upper() + a.sentence[1:]}" for a in found]
    note = (
        f"n = completed runs; censored = runs that never reached {percent(headline)} and count as "
        "at least their last epoch (a `≥`/`≤` ratio is then a bound). "
    )
    if n_excluded:
        note += f"{n_excluded} job(s) did not complete and are not counted: see **Failed / incomplete jobs**. "
    note += "Every threshold, the figures and the method follow."
    lines += ["", note]
    table = pd.DataFrame(
        {
            "condition": [a.condition for a in found],
            f"speed-up vs {baseline} [{ci_label(confidence)}]": [
                format_ratio(a.ratio, a.ci_low, a.ci_high, a.bound) for a in found
            ],
            "median epochs": [a.median for a in found],
            f"median epochs ({baseline})": [a.median_baseline for a in found],
            "n": [a.n for a in found],
            "censored": [a.n_censored for a in found],
            f"n ({baseline})": [a.n_baseline for a in found],
            f"censored ({baseline})": [a.n_baseline_censored for a in found],
        }
    )
    caption = f"At test accuracy ≥ {threshold_key(headline)} (analysis.headline_threshold)"
    return ReportSection(title, "\n".join(lines), [ReportTable(table, caption)])

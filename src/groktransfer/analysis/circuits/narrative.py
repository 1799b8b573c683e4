"""The words of the circuit report: answers to the four questions, with numbers.

Every sentence is generated from the measured tables, so the report cannot drift
from the data. The transfer verdict is a stated rule on those numbers (thresholds in
``verdict``), not a judgement, and the report says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from groktransfer.interp.circuit.neurons import DOMINANT_MASS, SPECIALISED
from groktransfer.interp.circuit.profile import CircuitProfile
from groktransfer.runs.rundir import CHECKPOINT_DIR, FINAL_CHECKPOINT, SOURCE_FILE

from .discover import COPIED, SAME_INIT
from .sweep import SweepCircuits
from .tables import fmt_spread

REUSE_JACCARD = 0.5  # grokked median Jaccard to the source at least this ...
REUSE_MARGIN = 0.25  # ... and this much above the baseline's: "reused"
RETAINED_ACC = 0.9  # accuracy on the source task counted as "still solves it"


def _set(freqs: Sequence[int]) -> str:
    return "{" + ", ".join(str(w) for w in freqs) + "}" if freqs else "{} (none)"


def _ints(text: object) -> list[int]:
    return [int(float(w)) for w in str(text).split()]


def _pct(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.0f}%"


def _num(x: float | None, d: int = 2) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def describe_profile(prof: CircuitProfile) -> str:
    """One sentence: key frequencies, neuron specialisation, logit structure, attention."""
    epoch = f"epoch {prof.epoch}; " if prof.epoch is not None else ""
    head = f"accuracy on all {prof.p * prof.p if prof.task != 'divide' else prof.p * (prof.p - 1)} pairs {prof.accuracy:.3f}"
    if not prof.has_fourier:
        return f"{epoch}{head}. No Fourier measures: {prof.note or 'the task has no group structure'}."
    n, lg = prof.neurons, prof.logits
    assert n is not None and lg is not None
    t = prof.key_freq_threshold
    att = prof.summary()
    attn = ", ".join(f"{k[8:]} {att[k]:.2f}" for k in att if k.startswith("attn_to_"))
    attn += f"; per-head |a − b| {att['attn_ab_asymmetry']:.2f}"
    return (
        f"{epoch}{head}: key frequencies **{_set(prof.key_freqs)}** ({len(prof.key_freqs)}); dominant frequencies "
        f"(≥ {DOMINANT_MASS:.0%} of the MLP's variance) {_set(prof.dominant_freqs)}; "
        f"{_pct(n.n_over(t) / n.d_mlp)} of its {n.d_mlp} MLP neurons hold > {t:g} of their variance at one "
        f"frequency ({_pct(n.n_over(SPECIALISED) / n.d_mlp)} > {SPECIALISED:g}; {n.n_dead} dead); the key "
        f"frequencies carry {_pct(prof.key_logit_frac())} of the logit variance along {lg.directions} "
        f"({_pct(lg.residual_frac)} is explained by no frequency). Attention from '=' (mean over heads): {attn}."
    )


def source_text(sc: SweepCircuits) -> str:
    """(1) What circuit the source learned."""
    lines = ["**(1) What circuit the source learned.**", ""]
    if not sc.sources:
        return "\n".join(
            lines + [f"No source model found (no run in this sweep has a {SOURCE_FILE}): nothing to compare with."]
        )
    shown = list(sc.sources.values())[:4]
    for src in shown:
        ref = src.reference
        if ref is None:
            lines.append(
                f"- Source {src.task.pretty}: no readable checkpoint ({'; '.join(src.problems) or 'not found'})."
            )
            continue
        users = Counter(r.target.condition for r in sc.runs if r.target.source_key == src.key)
        whom = ", ".join(f"{n} {c}" for c, n in users.items()) or "no analysed run"
        lines.append(
            f'- {ref.label} — the reference for the "to source" comparisons of the runs started from '
            f"this source ({whom}): {describe_profile(ref)}"
        )
        for prof in src.starts.values():
            if prof is not ref:
                lines.append(f"- {prof.label} (a starting point, not the reference): {describe_profile(prof)}")
    if len(sc.sources) > len(shown):
        lines.append(f"- … and {len(sc.sources) - len(shown)} more source run(s); see `circuits/circuits_sources.csv`.")
    return "\n".join(lines)


def conditions_text(sc: SweepCircuits, runs_df: pd.DataFrame) -> str:
    """(2) What each condition learned."""
    lines = [
        "**(2) What each condition learned** (median [min–max] over seeds; target task in its own directions).",
        "",
    ]
    t = f"{sc.key_freq_threshold:g}"
    for cond in sc.conditions:
        df = runs_df[runs_df.condition == cond]
        if df.empty:
            continue
        sets = "; ".join(
            f"s{s}: {_set(_ints(k))} (dominant {_set(_ints(d))})"
            for s, k, d in zip(df.seed, df.key_freqs.fillna(""), df.dominant_freqs.fillna(""))
        )
        lines.append(
            f"- **{cond}** ({len(df)} seed(s), {df.task.iloc[0]} mod {int(df.p.iloc[0])}; test accuracy "
            f"{fmt_spread(df.test_acc.tolist(), 3)}): key frequencies {sets} — n = {fmt_spread(df.n_key_freqs.tolist(), 0)}; "
            f"neurons > {t}: {fmt_spread(df[f'frac_neurons_over_{t}'].tolist(), 2, pct=True)}, "
            f"> {SPECIALISED:g}: {fmt_spread(df['frac_neurons_over_0.5'].tolist(), 2, pct=True)}, "
            f"dead: {fmt_spread(df.neurons_dead.tolist(), 0)}; logit variance at its key frequencies "
            f"{fmt_spread(df.key_freq_logit_frac.tolist(), 2, pct=True)}, unexplained "
            f"{fmt_spread(df.logit_residual_frac.tolist(), 2, pct=True)}; attention from '=' to a/b/= "
            f"{_num(df['attn_to_a'].median())}/{_num(df['attn_to_b'].median())}/{_num(df['attn_to_='].median())}, "
            f"per-head |a − b| {fmt_spread(df['attn_ab_asymmetry'].tolist())}."
        )
    return "\n".join(lines)


def _cell(sim: pd.DataFrame, metric: str, a: str, b: str) -> str:
    row = sim[(sim.metric == metric) & (sim.ref == a) & (sim.other == b)]
    if row.empty or row.n.iloc[0] == 0:
        return "n/a"
    r = row.iloc[0]
    sd = f" ± {r['sd']:.2f}" if np.isfinite(r["sd"]) else ""
    return f"{r['mean']:.2f}{sd} (n={int(r['n'])})"


def differences_text(sc: SweepCircuits, sim: pd.DataFrame, runs_df: pd.DataFrame | None = None) -> str:
    """(3) How the conditions differ, from the similarity matrices."""
    conds = sc.conditions
    lines = [
        "**(3) How they differ.** Mean ± sd over pairs of models (n pairs); the matrices are in the figure below.",
        "",
    ]
    for metric, what in (("jaccard", "Key-frequency Jaccard"), ("mass_similarity", "Frequency-mass ∩")):
        within = "; ".join(f"{c} {_cell(sim, metric, c, c)}" for c in conds)
        between = "; ".join(f"{a}–{b} {_cell(sim, metric, a, b)}" for i, a in enumerate(conds) for b in conds[i + 1 :])
        lines.append(f"- {what} between seeds of the same condition: {within}. Between conditions: {between or 'n/a'}.")
    refs = [s.reference for s in sc.sources.values() if s.reference is not None]
    if runs_df is not None and "attn_ab_asymmetry" in runs_df:
        src = f"source {refs[0].summary()['attn_ab_asymmetry']:.2f}; " if len(refs) == 1 else ""
        per = "; ".join(
            f"{c} {fmt_spread(runs_df.loc[runs_df.condition == c, 'attn_ab_asymmetry'].tolist())}" for c in conds
        )
        lines.append(
            f"- Attention from '=' — mean over heads of |attention to a − attention to b| (0: every head "
            f"reads a and b equally, as a+b allows; 1: every head reads only one of them): {src}{per}."
        )
    return "\n".join(lines)


def _median(df: pd.DataFrame, col: str) -> float:
    v = pd.to_numeric(df[col], errors="coerce").dropna()
    return float(v.median()) if len(v) else float("nan")


def verdict(jac: dict[str, float], baseline: str) -> str:
    """The transfer verdict as a stated rule on the median dominant-frequency Jaccard to
    the source (dominant rather than key: a single low-variance neuron makes a frequency
    key, and such minor frequencies differ between seeds without changing the circuit)."""
    g = jac.get("grokked", float("nan"))
    b = jac.get(baseline, float("nan"))
    values = ", ".join(f"{c} {_num(v)}" for c, v in jac.items())
    rule = (
        f"Rule, on the median dominant-frequency Jaccard with the source ({values}): 'reused' when grokked is "
        f"≥ {REUSE_JACCARD} and ≥ {REUSE_MARGIN} above the baseline `{baseline}`; 'no sign' when within 0.1 of it; "
        f"'partial' otherwise."
    )
    if not np.isfinite(g):
        return "No grokked-condition run with Fourier measures and a source: no verdict on transfer of the grokked algorithm."
    if not np.isfinite(b):
        rule += f" `{baseline}` has no value (no run of it paired with a source), so only the grokked level is judged."
    if g >= REUSE_JACCARD and (not np.isfinite(b) or g - b >= REUSE_MARGIN):
        head = "**Verdict: the grokked algorithm's frequencies are reused** — grokked starts keep the source's dominant frequencies."
    elif np.isfinite(b) and g <= b + 0.1:
        head = (
            f"**Verdict: no sign that the grokked algorithm transfers as such** — grokked starts overlap the "
            f"source's dominant frequencies no more than `{baseline}` starts do."
        )
    else:
        head = (
            f"**Verdict: partial reuse** — grokked starts share some of the source's dominant frequencies "
            f"(median Jaccard {g:.2f}), below the 'reused' bar."
        )
    return f"{head} {rule}"


def transfer_text(sc: SweepCircuits, runs_df: pd.DataFrame, baseline: str = "random") -> str:
    """(4) Whether the grokked algorithm transfers: overlap, neuron lineage, retention."""
    lines = ["**(4) Does the grokked algorithm transfer?**", ""]
    if runs_df.empty or runs_df.jaccard_to_source.isna().all() and runs_df.retention_acc.isna().all():
        return "\n".join(lines + ["No source model to compare with: not answerable from this sweep."])
    conds = sc.conditions
    jac = {c: _median(runs_df[runs_df.condition == c], "jaccard_dominant_to_source") for c in conds}

    def per_cond(col: str, d: int = 2) -> str:
        return "; ".join(f"{c} {fmt_spread(runs_df.loc[runs_df.condition == c, col].tolist(), d)}" for c in conds)

    lines.append(
        f"- Key frequencies overlap the source's with Jaccard {per_cond('jaccard_to_source')} "
        f"(median [min–max] over seeds); dominant frequencies (≥ {DOMINANT_MASS:.0%} of the MLP's "
        f"variance): {per_cond('jaccard_dominant_to_source')}."
    )
    lines.append(
        f"- Neuron-frequency histogram ∩ with the source: {per_cond('hist_intersection_to_source')}; "
        f"frequency-mass ∩: {per_cond('mass_similarity_to_source')}."
    )
    matched = []
    for c in conds:
        df = runs_df[runs_df.condition == c]
        shared = df[df.lineage.isin([COPIED, SAME_INIT])]
        if shared.empty:
            matched.append(f"{c}: n/a (independent initialisation)")
            continue
        kind = (
            "MLP copied from the source" if (shared.lineage == COPIED).all() else "same initial weights as the source"
        )
        part = "" if len(shared) == len(df) else f" ({len(shared)} of {len(df)} seeds: {kind})"
        matched.append(
            f"{c} keeps {fmt_spread(shared.neurons_kept_from_source.tolist(), 2, pct=True)} of the source's "
            f"specialised neurons on their frequency, Spearman ρ of per-neuron share "
            f"{fmt_spread(shared.frac_spearman_to_source.tolist())}{part}"
        )
    lines.append(
        "- Neuron-matched (same neuron index = same unit followed from the source): " + "; ".join(matched) + "."
    )
    refs = [s.reference for s in sc.sources.values() if s.reference is not None]
    ret_task = next((t for t in runs_df.retention_task if t), "the source task")
    own = f"the source itself {refs[0].accuracy:.3f}, " if len(refs) == 1 else ""
    p = refs[0].p if refs else None
    chance = f"chance {1 / p:.3f}" if p else ""
    lines.append(
        f"- Retention — accuracy on {ret_task}, all pairs ({own}{chance}): {per_cond('retention_acc', 3)}; "
        f"share of the logit variance still along the source task's Fourier directions: "
        f"{per_cond('retention_logit_share', 3)}."
    )
    ceiling = _median(runs_df, "retention_ceiling")
    if np.isfinite(ceiling) and ceiling < 1:
        lines.append(
            f"- Both tasks read the same inputs, so a model that solves the target perfectly can score at most "
            f"{ceiling:.3f} on the source task (the pairs where both answers coincide). Retention near that "
            f"value means the model now computes the target on every input; above it, it still partly "
            f"computes the source answer."
        )
    g_ret = _median(runs_df[runs_df.condition == "grokked"], "retention_acc") if "grokked" in conds else float("nan")
    lines += ["", verdict(jac, baseline if baseline in conds else (conds[-1] if conds else baseline))]
    if np.isfinite(g_ret):
        state = "still solve" if g_ret >= RETAINED_ACC else "no longer solve"
        lines.append(
            f"Grokked starts {state} the source task after training on the target (median retention "
            f"{g_ret:.3f}; 'still solve' means ≥ {RETAINED_ACC})."
        )
    return "\n".join(lines)


def method_text(sc: SweepCircuits) -> str:
    """Definitions and the caveats a reader needs to trust the numbers."""
    t = f"{sc.key_freq_threshold:g}"
    return "\n".join(
        [
            f"Every model is read on all p² inputs of its own task, in the Fourier basis of that task's group "
            f"(`groktransfer.tasks.fourier` / `measures`): for a−b the logit directions are cos/sin(w(a−b−c)), for a+b "
            f"cos/sin(w(a+b−c)). A neuron's frequency is the one holding the largest share of its activation "
            f"variance over (a, b) (2-D components (w,0), (0,w), (w,w)); key frequencies are those with at least "
            f"one neuron whose share is > {t} (the training measures' threshold); *dominant* frequencies are those "
            f"holding ≥ {DOMINANT_MASS:.0%} of the MLP's total activation variance (one weak neuron can make a frequency "
            f"key, not dominant). A neuron with (numerically) constant activation is reported as dead, never "
            f"assigned a frequency.",
            "",
            "- Comparing frequencies across a+b and a−b models is meaningful: both tasks live on Z_p, a−b = a+(−b) "
            "only flips the phase of the b-side (sin(w(−b)) = −sin(wb)), so frequency w is the same Fourier "
            "component in both; and the 2-D neuron basis over (a, b) is identical for the two tasks.",
            "- Order-independent comparisons (Jaccard of key-frequency sets, histogram intersection of neurons per "
            "frequency, intersection of the per-frequency share of total neuron variance — the *frequency mass*) "
            "work between any two models.",
            "- Rank correlation over neuron indices is meaningful **only between models whose MLP started from the "
            "same weights** (a transfer run and its source, or two runs from the same source). In two "
            "independently initialised networks neuron i and neuron i are unrelated units — permuting the hidden "
            "units gives the same function — so such a correlation is chance. Neuron-matched metrics are therefore "
            "computed only for shared lineage and shown as n/a otherwise.",
            "- Retention is the accuracy of each final model on every pair of the source task (it never trained on "
            "them in this run), plus the share of its logit variance along the source task's Fourier directions. "
            "Random starts are included as the chance-level reference.",
            "- The Spearman correlation of per-neuron shares is weak evidence when most neurons sit near the ceiling "
            "share (ties and noise decide the ranks); the share of neurons keeping their frequency is the more "
            "robust neuron-matched measure.",
            "- Heads are matched by index only within a lineage; the attention figure therefore shows one row per "
            "(seed, head) instead of averaging heads of unrelated models, and the tables use head-order-free "
            "summaries (mean over heads, mean per-head |a − b|).",
        ]
    )


def skipped_text(sc: SweepCircuits) -> str:
    if not sc.plan.skipped:
        return f"All {len(sc.runs)} completed run(s) with a final checkpoint were analysed."
    return (
        f"{len(sc.plan.skipped)} run(s) were not analysed (failed, incomplete or without "
        f"`{CHECKPOINT_DIR}/{FINAL_CHECKPOINT}`); they are listed in the table below."
    )

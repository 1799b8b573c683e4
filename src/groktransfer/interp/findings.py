"""Findings: the claims the two seed analyses make about their own models, each checked on
this model's numbers.

Why: a reading is only useful next to what it was expected to show. Each
:class:`Finding` states one claim in this project's words, what the seed analysis
reported for its model, and a check that reads the interpretation's scalars (so the same
check runs on one checkpoint and on every run of a sweep) and says whether the claim
holds here, with the numbers. The criterion is part of the claim's text, so "holds" is
never a judgement call. Families are keyed as in ``families.family_key``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import pandas as pd

Scalars = Mapping[str, float]
Check = Callable[[Scalars], Optional[Tuple[bool, str]]]


@dataclass(frozen=True)
class Finding:
    claim: str  # the claim and the criterion used here
    seed_result: str  # what the seed analysis reported about its own model
    check: Check


def _matching(s: Scalars, pattern: str) -> Dict[Tuple[str, ...], float]:
    """{regex groups: value} of the scalars whose name matches ``pattern`` in full."""
    rx = re.compile(pattern)
    return {m.groups(): float(v) for k, v in s.items() if (m := rx.fullmatch(k))}


# --------------------------------------------------------------------------- digit (ARENA) model
def _l0_queries(s: Scalars) -> Optional[Tuple[bool, str]]:
    q = _matching(s, r"head_mean_q_L0H(\d+)_d_loss\[(.+)\]")
    z = _matching(s, r"head_mean_z_L(\d+)H(\d+)_d_loss\[(.+)\]")
    if not q or not z:
        return None
    worst_q, worst_z = max(q.values()), max(z.values())
    holds = worst_q < 0.05 and worst_q < 0.1 * worst_z
    return holds, f"largest loss increase from mean-ablating a layer-0 query: {worst_q:.4f} (largest head-output ablation: {worst_z:.3f})"


def _critical_heads(s: Scalars) -> Optional[Tuple[bool, str]]:
    z = _matching(s, r"head_mean_z_L(\d+)H(\d+)_d_loss\[(.+)\]")
    if not z:
        return None
    answers = list(dict.fromkeys(a for _, _, a in z))
    tops, in_l0 = [], True
    for a in answers:
        (l, h), v = max((((l, h), v) for (l, h, aa), v in z.items() if aa == a), key=lambda t: t[1])
        tops.append(f"{a}: L{l}H{h} {v:.2f}")
        in_l0 &= l == "0"
    totals = {h: sum(v for (l, hh, _), v in z.items() if l == "0" and hh == h) for (_, h, _) in z}
    least = min(totals, key=totals.get)
    return in_l0, "most critical head per digit (loss increase) " + "; ".join(tops) + f"; least critical layer-0 head L0H{least}"


def _corresponding_digits(s: Scalars) -> Optional[Tuple[bool, str]]:
    cd = _matching(s, r"qk_cd_share\[L0H(\d+)/(.+)\]")
    if not cd:
        return None
    answers = list(dict.fromkeys(a for _, a in cd))
    best = {a: max(((h, v) for (h, aa), v in cd.items() if aa == a), key=lambda t: t[1]) for a in answers}
    readers = {a: sorted(h for (h, aa), v in cd.items() if aa == a and v >= 0.5) for a in answers}
    holds = all(v >= 0.5 for _, v in best.values())
    text = "; ".join(f"{a}: L0H{h} {v:.2f}" + (f" (≥0.5: {','.join('H' + x for x in readers[a])})" if readers[a] else "")
                     for a, (h, v) in best.items())  # fmt: skip
    return holds, "best layer-0 head's share on the corresponding digits: " + text


def _last_layer_dla(s: Scalars) -> Optional[Tuple[bool, str]]:
    d = _matching(s, r"dla_L(\d+)H(\d+)\[(.+)\]")
    if not d:
        return None
    last = max(l for l, _, _ in d)
    answers = list(dict.fromkeys(a for _, _, a in d))
    rows, holds = [], True
    for a in answers:
        hi = sum(abs(v) for (l, _, aa), v in d.items() if aa == a and l == last)
        lo = sum(abs(v) for (l, _, aa), v in d.items() if aa == a and l != last)
        holds &= hi > lo
        rows.append(f"{a}: {hi:.1f} vs {lo:.1f}")
    return holds, f"sum of |mean DLA| of layer-{last} heads vs earlier heads: " + "; ".join(rows)


def _paths_through_last(s: Scalars) -> Optional[Tuple[bool, str]]:
    p = _matching(s, r"path_share_heads_to_last\[(.+)\]")
    if not p:
        return None
    return all(v >= 0.5 for v in p.values()), "share of the correct logit through a layer-0 head then a last-layer head: " + \
        "; ".join(f"{a}: {v:.2f}" for (a,), v in p.items())


def _wu_few_dims(s: Scalars) -> Optional[Tuple[bool, str]]:
    if "wu_dims_for_90" not in s:
        return None
    n = int(s["wu_dims_for_90"])
    return n <= 8, f"{n} residual dimensions hold 90% of W_U's power over the digits"


def _wu_frequency_one(s: Scalars) -> Optional[Tuple[bool, str]]:
    if "wu_top_freq" not in s:
        return None
    f, share = int(s["wu_top_freq"]), s["wu_top_freq_share"]
    return f == 1 and share >= 0.8, f"strongest frequency {f} with {share:.1%} of the power"


def _wu_circle(s: Scalars) -> Optional[Tuple[bool, str]]:
    if "wu_radius_cv" not in s:
        return None
    holds = s["wu_top2_share"] >= 0.8 and s["wu_radius_cv"] <= 0.2 and abs(s["wu_circle_freq"] - 1) <= 0.1 and s["wu_angle_step_spread"] <= 0.3
    return holds, (f"top-2 singular share {s['wu_top2_share']:.1%}, radius CV {s['wu_radius_cv']:.3f}, step "
                   f"{s['wu_circle_freq']:.2f} × 2π/10 (max deviation {s['wu_angle_step_spread']:.2f} rad)")  # fmt: skip


def _wu_rebuilt(s: Scalars) -> Optional[Tuple[bool, str]]:
    if "wu_rebuilt_error" not in s:
        return None
    holds = s["wu_rebuilt_error"] <= 0.3 and s["wu_rebuilt_acc"] >= s["wu_clean_acc"] - 0.01
    return holds, f"relative error {s['wu_rebuilt_error']:.3f}; digit accuracy {s['wu_rebuilt_acc']:.4f} (clean {s['wu_clean_acc']:.4f})"


def _carry_attention(s: Scalars) -> Optional[Tuple[bool, str]]:
    tv = _matching(s, r"attn_class_tv\[L(\d+)H(\d+)/(.+)/(.+)\]")
    if not tv:
        return None
    (l, h, a, c), v = max(tv.items(), key=lambda t: t[1])
    return v >= 0.1, f"largest total-variation distance between carry and no-carry attention: {v:.3f} (L{l}H{h}, {a}, {c})"


def _keys_for_carries(s: Scalars) -> Optional[Tuple[bool, str]]:
    sub = _matching(s, r"subset_d_loss\[L(\d+)H(\d+) k/(.+)\]")
    if sub and {c for _, _, c in sub} == {"no carry anywhere", "some carry"}:
        last = max(int(l) for l, _, _ in sub)
        none = {h: v for (l, h, c), v in sub.items() if int(l) == last and c == "no carry anywhere"}
        carry = {h: v for (l, h, c), v in sub.items() if int(l) == last and c == "some carry"}
        worst_none, worst_carry = max(none.values()), max(carry.values())
        holds = worst_none < 0.25 * worst_carry
        heads = ", ".join(f"H{h} {none[h]:.3f} / {carry[h]:.3f}" for h in sorted(none))
        text = (f"loss increase from mean-ablating a layer-{last} key, mean over each subset's own examples (examples "
                f"without any carry / with one): {heads}")  # fmt: skip
        n = (s.get("subset_n[no carry anywhere]"), s.get("subset_n[some carry]"))
        if None not in n:
            text += f" ({int(n[0])} / {int(n[1])} examples)"
        return holds, text
    d = _matching(s, r"class_d_loss\[L(\d+)H(\d+) k mean/(.+)/(.+)\]")
    if not d:
        return None
    last = max(l for l, _, _, _ in d)
    none = max(v for (l, _, _, c), v in d.items() if l == last and c == "no carry")
    carry = max(v for (l, _, _, c), v in d.items() if l == last and c != "no carry")
    return none < 0.25 * carry, (f"largest loss increase from mean-ablating a layer-{last} key (mean over every input): "
                                 f"{none:.3f} on digits without a carry, {carry:.3f} on digits with one")  # fmt: skip


def _confident(s: Scalars) -> Optional[Tuple[bool, str]]:
    if "prob_correct_mean[all]" not in s:
        return None
    m, med, lo = s["prob_correct_mean[all]"], s["prob_correct_median[all]"], s["prob_correct_min[all]"]
    return m >= 0.99, f"mean {m:.4f}, median {med:.4f}, minimum {lo:.4f}"


# --------------------------------------------------------------------------- int_add model
def _pc1_linear(s: Scalars) -> Optional[Tuple[bool, str]]:
    if "pc1_linear_r2" not in s:
        return None
    return s["pc1_linear_r2"] >= 0.95, f"linear R² {s['pc1_linear_r2']:.3f}; PC1 explains {s.get('embed_pc1_explained', float('nan')):.1%}"


def _pc2_quadratic(s: Scalars) -> Optional[Tuple[bool, str]]:
    if "pc2_quadratic_r2" not in s:
        return None
    holds = s["pc2_quadratic_r2"] >= 0.9 and s["pc2_linear_r2"] < 0.5
    return holds, (f"quadratic R² {s['pc2_quadratic_r2']:.3f}, linear R² {s['pc2_linear_r2']:.3f}; "
                   f"PC2 explains {s.get('embed_pc2_explained', float('nan')):.1%}")  # fmt: skip


def _many_sum_neurons(s: Scalars) -> Optional[Tuple[bool, str]]:
    if "n_sum_neurons_post" not in s:
        return None
    n, d = int(s["n_sum_neurons_post"]), int(s["d_mlp"])
    return n >= 0.1 * d, f"{n} of {d} neurons ({n / d:.0%}) with correlation > 0.9 after the ReLU ({int(s['n_sum_neurons_pre'])} before)"


def _neuron_pc_fit(s: Scalars) -> Optional[Tuple[bool, str]]:
    if "pc_regression_r2_top" not in s:
        return None
    return s["pc_regression_r2_top"] >= 0.9, (f"R² {s['pc_regression_r2_top']:.3f} for the most a+b-correlated neuron, "
                                               f"median {s['pc_regression_r2_median']:.3f} over the top neurons")  # fmt: skip


def _sum_probe(s: Scalars) -> Optional[Tuple[bool, str]]:
    p = _matching(s, r"probe\[blocks\.(\d+)\.mlp\.hook_post@(\d+)->a\+b\]")
    if not p:
        return None
    (_, _), v = max(p.items(), key=lambda t: t[1])
    return v >= 0.99, f"held-out R² {v:.4f}"


def _only_pc1_breaks(s: Scalars) -> Optional[Tuple[bool, str]]:
    if "embed_only_pc1_acc" not in s or "clean_acc[=]" not in s:
        return None
    clean, only = s["clean_acc[=]"], s["embed_only_pc1_acc"]
    text = f"accuracy {clean:.3f} → {only:.3f} with PC1 alone"
    if "embed_pc2_ablated_acc" in s:
        text += f"; {s['embed_pc2_ablated_acc']:.3f} with only PC2 removed"
    return clean - only >= 0.2, text


FAMILY_FINDINGS: Dict[str, Tuple[Finding, ...]] = {
    "digit": (
        Finding("Mean-ablating the layer-0 queries changes nothing (every loss increase < 0.05 nats and < 10% of the "
                "largest head ablation)", "no loss change for any layer-0 query", _l0_queries),
        Finding("Layer-0 heads are the most critical to ablate, for every answer digit",
                "H0.1 and H0.2 most critical (H0.1 for digits 2, 3; H0.2 for 1, 2, 3); H0.0 least", _critical_heads),
        Finding("Each answer digit is read by a layer-0 head that attends to the corresponding digits of both "
                "operands (mean-query attention share ≥ 0.5)", "H0.0: digit 0; H0.1: digits 0, 2, 3; H0.2: digits 1, 2, 3",
                _corresponding_digits),
        Finding("The last layer's heads dominate the direct logit attribution (more |DLA| than the earlier heads, "
                "every digit)", "layer-1 heads dominate the DLA", _last_layer_dla),
        Finding("Most of the correct logit travels a layer-0 head → last-layer head path (share ≥ 0.5 per digit)",
                "paths 0.x → 1.y carry the answer; messy in detail", _paths_through_last),
        Finding("W_U lives on a few residual dimensions (≤ 8 hold 90% of its power)", "4 significant dimensions of 48",
                _wu_few_dims),
        Finding("W_U's digit columns are one frequency, frequency 1 (≥ 80% of the power)", "every significant dimension "
                "is a cosine of frequency 1 (ω = 2π/10) with its own phase", _wu_frequency_one),
        Finding("The digits sit on a circle, in order, in W_U's top-2 singular plane (top-2 share ≥ 80%, radius CV ≤ "
                "0.2, steps of 2π/10 within 0.3 rad)", "two large singular values; the digits form a circle", _wu_circle),
        Finding("W_U rebuilt from frequency 1 alone keeps the model's accuracy (relative error ≤ 0.3, accuracy within "
                "0.01)", "W_U[d, i] ≈ A_d cos(2πi/10 + φ_d)", _wu_rebuilt),
        Finding("Last-layer attention differs between digits with and without an incoming carry (total variation ≥ 0.1 "
                "for some head)", "clear differences in layer-1 attention with a carry", _carry_attention),
        Finding("Mean-ablating last-layer keys hurts only examples with a carry (on the examples without any carry, "
                "with the mean over them, every increase < 25% of the largest on the examples with one)",
                "without carries, mean-ablating layer-1 keys does not change the loss", _keys_for_carries),
        Finding("The model is confident (mean probability on the correct digit ≥ 0.99)",
                "mean 0.993, median 0.996, minimum 0.759", _confident),
    ),
    "int_add": (
        Finding("PC1 of the operand embeddings is linear in the token (R² ≥ 0.95)", "PC1 linear in the token; "
                "explains about 75% of the variance (PC2 about 25%)", _pc1_linear),
        Finding("PC2 is quadratic in the token (quadratic R² ≥ 0.9, linear R² < 0.5)", "PC2 a parabola of the token",
                _pc2_quadratic),
        Finding("Many neurons track a+b (≥ 10% of the MLP with correlation > 0.9)", "more than 130 of 512 neurons",
                _many_sum_neurons),
        Finding("A sum neuron's pre-activation is linear in PC1 and PC2 of a and b (R² ≥ 0.9)", "excellent R² for "
                "neuron 240", _neuron_pc_fit),
        Finding("The MLP output holds a+b linearly (probe R² ≥ 0.99)", "almost perfect linear regression", _sum_probe),
        Finding("Keeping only PC1 of the operand embeddings (dropping PC2 and the rest) breaks the model (accuracy "
                "falls by ≥ 0.2)", "accuracy 100% → 42%; failures symmetric in a, b, at 0 and mid-range pairs",
                _only_pc1_breaks),
    ),
}


def findings_table(family: Optional[str], scalars: Scalars) -> pd.DataFrame:
    """One row per finding of the family: the claim, the seed's result, this model's
    numbers and ``holds`` / ``differs`` (``not measured`` when the scalars are missing)."""
    rows: List[Dict[str, str]] = []
    for f in FAMILY_FINDINGS.get(str(family), ()):
        out = f.check(scalars)
        verdict, measured = ("not measured", "–") if out is None else ("holds" if out[0] else "differs", out[1])
        rows.append({"claim": f.claim, "seed analysis": f.seed_result, "this model": measured, "verdict": verdict})
    return pd.DataFrame(rows, columns=["claim", "seed analysis", "this model", "verdict"])

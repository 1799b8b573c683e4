"""Findings: the claims the two seed analyses make about their own models, each checked on
this model's numbers.

Why: a reading is only useful next to what it was expected to show. Each
:class:`Finding` states one claim in this project's words, what the seed analysis
reported for its model, and a check that selects the quantities it ``reads`` from the
interpretation's measurements by their labels (so the same check runs on one checkpoint
and on every run of a sweep) and says whether the claim holds here, with the numbers. The
criterion is part of the claim's text, so "holds" is never a judgement call; a quantity a
finding reads that no reading declares fails at import. Families are keyed as in
``reading.family_key``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .by_class import NO_CARRY_ANYWHERE, SOME_CARRY
from .measurements import Measurements, quantity

Check = Callable[[Measurements], tuple[bool, str] | None]


@dataclass(frozen=True)
class Finding:
    claim: str  # the claim and the criterion used here
    seed_result: str  # what the seed analysis reported about its own model
    check: Check
    reads: tuple[str, ...] = ()  # the quantities the check selects (checked against QUANTITIES)

    def __post_init__(self) -> None:
        for name in self.reads:
            quantity(name)  # a renamed quantity fails here, at import, not as "not measured" later


def _top(d: pd.DataFrame, by: str = "value") -> pd.Series:
    return d.sort_values(by, ascending=False, kind="stable").iloc[0]


# --------------------------------------------------------------------------- digit (ARENA) model
def _l0_queries(m: Measurements) -> tuple[bool, str] | None:
    q = m.select("head_d_loss", kind="mean", site="q", layer=0)
    z = m.select("head_d_loss", kind="mean", site="z")
    if q.empty or z.empty:
        return None
    worst_q, worst_z = q.value.max(), z.value.max()
    holds = worst_q < 0.05 and worst_q < 0.1 * worst_z
    return (
        holds,
        f"largest loss increase from mean-ablating a layer-0 query: {worst_q:.4f} (largest head-output ablation: {worst_z:.3f})",
    )


def _critical_heads(m: Measurements) -> tuple[bool, str] | None:
    z = m.select("head_d_loss", kind="mean", site="z")
    if z.empty:
        return None
    tops, in_l0 = [], True
    for answer, d in z.groupby("answer", sort=False):
        t = _top(d)
        tops.append(f"{answer}: L{int(t.layer)}H{int(t['head'])} {t.value:.2f}")
        in_l0 &= int(t.layer) == 0
    totals = z[z.layer == 0].groupby("head").value.sum().reindex(sorted(set(z["head"])), fill_value=0.0)
    least = int(totals.idxmin())
    return in_l0, "most critical head per digit (loss increase) " + "; ".join(
        tops
    ) + f"; least critical layer-0 head L0H{least}"


def _corresponding_digits(m: Measurements) -> tuple[bool, str] | None:
    cd = m.select("qk_cd_share", layer=0)
    if cd.empty:
        return None
    parts, holds = [], True
    for answer, d in cd.groupby("answer", sort=False):
        t = _top(d)
        readers = sorted(int(h) for h in d[d.value >= 0.5]["head"])
        holds &= t.value >= 0.5
        parts.append(
            f"{answer}: L0H{int(t['head'])} {t.value:.2f}"
            + (f" (≥0.5: {','.join(f'H{h}' for h in readers)})" if readers else "")
        )
    return bool(holds), "best layer-0 head's share on the corresponding digits: " + "; ".join(parts)


def _last_layer_dla(m: Measurements) -> tuple[bool, str] | None:
    d = m.select("dla_head")
    if d.empty:
        return None
    last = int(d.layer.max())
    rows, holds = [], True
    for answer, g in d.groupby("answer", sort=False):
        hi = g[g.layer == last].value.abs().sum()
        lo = g[g.layer != last].value.abs().sum()
        holds &= hi > lo
        rows.append(f"{answer}: {hi:.1f} vs {lo:.1f}")
    return bool(holds), f"sum of |mean DLA| of layer-{last} heads vs earlier heads: " + "; ".join(rows)


def _paths_through_last(m: Measurements) -> tuple[bool, str] | None:
    p = m.select("path_share_heads_to_last")
    if p.empty:
        return None
    return bool(
        (p.value >= 0.5).all()
    ), "share of the correct logit through a layer-0 head then a last-layer head: " + "; ".join(
        f"{a}: {v:.2f}" for a, v in zip(p.answer, p.value)
    )


def _wu_few_dims(m: Measurements) -> tuple[bool, str] | None:
    n = m.value("wu_dims_for_90")
    if n is None:
        return None
    return int(n) <= 8, f"{int(n)} residual dimensions hold 90% of W_U's power over the digits"


def _wu_frequency_one(m: Measurements) -> tuple[bool, str] | None:
    f, share = m.value("wu_top_freq"), m.value("wu_top_freq_share")
    if f is None or share is None:
        return None
    return int(f) == 1 and share >= 0.8, f"strongest frequency {int(f)} with {share:.1%} of the power"


def _wu_circle(m: Measurements) -> tuple[bool, str] | None:
    v = {k: m.value(k) for k in ("wu_top2_share", "wu_radius_cv", "wu_circle_freq", "wu_angle_step_spread")}
    if any(x is None for x in v.values()):
        return None
    top2, cv, freq, spread = (float(v[k]) for k in v)  # type: ignore[arg-type]
    holds = top2 >= 0.8 and cv <= 0.2 and abs(freq - 1) <= 0.1 and spread <= 0.3
    return (
        holds,
        f"top-2 singular share {top2:.1%}, radius CV {cv:.3f}, step {freq:.2f} × 2π/10 (max deviation {spread:.2f} rad)",
    )


def _wu_rebuilt(m: Measurements) -> tuple[bool, str] | None:
    err, acc, clean = m.value("wu_rebuilt_error"), m.value("wu_rebuilt_acc"), m.value("wu_clean_acc")
    if err is None or acc is None or clean is None:
        return None
    holds = err <= 0.3 and acc >= clean - 0.01
    return holds, f"relative error {err:.3f}; digit accuracy {acc:.4f} (clean {clean:.4f})"


def _carry_attention(m: Measurements) -> tuple[bool, str] | None:
    tv = m.select("attn_class_tv")
    if tv.empty:
        return None
    t = _top(tv)
    return t.value >= 0.1, (
        f"largest total-variation distance between carry and no-carry attention: {t.value:.3f} "
        f"(L{int(t.layer)}H{int(t['head'])}, {t.answer}, {t.cls})"
    )


def _keys_for_carries(m: Measurements) -> tuple[bool, str] | None:
    sub = m.select("subset_d_loss", site="k")
    if not sub.empty and set(sub.subset) == {NO_CARRY_ANYWHERE, SOME_CARRY}:
        last = int(sub.layer.max())
        at = sub[sub.layer == last]
        none = at[at.subset == NO_CARRY_ANYWHERE].set_index("head").value
        carry = at[at.subset == SOME_CARRY].set_index("head").value
        holds = none.max() < 0.25 * carry.max()
        heads = ", ".join(f"H{int(h)} {none[h]:.3f} / {carry[h]:.3f}" for h in sorted(none.index))
        text = (
            f"loss increase from mean-ablating a layer-{last} key, mean over each subset's own examples (examples "
            f"without any carry / with one): {heads}"
        )
        n = (m.value("subset_n", subset=NO_CARRY_ANYWHERE), m.value("subset_n", subset=SOME_CARRY))
        if None not in n:
            text += f" ({int(n[0])} / {int(n[1])} examples)"  # type: ignore[arg-type]
        return bool(holds), text
    d = m.select("class_d_loss", site="k", kind="mean")
    if d.empty:
        return None
    at = d[d.layer == d.layer.max()]
    none = at[at.cls == "no carry"].value.max()
    carry = at[at.cls != "no carry"].value.max()
    return bool(none < 0.25 * carry), (
        f"largest loss increase from mean-ablating a layer-{int(d.layer.max())} key (mean "
        f"over every input): {none:.3f} on digits without a carry, {carry:.3f} on digits "
        "with one"
    )


def _confident(m: Measurements) -> tuple[bool, str] | None:
    mean, med, lo = (m.value("prob_correct", stat=s, answer="all") for s in ("mean", "median", "min"))
    if mean is None or med is None or lo is None:
        return None
    return mean >= 0.99, f"mean {mean:.4f}, median {med:.4f}, minimum {lo:.4f}"


# --------------------------------------------------------------------------- int_add model
def _pc1_linear(m: Measurements) -> tuple[bool, str] | None:
    r2 = m.value("pc_linear_r2", k=1)
    if r2 is None:
        return None
    explained = m.value("embed_pc_explained", k=1)
    return r2 >= 0.95, f"linear R² {r2:.3f}; PC1 explains {explained if explained is not None else float('nan'):.1%}"


def _pc2_quadratic(m: Measurements) -> tuple[bool, str] | None:
    quad, lin = m.value("pc_quadratic_r2", k=2), m.value("pc_linear_r2", k=2)
    if quad is None or lin is None:
        return None
    explained = m.value("embed_pc_explained", k=2)
    return quad >= 0.9 and lin < 0.5, (
        f"quadratic R² {quad:.3f}, linear R² {lin:.3f}; PC2 explains "
        f"{explained if explained is not None else float('nan'):.1%}"
    )


def _many_sum_neurons(m: Measurements) -> tuple[bool, str] | None:
    post, pre, d = m.value("n_sum_neurons_post"), m.value("n_sum_neurons_pre"), m.value("d_mlp")
    if post is None or d is None:
        return None
    n, dm = int(post), int(d)
    return (
        n >= 0.1 * dm,
        f"{n} of {dm} neurons ({n / dm:.0%}) with correlation > 0.9 after the ReLU ({int(pre or 0)} before)",
    )


def _neuron_pc_fit(m: Measurements) -> tuple[bool, str] | None:
    top, med = m.value("pc_regression_r2_top"), m.value("pc_regression_r2_median")
    if top is None:
        return None
    return top >= 0.9, (
        f"R² {top:.3f} for the most a+b-correlated neuron, median "
        f"{med if med is not None else float('nan'):.3f} over the top neurons"
    )


def _sum_probe(m: Measurements) -> tuple[bool, str] | None:
    p = m.select("probe", target="a+b")
    p = p[p.hook.str.fullmatch(r"blocks\.\d+\.mlp\.hook_post")]
    if p.empty:
        return None
    v = float(p.value.max())
    return v >= 0.99, f"held-out R² {v:.4f}"


def _only_pc1_breaks(m: Measurements) -> tuple[bool, str] | None:
    clean, only = m.value("clean_acc", answer="="), m.value("embed_only_pc_acc", k=1)
    if clean is None or only is None:
        return None
    text = f"accuracy {clean:.3f} → {only:.3f} with PC1 alone"
    without_pc2 = m.value("embed_pc_ablated_acc", k=2)
    if without_pc2 is not None:
        text += f"; {without_pc2:.3f} with only PC2 removed"
    return clean - only >= 0.2, text


FAMILY_FINDINGS: dict[str, tuple[Finding, ...]] = {
    "digit": (
        Finding(
            "Mean-ablating the layer-0 queries changes nothing (every loss increase < 0.05 nats and < 10% of the "
            "largest head ablation)",
            "no loss change for any layer-0 query",
            _l0_queries,
            ("head_d_loss",),
        ),
        Finding(
            "Layer-0 heads are the most critical to ablate, for every answer digit",
            "H0.1 and H0.2 most critical (H0.1 for digits 2, 3; H0.2 for 1, 2, 3); H0.0 least",
            _critical_heads,
            ("head_d_loss",),
        ),
        Finding(
            "Each answer digit is read by a layer-0 head that attends to the corresponding digits of both "
            "operands (mean-query attention share ≥ 0.5)",
            "H0.0: digit 0; H0.1: digits 0, 2, 3; H0.2: digits 1, 2, 3",
            _corresponding_digits,
            ("qk_cd_share",),
        ),
        Finding(
            "The last layer's heads dominate the direct logit attribution (more |DLA| than the earlier heads, "
            "every digit)",
            "layer-1 heads dominate the DLA",
            _last_layer_dla,
            ("dla_head",),
        ),
        Finding(
            "Most of the correct logit travels a layer-0 head → last-layer head path (share ≥ 0.5 per digit)",
            "paths 0.x → 1.y carry the answer; messy in detail",
            _paths_through_last,
            ("path_share_heads_to_last",),
        ),
        Finding(
            "W_U lives on a few residual dimensions (≤ 8 hold 90% of its power)",
            "4 significant dimensions of 48",
            _wu_few_dims,
            ("wu_dims_for_90",),
        ),
        Finding(
            "W_U's digit columns are one frequency, frequency 1 (≥ 80% of the power)",
            "every significant dimension is a cosine of frequency 1 (ω = 2π/10) with its own phase",
            _wu_frequency_one,
            ("wu_top_freq", "wu_top_freq_share"),
        ),
        Finding(
            "The digits sit on a circle, in order, in W_U's top-2 singular plane (top-2 share ≥ 80%, radius CV ≤ "
            "0.2, steps of 2π/10 within 0.3 rad)",
            "two large singular values; the digits form a circle",
            _wu_circle,
            ("wu_top2_share", "wu_radius_cv", "wu_circle_freq", "wu_angle_step_spread"),
        ),
        Finding(
            "W_U rebuilt from frequency 1 alone keeps the model's accuracy (relative error ≤ 0.3, accuracy within "
            "0.01)",
            "W_U[d, i] ≈ A_d cos(2πi/10 + φ_d)",
            _wu_rebuilt,
            ("wu_rebuilt_error", "wu_rebuilt_acc", "wu_clean_acc"),
        ),
        Finding(
            "Last-layer attention differs between digits with and without an incoming carry (total variation ≥ 0.1 "
            "for some head)",
            "clear differences in layer-1 attention with a carry",
            _carry_attention,
            ("attn_class_tv",),
        ),
        Finding(
            "Mean-ablating last-layer keys hurts only examples with a carry (on the examples without any carry, "
            "with the mean over them, every increase < 25% of the largest on the examples with one)",
            "without carries, mean-ablating layer-1 keys does not change the loss",
            _keys_for_carries,
            ("subset_d_loss", "subset_n", "class_d_loss"),
        ),
        Finding(
            "The model is confident (mean probability on the correct digit ≥ 0.99)",
            "mean 0.993, median 0.996, minimum 0.759",
            _confident,
            ("prob_correct",),
        ),
    ),
    "int_add": (
        Finding(
            "PC1 of the operand embeddings is linear in the token (R² ≥ 0.95)",
            "PC1 linear in the token; explains about 75% of the variance (PC2 about 25%)",
            _pc1_linear,
            ("pc_linear_r2", "embed_pc_explained"),
        ),
        Finding(
            "PC2 is quadratic in the token (quadratic R² ≥ 0.9, linear R² < 0.5)",
            "PC2 a parabola of the token",
            _pc2_quadratic,
            ("pc_quadratic_r2", "pc_linear_r2", "embed_pc_explained"),
        ),
        Finding(
            "Many neurons track a+b (≥ 10% of the MLP with correlation > 0.9)",
            "more than 130 of 512 neurons",
            _many_sum_neurons,
            ("n_sum_neurons_post", "n_sum_neurons_pre", "d_mlp"),
        ),
        Finding(
            "A sum neuron's pre-activation is linear in PC1 and PC2 of a and b (R² ≥ 0.9)",
            "excellent R² for neuron 240",
            _neuron_pc_fit,
            ("pc_regression_r2_top", "pc_regression_r2_median"),
        ),
        Finding(
            "The MLP output holds a+b linearly (probe R² ≥ 0.99)",
            "almost perfect linear regression",
            _sum_probe,
            ("probe",),
        ),
        Finding(
            "Keeping only PC1 of the operand embeddings (dropping PC2 and the rest) breaks the model (accuracy "
            "falls by ≥ 0.2)",
            "accuracy 100% → 42%; failures symmetric in a, b, at 0 and mid-range pairs",
            _only_pc1_breaks,
            ("clean_acc", "embed_only_pc_acc", "embed_pc_ablated_acc"),
        ),
    ),
}


def findings_table(family: str | None, measured: Measurements | Mapping[str, Any]) -> pd.DataFrame:
    """One row per finding of the family: the claim, the seed's result, this model's numbers
    and ``holds`` / ``differs`` (``not measured`` when the quantities are missing).

    ``measured``: the measurements, or a mapping of flat names (``summary.json``'s scalars)."""
    m = measured if isinstance(measured, Measurements) else Measurements.from_flat(measured)
    rows: list[dict[str, str]] = []
    for f in FAMILY_FINDINGS.get(str(family), ()):
        out = f.check(m)
        verdict, text = ("not measured", "–") if out is None else ("holds" if out[0] else "differs", out[1])
        rows.append({"claim": f.claim, "seed analysis": f.seed_result, "this model": text, "verdict": verdict})
    return pd.DataFrame(rows, columns=["claim", "seed analysis", "this model", "verdict"])

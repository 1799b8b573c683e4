"""Tables of the circuit analysis: raw CSV frames and their reader-facing versions.

CSV frames keep raw numbers (one row per run / per model and frequency / per matrix
cell) for re-analysis; ``*_display`` functions format them for the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from groktransfer.interp.circuit.attention import head_labels, position_labels
from groktransfer.interp.circuit.neurons import SPECIALISED
from groktransfer.interp.circuit.profile import CircuitProfile
from groktransfer.interp.circuit.similarity import METRICS

from .sweep import SOURCE, RunResult, SweepCircuits


def _attention_columns(profile: CircuitProfile) -> dict[str, float]:
    """``attn_<head>_to_<pos>`` per head, for the CSV (per-head detail)."""
    att = profile.attention
    out: dict[str, float] = {}
    rows = att.reshape(-1, att.shape[-1])
    for head, row in zip(head_labels(att), rows):
        for pos, v in zip(position_labels(att.shape[-1]), row):
            out[f"attn_{head}_to_{pos}"] = float(v)
    return out


def run_row(res: RunResult, sc: SweepCircuits) -> dict[str, object]:
    """One row of circuits_runs.csv."""
    t, prof = res.target, res.profile
    assert prof is not None
    src = sc.source_of(res)
    row: dict[str, object] = {
        "condition": t.condition,
        "seed": t.seed,
        "run": t.record.name,
        "lineage": t.lineage_kind,
        "source_model": src.reference.label if src and src.reference else "",
    }
    row.update(prof.summary())
    row.update(_attention_columns(prof))
    for metric in METRICS:
        suffix = "from_source" if metric == "neurons_kept" else "to_source"
        row[f"{metric}_{suffix}"] = getattr(res.to_source, metric)
    row["jaccard_to_start"] = res.to_start.jaccard
    row["neurons_kept_from_start"] = res.to_start.neurons_kept
    row["retention_task"] = res.retention_task
    row["retention_acc"] = res.retention
    row["retention_ceiling"] = res.retention_ceiling
    row["retention_logit_share"] = res.retention_logit_share
    row["run_dir"] = str(t.record.run_dir)
    return row


def runs_frame(sc: SweepCircuits) -> pd.DataFrame:
    """circuits_runs.csv: one row per analysed run, in condition then seed order."""
    rows = [run_row(r, sc) for r in sc.analysed]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    order = {c: i for i, c in enumerate(sc.conditions)}
    df["_o"] = df.condition.map(order)
    return df.sort_values(["_o", "seed"], kind="stable").drop(columns="_o").reset_index(drop=True)


def source_profiles(sc: SweepCircuits) -> list[tuple[str, CircuitProfile]]:
    """(role, profile) of every source model: the reference first, then other starts."""
    out: list[tuple[str, CircuitProfile]] = []
    for src in sc.sources.values():
        if src.reference is not None:
            out.append(("reference", src.reference))
        for prof in src.starts.values():
            if prof is not src.reference:
                out.append(("start", prof))
    return out


def sources_frame(sc: SweepCircuits) -> pd.DataFrame:
    """One row per source model (the reference and every start checkpoint)."""
    rows = []
    for role, prof in source_profiles(sc):
        rows.append(
            {"model": prof.label, "role": role, **prof.summary(), **_attention_columns(prof), "path": prof.path}
        )
    return pd.DataFrame(rows)


def freqs_frame(sc: SweepCircuits) -> pd.DataFrame:
    """circuits_freqs.csv: long format, one row per (model, frequency)."""
    models: list[tuple[str, object, CircuitProfile]] = [
        (SOURCE if role == "reference" else f"{SOURCE} ({role})", None, p) for role, p in source_profiles(sc)
    ]
    models += [(r.target.condition, r.target.seed, r.profile) for r in sc.analysed]  # type: ignore[misc]
    frames = []
    for entity, seed, prof in models:
        if not prof.has_fourier:
            continue
        n, lg = prof.neurons, prof.logits
        assert n is not None and lg is not None
        frames.append(
            pd.DataFrame(
                {
                    "entity": entity,
                    "model": prof.label,
                    "seed": seed,
                    "task": prof.task,
                    "freq": lg.freqs,
                    "logit_amplitude": lg.amplitude,
                    "logit_frac": lg.frac,
                    "neurons": n.histogram(),
                    f"neurons_over_{SPECIALISED:g}": n.histogram(SPECIALISED),
                    f"neurons_over_{prof.key_freq_threshold:g}": n.histogram(prof.key_freq_threshold),
                    "neuron_mass": n.mass,
                    "is_key": np.isin(lg.freqs, prof.key_freqs).astype(int),
                    "is_dominant": np.isin(lg.freqs, prof.dominant_freqs).astype(int),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def entities(sc: SweepCircuits) -> list[str]:
    """Rows/columns of the similarity matrices: the source, then the conditions."""
    has_source = any(s.reference is not None for s in sc.sources.values())
    return ([SOURCE] if has_source else []) + list(sc.conditions)


def similarity_frame(sc: SweepCircuits) -> pd.DataFrame:
    """circuits_similarity.csv: per metric and (reference entity, other entity): mean, sd,
    median, min, max and the number of model pairs. Diagonal cells of a condition are
    pairs of *different* seeds; a metric with no valid pair has n = 0."""
    ents = entities(sc)
    rows = []
    pairs = sc.pairs
    for metric in METRICS:
        for a in ents:
            for b in ents:
                sel = pairs[(pairs.ref == a) & (pairs.other == b)][metric].dropna().to_numpy(dtype=float)
                rows.append(
                    {
                        "metric": metric,
                        "ref": a,
                        "other": b,
                        "n": int(sel.size),
                        "mean": float(sel.mean()) if sel.size else np.nan,
                        "sd": float(sel.std(ddof=1)) if sel.size > 1 else np.nan,
                        "median": float(np.median(sel)) if sel.size else np.nan,
                        "min": float(sel.min()) if sel.size else np.nan,
                        "max": float(sel.max()) if sel.size else np.nan,
                    }
                )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- display
def fmt_spread(values: Sequence[float], digits: int = 2, pct: bool = False) -> str:
    """``median [min–max]`` of the finite values (just the value for one), ``–`` for none."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return "–"
    scale, unit = (100.0, "%") if pct else (1.0, "")
    f = (lambda x: f"{x * scale:.{max(digits - 2, 0)}f}{unit}") if pct else (lambda x: f"{x:.{digits}f}")
    if v.size == 1 or v.min() == v.max():
        return f(v[0]) if v.size == 1 else f(float(np.median(v)))
    return f"{f(float(np.median(v)))} [{f(v.min())}–{f(v.max())}]"


DISPLAY_COLUMNS = [
    ("n_key_freqs", "key freqs (n)", 0, False),
    ("n_dominant_freqs", "dominant freqs (n)", 0, False),
    ("frac_neurons_over_0.5", "neurons > 0.5", 2, True),
    ("frac_neurons_over_{t}", "neurons > {t}", 2, True),
    ("neurons_dead", "dead neurons", 0, False),
    ("key_freq_logit_frac", "logit var. at key freqs", 2, True),
    ("logit_residual_frac", "logit residual", 2, True),
    ("attn_to_a", "attn → a", 2, False),
    ("attn_to_b", "attn → b", 2, False),
    ("attn_to_=", "attn → =", 2, False),
    ("attn_ab_asymmetry", "attn |a − b| per head", 2, False),
    ("accuracy_all_pairs", "accuracy (all pairs)", 3, False),
]


def summary_display(sc: SweepCircuits, runs_df: pd.DataFrame) -> pd.DataFrame:
    """Per source model and per condition: the circuit in one row (median [min–max] over seeds)."""
    t = f"{sc.key_freq_threshold:g}"
    rows = []
    groups: list[tuple[str, pd.DataFrame]] = []
    src_df = sources_frame(sc)
    for _, r in src_df.iterrows():
        groups.append((str(r["model"]), pd.DataFrame([r])))
    for cond in sc.conditions:
        groups.append((f"{cond} (n={int((runs_df.condition == cond).sum())})", runs_df[runs_df.condition == cond]))
    for name, df in groups:
        row: dict[str, str] = {"model": name, "task": _task_label(df)}
        for col, label, digits, pct in DISPLAY_COLUMNS:
            col, label = col.format(t=t), label.format(t=t)
            row[label] = fmt_spread(df[col].tolist(), digits, pct) if col in df else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def _task_label(df: pd.DataFrame) -> str:
    op = {"add": "a+b", "subtract": "a−b", "multiply": "a·b", "divide": "a/b"}
    vals = sorted({f"{op.get(str(t), t)} mod {int(p)}" for t, p in zip(df["task"], df["p"])})
    return ", ".join(vals)


def transfer_display(sc: SweepCircuits, runs_df: pd.DataFrame) -> pd.DataFrame:
    """Per condition: similarity to the source and retention (median [min–max] over seeds)."""
    cols = [
        ("jaccard_to_source", "key-freq Jaccard to source", 2),
        ("jaccard_dominant_to_source", "dominant-freq Jaccard to source", 2),
        ("hist_intersection_to_source", "neuron-hist ∩ to source", 2),
        ("mass_similarity_to_source", "freq-mass ∩ to source", 2),
        ("neurons_kept_from_source", "source neurons keeping freq", 2),
        ("frac_spearman_to_source", "Spearman frac (matched)", 2),
        ("retention_acc", "retention on source task", 3),
        ("retention_logit_share", "logit var. along source directions", 3),
    ]
    rows = []
    for cond in sc.conditions:
        df = runs_df[runs_df.condition == cond]
        row = {"condition": cond, "n": len(df), "lineage": ", ".join(sorted(set(df.lineage)))}
        for col, label, digits in cols:
            row[label] = fmt_spread(df[col].tolist(), digits) if col in df else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def runs_display(runs_df: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """A compact per-run table for the report (the CSV has everything)."""
    if runs_df.empty:
        return runs_df
    t = f"{threshold:g}"

    def f(x: Any, d: int = 2) -> str:
        return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{float(x):.{d}f}"

    return pd.DataFrame(
        {
            "condition": runs_df.condition,
            "seed": runs_df.seed,
            "key freqs": [k if k else "(none)" for k in runs_df.key_freqs],
            "dominant": [k if k else "(none)" for k in runs_df.dominant_freqs],
            f"neurons > {t}": [f"{100 * x:.0f}%" for x in runs_df[f"frac_neurons_over_{t}"]],
            "dead": runs_df.neurons_dead.map(lambda x: "–" if pd.isna(x) else str(int(x))),
            "Jaccard to source (key / dominant)": [
                f"{f(x)} / {f(y)}" for x, y in zip(runs_df.jaccard_to_source, runs_df.jaccard_dominant_to_source)
            ],
            "neurons kept": runs_df.neurons_kept_from_source.map(f),
            "retention": runs_df.retention_acc.map(lambda x: f(x, 3)),
            "test acc": runs_df.test_acc.map(lambda x: f(x, 3)),
        }
    )

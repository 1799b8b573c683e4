"""The ``circuits`` report section (and its provider ``circuit_sections(runs, out_dir, settings)``).

It profiles the source and the final model of every completed run, writes tables and
figures to ``<out_dir>/circuits/`` and returns report sections that answer, with
numbers: what the source learned, what each condition learned, how they differ, and
whether the grokked algorithm transfers. It applies to runs of a task family with the
Fourier circuit (``TaskFamily.fourier_circuit``) whose model offers the TransformerLens
readings, once one of them has a final checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from groktransfer.interp.circuit.profile import DEFAULT_KEY_FREQ_THRESHOLD
from groktransfer.model.protocol import Reading
from groktransfer.render import apply_theme
from groktransfer.runs.rundir import CHECKPOINT_DIR, FINAL_CHECKPOINT

from ..collect import RunRecord
from ..report import ReportFigure, ReportSection, ReportTable
from ..section import Section, Sweep, offers, run_family
from . import narrative as nar
from . import plots
from .discover import contents_of
from .sweep import SOURCE, SweepCircuits, analyse_sweep
from .tables import (
    entities,
    freqs_frame,
    runs_display,
    runs_frame,
    similarity_frame,
    source_profiles,
    sources_frame,
    summary_display,
    transfer_display,
)

SUBDIR = "circuits"


def key_freq_threshold_of(runs: Sequence[RunRecord]) -> float:
    """The key-frequency threshold the runs' own measures used (so numbers agree with
    measures table); the project default when no run records one."""
    for rec in runs:
        value = contents_of(rec).config.key_freq_threshold
        if value is not None:
            return value
    return DEFAULT_KEY_FREQ_THRESHOLD


def _setting(settings: Any, name: str, default: Any) -> Any:
    return getattr(getattr(settings, "analysis", None), name, default)


def _runs_csv(sc: SweepCircuits, runs_df: pd.DataFrame) -> pd.DataFrame:
    """Analysed runs plus the skipped ones (``analysed`` False, with the reason)."""
    df = runs_df.assign(analysed=True, skip_reason="")
    skipped = pd.DataFrame(
        [
            {
                "condition": s["condition"],
                "seed": s["seed"],
                "run": s["run"],
                "analysed": False,
                "skip_reason": s["why"],
            }
            for s in sc.plan.skipped
        ]
    )
    return pd.concat([df, skipped], ignore_index=True) if not skipped.empty else df


def _short(label: str) -> str:
    """'source a+b mod 59 (grokked ckpt, epoch 4000)' -> 'grokked e4000' (figure row labels)."""
    inner = label.rsplit("(", 1)[-1].rstrip(")")
    return inner.replace(" ckpt, epoch ", " e")


def write_figures(
    sc: SweepCircuits, runs_df: pd.DataFrame, sim: pd.DataFrame, out: Path, dpi: int
) -> dict[str, Path | None]:
    """Every circuit figure; a figure with nothing to show is None."""
    apply_theme()  # the same look as the rest of the analysis report
    refs = [s.reference for s in sc.sources.values() if s.reference is not None]
    by_cond = {
        c: [(f"s{r.target.seed}", r.profile) for r in sc.analysed if r.target.condition == c] for c in sc.conditions
    }
    groups: list[plots.Group] = [(SOURCE, [(_short(p.label), p) for p in refs])] if refs else []
    groups += [(c, m) for c, m in by_cond.items() if m]  # type: ignore[misc]
    colors = plots.group_colors([g[0] for g in groups] + list(sc.conditions))
    keys = refs[0].key_freqs if len(refs) == 1 else []
    figs: dict[str, Path | None] = {}
    figs["logit_spectrum"] = plots.plot_logit_spectrum(groups, keys, colors, out / "circuits_logit_spectrum.png", dpi)
    figs["neuron_freqs"] = plots.plot_neuron_histograms(groups, keys, colors, out / "circuits_neuron_freqs.png", dpi)
    figs["attention"] = plots.plot_attention(groups, colors, out / "circuits_attention.png", dpi)
    rows = [(SOURCE, "source: " + p.label.rsplit("(", 1)[-1].rstrip(")"), p) for _, p in source_profiles(sc)]
    rows += [
        (r.target.condition, r.target.name, r.profile)
        for c in sc.conditions
        for r in sc.analysed
        if r.target.condition == c and r.profile is not None
    ]
    figs["fingerprint"] = plots.plot_fingerprint(rows, colors, out / "circuits_fingerprint.png", dpi)
    figs["similarity"] = plots.plot_similarity(sim, entities(sc), colors, out / "circuits_similarity.png", dpi)
    src_task = next((t for t in runs_df.get("retention_task", []) if t), "")
    figs["transfer"] = (
        plots.plot_transfer(
            runs_df,
            sc.conditions,
            colors,
            out / "circuits_transfer.png",
            source_acc=refs[0].accuracy if len(refs) == 1 else None,
            chance=1.0 / refs[0].p if refs else None,
            dpi=dpi,
            source_task=src_task,
            ceiling=float(runs_df.retention_ceiling.median()) if runs_df.retention_ceiling.notna().any() else None,
        )
        if not runs_df.empty
        else None
    )
    return figs


CAPTIONS = {
    "logit_spectrum": "Share of the logit variance along each frequency's target directions (each model in its own "
    "task's directions). Bar = median over seeds, dots = seeds; shaded = the source's key frequencies.",
    "neuron_freqs": "MLP neurons per dominant frequency, mean over seeds: dark = share of variance above the key "
    "threshold, light = between 0.5 and the threshold; dead neurons are counted in the title, not in bars.",
    "attention": "Mean attention from the '=' position to a, b and = (all inputs), one row per (seed, head).",
    "fingerprint": "Every model's spectrum side by side: logit-variance share (left) and neuron frequency mass (right) "
    "per frequency; circles mark each model's key frequencies.",
    "similarity": "Similarity matrices between the source and the conditions: mean ± sd over model pairs, n pairs per cell.",
    "transfer": "Per seed: Jaccard of key (hollow) and dominant (filled) frequencies with the source, frequency-mass "
    "overlap with the source, and accuracy on the source task (retention); bar = median.",
}


def _figures(figs: dict[str, Path | None], names: Sequence[str]) -> list[ReportFigure]:
    return [ReportFigure(figs[n], CAPTIONS[n]) for n in names if figs.get(n) is not None]  # type: ignore[arg-type]


#: Why the Fourier circuit analysis skips digit tasks (the sweep section and the
#: single-checkpoint command both say it).
DIGIT_NOT_APPLICABLE = "digit tasks, which have no modular Fourier circuit"


def circuit_sections(runs: Sequence[RunRecord], out_dir: Path, settings: Any = None) -> list[ReportSection]:
    """Report provider (``analysis.extra_sections``): circuits of the source and every run.

    The Fourier circuit analysis reads modular (a, b) tasks only: digit-task runs are
    left out here (the digit section covers them) and said so.
    """
    from groktransfer.tasks.registry import TASKS

    def modular(run: RunRecord) -> bool:  # families whose runs carry the Fourier circuit
        family = TASKS.find(str(run.task)) if run.task else None
        return family is None or family.fourier_circuit

    others = [r for r in runs if not modular(r)]
    runs = [r for r in runs if modular(r)]
    if others and not runs:
        families = sorted({TASKS.get(str(r.task)).name for r in others})
        note = (
            DIGIT_NOT_APPLICABLE + " (see 'Digit measures' for their per-position and per-carry-class measures)"
            if families == ["digit"]
            else f"of the {', '.join(families)} task family, which has no modular Fourier circuit"
        )
        return [
            ReportSection(
                "Circuits",
                f"Not applicable: the {len(others)} run(s) of this sweep are {note}.",
            )
        ]
    t0 = time.perf_counter()
    out = Path(out_dir) / SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    sc = analyse_sweep(runs, key_freq_threshold_of(runs))
    runs_df = runs_frame(sc)
    sim = similarity_frame(sc)
    _runs_csv(sc, runs_df).to_csv(out / "circuits_runs.csv", index=False)
    sources_frame(sc).to_csv(out / "circuits_sources.csv", index=False)
    freqs_frame(sc).to_csv(out / "circuits_freqs.csv", index=False)
    sim.to_csv(out / "circuits_similarity.csv", index=False)
    sc.pairs.to_csv(out / "circuits_pairs.csv", index=False)
    figs = write_figures(sc, runs_df, sim, out, int(_setting(settings, "dpi", 130)))
    baseline = str(_setting(settings, "baseline", "random"))
    elapsed = time.perf_counter() - t0

    if runs_df.empty and not sc.sources:
        text = (
            f"No completed run with `{CHECKPOINT_DIR}/{FINAL_CHECKPOINT}` and no source model: nothing to analyse.\n\n"
            + nar.skipped_text(sc)
        )
        return [ReportSection("Circuits", text, _skipped_tables(sc))]
    learned = ReportSection(
        "Circuits: what the source and each condition learned",
        "\n\n".join([nar.source_text(sc), nar.conditions_text(sc, runs_df)]),
        [
            ReportTable(
                summary_display(sc, runs_df), "Circuit per source model and per condition (median [min–max] over seeds)"
            )
        ],
        _figures(figs, ["logit_spectrum", "neuron_freqs", "attention", "fingerprint"]),
    )
    transfer = ReportSection(
        "Circuits: how they differ, and does the grokked algorithm transfer?",
        "\n\n".join([nar.differences_text(sc, sim, runs_df), nar.transfer_text(sc, runs_df, baseline)]),
        [
            ReportTable(transfer_display(sc, runs_df), "Similarity to the source and retention, per condition"),
            ReportTable(
                runs_display(runs_df, sc.key_freq_threshold), "Per run (all columns in circuits/circuits_runs.csv)"
            ),
        ],
        _figures(figs, ["transfer", "similarity"]),
    )
    notes = "\n".join(f"- {n}" for n in dict.fromkeys(sc.plan.notes))
    method = ReportSection(
        "Circuits: method and caveats",
        "\n\n".join(
            x
            for x in [
                nar.method_text(sc),
                nar.skipped_text(sc),
                notes,
                f"Circuit analysis of {len(sc.analysed)} run(s) and {len(source_profiles(sc))} source "
                f"model(s) took {elapsed:.1f} s. Files: `circuits/circuits_runs.csv` (one row per run), "
                "`circuits_sources.csv`, `circuits_freqs.csv` (per model and frequency), "
                "`circuits_similarity.csv` (matrix cells), `circuits_pairs.csv` (every model pair).",
            ]
            if x
        ),
        _skipped_tables(sc),
    )
    return [learned, transfer, method]


def _skipped_tables(sc: SweepCircuits) -> list[ReportTable]:
    if not sc.plan.skipped:
        return []
    return [ReportTable(pd.DataFrame(sc.plan.skipped), "Runs not analysed")]


def fourier_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Runs of a family with the Fourier circuit (or of a task no family registers any more)."""
    return [r for r in runs if (family := run_family(r)) is None or family.fourier_circuit]


class CircuitsSection(Section):
    """The Fourier circuit of the source and of every run's final model (modular tasks)."""

    title = "Circuits"
    writes = ("circuits/circuits_runs.csv",)
    provider = staticmethod(circuit_sections)

    def applies(self, sweep: Sweep) -> str | None:
        runs = fourier_runs(sweep.runs)
        if not runs:
            families = sorted({f.name for r in sweep.runs if (f := run_family(r)) is not None})
            if families == ["digit"]:
                return (
                    f"the {len(sweep.runs)} run(s) of this sweep are {DIGIT_NOT_APPLICABLE} "
                    "(see 'Digit measures' for their per-position and per-carry-class measures)"
                )
            return f"no run's task family ({', '.join(families) or 'none recorded'}) has the modular Fourier circuit"
        readable = [r for r in runs if offers(r, Reading.transformer_lens)]
        if not readable:
            return "the runs' model does not offer the TransformerLens readings the circuit analysis reads"
        if not any(r.completed and contents_of(r).final_checkpoint is not None for r in readable):
            return f"no completed run has `{CHECKPOINT_DIR}/{FINAL_CHECKPOINT}`"
        return None

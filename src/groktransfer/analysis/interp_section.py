"""The ``interpretability`` report section: the interpretability toolkit (``groktransfer.interp``)
on every completed run's final model, one report section per task, aggregated across seeds.

What runs is ``analysis.interp`` (``InterpSettings``) and, per run, the readings that apply to
its model and task (``Reading.applies_to``: a plain MLP on sparse parity gets no attention
heads, no operand probes and no Fourier columns). Per run, every measurement goes to
``interp/interp_runs.csv`` (the typed long table: quantity, its labels -- layer, head, site,
answer, hook, position, target, ... -- the value, and its flat name ``measure``); per task and
condition, the median and the min–max over seeds go to ``interp/interp_summary.csv``, and the
report shows the findings, head ablations, direct logit attribution, probes and the other
measures with that spread. Only the tables with something in them are shown.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from groktransfer.interp.findings import findings_table
from groktransfer.interp.measurements import LABEL_COLUMNS, Measurements
from groktransfer.interp.reading import family_key, interpret
from groktransfer.interp.settings import InterpSettings
from groktransfer.model.checkpoint import CheckpointError, load_checkpoint
from groktransfer.render import apply_theme, condition_colors, save_figure
from groktransfer.runs.reader import read_run
from groktransfer.runs.rundir import CHECKPOINT_DIR, CONFIG_FILE, FINAL_CHECKPOINT
from groktransfer.tasks.registry import make_task, typed_task
from groktransfer.utils.cores import usable_cores

from .collect import RunRecord
from .report import ReportFigure, ReportSection, ReportTable
from .section import Section, Sweep

SUBDIR = "interp"
#: the run's columns of interp_runs.csv, before the measurement's own
RUN_COLUMNS = ("run", "condition", "seed", "task", "p")


def _interp_settings(settings: Any) -> Any:
    return getattr(getattr(settings, "analysis", None), "interp", None) or InterpSettings()


def run_task(rec: RunRecord) -> Any:
    """The task a run trained on, rebuilt from its ``config.yaml`` task block through
    ``tasks.make_task`` (a modular ``Task``, a ``DigitTask``, a plugin's task), with the data
    seed the run used. Raises ``ValueError`` when the block is missing or does not make a task."""
    contents = rec.contents if rec.contents is not None else read_run(rec.run_dir)
    block = contents.config.task
    if not block.get("name"):
        raise ValueError(f"task not recorded in {CONFIG_FILE}")
    return make_task(typed_task(block), contents.data_seed())  # ConfigError is a ValueError


def interpret_runs(runs: Sequence[RunRecord], interp: Any) -> tuple[pd.DataFrame, list[dict]]:
    """(long DataFrame of every run's measurements, list of skipped runs with the reason).

    Runs are interpreted side by side, one per core (``interp.parallel_runs``), each on
    one torch thread. Why threads and not more torch threads per run: a run's products
    are small, and one thread computes each in the calling thread, so a run's numbers do
    not depend on how many run beside it; torch releases the GIL inside its kernels.
    """

    def one(rec: RunRecord) -> tuple[pd.DataFrame | None, dict | None]:
        info = {"run": rec.name, "condition": rec.condition or "?", "seed": rec.seed}
        final = rec.run_dir / CHECKPOINT_DIR / FINAL_CHECKPOINT
        if not rec.completed or not final.is_file():
            return None, {
                **info,
                "why": "not completed" if not rec.completed else f"no {CHECKPOINT_DIR}/{FINAL_CHECKPOINT}",
            }
        try:
            task = run_task(rec)
        except ValueError as exc:
            return None, {**info, "why": str(exc)}
        try:
            res = interpret(load_checkpoint(final).build_model(), task, interp)
        except (CheckpointError, ValueError, AssertionError, KeyError) as exc:
            return None, {**info, "why": f"{type(exc).__name__}: {exc}"}
        frame = res.measurements.frame().assign(**info, task=task.name, p=getattr(task, "p", None), text=None)
        if res.arrays.get("key_freqs") is not None:
            text = " ".join(map(str, res.arrays["key_freqs"]))
            frame = pd.concat(
                [
                    frame,
                    pd.DataFrame(
                        [dict(info, task=task.name, p=getattr(task, "p", None), measure="key_freqs", text=text)]
                    ),
                ],
                ignore_index=True,
            )
        return frame, None

    threads = max(1, int(interp.threads))
    workers = parallel_workers(interp.parallel_runs, len(runs), threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # before the workers start, so interpret()'s own set-and-restore is a no-op
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, runs))  # in run order, whatever finishes first
    finally:
        torch.set_num_threads(before)
    frames = [frame for frame, _ in results if frame is not None]
    skipped = [why for _, why in results if why is not None]
    if not frames:
        return pd.DataFrame(), skipped
    long = pd.concat(frames, ignore_index=True)
    front = [*RUN_COLUMNS, "measure", "value", "quantity"]
    return long[front + [c for c in long.columns if c not in front]], skipped


def parallel_workers(requested: int, n_items: int, threads: int = 1) -> int:
    """``requested`` workers, or with 0 as many as the cores this process may run on hold
    at ``threads`` each; never more than the items."""
    return max(1, min(int(requested) or usable_cores() // threads, n_items))


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """Median, min, max and n over seeds per (task, condition, measurement), with the
    measurement's quantity and labels."""
    num = long[long.measure != "key_freqs"]
    keys = ["task", "condition", "measure"]
    g = num.groupby(keys, sort=False, dropna=False)
    out = g["value"].agg(median="median", min="min", max="max", n="count").reset_index()
    labels = [c for c in ("quantity", *LABEL_COLUMNS) if c in num]
    return out.merge(g[labels].first().reset_index(), on=keys, how="left")


def _spread(r: pd.Series, fmt: str = ".3g") -> str:
    return f"{r['median']:{fmt}} [{r['min']:{fmt}}–{r['max']:{fmt}}]" if r["n"] > 1 else f"{r['median']:{fmt}}"


def _wide(d: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    """Rows = the label columns ``index``, columns = conditions, cells = 'median [min–max]'."""
    if d.empty:
        return pd.DataFrame()
    d = d.assign(cell=[_spread(r) for _, r in d.iterrows()])
    conds = list(dict.fromkeys(d.condition))
    out = d.pivot_table(index=index, columns="condition", values="cell", aggfunc="first", sort=False)
    out = out.reindex(columns=conds).reset_index()
    out.columns.name = None
    return out


def _head(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(head=[f"L{int(layer)}H{int(h)}" for layer, h in zip(d.layer, d["head"])])


def _bar_figure(d: pd.DataFrame, labels: list[str], title: str, ylabel: str, path: Path, dpi: int) -> Path | None:
    """Grouped bars: median per condition, whiskers min–max over seeds; ``labels`` name each bar group."""
    if d.empty:
        return None
    apply_theme()
    d = d.assign(label=labels)
    conds = list(dict.fromkeys(d.condition))
    names = list(dict.fromkeys(d.label))
    colors = condition_colors(conds)
    width = 0.8 / len(conds)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(names) * max(1, len(conds)) + 2), 3.8))
    for i, c in enumerate(conds):
        dc = d[d.condition == c].drop_duplicates("label").set_index("label").reindex(names)
        x = np.arange(len(names)) + i * width
        err = np.vstack([dc["median"] - dc["min"], dc["max"] - dc["median"]])
        ax.bar(x, dc["median"], width, yerr=err, capsize=2, color=colors[c], label=f"{c} (n={int(dc['n'].max())})")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def findings_by_run(task: str, long: pd.DataFrame) -> pd.DataFrame:
    """The seed analyses' findings for the task's family (``interp.findings``), one column per
    run: ``holds`` / ``differs`` and that run's numbers. Empty for families without findings."""
    d = long[(long.task == task) & (long.measure != "key_freqs")]
    table = pd.DataFrame()
    for (cond, seed, _), g in d.groupby(["condition", "seed", "run"], sort=False, dropna=False):
        t = findings_table(family_key(task), Measurements.from_rows(g.to_dict("records")))
        if t.empty:
            return t
        if table.empty:
            table = t[["claim", "seed analysis"]].copy()
        table[f"{cond} s{seed}"] = (t.verdict + ": " + t["this model"]).to_numpy()
    return table


#: the quantities of the "other measures" table (label columns shown beside them)
OTHER_QUANTITIES = (
    "clean_acc",
    "clean_loss",
    "embed_pc_explained",
    "embed_fourier_gini",
    "embed_top_freq",
    "embed_pc_ablated_acc",
    "n_key_freqs",
    "frac_neurons_clustered",
    "cluster_ablated_acc",
    "max_abs_neuron_corr",
    "eff_rank_ratio",
)


def _family_section(task: str, agg: pd.DataFrame, long: pd.DataFrame, out: Path, dpi: int, kind: str) -> ReportSection:
    tables, figs = [], []
    a = agg[agg.task == task]
    findings = findings_by_run(task, long)
    if not findings.empty:
        findings.to_csv(out / f"interp_{task}_findings.csv", index=False)
        tables.append(
            ReportTable(
                findings,
                "Findings: each claim of the seed analysis (criterion in the claim) on every "
                "run's final model, holds / differs with the run's numbers",
            )
        )
    heads = a[a.quantity.isin(["head_d_loss", "head_acc"]) & (a.kind == kind)]
    z = heads[heads.site == "z"]
    if not z.empty:
        z = _head(z).assign(measure=lambda d: d.quantity.str.replace("head_", ""))
        tables.append(
            ReportTable(
                _wide(z, ["head", "answer", "measure"]),
                f"Head ablation ({kind}, head output z): loss increase and accuracy, median [min–max] over seeds",
            )
        )
        loss = z[z.quantity == "head_d_loss"]
        fig = _bar_figure(
            loss,
            [f"{h} [{ans}]" for h, ans in zip(loss["head"], loss.answer)],
            f"{task}: loss increase when one head is {kind}-ablated (median, min–max over seeds)",
            "loss increase",
            out / f"interp_{task}_head_ablation.png",
            dpi,
        )
        if fig:
            figs.append(ReportFigure(fig, "Head ablation per condition: bar = median over seeds, whiskers = min–max."))
    qkv = heads[(heads.site != "z") & (heads.quantity == "head_acc")]
    if not qkv.empty:
        tables.append(
            ReportTable(
                _wide(_head(qkv), ["site", "head", "answer"]),
                f"Accuracy after {kind}-ablating one head's query / key / value input",
            )
        )
    dla = a[a.quantity.isin(["dla_head", "dla", "dla_completeness_error"])]
    if not dla.empty:
        dla = dla.assign(
            part=[
                f"L{int(r.layer)}H{int(r.head)}"
                if r.quantity == "dla_head"
                else ("completeness_error" if r.quantity == "dla_completeness_error" else r.part)
                for r in dla.itertuples()
            ]
        )
        tables.append(
            ReportTable(
                _wide(dla.fillna({"answer": ""}), ["part", "answer"]),
                "Direct logit attribution to the correct answer's centred logit (mean over inputs), "
                "median [min–max] over seeds; `completeness_error` = |parts + bias − logit|",
            )
        )
        parts = dla[dla.quantity != "dla_completeness_error"]
        fig = _bar_figure(
            parts,
            [f"{p} [{ans}]" for p, ans in zip(parts.part, parts.answer)],
            f"{task}: direct logit attribution per part",
            "mean contribution",
            out / f"interp_{task}_dla.png",
            dpi,
        )
        if fig:
            figs.append(ReportFigure(fig, "DLA per part and condition: bar = median over seeds, whiskers = min–max."))
    probes = a[a.quantity == "probe"]
    if not probes.empty:
        tables.append(
            ReportTable(
                _wide(probes.assign(position=probes.position.astype(int)), ["hook", "position", "target"]),
                "Ridge probes of the task's targets: held-out R² (regression) or accuracy (classes), median [min–max]",
            )
        )
    other = a[a.quantity.isin(OTHER_QUANTITIES)]
    if not other.empty:
        tables.append(
            ReportTable(
                _wide(other, ["measure"]),
                "Other measures, median [min–max] over seeds (what each "
                "quantity is: `groktransfer.interp.measurements.QUANTITIES`)",
            )
        )
    kf = long[(long.task == task) & (long.measure == "key_freqs")] if "text" in long else pd.DataFrame()
    readings = sorted(set(a.quantity.dropna()))
    text = (
        f"Final models of every completed run on `{task}`, analysed with `groktransfer.interp` (settings "
        f"`analysis.interp`; the readings that apply to the model and the task). Per-seed numbers: "
        f"`interp/interp_runs.csv`; aggregates: `interp/interp_summary.csv`. Measured: {', '.join(f'`{q}`' for q in readings)}."
    )
    if not kf.empty:
        text += "\n\nKey input frequencies per run: " + "; ".join(
            f"{r.condition} s{r.seed}: [{r.text}]" for r in kf.itertuples()
        )
    return ReportSection(f"Interpretability: {task}", text, tables, figs)


def interp_sections(runs: Sequence[RunRecord], out_dir: Path, settings: Any = None) -> list[ReportSection]:
    """Report provider: one section per task (see module doc)."""
    interp = _interp_settings(settings)
    if not interp.enabled or not interp.in_sweep:
        return []
    t0 = time.perf_counter()
    out = Path(out_dir) / SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    long, skipped = interpret_runs(runs, interp)
    if long.empty:
        return [
            ReportSection(
                "Interpretability",
                f"No completed run with `{CHECKPOINT_DIR}/{FINAL_CHECKPOINT}`: nothing to analyse.",
                [ReportTable(pd.DataFrame(skipped), "Runs not analysed")] if skipped else [],
            )
        ]
    long.to_csv(out / "interp_runs.csv", index=False)
    agg = aggregate(long)
    agg.to_csv(out / "interp_summary.csv", index=False)
    dpi = int(getattr(getattr(settings, "analysis", None), "dpi", 130))
    kind = str(interp.head_ablation[0]) if interp.head_ablation else "mean"
    sections = [_family_section(task, agg, long, out, dpi, kind) for task in dict.fromkeys(long.task)]
    note = f"Interpretability of {long.run.nunique()} run(s) took {time.perf_counter() - t0:.1f} s."
    if skipped:
        sections[-1].tables.append(ReportTable(pd.DataFrame(skipped), "Runs not analysed"))
    sections[-1].text += "\n\n" + note
    return sections


class InterpretabilitySection(Section):
    """The interpretability toolkit on every completed run's final model, per task."""

    title = "Interpretability"
    writes = ("interp/interp_runs.csv", "interp/interp_summary.csv")
    provider = staticmethod(interp_sections)

    def applies(self, sweep: Sweep) -> str | None:
        interp = sweep.analysis.interp
        if not interp.enabled or not interp.in_sweep:
            return "switched off (`analysis.interp.enabled` / `analysis.interp.in_sweep`)"
        if not any(
            r.completed and r.contents is not None and r.contents.final_checkpoint is not None for r in sweep.runs
        ):
            return f"no completed run has `{CHECKPOINT_DIR}/{FINAL_CHECKPOINT}`"
        return None

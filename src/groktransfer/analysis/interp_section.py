"""The report provider ``interp_sections(runs, out_dir, settings)``: the interpretability
toolkit (``groktransfer.interp``) on every completed run's final model, one report
section per task family, aggregated across seeds.

Configured as ``analysis.extra_sections: [..., "groktransfer.analysis.interp_section:interp_sections"]``;
what runs is ``analysis.interp`` (``InterpSettings``). Per run, every scalar the toolkit
measures goes to ``interp/interp_runs.csv`` (long format); per task family and condition,
the median and the min–max over seeds go to ``interp/interp_summary.csv`` and the report
shows the head-ablation effects, the direct logit attribution, probes and embedding
structure with that spread.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from groktransfer.model.checkpoint import CheckpointError, load_checkpoint
from groktransfer.model.protocol import Reading
from groktransfer.render import apply_theme, condition_colors, save_figure
from groktransfer.runs.reader import read_run
from groktransfer.runs.rundir import CHECKPOINT_DIR, CONFIG_FILE, FINAL_CHECKPOINT
from groktransfer.tasks.registry import make_task, typed_task
from groktransfer.utils.cores import usable_cores

from .collect import RunRecord
from .report import ReportFigure, ReportSection, ReportTable
from .section import Section, Sweep

SUBDIR = "interp"


#: why a run's model is not read here (the model protocol's readings say what it offers)
NOT_APPLICABLE = ("the {architecture} model does not offer the TransformerLens readings the interpretability "
                  "toolkit reads (attention heads, residual stream, hooks by TransformerLens names)")  # fmt: skip


def _interp_settings(settings: Any) -> Any:
    from .settings import InterpSettings

    return getattr(getattr(settings, "analysis", None), "interp", None) or InterpSettings()


def run_task(rec: RunRecord) -> Any:
    """The task a run trained on, rebuilt from its ``config.yaml`` task block through
    ``tasks.make_task`` (a modular ``Task`` or a ``DigitTask``), with the data seed the
    status record says the run used. Raises ``ValueError`` when the block is missing or
    does not make a task."""
    contents = rec.contents if rec.contents is not None else read_run(rec.run_dir)
    block = contents.config.task
    if not block.get("name"):
        raise ValueError(f"task not recorded in {CONFIG_FILE}")
    return make_task(typed_task(block), contents.data_seed())  # ConfigError is a ValueError


def interpret_runs(runs: Sequence[RunRecord], interp: Any) -> tuple:
    """(long DataFrame of every run's scalars, list of skipped runs with the reason).

    Runs are interpreted side by side, one per core (``interp.parallel_runs``), each on
    one torch thread. Why threads and not more torch threads per run: a run's products
    are small, and one thread computes each in the calling thread, so a run's numbers do
    not depend on how many run beside it; torch releases the GIL inside its kernels.
    """
    from groktransfer.interp.summary import interpret

    def one(rec: RunRecord) -> tuple:
        info = {"run": rec.name, "condition": rec.condition or "?", "seed": rec.seed}
        final = rec.run_dir / CHECKPOINT_DIR / FINAL_CHECKPOINT
        if not rec.completed or not final.is_file():
            return [], {**info, "why": "not completed" if not rec.completed else f"no {CHECKPOINT_DIR}/{FINAL_CHECKPOINT}"}
        try:
            task = run_task(rec)
        except ValueError as exc:
            return [], {**info, "why": str(exc)}
        try:
            model = load_checkpoint(final).build_model()
            if Reading.transformer_lens not in model.readings:  # the toolkit reads heads and hooks by TL names
                return [], {**info, "why": NOT_APPLICABLE.format(architecture=model.config.architecture)}
            res = interpret(model, task, interp)
        except (CheckpointError, ValueError, AssertionError, KeyError) as exc:
            return [], {**info, "why": f"{type(exc).__name__}: {exc}"}
        family = task.name
        p = getattr(task, "p", None)
        rows = [dict(info, task=family, p=p, measure=k, value=float(v)) for k, v in res.scalars.items()]
        if res.arrays.get("key_freqs") is not None:
            rows.append(dict(info, task=family, p=p, measure="key_freqs", value=float("nan"),
                             text=" ".join(map(str, res.arrays["key_freqs"]))))  # fmt: skip
        return rows, None

    threads = max(1, int(interp.threads))
    workers = parallel_workers(interp.parallel_runs, len(runs), threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # before the workers start, so interpret()'s own set-and-restore is a no-op
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, runs))  # in run order, whatever finishes first
    finally:
        torch.set_num_threads(before)
    rows = [row for run_rows, _ in results for row in run_rows]
    skipped = [why for _, why in results if why is not None]
    return pd.DataFrame(rows), skipped


def parallel_workers(requested: int, n_items: int, threads: int = 1) -> int:
    """``requested`` workers, or with 0 as many as the cores this process may run on hold
    at ``threads`` each; never more than the items."""
    return max(1, min(int(requested) or usable_cores() // threads, n_items))


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """Median, min, max and n over seeds per (task, condition, measure)."""
    num = long[long.measure != "key_freqs"]
    g = num.groupby(["task", "condition", "measure"], sort=False)["value"]
    return g.agg(median="median", min="min", max="max", n="count").reset_index()


def _spread(d: pd.DataFrame, fmt: str = ".3g") -> str:
    if d.empty:
        return ""
    r = d.iloc[0]
    return f"{r['median']:{fmt}} [{r['min']:{fmt}}–{r['max']:{fmt}}]" if r["n"] > 1 else f"{r['median']:{fmt}}"


def _wide(agg: pd.DataFrame, task: str, prefix: str, label: str) -> pd.DataFrame:
    """Rows = measures starting with ``prefix`` (name after it), columns = conditions,
    cells = 'median [min–max]'."""
    d = agg[(agg.task == task) & agg.measure.str.startswith(prefix)]
    if d.empty:
        return pd.DataFrame()
    conds = list(dict.fromkeys(d.condition))
    out = []
    for m in dict.fromkeys(d.measure):
        row = {label: m[len(prefix):]}
        for c in conds:
            row[c] = _spread(d[(d.measure == m) & (d.condition == c)])
        out.append(row)
    return pd.DataFrame(out)


def _bar_figure(agg: pd.DataFrame, task: str, prefix: str, title: str, ylabel: str, path: Path, dpi: int) -> Optional[Path]:
    """Grouped bars: median per condition, whiskers min–max over seeds."""
    d = agg[(agg.task == task) & agg.measure.str.startswith(prefix)]
    if d.empty:
        return None
    apply_theme()
    conds = list(dict.fromkeys(d.condition))
    measures = list(dict.fromkeys(d.measure))
    colors = condition_colors(conds)
    width = 0.8 / len(conds)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(measures) * max(1, len(conds)) + 2), 3.8))
    for i, c in enumerate(conds):
        dc = d[d.condition == c].set_index("measure").reindex(measures)
        x = np.arange(len(measures)) + i * width
        err = np.vstack([dc["median"] - dc["min"], dc["max"] - dc["median"]])
        ax.bar(x, dc["median"], width, yerr=err, capsize=2, color=colors[c], label=f"{c} (n={int(dc['n'].max())})")
    ax.set_xticks(np.arange(len(measures)) + 0.4 - width / 2, [m[len(prefix):] for m in measures], rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def findings_by_run(task: str, long: pd.DataFrame) -> pd.DataFrame:
    """The seed analyses' findings for the task's family (``interp.findings``), one column per
    run: ``holds`` / ``differs`` and that run's numbers. Empty for families without findings."""
    from groktransfer.interp.families import family_key
    from groktransfer.interp.findings import findings_table

    d = long[(long.task == task) & (long.measure != "key_freqs")]
    table = pd.DataFrame()
    for (cond, seed, _), g in d.groupby(["condition", "seed", "run"], sort=False, dropna=False):
        t = findings_table(family_key(task), dict(zip(g.measure, g.value)))
        if t.empty:
            return t
        if table.empty:
            table = t[["claim", "seed analysis"]].copy()
        table[f"{cond} s{seed}"] = (t.verdict + ": " + t["this model"]).to_numpy()
    return table


def _family_section(task: str, agg: pd.DataFrame, long: pd.DataFrame, out: Path, dpi: int, kind: str) -> ReportSection:
    tables, figs = [], []
    findings = findings_by_run(task, long)
    if not findings.empty:
        findings.to_csv(out / f"interp_{task}_findings.csv", index=False)
        tables.append(ReportTable(findings, "Findings: each claim of the seed analysis (criterion in the claim) on every "
                                            "run's final model, holds / differs with the run's numbers"))  # fmt: skip
    head_prefix = f"head_{kind}_z_"
    d_loss = agg[(agg.task == task) & agg.measure.str.startswith(head_prefix) & agg.measure.str.contains(r"_d_loss\[")]
    if not d_loss.empty:
        t = _wide(agg, task, head_prefix, "head, measure [answer]")
        tables.append(ReportTable(t, f"Head ablation ({kind}, head output z): loss increase and accuracy, median [min–max] over seeds"))
        fig = _bar_figure(agg[agg.measure.str.contains(r"_d_loss\[")], task, head_prefix,
                          f"{task}: loss increase when one head is {kind}-ablated (median, min–max over seeds)",
                          "loss increase", out / f"interp_{task}_head_ablation.png", dpi)  # fmt: skip
        if fig:
            figs.append(ReportFigure(fig, "Head ablation per condition: bar = median over seeds, whiskers = min–max."))
    qkv = _wide(agg[agg.measure.str.contains(r"_acc\[")], task, f"head_{kind}_", "site, head [answer]")
    if not qkv.empty:
        qkv = qkv[~qkv.iloc[:, 0].str.startswith("z_")]
        if not qkv.empty:
            tables.append(ReportTable(qkv, f"Accuracy after {kind}-ablating one head's query / key / value input"))
    dla = _wide(agg, task, "dla_", "part [answer]")
    if not dla.empty:
        tables.append(ReportTable(dla, "Direct logit attribution to the correct answer's centred logit (mean over inputs), "
                                       "median [min–max] over seeds; `completeness_error` = |parts + bias − logit|"))  # fmt: skip
        fig = _bar_figure(agg[~agg.measure.str.contains("completeness")], task, "dla_",
                          f"{task}: direct logit attribution per part", "mean contribution", out / f"interp_{task}_dla.png", dpi)  # fmt: skip
        if fig:
            figs.append(ReportFigure(fig, "DLA per part and condition: bar = median over seeds, whiskers = min–max."))
    probes = _wide(agg, task, "probe[", "hook@position->target]")
    if not probes.empty:
        tables.append(ReportTable(probes, "Ridge probes: held-out R² (a, b, a+b) or accuracy (answer), median [min–max]"))
    rep = pd.concat([_wide(agg, task, p, "measure") for p in ("embed_", "n_key_freqs", "frac_neurons", "cluster_ablated_acc", "max_abs_neuron_corr", "clean_")], ignore_index=True)  # fmt: skip
    if not rep.empty:
        tables.append(ReportTable(rep, "Representation measures (embedding PCs and Fourier Gini, PC ablations, neuron clusters)"))
    kf = long[(long.task == task) & (long.measure == "key_freqs")] if "text" in long else pd.DataFrame()
    text = (f"Final models of every completed run on `{task}`, analysed with `groktransfer.interp` "
            f"(settings `analysis.interp`). Per-seed numbers: `interp/interp_runs.csv`; aggregates: `interp/interp_summary.csv`.")  # fmt: skip
    if not kf.empty:
        text += "\n\nKey input frequencies per run: " + "; ".join(f"{r.condition} s{r.seed}: [{r.text}]" for r in kf.itertuples())
    return ReportSection(f"Interpretability: {task}", text, tables, figs)


def interp_sections(runs: Sequence[RunRecord], out_dir: Path, settings: Any = None) -> List[ReportSection]:
    """Report provider: one section per task family (see module doc)."""
    interp = _interp_settings(settings)
    if not interp.enabled or not interp.in_sweep:
        return []
    t0 = time.perf_counter()
    out = Path(out_dir) / SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    long, skipped = interpret_runs(runs, interp)
    marker = NOT_APPLICABLE.split("{architecture}")[1]
    if long.empty and skipped and all(marker in s["why"] for s in skipped):
        return [ReportSection("Interpretability", f"Not applicable: {skipped[0]['why']}.", [])]
    if long.empty:
        return [ReportSection("Interpretability", f"No completed run with `{CHECKPOINT_DIR}/{FINAL_CHECKPOINT}`: nothing to analyse.",
                              [ReportTable(pd.DataFrame(skipped), "Runs not analysed")] if skipped else [])]  # fmt: skip
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
    """The interpretability toolkit on every completed run's final model, per task family."""

    title = "Interpretability"
    writes = ("interp/",)
    provider = staticmethod(interp_sections)

    def applies(self, sweep: Sweep) -> Optional[str]:
        interp = sweep.analysis.interp
        if not interp.enabled or not interp.in_sweep:
            return "switched off (`analysis.interp.enabled` / `analysis.interp.in_sweep`)"
        if not any(r.completed and r.contents is not None and r.contents.final_checkpoint is not None for r in sweep.runs):
            return f"no completed run has `{CHECKPOINT_DIR}/{FINAL_CHECKPOINT}`"
        return None

    def build(self, sweep: Sweep) -> List[ReportSection]:
        return interp_sections(sweep.runs, sweep.out_dir, sweep.settings)

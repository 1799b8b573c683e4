"""Epochs (and seconds) to a test-accuracy threshold per optimizer x gradient filter, with the
speed-up over a baseline group, from one or more sweep directories.

The standard report (scripts/analyze.py) groups runs by transfer condition; this tool groups
them by ``optimizer.name`` / ``gradfilter.name`` (and a transfer condition when a sweep mixes
several) and uses the analysis module's own statistics: censored runs count at their last
epoch, a median that a censored run could still move is a lower bound (``≥``), the speed-up
is median(baseline) / median(group) with a percentile-bootstrap CI over runs
(``groktransfer.analysis.groups.compare_groups``). Per second: each run's epochs to the
threshold times its measured seconds per epoch (status.json ``seconds_per_epoch``), or, with
``--cost``, times the seconds per epoch that ``benchmarks/bench_gradfilter.py`` measured for
its optimizer and filter: a sweep's own timings count every other process on the machine
(jobs started while the machine was busy look slow), the benchmark's interleaved rounds do not.

    python scripts/compare_optimizers.py multirun/grokfast_p113/<time> [more sweep dirs] \
        [--threshold 0.9 0.999] [--baseline adamw/none] [--json out.json] \
        [--cost benchmarks/results/bench_gradfilter.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from groktransfer.analysis.collect import collect_runs, resolve_sweep_dirs
from groktransfer.analysis.groups import compare_groups, observations
from groktransfer.analysis.settings import BootstrapSettings
from groktransfer.model.gemm import machine_key
from groktransfer.runs.reader import read_run
from groktransfer.runs.rundir import STATUS_FILE
from groktransfer.analysis.stats import bootstrap_ratio_ci, bound_direction, format_epochs, median_with_bound, ratio_of_medians, row_rng


def group_label(run_dir: Path, with_condition: bool, with_experiment: bool = False) -> str:
    cfg = read_run(run_dir).config
    opt = cfg.value("optimizer", "name") or "adamw"
    filt = cfg.value("gradfilter", "name") or "none"
    label = f"{opt}/{filt}"
    if opt == "muon" and cfg.value("optimizer", "muon", "lr") is not None:
        label += f" (muon lr {cfg.value('optimizer', 'muon', 'lr')})"
    if with_condition:
        condition = cfg.value("transfer", "name")
        label = f"{condition}: {label}"
        if condition != "random":  # the source's filter: transfer.source.gradfilter, else the target's
            label += f" (source {cfg.value('transfer', 'source', 'gradfilter', 'name') or filt})"
    if with_experiment:  # sweeps of several presets (e.g. another epoch cap): keep their runs apart
        label = f"{cfg.experiment}: {label}"
    return label


# bench_gradfilter's variant for an "optimizer/filter" group label
_BENCH_VARIANT = {"adamw/none": "adamw", "adamw/ema": "adamw + ema", "adamw/ma": "adamw + ma", "muon/none": "muon"}


def bench_costs(path: Path, machine: str | None = None) -> Dict[str, float]:
    """Seconds per epoch by group ("adamw/none", ...) from a bench_gradfilter results file:
    the entry of ``machine`` (a machine key), else of this machine, else the only one."""
    machines = json.loads(Path(path).read_text())["machines"]
    here = machine_key()
    key = machine or (here if here in machines else None)
    if key is None:
        if len(machines) != 1:
            raise SystemExit(f"{path}: no entry for this machine; pick one of {sorted(machines)} with --cost-machine")
        key = next(iter(machines))
    rows = {r["variant"]: float(r["seconds_per_epoch"]) for r in machines[key]["rows"]}
    return {group: rows[variant] for group, variant in _BENCH_VARIANT.items() if variant in rows}


def group_cost(label: str, costs: Dict[str, float]) -> float:
    """The benchmark's seconds per epoch for a group label (condition prefix and notes aside)."""
    core = label.rsplit(": ", 1)[-1].split(" (")[0]
    return costs.get(core, math.nan)


def seconds_per_epoch(run_dir: Path) -> float:
    try:
        return float(json.loads((run_dir / STATUS_FILE).read_text())["seconds_per_epoch"])
    except (OSError, KeyError, ValueError, TypeError):
        return math.nan


def compare(sweeps: List[Path], threshold: float, baseline: str, b: BootstrapSettings,
            costs: Dict[str, float] | None = None) -> List[Dict[str, Any]]:
    runs = collect_runs(sweeps)
    with_condition = len({r.condition for r in runs}) > 1
    with_experiment = len({r.experiment for r in runs}) > 1
    groups: Dict[str, list] = {}
    for r in runs:
        groups.setdefault(group_label(r.run_dir, with_condition, with_experiment), []).append(r)
    base_key = next((k for k in groups if k.endswith(baseline)), baseline)
    base = groups.get(base_key, [])
    rows = []
    for label, members in groups.items():
        row = compare_groups(base, members, threshold, label, b)
        row["group"], row["baseline"] = label, base_key
        row["n_runs"] = len(members)
        row["n_not_completed"] = sum(not r.completed for r in members)
        if costs is None:
            spe = [seconds_per_epoch(r.run_dir) for r in members if r.completed]
            row["seconds_per_epoch_median"] = float(np.nanmedian(spe)) if spe else math.nan
        else:
            row["seconds_per_epoch_median"] = group_cost(label, costs)
        row["seconds_per_epoch_source"] = "runs" if costs is None else "bench_gradfilter"
        # per second: epochs to the threshold x that run's (or the benchmark's) seconds per epoch
        gv, gc = _seconds(members, threshold, None if costs is None else group_cost(label, costs))
        bv, bc = _seconds(base, threshold, None if costs is None else group_cost(base_key, costs))
        if gv.size and bv.size:
            med, lower = median_with_bound(gv, gc)
            bmed, blower = median_with_bound(bv, bc)
            lo, hi = bootstrap_ratio_ci(bv, gv, b.n_resamples, b.confidence, row_rng(b.seed, label + "|s", threshold))
            row.update(seconds_median=med, seconds_lower_bound=lower, speedup_per_second=ratio_of_medians(bv, gv),
                       sec_ci_low=lo, sec_ci_high=hi, sec_bound=bound_direction(blower, lower))  # fmt: skip
        row["epochs"] = sorted(float(v) for v in observations(members, threshold)[0])
        # where a group is censored, how far it got: test accuracy at each run's last epoch
        finals = [float(r.final["test_acc"]) for r in members if r.completed and "test_acc" in r.final]
        row["final_test_acc"] = sorted(finals)
        rows.append(row)
    rows.sort(key=lambda r: (r["group"] != base_key, r["group"]))
    return rows


def _seconds(runs, threshold: float, cost: float | None = None):
    values, censored = [], []
    for r in runs:
        v, c = observations([r], threshold)
        if v.size:
            values.append(float(v[0]) * (seconds_per_epoch(r.run_dir) if cost is None else cost))
            censored.append(bool(c[0]))
    return np.array(values), np.array(censored, dtype=bool)


def markdown(rows: List[Dict[str, Any]], threshold: float) -> str:
    head = (
        f"| group | runs (censored) | epochs to {threshold:g} test acc: median [min–max] | speed-up per epoch (95% CI) "
        "| s/epoch | speed-up per second (95% CI) | final test acc [min–max] |\n|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        bound = {"lower bound": "≥ ", "upper bound": "≤ ", "indeterminate": "? "}.get(r.get("bound", ""), "")
        ratio = "–" if r["group"] == r["baseline"] else f"{bound}{r['ratio']:.2f} ({r['ci_low']:.2f}–{r['ci_high']:.2f})"
        sec = "–"
        if r["group"] != r["baseline"] and "speedup_per_second" in r:
            sb = {"lower bound": "≥ ", "upper bound": "≤ ", "indeterminate": "? "}.get(r.get("sec_bound", ""), "")
            sec = f"{sb}{r['speedup_per_second']:.2f} ({r['sec_ci_low']:.2f}–{r['sec_ci_high']:.2f})"
        lines.append(
            f"| {r['group']} | {r['n']} ({r['n_censored']}) | {format_epochs(r['median'], r['median_lower_bound'])} "
            f"[{format_epochs(r['min'])}–{format_epochs(r['max'])}] | {ratio} | {r['seconds_per_epoch_median']:.4f} | {sec} "
            f"| {_acc(r['final_test_acc'])} |"
        )
    return "\n".join(lines)


def _acc(values: List[float]) -> str:
    if not values:
        return "–"
    return f"{float(np.median(values)):.3f} [{min(values):.3f}–{max(values):.3f}]"


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dirs", nargs="+")
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.999])
    ap.add_argument("--baseline", default="adamw/none")
    ap.add_argument("--json", default=None)
    ap.add_argument("--cost", default=None, help="seconds per epoch from a bench_gradfilter results file, not the runs'")
    ap.add_argument("--cost-machine", default=None, help="that file's machine key (default: this machine's)")
    args = ap.parse_args(argv)
    costs = bench_costs(Path(args.cost), args.cost_machine) if args.cost else None
    sweeps = resolve_sweep_dirs([s.removeprefix("sweep_dir=") for s in args.sweep_dirs])
    out = {}
    for t in args.threshold:
        rows = compare(sweeps, t, args.baseline, BootstrapSettings(), costs)
        print(markdown(rows, t) + "\n")
        out[str(t)] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

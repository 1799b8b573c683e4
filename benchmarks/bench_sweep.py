"""Wall time of the paper-scale sweep, separate processes against seed ensembles.

Runs the same sweep command -- 3 conditions x 5 seeds of ``experiment=add_to_subtract_p113``
(a+b mod 113 -> a-b mod 113) -- once per launcher, each in a fresh ``paths.root`` (so each
trains its own source run), and prints the wall time, the children's CPU time and the load
average around each run (times measured on a busy machine are inflated). The conditions go
in ``scripts/quickstart.sh``'s order, random starts first: they need no source run, so the
second worker trains them while the first trains the source. Usage::

    python benchmarks/bench_sweep.py                                  # both ways (hours on 2 CPU cores)
    python benchmarks/bench_sweep.py --launchers ensemble             # one way
    python benchmarks/bench_sweep.py --experiment quickstart --seeds 0 1 2   # minutes

``joblib`` is the separate-process baseline with ``--n-jobs`` workers (default 2, one per
core on a 2-core machine); ``ensemble`` is ``hydra/launcher=ensemble`` with
``hydra.launcher.n_jobs`` = ``--n-jobs`` worker processes of one thread each (its default
on a CPU), each training ensembles of up to 4 members.
``--device`` is passed as ``train.device``. The table also goes to
``benchmarks/results/bench_sweep.json`` (``--out``), one entry per machine and sweep, which
the documentation's performance page reads.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from groktransfer.model.gemm import machine_key

import results

TITLE = "A whole sweep, separate processes against seed ensembles"
REPO = Path(__file__).resolve().parents[1]


def sweep_command(launcher: str, root: Path, args: argparse.Namespace) -> list:
    cmd = [
        sys.executable, str(REPO / "scripts" / "train.py"), "-m", f"experiment={args.experiment}",
        f"seed={','.join(map(str, args.seeds))}", "transfer=random,memorized,grokked",
        f"paths.root={root}", "logger=none", "train.progress_bar=false", f"train.device={args.device}",
    ]
    if launcher == "joblib":
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"]
    else:
        cmd += ["hydra/launcher=ensemble", f"hydra.launcher.n_jobs={args.n_jobs}", "hydra.launcher.threads=1"]
    return cmd


def timed_run(cmd: list, log_path: Path, cwd: Path = REPO, env: Optional[dict] = None) -> dict:
    """Run ``cmd`` (output to ``log_path``): return code, wall and children's CPU seconds, load average before and after."""
    load_before = os.getloadavg()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
    return {"rc": proc.returncode, "wall": wall, "cpu": cpu, "load_before": load_before, "load_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launchers", nargs="+", default=["joblib", "ensemble"], choices=["joblib", "ensemble"])
    parser.add_argument("--experiment", default="add_to_subtract_p113")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--root", type=Path, default=None, help="keep outputs here (default: a temp dir)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_sweep.json"))
    args = parser.parse_args()
    base = args.root or Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    rows = {}
    for launcher in args.launchers:
        root = base / launcher
        cmd = sweep_command(launcher, root, args)
        print("running:", " ".join(cmd[1:]), flush=True)
        rows[launcher] = timed_run(cmd, base / f"{launcher}.log")
        print(f"  {launcher}: rc={rows[launcher]['rc']} wall {rows[launcher]['wall'] / 60:.1f} min", flush=True)
    print(f"\n{args.experiment}: {len(args.seeds)} seeds x 3 conditions, n_jobs/threads={args.n_jobs}, "
          f"device={args.device}; outputs and logs in {base}")
    print(f"{'launcher':<10}{'wall':>12}{'CPU (children)':>16}{'load avg before':>22}{'load avg after':>22}")
    for launcher, r in rows.items():
        fmt = lambda load: " ".join(f"{x:.1f}" for x in load)  # noqa: E731
        print(f"{launcher:<10}{r['wall'] / 60:>10.1f} m{r['cpu'] / 60:>14.1f} m{fmt(r['load_before']):>22}{fmt(r['load_after']):>22}")
    if len(rows) == 2:
        print(f"separate / ensemble wall time: {rows['joblib']['wall'] / rows['ensemble']['wall']:.2f}x")
    failed = [launcher for launcher, r in rows.items() if r["rc"] != 0]
    if failed:
        sys.exit(f"not recorded: the sweep failed with {', '.join(failed)} (logs in {base})")
    sweep = f"{args.experiment}, {len(args.seeds)} seeds x 3 conditions + source run"
    launchers = {"joblib": f"joblib, n_jobs={args.n_jobs} (separate processes)",
                 "ensemble": f"ensemble ({args.n_jobs} workers, 1 thread each)"}
    table = [{"sweep": sweep, "launcher": launchers[launcher], "wall_min": r["wall"] / 60, "cpu_min": r["cpu"] / 60,
              "load_before": " / ".join(f"{x:.1f}" for x in r["load_before"]),
              "load_after": " / ".join(f"{x:.1f}" for x in r["load_after"])} for launcher, r in rows.items()]
    figures = {"columns": {"sweep": "sweep", "launcher": "launcher", "wall_min": "wall (min)", "cpu_min": "CPU (min)",
                           "load_before": "load before", "load_after": "load after"},
               "rows": table, "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    # one entry per machine *and* sweep: a quick quickstart sweep does not replace the p = 113 one
    machine = f"{machine_key(threads=1)} | {args.experiment} | device={args.device}"
    print(f"results: {results.record('bench_sweep', machine, figures, Path(args.out), title=TITLE)}")


if __name__ == "__main__":
    main()

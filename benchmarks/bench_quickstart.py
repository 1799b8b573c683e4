"""The README's main job as a new user meets it: a fresh clone, ``bash scripts/quickstart.sh``.

Clones this checkout's HEAD (committed work only) into a temporary directory and runs the
quickstart there: it creates its own ``.venv``, installs the package pinned by
``constraints.txt``, trains the sweep and analyses it. Prints, and records in
``benchmarks/results/end_to_end.json`` (``--out``; one entry per machine, which the
documentation's performance page reads):

- the wall time in all, split into the install and the sweep plus analysis (the script's
  own ``quickstart finished in N s`` line),
- the CPU seconds of everything it ran, and the load average before and after,
- the answer: the first lines of the report's *Answer* section.

Usage::

    python benchmarks/bench_quickstart.py
    # as on a CPU with AVX2 only (oneDNN and MKL capped; recorded under its own machine key):
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/bench_quickstart.py

Nothing is shared with earlier runs: the clone has no source-run cache, and the choices of
``train.cpu_gemm=auto`` go to an empty cache directory. pip's download cache is used unless
``--no-pip-cache`` (then the wheels are downloaded again, as on a new machine).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

from groktransfer.model.gemm import machine_key

import results
from bench_sweep import timed_run

REPO = Path(__file__).resolve().parents[1]
TITLE = "Commands from the documentation, timed end to end"
COMMAND = "bash scripts/quickstart.sh (fresh clone, install included)"


def answer_lines(report_md: Path, limit: int = 4) -> List[str]:
    """The bullet points of the report's *Answer* section (what the README quotes)."""
    text = report_md.read_text(encoding="utf-8")
    section = text.split("## Answer", 1)[1].split("\n## ", 1)[0] if "## Answer" in text else ""
    return [line[2:].strip() for line in section.splitlines() if line.startswith("- ")][:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-pip-cache", action="store_true", help="download every wheel again, as a new machine would")
    parser.add_argument("--keep", action="store_true", help="keep the clone (default: removed after a successful run)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "end_to_end.json"))
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout
    if dirty.strip():
        print(f"note: uncommitted changes are not measured (the clone is HEAD = {commit})", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="bench_quickstart_"))
    clone = work / "groktransfer"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHON_BIN", "GROKTRANSFER_VENV", "PYTHONPATH")}
    env["GROKTRANSFER_CACHE_DIR"] = str(work / "cache")  # auto's GEMM choices: measured afresh
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO)))
    if args.no_pip_cache:
        env["PIP_NO_CACHE_DIR"] = "1"
    print(f"running bash scripts/quickstart.sh in {clone} (HEAD {commit}); log: {work / 'quickstart.log'}", flush=True)
    r = timed_run(["bash", "scripts/quickstart.sh"], work / "quickstart.log", cwd=clone, env=env)
    log = (work / "quickstart.log").read_text(errors="replace")
    if r["rc"] != 0:
        sys.exit(f"quickstart failed (rc={r['rc']}); not recorded. Log: {work / 'quickstart.log'}")
    done = re.search(r"quickstart finished in (\d+) s; report: (\S+)", log)
    if done is None:
        sys.exit(f"no 'quickstart finished' line in {work / 'quickstart.log'}; not recorded")
    sweep_s = float(done.group(1))
    answer = answer_lines(clone / Path(done.group(2)).with_name("report.md"))
    machine = machine_key(threads=1)
    print(f"machine: {machine}")
    minutes, seconds = divmod(round(r["wall"]), 60)
    print(f"wall {minutes} min {seconds} s = install {r['wall'] - sweep_s:.0f} s + sweep and analysis "
          f"{sweep_s:.0f} s; CPU {r['cpu']:.0f} s; load before {r['load_before'][0]:.1f}, after {r['load_after'][0]:.1f}")
    print("answer:\n  " + "\n  ".join(answer))
    row = {"command": COMMAND, "wall_s": r["wall"], "install_s": r["wall"] - sweep_s, "sweep_analysis_s": sweep_s,
           "cpu_s": r["cpu"], "answer": " ".join(answer)}
    figures = {"columns": {"command": "command", "wall_s": "wall (s)", "install_s": "install (s)",
                           "sweep_analysis_s": "sweep + analysis (s)", "cpu_s": "CPU (s)", "answer": "the report's answer"},
               "rows": [row], "commit": commit, "load_before": r["load_before"], "load_after": r["load_after"],
               "notes": f"A fresh clone of {commit}; two 1-thread jobs at a time; pip download cache "
                        f"{'off' if args.no_pip_cache else 'as on this machine'}; load average before/after "
                        f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f}."}  # fmt: skip
    print(f"results: {results.record('end_to_end', machine, figures, Path(args.out), title=TITLE)}")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Reproduce a published result in its own setting and record the paper's number beside ours.

    python benchmarks/reproduce.py --list
    python benchmarks/reproduce.py nanda2023                 # train its presets, record the result
    python benchmarks/reproduce.py grokfast --seeds 0,1      # other seeds than the definition's
    python benchmarks/reproduce.py nanda2023 --collect       # read runs already trained, record
    python benchmarks/reproduce.py --cheap --all --root /tmp/r --out /tmp/r/results   # CI: seconds each

Each reproduction (benchmarks/reproductions.py) trains seed sweeps of presets in
conf/experiment/repro/ through ``scripts/train.py`` (one process per sweep, its jobs one
thread each, W&B off), reads the run directories and writes, per claim, the paper's value
and where it comes from, ours (median, range, n, censored runs) and a verdict
(benchmarks/repro_lib.py) into ``benchmarks/results/reproductions/<name>.json``, one entry
per machine (benchmarks/results.py), which the documentation's Reproductions page shows.
A full reproduction trains for hours on a CPU: run it niced (``nice -n 19``) and collect
later with ``--collect``. ``--cheap`` runs each sweep debug-sized (seconds) and records only
where ``--out`` says; it keeps the commands and the readers alive in CI, and its numbers
mean nothing.

Runs are found by their run identity (the run index under ``--root``): rerunning a
reproduction reuses every completed run and resumes an interrupted one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from repro_lib import DIFFERS, MATCHES, NOT_MEASURED, Run, read_sweep, verdict, write_json  # noqa: E402
from reproductions import REPO, REPRODUCTIONS, Reproduction, Sweep  # noqa: E402
from results import RESULTS_DIR, machine, record  # noqa: E402

OUT_DIR = RESULTS_DIR / "reproductions"
DEFAULT_ROOT = REPO / "multirun" / "repro"
#: where the seed-000 reproduction looks for Nanda et al.'s released run unless told
PAPER_CHECKPOINT = DEFAULT_ROOT / "paper" / "wd_10-1_mod_addition_loss_curve.pth"
PAPER_CHECKPOINT_URL = ("https://github.com/Junekhunter/progress-measures-paper-extension/raw/main/"
                        "saved_runs/wd_10-1_mod_addition_loss_curve.pth")  # fmt: skip


def sweep_dir(root: Path, repro: Reproduction, sweep: Sweep, cheap: bool) -> Path:
    return Path(root) / repro.name / ("cheap" if cheap else "full") / sweep.label


def train_command(repro: Reproduction, sweep: Sweep, root: Path, cheap: bool, seeds: Sequence[int], jobs: int,
                  paper_checkpoint: Optional[Path], own_index: bool) -> List[str]:  # fmt: skip
    """The ``scripts/train.py -m`` command of one sweep; ``own_index``: its run index, source
    cache and run directories under ``root`` (else the project's, ``multirun/``, so that runs
    trained by hand with the same presets are found and reused)."""
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), "-m", f"experiment={sweep.preset}",
           f"seed={','.join(str(s) for s in seeds)}", *sweep.overrides, "logger=none", "train.progress_bar=false",
           "train.threads=1", f"hydra.sweep.dir={sweep_dir(root, repro, sweep, cheap).resolve()}"]  # fmt: skip
    if own_index:
        cmd.append(f"paths.root={Path(root).resolve()}")
    if sweep.needs_paper_checkpoint:
        cmd.append(f"transfer.source.path={Path(paper_checkpoint).resolve()}")
    if cheap:
        cmd += list(sweep.cheap)
    if jobs > 1 and len(seeds) > 1:
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    return cmd


def run_sweeps(repro: Reproduction, root: Path, cheap: bool, seeds: Optional[Sequence[int]], jobs: int,
               paper_checkpoint: Optional[Path], own_index: bool) -> None:  # fmt: skip
    for sweep in repro.sweeps:
        chosen = list(sweep.cheap_seeds if cheap else (seeds if seeds is not None else sweep.seeds))
        cmd = train_command(repro, sweep, root, cheap, chosen, jobs, paper_checkpoint, own_index)
        print(f"[{repro.name}/{sweep.label}] {' '.join(cmd[1:])}", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
        subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL if cheap else None)


def collect(repro: Reproduction, root: Path, cheap: bool) -> Dict[str, List[Run]]:
    """The completed runs of each sweep; a run that is not (failed, still running) is named
    on stderr and left out."""
    out = {}
    for sweep in repro.sweeps:
        path = sweep_dir(root, repro, sweep, cheap)
        runs = read_sweep(path) if path.is_dir() else []
        for run in runs:
            if not run.completed:
                print(f"[{repro.name}/{sweep.label}] {run.path}: {run.status.get('status')} "
                      f"({run.status.get('reason') or 'no reason recorded'}): left out", file=sys.stderr)  # fmt: skip
        out[sweep.label] = [r for r in runs if r.completed]
    return out


def evaluate(repro: Reproduction, sweeps: Dict[str, List[Run]]) -> List[dict]:
    """One row per claim: the paper's value and source, ours, the verdict and its reason."""
    claims = list(repro.claims) + (repro.claims_from(sweeps) if repro.claims_from else [])
    rows = []
    for claim in claims:
        ours = claim.read(sweeps)
        word, why = verdict(claim, ours)
        rows.append({"claim": claim.label, "paper": claim.paper, "source": claim.source, "ours": ours.display(),
                     "verdict": word, "why": why, "how": claim.how, "measured": ours.as_dict()})  # fmt: skip
    return rows


def what_ran(repro: Reproduction, sweeps: Dict[str, List[Run]]) -> List[dict]:
    """Per sweep: seeds, epoch caps, runs completed and their training-loop seconds."""
    out = []
    for sweep in repro.sweeps:
        runs = sweeps.get(sweep.label, [])
        out.append({
            "sweep": sweep.label, "preset": sweep.preset, "overrides": list(sweep.overrides),
            "seeds": sorted({int(r.status.get("seed")) for r in runs if r.status.get("seed") is not None}),
            "runs": len(runs), "max_epochs": sorted({int(r.status.get("max_epochs") or 0) for r in runs}),
            "train_seconds": round(sum(float(r.status.get("train_seconds") or 0) for r in runs), 1),
            "run_dirs": [str(r.path.relative_to(REPO)) if r.path.is_relative_to(REPO) else str(r.path) for r in runs],
        })  # fmt: skip
    return out


def reproduce(repro: Reproduction, args: argparse.Namespace) -> dict:
    root = Path(args.root) if args.root else (DEFAULT_ROOT if not args.cheap else REPO / "multirun" / "repro_cheap")
    paper = Path(args.paper_checkpoint) if args.paper_checkpoint else PAPER_CHECKPOINT
    if any(s.needs_paper_checkpoint for s in repro.sweeps) and not args.collect and not args.cheap and not paper.is_file():
        raise SystemExit(f"reproduce: error: {repro.name} needs Nanda et al.'s released run at {paper}: download "
                         f"{PAPER_CHECKPOINT_URL} there, or give --paper-checkpoint")  # fmt: skip
    if args.cheap and any(s.needs_paper_checkpoint for s in repro.sweeps) and not paper.is_file():
        paper = _stand_in_paper_checkpoint(root)
    started = time.time()
    if not args.collect:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        run_sweeps(repro, root, args.cheap, seeds, args.jobs, paper, own_index=bool(args.root) or args.cheap)
    sweeps = collect(repro, root, args.cheap)
    empty = [label for label, runs in sweeps.items() if not runs]
    if empty and args.cheap:
        raise SystemExit(f"reproduce: error: {repro.name}: no completed run in sweep(s) {', '.join(empty)}")
    if repro.after_training is not None:
        repro.after_training(sweeps, root, args.cheap)
    rows = evaluate(repro, sweeps)
    figures = {
        "title": repro.title, "reference": repro.reference, "setting": repro.setting, "sizing": repro.sizing,
        "mode": "cheap" if args.cheap else "full", "sweeps": what_ran(repro, sweeps), "rows": rows,
        "columns": {"claim": "claim", "paper": "paper", "source": "source", "ours": "ours", "verdict": "verdict", "why": "why"},
        "seconds": round(time.time() - started, 1),
    }  # fmt: skip
    out = Path(args.out) / f"{repro.name}.json" if args.out else (None if args.cheap else OUT_DIR / f"{repro.name}.json")
    if out is not None:
        record(repro.name, machine(), figures, path=out, title=repro.title)
        print(f"[{repro.name}] recorded in {out}")
    for row in rows:
        mark = {MATCHES: "=", DIFFERS: "≠", NOT_MEASURED: "?"}.get(row["verdict"], "~")
        print(f"  {mark} {row['claim']}: paper {row['paper']} | ours {row['ours']} | {row['verdict']}")
    return figures


def _stand_in_paper_checkpoint(root: Path) -> Path:
    """Cheap mode without the released file: a paper-format file of the debug-sized model, so
    the grokked sweep's path and loader run (its numbers mean nothing)."""
    import torch

    from groktransfer.model.transformer import HookedGrokTransformer, TransformerConfig

    path = Path(root) / "paper_stand_in.pth"
    if not path.is_file():
        model = HookedGrokTransformer(TransformerConfig(d_model=64, d_head=16, d_mlp=128, d_vocab=24, d_vocab_out=24), seed=0)
        state = {k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] not in ("IGNORE",)}
        paper = {"embed.W_E": state["embed.W_E"].T.contiguous(), "pos_embed.W_pos": state["pos_embed.W_pos"],
                 "blocks.0.attn.W_K": state["blocks.0.attn.W_K"].transpose(1, 2).contiguous(),
                 "blocks.0.attn.W_Q": state["blocks.0.attn.W_Q"].transpose(1, 2).contiguous(),
                 "blocks.0.attn.W_V": state["blocks.0.attn.W_V"].transpose(1, 2).contiguous(),
                 "blocks.0.attn.W_O": state["blocks.0.attn.W_O"].reshape(-1, 64).T.contiguous(),
                 "blocks.0.attn.mask": torch.tril(torch.ones(3, 3)),
                 "blocks.0.mlp.W_in": state["blocks.0.mlp.W_in"].T.contiguous(), "blocks.0.mlp.b_in": state["blocks.0.mlp.b_in"],
                 "blocks.0.mlp.W_out": state["blocks.0.mlp.W_out"].T.contiguous(), "blocks.0.mlp.b_out": state["blocks.0.mlp.b_out"],
                 "unembed.W_U": state["unembed.W_U"]}  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": paper, "config": {"p": 23, "d_model": 64, "fn_name": "add", "frac_train": 0.3, "seed": 0}}, path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"reproductions: {', '.join(REPRODUCTIONS)}")
    parser.add_argument("--all", action="store_true", help="every reproduction")
    parser.add_argument("--list", action="store_true", help="list the reproductions and their presets")
    parser.add_argument("--cheap", action="store_true", help="the CI variant: debug-sized, seconds; recorded only with --out")
    parser.add_argument("--collect", action="store_true", help="train nothing: read the runs already there and record")
    parser.add_argument("--seeds", help="comma-separated seeds instead of each sweep's own")
    parser.add_argument("--jobs", type=int, default=1, help="jobs of a sweep at a time (one thread each)")
    parser.add_argument("--root", help="paths.root of the runs (default multirun/repro; cheap: multirun/repro_cheap)")
    parser.add_argument("--out", help="directory of the result files (default benchmarks/results/reproductions)")
    parser.add_argument("--paper-checkpoint", help=f"Nanda et al.'s released run for seed000 (default {PAPER_CHECKPOINT})")
    args = parser.parse_args(argv)
    if args.list:
        for r in REPRODUCTIONS.values():
            print(f"{r.name}: {r.title}\n  " + "\n  ".join(f"{s.label}: experiment={s.preset} {' '.join(s.overrides)} seeds "
                                                            f"{','.join(map(str, s.seeds))}" for s in r.sweeps))  # fmt: skip
        return 0
    names = list(REPRODUCTIONS) if args.all else args.names
    unknown = [n for n in names if n not in REPRODUCTIONS]
    if not names or unknown:
        print(f"reproduce: error: name one or more of {', '.join(REPRODUCTIONS)} (or --all)"
              + (f"; unknown: {', '.join(unknown)}" if unknown else ""), file=sys.stderr)  # fmt: skip
        return 2
    for name in names:
        reproduce(REPRODUCTIONS[name], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

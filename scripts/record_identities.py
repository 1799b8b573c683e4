"""Record the identities today's code gives a broad set of composed configs (tests/data/identities_main.json).

Run once, on the code whose identities are the reference (issue 19: main at c00aa81, before
``groktransfer.runs.identity`` existed); ``tests/test_identity.py`` recomputes every entry with
the current code and asserts equality. Re-running it on later code only re-records whatever
that code computes, so do not regenerate the fixture to make a failing identity test pass.

    python scripts/record_identities.py tests/data/identities_main.json
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import List

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

MODULAR = ["add", "subtract", "multiply", "divide", "x2xyy2"]
TRANSFERS = ["grokked", "memorized", "checkpoint", "embedding"]
SOURCE_OVERRIDES = [
    [],
    ["transfer.source.p=59"],
    ["transfer.source.frac_train=0.5"],
    ["+transfer.source.optimizer.lr=3e-3"],
    ["transfer.source.model.d_model=64"],
    ["transfer.source.task=subtract", "transfer.source.source_seed=4", "transfer.source.max_epochs=300"],
]


def config_overrides() -> List[List[str]]:
    cases: List[List[str]] = [[]]
    cases += [[f"task={t}"] for t in MODULAR]
    cases += [["task=int_add"], ["task=int_add", "task.p=59"]]
    for digit in ("digit_add", "digit_sub"):
        cases += [[f"task={digit}"], [f"task={digit}", "task.n_digits=2"], [f"task={digit}", "task.n_train=500"],
                  [f"task={digit}", "task.n_digits=3", "task.n_train=300", "task.n_test=100", "task.carry_out=true"]]
    cases += [["seed=3"], ["task.data_seed=7"], ["model.model_seed=5"], ["task.p=59", "task.frac_train=0.5"]]
    cases += [["optimizer.schedule=cosine"], ["optimizer.schedule=cosine", "optimizer.final_lr_frac=0.1"],
              ["optimizer.schedule=constant", "optimizer.final_lr_frac=0.1"], ["optimizer.lr=3e-3"]]
    cases += [["train.batch_size=64"], ["model=attn_only_2l"], ["model=two_layer"], ["model.attn_only=true"],
              ["model.n_ctx=3"], ["model.n_ctx=5"], ["train.thresholds=[0.5,0.9]"], ["train.max_epochs=100"],
              ["train.threads=2", "train.progress_bar=false", "train.device=cpu", "train.cpu_gemm=blas",
               "train.deterministic=false", "train.profile_epochs=2", "train.timeout_minutes=5"],
              ["logger=none", "force=true", "experiment_name=other", "paths.root=/tmp/elsewhere"],
              ["train.keep_checkpoints=false"], ["measures.enabled=false"], ["train.fast_path=false"]]
    cases += [["transfer=random", "transfer.source.p=59"], ["transfer=random", "transfer.source.task=subtract"]]
    for cond in TRANSFERS:
        for extra in SOURCE_OVERRIDES:
            cases.append([f"transfer={cond}", "task=subtract"] + extra)
    cases += [["transfer=grokked", "optimizer.schedule=cosine"], ["transfer=grokked", "train.batch_size=64"],
              ["transfer=grokked", "train.thresholds=[0.5,0.9]"], ["transfer=grokked", "model=attn_only_2l"],
              ["transfer=grokked", "model.n_ctx=5"], ["transfer=grokked", "seed=2"],
              ["transfer=grokked", "transfer.source.source_seed=9"], ["transfer=memorized", "seed=2"],
              ["transfer=grokked", "transfer.grokked.held_for=10"], ["transfer=grokked", "train.device=cpu"],
              ["transfer=grokked", "+transfer.source.optimizer.schedule=cosine"],
              ["transfer=grokked", "optimizer.weight_decay=0.1"], ["transfer=grokked", "train.patience=10"],
              ["transfer=grokked", "task=digit_add", "transfer.source.task=digit_add"],
              ["transfer=grokked", "task=digit_sub", "transfer.source.task=digit_add", "transfer.source.n_train=500"],
              ["transfer=embedding", "task=digit_sub", "transfer.source.task=digit_add", "model=attn_only_2l"],
              ["transfer=grokked", "transfer.components.attn=freeze"], ["transfer=grokked", "transfer.source.path=/x.pt"]]
    for preset in sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")):
        cases.append([f"experiment={preset}"])
        for cond in ("random", "grokked", "memorized"):
            cases.append([f"experiment={preset}", f"transfer={cond}"])
    return cases


def record(overrides: List[str]) -> dict:
    from groktransfer.config.schema import TrainJobConfig, to_typed
    from groktransfer.config.validate import resolve_seeds
    from groktransfer.jobs.ensemble_launch import batch_key
    from groktransfer.jobs.run_job import run_identity
    from groktransfer.transfer.source_runs import source_spec_from_config

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    job = to_typed(TrainJobConfig, cfg)
    # the composed config travels with the entry: the test recomputes from it without Hydra's compose (0.3 s each)
    entry = {"overrides": overrides, "config": OmegaConf.to_container(cfg, resolve=True), "run_identity": run_identity(job)}
    key = batch_key(job, 0)
    entry["batch_key_sha256"] = hashlib.sha256(key.encode()).hexdigest()
    if job.transfer.name != "random":
        spec = source_spec_from_config(job, resolve_seeds(job).source_seed)
        entry["source_hash"] = spec.content_hash
        entry["source_label"] = spec.label
    return entry


def main(out: str) -> None:
    from groktransfer.config.schema import register_configs

    register_configs()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    entries = [record(o) for o in config_overrides()]
    note = json.dumps(__doc__.strip().splitlines()[0])
    lines = ",\n".join(json.dumps(e, separators=(",", ":")) for e in entries)  # one entry a line
    Path(out).write_text(f'{{\n"recorded_at_commit":"{commit}",\n"note":{note},\n"entries":[\n{lines}\n]}}\n')
    print(f"{len(entries)} configs -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])

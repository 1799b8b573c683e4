#!/usr/bin/env python
"""Train one job (or, with -m, a sweep of jobs) of a grokking-transfer experiment.

    python scripts/train.py task=subtract transfer=grokked seed=3
    python scripts/train.py experiment=nanda_p113
    python scripts/train.py -m experiment=quickstart transfer=grokked,memorized,random seed=0,1,2

See docs/reference/config.md (every key) and docs/reference/rundir.md (the files each job writes).
Exit status: 0 done, 1 the run failed (recorded in its status record), 2 bad input
(a config that does not compose or validate, a conflicting run directory) -- one
readable message, nothing trained.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from groktransfer.config.schema import TrainJobConfig, register_configs, to_typed
from groktransfer.utils.errors import UserError
from groktransfer.runs.rundir import STATUS_FILE, Status
from groktransfer.jobs.run_job import Launch, given_keys, run_job

log = logging.getLogger("groktransfer")
register_configs()
_entered = False  # whether Hydra composed a config and called main (else its own error exit is ours: 2)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    global _entered
    _entered = True
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    launch = Launch(
        run_dir=Path(hydra_cfg.runtime.output_dir),
        cwd=Path(hydra_cfg.runtime.cwd),
        sweep_dir=Path(hydra_cfg.sweep.dir) if in_sweep else None,
        given=given_keys(hydra_cfg.overrides.task),
    )
    try:
        result = run_job(to_typed(TrainJobConfig, cfg), launch)
    except UserError as exc:
        # One readable message; in a sweep the other jobs go on.
        log.error("%s", exc)
        if in_sweep:
            return
        _remove_hydra_bookkeeping(launch.run_dir)
        sys.exit(2)
    except Exception:
        # The run directory already says `failed` with the reason; in a sweep one
        # crashed job must not take the others down with it.
        if not in_sweep:
            raise
        log.exception("job failed (recorded in %s/%s); the sweep goes on", launch.run_dir, STATUS_FILE)
        return
    print(result.one_line(), flush=True)
    if result.status != Status.COMPLETED and not in_sweep:
        sys.exit(1)


def _remove_hydra_bookkeeping(run_dir: Path) -> None:
    """Bad input writes nothing: Hydra creates the run directory (its .hydra/ copy and log)
    before main runs, so a directory holding only those is removed again, with the empty
    ``<experiment>/runs`` folders above it. A directory with anything else is left alone."""
    import shutil

    hydra_only = {".hydra", "train.log", f"{Path(sys.argv[0]).stem}.log"}
    if not run_dir.is_dir() or not {p.name for p in run_dir.iterdir()} <= hydra_only:
        return
    logging.shutdown()  # close train.log before removing it
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in list(run_dir.parents)[:2]:
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exc:
        # Hydra reports a config that does not compose (unknown key, invalid choice with the
        # allowed values, missing option) in one message and exits 1 before main runs.
        if not _entered and exc.code == 1:
            sys.exit(2)
        raise

#!/usr/bin/env python
"""Train one job (or, with -m, a sweep of jobs) of a grokking-transfer experiment.

    python scripts/train.py task=subtract transfer=grokked seed=3
    python scripts/train.py experiment=nanda_p113
    python scripts/train.py -m experiment=quickstart transfer=grokked,memorized,random seed=0,1,2

See docs/reference/config.md (every key) and docs/reference/rundir.md (the files each job writes).
Exit status: 0 done, 1 the run failed (recorded in its status record; a crash's traceback
is in its train.log), 2 bad input (a config that does not compose or validate, a run
directory holding another run or that cannot be created, a source checkpoint that does not
fit or qualify) -- one readable message, nothing written.
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
from groktransfer.jobs.hydra_files import hydra_claim, remove_created_run_dirs
from groktransfer.jobs.run_job import Launch, given_keys, run_job
from groktransfer.runs.job_log import discard_job_log, job_log_claimed, release_log_reserve
from groktransfer.runs.rundir import STATUS_FILE, Status
from groktransfer.jobs.cli import one_line_config_errors
from groktransfer.utils.errors import UserError

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
        claim=hydra_claim(cfg),
    )
    try:
        result = run_job(to_typed(TrainJobConfig, cfg), launch)
    except UserError as exc:
        # One readable message, nothing written; in a sweep the other jobs go on.
        discard_job_log()
        log.error("%s", exc)
        remove_created_run_dirs(launch.run_dir, in_sweep)
        if in_sweep:
            return
        sys.exit(2)
    except Exception:
        # The run directory already says `failed` with the reason; the traceback goes to its
        # train.log (with room kept for it on a full disk) and the console. In a sweep one
        # crashed job must not take the others down with it.
        if not job_log_claimed() and not (launch.run_dir / STATUS_FILE).exists():
            launch.claim(launch.run_dir)  # crashed before taking its directory: keep the evidence there
        release_log_reserve()
        log.exception("job failed (recorded in %s/%s)%s", launch.run_dir, STATUS_FILE, "; the sweep goes on" if in_sweep else "")
        if in_sweep:
            return
        sys.exit(1)
    print(result.one_line(), flush=True)
    if result.status != Status.COMPLETED and not in_sweep:
        sys.exit(1)


if __name__ == "__main__":
    # a config that does not compose (an unknown key, a value of the wrong type, a preset that
    # does not exist): one line, exit 2, as every other bad input; Hydra's exit 1 before main
    # runs (a run directory it cannot create) is bad input too
    with one_line_config_errors("train"):
        try:
            main()
        except SystemExit as exc:
            if not _entered and exc.code == 1:
                sys.exit(2)
            raise

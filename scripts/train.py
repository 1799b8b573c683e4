#!/usr/bin/env python
"""Train one job (or, with -m, a sweep of jobs) of a grokking-transfer experiment.

    python scripts/train.py task=subtract transfer=grokked seed=3
    python scripts/train.py experiment=nanda_p113
    python scripts/train.py -m experiment=quickstart transfer=grokked,memorized,random seed=0,1,2

See README.md for the config groups and the run directory each job writes.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from groktransfer.config.schema import register_configs
from groktransfer.errors import USER_ERRORS
from groktransfer.run import JobPaths, run_job

log = logging.getLogger("groktransfer")
register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    paths = JobPaths.from_config(cfg, Path(hydra_cfg.runtime.cwd))
    try:
        result = run_job(cfg, run_dir, paths)
    except USER_ERRORS as exc:
        # One readable message; in a sweep the other jobs go on.
        log.error("%s", exc)
        if in_sweep:
            return
        sys.exit(2)
    except Exception:
        # The run directory already says `failed` with the reason; in a sweep one
        # crashed job must not take the others down with it.
        if not in_sweep:
            raise
        log.exception("job failed (recorded in %s/status.json); the sweep goes on", run_dir)
        return
    print(result.one_line(), flush=True)
    if result.status != "completed" and not in_sweep:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""``hydra/launcher=ensemble``: the jobs of a sweep that differ only in batchable fields train together.

Why a launcher: it is the one place that sees every job of a sweep before any runs,
so it can group them; the user's switch is one override on the same sweep command
(``hydra/launcher=ensemble``), and every job still gets its own Hydra directory,
``.hydra/`` files and run directory through Hydra's own ``run_job``. The grouping and
training live in :mod:`groktransfer.jobs.ensemble_launch`; this class is Hydra's adapter.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class EnsembleLauncher(Launcher):
    def __init__(self, max_members: int = 0, threads: int = 0, n_jobs: int = 0, jobs_per_gpu: int = 1) -> None:
        super().__init__()
        self.max_members = int(max_members)
        self.threads = int(threads)
        self.n_jobs = int(n_jobs)
        self.jobs_per_gpu = int(jobs_per_gpu)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from groktransfer.config.ranges import range_problems
        from groktransfer.jobs.ensemble_launch import launch_sweep
        from hydra_plugins.groktransfer_ensemble_launcher.config import EnsembleLauncherConf

        settings = EnsembleLauncherConf(
            max_members=self.max_members, n_jobs=self.n_jobs, jobs_per_gpu=self.jobs_per_gpu, threads=self.threads
        )
        problems = range_problems(settings, "hydra.launcher.")  # the ranges declared beside the launcher's keys
        if problems:  # bad input: one line and exit code 2 before any job is planned (0 means automatic)
            print("; ".join(problems), file=sys.stderr)
            raise SystemExit(2)
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        return launch_sweep(
            self.hydra_context,
            self.config,
            job_overrides,
            initial_job_idx,
            self.max_members,
            self.threads,
            self.n_jobs,
            self.jobs_per_gpu,
        )

"""The `hydra/launcher=slurm` launcher: Hydra's submitit SLURM launcher that survives lost jobs.

Hydra's own launcher collects its jobs' results one after another and stops at the
first job that left none (cancelled with ``scancel``, killed for memory, its node
lost): the sweep command fails while the other jobs still run on the cluster, and
that job's ``status.json`` keeps saying ``running`` for ever. This launcher waits for
every job of the sweep, then records each lost job in its run directory as
``failed`` (with the SLURM job id and state) and reports it; the jobs that finished
keep their results. A lost job keeps its ``resume.pt``, so rerunning the sweep
resumes it from its last checkpoint.

Pre-emption needs nothing here: submitit's USR2 handler asks this launcher for a
checkpoint (the same job again), SLURM requeues it into the same run directory, and
the job resumes from ``resume.pt`` (see ``groktransfer.runs.index``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as HydraSlurmLauncher
from omegaconf import OmegaConf, open_dict

from groktransfer.runs.rundir import record_lost_job  # noqa: F401  (tests import it from here too)

log = logging.getLogger(__name__)

# Launcher keys that submitit takes when the executor is built, not per job.
_EXECUTOR_INIT_KEYS = {"max_num_timeout"}


class SlurmLauncher(HydraSlurmLauncher):
    """Submit the sweep as one SLURM job array; wait for all of it; record lost jobs."""

    def _executor(self) -> Any:
        import submitit

        cluster = self._EXECUTOR  # "slurm"
        params = dict(self.params)
        folder = params.pop("submitit_folder")
        init = {f"{cluster}_{k}": params.pop(k) for k in _EXECUTOR_INIT_KEYS if k in params}
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())  # keys submitit knows without a prefix
        executor.update_parameters(**{k if k in shared else f"{cluster}_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import UncompletedJobError

        assert self.config is not None and len(job_overrides) > 0
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info("Submitit 'slurm' sweep output dir : %s", sweep_dir)
        numbers = [initial_job_idx + i for i in range(len(job_overrides))]
        for num, overrides in zip(numbers, job_overrides):
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        jobs = self._executor().map_array(
            self,
            [list(o) for o in job_overrides],
            ["hydra.sweep.dir"] * len(numbers),
            numbers,
            [f"job_id_for_{n}" for n in numbers],
            [state] * len(numbers),
        )
        returns: list[JobReturn] = []
        for num, overrides, job in zip(numbers, job_overrides, jobs):
            try:
                returns.append(job.results()[0])
            except UncompletedJobError as exc:  # no result: cancelled, OOM, node failure, ...
                run_dir = self.job_run_dir(overrides, num, job.job_id)
                reason = f"SLURM job {job.job_id} ended {job.state} without a result"
                recorded = record_lost_job(run_dir, reason)
                log.error(
                    "job #%d (%s): %s; %s",
                    num,
                    " ".join(filter_overrides(overrides)),
                    reason,
                    f"recorded as failed in {run_dir}" if recorded else f"nothing recorded ({run_dir})",
                )
                returns.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=exc))
        return returns

    def job_run_dir(self, overrides: Sequence[str], num: int, job_id: str) -> Path:
        """The directory Hydra gave job ``num``: its sweep config resolved as the job saw it."""
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = num
            cfg.hydra.job.id = job_id
        path = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        return path if path.is_absolute() else Path(str(self.config.hydra.runtime.cwd)) / path

"""Hydra's provenance files of a job, written when the job takes its run directory.

Hydra writes ``.hydra/`` (the composed config, its own config, the overrides) into the
run directory before the job function runs, so a job refused for bad input would leave
them behind -- and, pointed at the directory of another run, overwrite that run's.
``conf/train.yaml`` therefore sets ``hydra.output_subdir: null`` and the job writes the
same three files itself once it goes ahead (``Launch.claim``), with the job's log
(``groktransfer.runs.job_log``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from groktransfer.runs.job_log import claim_job_log
from groktransfer.runs.rundir import HYDRA_CONFIG_FILE, HYDRA_DIR, HYDRA_OVERRIDES_FILE, HYDRA_OWN_FILE
from groktransfer.utils.atomic import write_text


def write_hydra_files(cfg: DictConfig, run_dir: Path) -> None:
    """``.hydra/`` as Hydra writes it: ``cfg`` (the job's config), Hydra's config and the overrides."""
    hydra_cfg = HydraConfig.instance().cfg  # {"hydra": ...}, as Hydra saves it
    out = Path(run_dir) / HYDRA_DIR
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / HYDRA_CONFIG_FILE, OmegaConf.to_yaml(cfg))
    write_text(out / HYDRA_OWN_FILE, OmegaConf.to_yaml(hydra_cfg))
    write_text(out / HYDRA_OVERRIDES_FILE, OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task))


def hydra_claim(cfg: DictConfig) -> Callable[[Path], None]:
    """``Launch.claim`` for a job run by Hydra: its log (first, so a failure to write the rest is
    logged), then its provenance files."""

    def claim(run_dir: Path) -> None:
        claim_job_log()
        write_hydra_files(cfg, run_dir)

    return claim


class RunDirCheck(Callback):
    """A run (sweep) directory that cannot be created -- under a path that is a file, in
    ``/proc``, without permission -- is bad input: one line and exit 2 before Hydra tries,
    instead of Hydra's traceback (``hydra.callbacks`` in ``conf/train.yaml``)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _creatable(str(OmegaConf.select(config, "hydra.run.dir")), "hydra.run.dir (from paths.root)")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _creatable(str(OmegaConf.select(config, "hydra.sweep.dir")), "hydra.sweep.dir (from paths.root)")


#: The folders this process created for its run directory, deepest first, recorded before they
#: were made: a refused job removes exactly these (:func:`remove_created_run_dirs`), never a
#: folder that was there before (the working directory, a folder given as ``hydra.run.dir``'s parent).
CREATED_RUN_DIRS: list[Path] = []


def _creatable(path: str, what: str) -> None:
    target = Path(path).absolute()
    missing = []
    for folder in (target, *target.parents):
        if folder.exists():
            break
        missing.append(folder)
    try:
        target.mkdir(parents=True, exist_ok=True)
        CREATED_RUN_DIRS[:] = missing
    except OSError as exc:
        print(f"error: cannot create the {what} {path}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)


def remove_created_run_dirs(run_dir: Path, in_sweep: bool) -> None:
    """Bad input writes nothing: Hydra has created the run directory (and the folders above it
    that were missing) before the job ran, so those still empty are removed again. A job of a
    sweep removes only its own directory, if empty: the sweep's folder is the sweep's."""
    for folder in [run_dir] if in_sweep else list(CREATED_RUN_DIRS):
        try:
            folder.rmdir()  # only if empty
        except OSError:
            break

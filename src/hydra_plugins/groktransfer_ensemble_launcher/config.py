"""The launcher's structured config, registered as ``hydra/launcher=ensemble``.

Hydra imports every module of the ``hydra_plugins`` namespace package when it looks
for plugins, so this registration runs before the sweep's config is composed.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from groktransfer.config.ranges import bounded


@dataclass
class EnsembleLauncherConf:
    _target_: str = "hydra_plugins.groktransfer_ensemble_launcher.ensemble_launcher.EnsembleLauncher"
    # at most this many jobs train as one ensemble; 0 = by device: 4 on CPU (measured best per
    # member on one thread: larger ensembles outgrow the caches), 64 on a GPU
    max_members: int = bounded(0, ge=0)
    # worker processes training ensembles in parallel; 0 = by device: one per core on a CPU
    # (a member's speed does not grow with K there, and two 1-thread processes beat one
    # 2-thread process); on CUDA jobs_per_gpu per visible GPU (one GPU, one job per GPU:
    # this process alone). GPU workers are spawned, each seeing only its own GPU.
    n_jobs: int = bounded(0, ge=0)
    # on CUDA: worker processes sharing one GPU (n_jobs = 0 starts this many per GPU; with
    # n_jobs set, workers are dealt out over the GPUs round-robin)
    jobs_per_gpu: int = bounded(1, ge=1)
    # torch threads of each process training ensembles; 0 = the cores shared out among them
    threads: int = bounded(0, ge=0)


ConfigStore.instance().store(
    group="hydra/launcher", name="ensemble", node=EnsembleLauncherConf, provider="groktransfer"
)

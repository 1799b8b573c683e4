"""The launcher's structured config, registered as ``hydra/launcher=ensemble``.

Hydra imports every module of the ``hydra_plugins`` namespace package when it looks
for plugins, so this registration runs before the sweep's config is composed.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class EnsembleLauncherConf:
    _target_: str = "hydra_plugins.groktransfer_ensemble_launcher.ensemble_launcher.EnsembleLauncher"
    # at most this many jobs train as one ensemble; 0 = by device: 4 on CPU (measured best per
    # member on one thread: larger ensembles outgrow the caches), 64 on a GPU
    max_members: int = 0
    # torch threads of the launching process while ensembles train; 0 = torch's default (all cores)
    threads: int = 0


ConfigStore.instance().store(group="hydra/launcher", name="ensemble", node=EnsembleLauncherConf, provider="groktransfer")

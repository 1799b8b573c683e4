"""groktransfer's SLURM launcher (``hydra/launcher=slurm``).

Hydra loads launcher classes only from the ``hydra_plugins`` namespace package, hence
this small package beside ``groktransfer``.
"""

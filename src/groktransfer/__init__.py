"""groktransfer: transfer experiments on grokking, as Hydra-configured seed sweeps."""

__version__ = "0.1.0"

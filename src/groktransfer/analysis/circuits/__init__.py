"""Circuit analysis of transfer sweeps: which Fourier algorithm each model learned.

For the source model and the final model of every run, on all p² inputs and in the
Fourier basis of each model's *own* task: logit spectrum, neuron frequency
specialisation, attention from '=', similarity to the source and between conditions
(order-independent metrics for any pair; neuron-matched ones only for a shared
initialisation), and retention of the source task.

Entry points:

- ``circuit_sections(runs, out_dir, settings)`` -- report provider for
  ``analysis.extra_sections: ["groktransfer.analysis.circuits:circuit_sections"]``.
- ``analyze_checkpoint(path, task_name, p=None, out_dir=None)`` -- one checkpoint file
  (this project's or the original paper's format).
"""

from groktransfer.interp.circuit.profile import CircuitProfile, profile_checkpoint, profile_model
from groktransfer.interp.circuit.similarity import compare_profiles

from .section import circuit_sections
from .single import analyze_checkpoint
from .sweep import analyse_sweep

__all__ = [
    "CircuitProfile",
    "analyse_sweep",
    "analyze_checkpoint",
    "circuit_sections",
    "compare_profiles",
    "profile_checkpoint",
    "profile_model",
]

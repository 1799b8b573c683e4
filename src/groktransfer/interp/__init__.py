"""Interpretability toolkit: functions of (model, task) for notebooks, the single-checkpoint
command and the sweep report.

One module per analysis family:

- ``processing``: fold LayerNorm, centre writing weights, centre the unembedding, fold
  value biases (TransformerLens semantics);
- ``ablation``: heads (zero/mean; output or Q/K/V input), neurons, any linear subspace of
  any hook; loss/accuracy per answer position against the clean model; failure maps;
- ``attribution``: direct logit attribution per layer, head and neuron group, plain and
  in the output's Fourier basis, with a completeness check;
- ``representations``: embedding PCA/SVD, weight spectra against a Gaussian control,
  embedding Fourier norms, ridge probes, neuron correlations and clusters, attention;
- the seed analyses' hand-made readings of a task family: ``circuits_qkov`` (QK with mean
  queries, OV composition, path DLA), ``unembed_geometry`` (W_U as a circle), ``by_class``
  (carry-class splits, probabilities), ``neurons_int`` (int_add: PC fits, sum neurons);
- ``circuit``: the Fourier circuit of a model on a modular task (the circuit analysis);
- ``reading``: the :class:`Reading` protocol and :data:`READINGS` -- every analysis above as
  a reading that declares what it needs of the (model, task) (``capabilities``) and what it
  measures (``measurements``: one typed long table); :func:`interpret` runs those that
  apply; ``findings`` checks the notebooks' claims on the measurements; ``writeup`` and
  ``plots`` show them.

Every function takes a model (any model of the model protocol, for the readings it offers, or a
TransformerLens ``HookedTransformer``) and a
task (a task object, anything with an ``answer_set()`` method, or an :class:`AnswerSet`).
"""

from . import readings as _readings  # noqa: F401  (registers the built-in readings)
from .ablation import ablate, ablate_each_neuron, ablate_heads, ablate_neurons, ablate_subspace, failure_map
from .answers import AnswerSet, Target, answer_set
from .attribution import direct_logit_attribution, fourier_attribution
from .measurements import Measurements
from .processing import process_state_dict, process_weights
from .reading import READINGS, Interpretation, Reading, interpret, register_reading
from .representations import (
    attention_patterns,
    embedding_fourier_norms,
    embedding_pca,
    embedding_svd,
    neuron_clusters,
    neuron_correlations,
    probe_hooks,
    ridge_probe,
    singular_spectra,
    top_neuron_maps,
)

__all__ = [
    "READINGS",
    "Interpretation",
    "Measurements",
    "Reading",
    "interpret",
    "register_reading",
    "AnswerSet",
    "Target",
    "ablate",
    "ablate_each_neuron",
    "ablate_heads",
    "ablate_neurons",
    "ablate_subspace",
    "answer_set",
    "attention_patterns",
    "direct_logit_attribution",
    "embedding_fourier_norms",
    "embedding_pca",
    "embedding_svd",
    "failure_map",
    "fourier_attribution",
    "neuron_clusters",
    "neuron_correlations",
    "probe_hooks",
    "process_state_dict",
    "process_weights",
    "ridge_probe",
    "singular_spectra",
    "top_neuron_maps",
]

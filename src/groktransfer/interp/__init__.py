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
- the seed analyses' hand-made readings, per task family (``families`` says which family
  has which): ``circuits_qkov`` (QK with mean queries, OV composition, path DLA),
  ``unembed_geometry`` (W_U as a circle), ``by_class`` (carry-class splits, probabilities),
  ``neurons_int`` (int_add: PC fits, sum neurons); ``findings`` checks the notebooks'
  claims on a model's numbers.

Every function takes a model (``HookedGrokTransformer`` or a TransformerLens
``HookedTransformer``) and a task (``groktransfer.tasks.modular.Task``, anything with an
``answer_set()`` method, or an :class:`AnswerSet`).
"""

from .ablation import ablate, ablate_each_neuron, ablate_heads, ablate_neurons, ablate_subspace, failure_map
from .answers import AnswerSet, Target, answer_set
from .attribution import direct_logit_attribution, fourier_attribution
from .processing import process_state_dict, process_weights
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
    "AnswerSet", "Target", "ablate", "ablate_each_neuron", "ablate_heads", "ablate_neurons", "ablate_subspace",
    "answer_set", "attention_patterns", "direct_logit_attribution", "embedding_fourier_norms", "embedding_pca",
    "embedding_svd", "failure_map", "fourier_attribution", "neuron_clusters", "neuron_correlations", "probe_hooks",
    "process_state_dict", "process_weights", "ridge_probe", "singular_spectra", "top_neuron_maps",
]  # fmt: skip

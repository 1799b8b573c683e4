"""How similar two circuits are, with metrics that respect permutation symmetry.

Two kinds of comparison, and why both:

* **Order-independent** (any two models on groups of the same size): Jaccard overlap
  of the key-frequency sets (and of the *dominant* sets, frequencies holding >= 5% of
  the layer's variance, which ignores minor single-neuron key frequencies), histogram intersection of the neuron-frequency
  distributions (how many neurons sit at each frequency), and the same intersection
  for the frequency *mass* (share of the layer's activation variance at each
  frequency). None of them cares which neuron is which.
* **Neuron-matched** (only for models whose MLP started from the same weights): the
  share of the reference's specialised neurons that keep their frequency, and the
  Spearman correlation of per-neuron variance shares. Neuron i of two independently
  initialised networks are unrelated -- any permutation of hidden units gives the same
  function -- so a correlation over neuron indices between them measures nothing but
  chance (the notebook's "frequency correlation" did exactly that). Between a
  transferred model and its source, index i *is* the same unit followed through
  training, and the comparison is meaningful. Callers pass ``shared_lineage``.

Frequencies are compared as numbers w across a+b and a−b models on purpose: both live
on Z_p, and a−b = a+(−b) only flips the phase of the b-side (cos(w(a−b)) is
cos(w(a+b')) with b' = −b), so frequency w means the same thing in both tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

from .neurons import SPECIALISED
from .profile import CircuitProfile

NAN = float("nan")

#: Metric name -> short description (used for table headers and figure titles).
METRICS: dict[str, str] = {
    "jaccard": "key-frequency Jaccard",
    "jaccard_dominant": "dominant-frequency Jaccard",
    "hist_intersection": "neuron-frequency histogram ∩",
    "mass_similarity": "frequency-mass ∩",
    "neurons_kept": "neurons keeping their frequency",
    "frac_spearman": "Spearman of per-neuron frac explained",
}
NEURON_MATCHED = ("neurons_kept", "frac_spearman")


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """|A ∩ B| / |A ∪ B|; NaN when both sets are empty (no circuit to compare, not a match)."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return len(sa & sb) / len(union) if union else NAN


def histogram_intersection(h1: np.ndarray, h2: np.ndarray) -> float:
    """Σ min(h1/Σh1, h2/Σh2) in [0, 1]; NaN if either histogram is empty."""
    h1, h2 = np.asarray(h1, dtype=float), np.asarray(h2, dtype=float)
    s1, s2 = h1.sum(), h2.sum()
    if s1 <= 0 or s2 <= 0 or h1.shape != h2.shape:
        return NAN
    return float(np.minimum(h1 / s1, h2 / s2).sum())


def neurons_keeping_frequency(
    ref_freq: np.ndarray, ref_frac: np.ndarray, other_freq: np.ndarray, min_frac: float = SPECIALISED
) -> float:
    """Of the reference's specialised neurons (share > ``min_frac``), the fraction whose
    dominant frequency is the same in the other model (a neuron dead there has lost it).
    Neuron-matched: only meaningful for a shared initialisation."""
    ref = (ref_freq >= 0) & (ref_frac > min_frac)
    if not ref.any():
        return NAN
    return float((other_freq[ref] == ref_freq[ref]).mean())


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (average ranks for ties); NaN with < 3 points or a constant input."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3:
        return NAN
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return NAN
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclass(frozen=True)
class PairSimilarity:
    """All similarity metrics of (reference, other); NaN where a metric does not apply."""

    jaccard: float = NAN
    jaccard_dominant: float = NAN
    hist_intersection: float = NAN
    mass_similarity: float = NAN
    neurons_kept: float = NAN
    frac_spearman: float = NAN
    shared_lineage: bool = False

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k in METRICS}


def comparable(a: CircuitProfile, b: CircuitProfile) -> bool:
    """Frequencies can be compared as numbers only on groups of the same size."""
    return a.has_fourier and b.has_fourier and a.modulus == b.modulus


def same_neurons(a: CircuitProfile, b: CircuitProfile) -> bool:
    """Index i is the same unit in both: same MLP initialisation and shape."""
    return a.lineage is not None and a.lineage == b.lineage and (a.d_model, a.d_mlp) == (b.d_model, b.d_mlp)


def compare_profiles(ref: CircuitProfile, other: CircuitProfile) -> PairSimilarity:
    """Similarity of ``other`` to ``ref`` (only ``neurons_kept`` depends on the order)."""
    if not comparable(ref, other):
        return PairSimilarity()
    assert ref.neurons is not None and other.neurons is not None
    rn, on = ref.neurons, other.neurons
    values = dict(
        jaccard=jaccard(ref.key_freqs, other.key_freqs),
        jaccard_dominant=jaccard(ref.dominant_freqs, other.dominant_freqs),
        hist_intersection=histogram_intersection(rn.histogram(), on.histogram()),
        mass_similarity=histogram_intersection(rn.mass, on.mass),
    )
    shared = same_neurons(ref, other)
    if shared:
        live = (rn.freq >= 0) & (on.freq >= 0)
        values["neurons_kept"] = neurons_keeping_frequency(rn.freq, rn.frac, on.freq)
        values["frac_spearman"] = rank_correlation(rn.frac[live], on.frac[live])
    return PairSimilarity(**values, shared_lineage=shared)

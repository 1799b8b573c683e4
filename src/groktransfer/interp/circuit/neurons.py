"""MLP neuron frequency specialisation, summarised per model.

``measures.neuron_freq_fractions`` gives every neuron's share of variance at each
frequency (the 2-D Fourier components (w,0), (0,w), (w,w) of its activation over the
input grid) and ``assign_neuron_freqs`` its dominant frequency, -1 for a dead neuron.
This module adds what a comparison *across models* needs and those do not give:

* counts over thresholds (0.5: the frequency holds most of the variance; 0.85: the
  project's key-frequency threshold) with dead neurons counted separately, never as
  "frequency 0" or as unspecialised;
* the *frequency mass*: the share of the whole layer's activation variance that sits
  at each frequency. It does not depend on how neurons are numbered, so two
  independently initialised models can be compared with it (neuron i of one has
  nothing to do with neuron i of the other), and it weights a neuron by how much it
  actually varies instead of counting a barely-active neuron like a strong one.

Note that the 2-D neuron basis over (a, b) is the same for a+b and a−b (both live on
Z_p × Z_p and the (w, w) block holds all four cos/sin products), so a neuron's
frequency means the same thing whether it is read as an addition or a subtraction
neuron.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from groktransfer.measures.modular import FourierMeasures
from groktransfer.tasks.fourier import GroupFourier

SPECIALISED = 0.5  # the dominant frequency holds most of the neuron's variance
DOMINANT_MASS = 0.05  # a frequency holding >= 5% of the layer's variance is a *dominant* one


@dataclass(frozen=True)
class NeuronSpectrum:
    """Per neuron: dominant frequency (-1 = dead), its share, activation variance;
    per frequency: the layer's variance share (``mass``, sums to <= 1)."""

    freq: np.ndarray  # [d_mlp] int
    frac: np.ndarray  # [d_mlp] share of variance at ``freq`` (0 when dead)
    variance: np.ndarray  # [d_mlp] over the group grid
    mass: np.ndarray  # [W]
    max_freq: int
    key_freq_threshold: float

    @property
    def d_mlp(self) -> int:
        return int(self.freq.size)

    @property
    def dead(self) -> np.ndarray:
        return self.freq < 0

    @property
    def n_dead(self) -> int:
        return int(self.dead.sum())

    def n_over(self, threshold: float) -> int:
        """Live neurons whose dominant frequency holds more than ``threshold`` of their variance."""
        return int(((~self.dead) & (self.frac > threshold)).sum())

    def histogram(self, min_frac: float = 0.0) -> np.ndarray:
        """[W] live neurons per dominant frequency, counting those with share > ``min_frac``."""
        keep = (~self.dead) & (self.frac > min_frac)
        return np.bincount(self.freq[keep], minlength=self.max_freq + 1)[1:]

    def dominant(self, min_mass: float = DOMINANT_MASS) -> list[int]:
        """Frequencies holding at least ``min_mass`` of the layer's activation variance.

        Key frequencies count neurons, so one low-amplitude neuron can make a frequency
        key; trained models often have several such minor key frequencies next to the
        two or three that carry the computation. The dominant set weights by variance.
        """
        return [int(w) + 1 for w in np.nonzero(self.mass >= min_mass)[0]]

    @property
    def mean_frac_live(self) -> float:
        live = ~self.dead
        return float(self.frac[live].mean()) if live.any() else float("nan")


def frequency_mass(frac_by_freq: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """[d_mlp, W] variance shares and [d_mlp] variances -> [W] share of the layer's
    total variance at each frequency (dead neurons have zero variance, hence no weight).
    All zeros when the whole layer is constant."""
    total = variance.sum()
    if float(total) <= 0.0:
        return torch.zeros(frac_by_freq.shape[1], dtype=torch.float64)
    return (variance.double()[:, None] * frac_by_freq.double()).sum(dim=0) / total.double()


def neuron_spectrum(fm: FourierMeasures, gf: GroupFourier, neuron_acts: torch.Tensor) -> NeuronSpectrum:
    """Summarise the neuron measures of ``fm`` for activations ``neuron_acts`` [n_pairs, d_mlp]
    (rows in task order; only the group grid enters, as in the measures)."""
    grid = gf.to_grid(neuron_acts.float()).reshape(gf.n * gf.n, -1)
    variance = (grid - grid.mean(dim=0)).square().mean(dim=0).double()  # float32 is plenty for weights
    variance = torch.where(fm.neuron_freq < 0, 0.0, variance)
    return NeuronSpectrum(
        freq=fm.neuron_freq.numpy().astype(int),
        frac=fm.neuron_frac_explained.double().numpy(),
        variance=variance.numpy(),
        mass=frequency_mass(fm.neuron_frac_by_freq, variance).numpy(),
        max_freq=int(gf.max_freq),
        key_freq_threshold=float(fm.key_freq_threshold),
    )

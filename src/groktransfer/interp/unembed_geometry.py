"""How the unembedding lays out the answer tokens: the geometry of W_U's answer columns.

Why: a model that reads digits as angles writes, along a few residual dimensions,
``W_U[d, i] ≈ A_d cos(2π k i / m + φ_d)`` for one frequency k over the m answer tokens;
the columns then sit on a circle in the plane of W_U's top two singular directions, in
digit order when k = 1. :func:`unembed_geometry` measures each piece of that statement so
it can hold or fail on a given model:

* ``gram`` -- W_Uᵀ W_U over the answer columns (a circulant matrix for a circle);
* ``singular_values`` and ``coords`` -- the SVD of the answer columns (centred over the
  columns: the constant part, frequency 0, names no digit) and each column projected on
  the top two left singular directions;
* ``amplitude`` / ``phase`` -- per residual dimension and frequency, from the discrete
  Fourier transform over the m columns;
* ``freq_share`` -- W_U's power per frequency; ``dims_for_90`` -- how few residual
  dimensions hold 90% of it (W_U "lives on a few dimensions");
* circle measures -- the spread of the radii and the angle step between consecutive
  tokens (2π k / m for frequency k);
* ``rebuilt`` -- W_U's answer columns rebuilt from one frequency alone (plus their mean;
  frequency 1 unless asked otherwise: the digits-as-angles reading),
  and its relative error; :func:`rebuilt_unembed_score` runs the model with it.

Columns beyond the task's answers (ARENA's model has 12 outputs, '+' and '=' unused) are
left out.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from .answers import answer_set
from .forward import Score, answer_logits, score


@dataclass(frozen=True)
class UnembedGeometry:
    """W_U's answer columns read as a circle (see module doc). Shapes: m answer tokens,
    d residual dimensions, F = m // 2 + 1 frequencies."""

    W_U: torch.Tensor  # [d, m] answer columns, centred over the columns
    gram: torch.Tensor  # [m, m]
    singular_values: torch.Tensor  # [min(d, m)]
    coords: torch.Tensor  # [m, 2] each answer column on the top two singular directions
    amplitude: torch.Tensor  # [d, F]
    phase: torch.Tensor  # [d, F] radians
    freq_share: torch.Tensor  # [F] share of W_U's power at each frequency (0 is ~0 after centring)
    top_freq: int
    dims_for_90: int  # fewest residual dimensions holding 90% of the power
    radius_cv: float  # std / mean of the columns' distance from the centre in the top-2 plane
    angle_step: float  # mean signed angle between consecutive tokens in that plane (radians)
    angle_step_spread: float  # max deviation of a step from that mean (radians)
    top2_share: float  # share of the power in the top two singular values
    rebuilt_freq: int
    rebuilt: torch.Tensor  # [d, m] from frequency ``rebuilt_freq`` alone
    rebuilt_error: float  # ||W_U - rebuilt|| / ||W_U||

    @property
    def circle_freq(self) -> float:
        """The angle step in units of 2π / m: 1 for digits in order around the circle."""
        return abs(self.angle_step) / (2 * math.pi / self.W_U.shape[1])

    def dims_table(self, k: int = 8) -> pd.DataFrame:
        """The ``k`` residual dimensions with the most power: amplitude and phase at ``top_freq``."""
        power = self.W_U.square().sum(dim=1)
        top = power.argsort(descending=True)[:k]
        f = self.top_freq
        return pd.DataFrame(
            {
                "dim": top.numpy(),
                "power_share": (power[top] / power.sum()).numpy(),
                f"amplitude_f{f}": self.amplitude[top, f].numpy(),
                f"phase_f{f}": self.phase[top, f].numpy(),
            }
        )

    def gram_table(self) -> pd.DataFrame:
        """W_UᵀW_U as a table: one row and one column per answer token."""
        m = self.gram.shape[0]
        return pd.DataFrame(self.gram.numpy(), columns=[str(j) for j in range(m)]).rename_axis("token").reset_index()

    def fourier_table(self) -> pd.DataFrame:
        """Long table: amplitude and phase of every residual dimension at every frequency
        (1 .. m // 2) over the answer tokens, with the dimension's share of W_U's power."""
        d, F = self.amplitude.shape
        power = self.W_U.square().sum(dim=1)
        share = power / power.sum().clamp_min(1e-300)
        dims, freqs = torch.meshgrid(torch.arange(d), torch.arange(1, F), indexing="ij")
        return pd.DataFrame(
            {
                "dim": dims.flatten().numpy(),
                "freq": freqs.flatten().numpy(),
                "dim_power_share": share[dims.flatten()].numpy(),
                "amplitude": self.amplitude[:, 1:].flatten().numpy(),
                "phase": self.phase[:, 1:].flatten().numpy(),
            }
        )


def rebuild_from_frequency(W: torch.Tensor, freq: int) -> torch.Tensor:
    """[d, m] -> [d, m]: the column mean plus frequency ``freq`` of the column axis only."""
    m = W.shape[1]
    spectrum = torch.fft.rfft(W.double(), dim=1)
    keep = torch.zeros_like(spectrum)
    keep[:, 0], keep[:, freq] = spectrum[:, 0], spectrum[:, freq]
    return torch.fft.irfft(keep, n=m, dim=1)


def _wrap(x: torch.Tensor) -> torch.Tensor:
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def unembed_geometry(model: Any, task: Any, rebuild_freq: int = 1) -> UnembedGeometry:
    """Read W_U's answer columns (see module doc); processed weights read most cleanly."""
    m = answer_set(task).out_modulus
    raw = model.state_dict()["unembed.W_U"].detach().double()[:, :m]
    W = raw - raw.mean(dim=1, keepdim=True)
    spectrum = torch.fft.rfft(W, dim=1)  # [d, F]
    power = spectrum.abs().square()
    power[:, 1 : (m + 1) // 2] *= 2  # rfft keeps one of each conjugate pair
    freq_share = power.sum(dim=0) / power.sum().clamp_min(1e-300)
    top_freq = int(freq_share[1:].argmax()) + 1
    U, S, _ = torch.linalg.svd(W, full_matrices=False)
    coords = W.T @ U[:, :2]
    radius = coords.norm(dim=1)
    angles = torch.atan2(coords[:, 1], coords[:, 0])
    steps = _wrap(angles.roll(-1) - angles)
    dim_power = W.square().sum(dim=1).sort(descending=True).values
    cum = dim_power.cumsum(0) / dim_power.sum().clamp_min(1e-300)
    rebuilt = rebuild_from_frequency(W, rebuild_freq)
    amplitude = spectrum.abs() * 2 / m
    amplitude[:, 0] /= 2  # the mean, and (m even) the alternating term: each appears once, not as a conjugate pair
    if m % 2 == 0:
        amplitude[:, m // 2] /= 2
    return UnembedGeometry(
        W_U=W,
        gram=W.T @ W,
        singular_values=S,
        coords=coords,
        amplitude=amplitude,
        phase=torch.atan2(spectrum.imag, spectrum.real),
        freq_share=freq_share,
        top_freq=top_freq,
        dims_for_90=int((cum < 0.9 - 1e-12).sum()) + 1,
        radius_cv=float(radius.std() / radius.mean().clamp_min(1e-300)),
        angle_step=float(steps.mean()),
        angle_step_spread=float((steps - steps.mean()).abs().max()),
        top2_share=float(S[:2].square().sum() / S.square().sum().clamp_min(1e-300)),
        rebuilt_freq=int(rebuild_freq),
        rebuilt=rebuilt,
        rebuilt_error=float((W - rebuilt).norm() / W.norm().clamp_min(1e-300)),
    )


@torch.no_grad()
def rebuilt_unembed_score(model: Any, task: Any, freq: int) -> Score:
    """Loss and accuracy of ``model`` with W_U's answer columns replaced by their
    frequency-``freq`` rebuild (the other columns and b_U unchanged); the model is copied."""
    aset = answer_set(task)
    m = aset.out_modulus
    sd = model.state_dict()
    W_U = sd["unembed.W_U"].detach().clone()
    W_U[:, :m] = rebuild_from_frequency(W_U[:, :m], freq).to(W_U.dtype)
    edited = copy.deepcopy(model)
    edited.load_state_dict({**sd, "unembed.W_U": W_U})
    return score(answer_logits(edited, aset), aset.labels)

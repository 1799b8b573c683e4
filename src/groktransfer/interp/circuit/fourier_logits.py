"""The logits' Fourier spectrum in the *target task's own* directions.

Why not the notebook's approach: it projected subtraction models' logits on the
addition directions cos(w(a+b-c)); for a-b those are the wrong axes, so a perfect
subtraction circuit shows almost nothing there. ``measures.logit_target_structure``
already reads the logits along each task's own group directions (cos/sin(w(a-b-c)) for
subtraction, discrete-log coordinates for multiply/divide); this module only reshapes
its output into what the circuit report plots and compares, without recomputing it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from groktransfer.measures.modular import FourierMeasures

_COMBINE = {"add": "a+b", "subtract": "a−b", "multiply": "log a+log b", "divide": "log a−log b"}


def direction_label(group: str) -> str:
    """Human-readable target direction of a group, e.g. ``cos/sin(w(a−b−c))``."""
    combo = _COMBINE.get(group, group)
    out = "log c" if group in ("multiply", "divide") else "c"
    return f"cos/sin(w({combo}−{out}))"


@dataclass(frozen=True)
class LogitSpectrum:
    """Per frequency w = 1..W: how strongly the logits carry the target structure at w.

    ``amplitude[w-1]`` is the raw amplitude A of A·cos(w(x ± y − z) + phase) in the
    logits (least squares, phase-free: sqrt(cos² + sin²) of the two coefficients);
    ``frac[w-1]`` its share of the logit variance once the per-input and per-output means
    are removed (softmax ignores the first, the second is a bias). ``residual_frac`` is
    the share no target direction explains. Shares are scale-free, which is why the
    plots and comparisons across models use them rather than amplitudes.
    """

    freqs: np.ndarray
    amplitude: np.ndarray
    frac: np.ndarray
    residual_frac: float
    directions: str

    def top(self, k: int) -> list[int]:
        """The ``k`` frequencies with the largest share, largest first."""
        order = np.argsort(-np.nan_to_num(self.frac, nan=-1.0), kind="stable")[:k]
        return [int(self.freqs[i]) for i in order]


def logit_spectrum(fm: FourierMeasures) -> LogitSpectrum:
    """Collect the logit spectrum already computed by ``compute_progress_measures``."""
    cos = fm.logit_cos_coef.double().numpy()
    sin = fm.logit_sin_coef.double().numpy()
    return LogitSpectrum(
        freqs=fm.freqs.numpy().astype(int),
        amplitude=np.hypot(cos, sin),
        frac=fm.logit_frac.double().numpy(),
        residual_frac=float(fm.logit_residual_frac),
        directions=direction_label(fm.group),
    )

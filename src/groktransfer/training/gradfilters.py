"""Gradient filters by name (``gradfilter.name``): none, ema, ma (Grokfast), orthograd (⊥Grad); plugins add theirs.

Grokfast (Lee et al. 2024, arXiv 2405.20233) reads a parameter's gradients over the steps
as a signal: a fast-changing part that fits the training set and a slow part that, the
authors argue, drives generalisation. Amplifying the slow part -- adding a low-pass
filtered copy of the gradient back onto it before the optimizer steps -- makes grokking
come many times sooner. Two low-pass filters are offered:

* ``ema``: an exponential moving average. mu <- alpha*mu + (1-alpha)*g, then g <- g + lamb*mu.
  mu starts at the first gradient (as in the authors' code), so the first step is g*(1+lamb).
* ``ma``: a moving average over a window. g <- g + lamb * (mean of the last ``window``
  gradients, this one included); until ``window`` gradients have been seen nothing is added.

``orthograd`` is ⊥Grad (Prieto et al., ICLR 2025, "Grokking at the edge of numerical
stability"): once a model fits its training set, the gradient mostly scales the weights
along their own direction, which lowers the loss without changing a prediction (their
"naive loss minimisation") and delays grokking. ⊥Grad removes that component from each
parameter's gradient and rescales what is left to the gradient's norm:
g <- (g - (w.g / w.w) w) * |g| / |g - (w.g / w.w) w|. With AdamW it is their ⊥AdamW.

A filter runs between ``backward`` and the optimizer step, on every trainable parameter
that has a gradient. Grokfast's operations are element-wise, so a filter over an ensemble's
stacked ``[K, ...]`` gradients gives each member exactly what a filter over that member alone
gives; ⊥Grad's dot products run over a whole parameter, so over an ensemble's stacked
parameters (``member_axis``, set by the ensemble) they run within each member.
Its state -- per-parameter tensors that hold the parameter's shape from axis
``state_axis(key)`` on (where an ensemble's member axis goes), and a step count -- is saved
in ``resume.pt`` with the optimizer's, versioned (``STATE_VERSION``), so a resumed run
continues bit-identically; a transfer start begins with a fresh filter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from groktransfer.utils.registry import Registry

__all__ = ["GRADFILTERS", "GradFilter", "EMAFilter", "MAFilter", "OrthoGradFilter", "build_gradfilter"]


class GradFilter:
    """Changes gradients in place; ``state`` maps a parameter name to its tensors."""

    #: the layout of ``state``, saved with it; a filter whose layout changes raises it and
    #: reads the earlier layouts in :meth:`_upgrade`
    STATE_VERSION = 1
    #: per state key, the axis where the parameter's shape begins (default 0); the axes before
    #: it are the filter's own (MA's window). An ensemble stacks its members there.
    PARAM_AXIS: dict[str, int] = {}
    #: the parameters it is applied to carry ensemble members on a leading axis (the ensemble
    #: sets it): a filter that reduces over a parameter must reduce within each member
    member_axis: bool = False

    def __init__(self) -> None:
        self.steps = 0
        self.state: dict[str, dict[str, torch.Tensor]] = {}

    @torch.no_grad()
    def apply(self, named: Sequence[tuple[str, torch.Tensor]]) -> None:
        """Filter the gradients of ``named`` (name, parameter) pairs in place (one call per step)."""
        for name, p in named:
            if p.grad is not None:
                self.filter(name, p.grad)
        self.steps += 1

    def filter(self, name: str, grad: torch.Tensor) -> None:
        raise NotImplementedError

    @classmethod
    def state_axis(cls, key: str) -> int:
        return cls.PARAM_AXIS.get(key, 0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": self.STATE_VERSION,
            "steps": self.steps,
            "state": {n: dict(s) for n, s in self.state.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version = int(state.get("version", 1))  # resume.pt files from before the field are version 1
        if version > self.STATE_VERSION:
            raise ValueError(
                f"{type(self).__name__} state version {version} is newer than this code reads ({self.STATE_VERSION})"
            )
        self.steps = int(state["steps"])
        self.state = {
            n: {k: self._upgrade(k, v, version).clone() for k, v in s.items()} for n, s in state["state"].items()
        }

    def _upgrade(self, key: str, value: torch.Tensor, version: int) -> torch.Tensor:
        """A state tensor saved in layout ``version``, in this code's layout."""
        return value

    def to(self, device: torch.device) -> GradFilter:
        self.state = {n: {k: v.to(device) for k, v in s.items()} for n, s in self.state.items()}
        return self


class EMAFilter(GradFilter):
    """Grokfast-EMA: mu <- alpha*mu + (1-alpha)*g; g <- g + lamb*mu."""

    def __init__(self, alpha: float, lamb: float) -> None:
        super().__init__()
        self.alpha, self.lamb = float(alpha), float(lamb)

    def filter(self, name: str, grad: torch.Tensor) -> None:
        s = self.state.get(name)
        if s is None:
            s = self.state[name] = {"mu": grad.detach().clone()}
        else:
            s["mu"].mul_(self.alpha).add_(grad, alpha=1.0 - self.alpha)
        grad.add_(s["mu"], alpha=self.lamb)


class MAFilter(GradFilter):
    """Grokfast-MA: g <- g + lamb * mean(last ``window`` gradients), once ``window`` have been seen.

    The window is a ring buffer [window, *shape] per parameter, so each step writes and reads
    one contiguous slot (on a GPU a strided slot costs a scattered write); an ensemble's member
    axis stacks after the window axis (``PARAM_AXIS``). Its sum is kept in float64, one
    gradient added and the one leaving subtracted per step, so the mean costs two element-wise
    ops rather than ``window`` additions. State version 1 (before this layout) kept the window
    last, [*shape, window]; it is read by moving that axis to the front.
    """

    STATE_VERSION = 2
    PARAM_AXIS = {"ring": 1}

    def __init__(self, window: int, lamb: float) -> None:
        super().__init__()
        self.window, self.lamb = int(window), float(lamb)

    def filter(self, name: str, grad: torch.Tensor) -> None:
        s = self.state.get(name)
        if s is None:
            s = self.state[name] = {
                "ring": torch.zeros((self.window, *grad.shape), dtype=grad.dtype, device=grad.device),
                "sum": torch.zeros(grad.shape, dtype=torch.float64, device=grad.device),
            }
        slot = self.steps % self.window
        ring, total = s["ring"], s["sum"]
        if self.steps >= self.window:  # the oldest gradient leaves the window
            total.sub_(ring[slot])
        ring[slot].copy_(grad)
        total.add_(grad)
        if self.steps + 1 >= self.window:
            grad.add_((total / self.window).to(grad.dtype), alpha=self.lamb)

    def _upgrade(self, key: str, value: torch.Tensor, version: int) -> torch.Tensor:
        if key == "ring" and version < 2:
            return value.movedim(-1, 0).contiguous()  # [*shape, window] -> [window, *shape]
        return value


class OrthoGradFilter(GradFilter):
    """⊥Grad: each parameter's gradient without its component along the parameter, rescaled
    to the gradient's norm (the authors' ``OrthoGrad._orthogonalize_gradients``, epsilons
    included). Stateless: nothing to save but the step count."""

    EPS = 1e-30

    @torch.no_grad()
    def apply(self, named: Sequence[tuple[str, torch.Tensor]]) -> None:
        for _, p in named:
            if p.grad is not None:
                self.orthogonalise(p.detach(), p.grad)
        self.steps += 1

    def orthogonalise(self, w: torch.Tensor, grad: torch.Tensor) -> None:
        members = w.shape[0] if self.member_axis else 1
        w2, g2 = w.reshape(members, -1), grad.reshape(members, -1)
        proj = (w2 * g2).sum(dim=1, keepdim=True) / ((w2 * w2).sum(dim=1, keepdim=True) + self.EPS)
        orth = g2 - proj * w2
        scale = g2.norm(dim=1, keepdim=True) / (orth.norm(dim=1, keepdim=True) + self.EPS)
        grad.copy_((orth * scale).view_as(grad))

    def filter(self, name: str, grad: torch.Tensor) -> None:  # pragma: no cover - apply() does the work
        raise NotImplementedError("⊥Grad reads the parameter too: use apply()")


@dataclass(frozen=True)
class GradFilterEntry:
    """``build(cfg)``: the filter ``cfg`` (a GradFilterConfig) describes, or None for no filter.
    ``state_per_parameter(cfg)``: tensors of a parameter's size it keeps per parameter (what the
    memory estimate counts before anything is allocated: ``groktransfer.training.memory``)."""

    build: Callable[[Any], GradFilter | None]
    state_per_parameter: Callable[[Any], float] = lambda cfg: 0.0


GRADFILTERS: Registry[GradFilterEntry] = Registry("gradient filter", "gradfilter.name")
GRADFILTERS.register("none", GradFilterEntry(lambda cfg: None))
GRADFILTERS.register("ema", GradFilterEntry(lambda cfg: EMAFilter(cfg.ema.alpha, cfg.ema.lamb), lambda cfg: 1.0))
GRADFILTERS.register(
    "ma", GradFilterEntry(lambda cfg: MAFilter(cfg.ma.window, cfg.ma.lamb), lambda cfg: float(cfg.ma.window) + 1.0)
)
GRADFILTERS.register("orthograd", GradFilterEntry(lambda cfg: OrthoGradFilter()))


def build_gradfilter(cfg: Any) -> GradFilter | None:
    """The filter ``cfg.name`` names (None: no filter, or no config)."""
    if cfg is None:
        return None
    return GRADFILTERS.get(str(cfg.name)).build(cfg)

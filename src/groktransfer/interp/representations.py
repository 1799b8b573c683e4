"""What the model represents, and where: embeddings, weight spectra, probes, neurons, attention.

* :func:`embedding_pca` / :func:`embedding_svd` -- the operand embeddings' principal
  components and explained variance (a circular Fourier embedding shows up as a cos/sin
  pair of components with equal variance).
* :func:`singular_spectra` -- every weight matrix's singular values next to those of a
  Gaussian matrix of the same shape and entry scale: structure is what the trained
  spectrum has and the random one does not.
* :func:`embedding_fourier_norms` -- W_E's operand rows in the input's Fourier basis
  (in the task's group coordinates where it has a group, else in token order), for
  every task including ``int_add``; with their Gini.
* :func:`ridge_probe` / :func:`probe_hooks` -- closed-form ridge probes from any hook to
  declared targets, scored on held-out inputs (R^2, or accuracy for classes).
* :func:`neuron_correlations`, :func:`top_neuron_maps` -- per-neuron Pearson correlation
  with a target and the best neurons' activation on the (a, b) grid.
* :func:`neuron_clusters` -- each neuron's dominant input frequency on the (a, b) grid,
  the neurons grouped by it, and the key frequencies.
* :func:`attention_patterns` -- each head's mean attention from every answer position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from groktransfer.measures.modular import (
    assign_neuron_freqs,
    fourier_component_norms,
    gini,
    neuron_counts,
    neuron_freq_fractions,
)
from groktransfer.tasks.fourier import GroupFourier, fourier_basis

from .answers import CLASSIFICATION, REGRESSION, AnswerSet, Target, answer_set
from .forward import n_layers_heads, run_cache


# --------------------------------------------------------------------------- embeddings
@dataclass(frozen=True)
class PCA:
    """Principal components of rows ``X`` [m, d] (centred): ``components`` [k, d] (unit rows),
    ``scores`` [m, k], ``explained`` [k] share of variance, ``singular_values`` [k]."""

    components: torch.Tensor
    scores: torch.Tensor
    explained: torch.Tensor
    singular_values: torch.Tensor
    mean: torch.Tensor


def pca(X: torch.Tensor) -> PCA:
    """PCA by SVD of the centred rows (float64)."""
    X = X.detach().double()
    mean = X.mean(dim=0)
    U, S, Vt = torch.linalg.svd(X - mean, full_matrices=False)
    var = S.square()
    return PCA(Vt, U * S, var / var.sum().clamp_min(1e-300), S, mean)


def operand_embeddings(model: Any, task: Any) -> torch.Tensor:
    """[m, d_model] embedding rows of the operand tokens 0..m-1 (m = input_modulus)."""
    aset = answer_set(task)
    return model.state_dict()["embed.W_E"].detach().double()[: aset.input_modulus]


def embedding_pca(model: Any, task: Any) -> PCA:
    """PCA of the operand embeddings (the '=' and other non-operand tokens are left out)."""
    return pca(operand_embeddings(model, task))


def embedding_svd(model: Any, task: Any) -> pd.DataFrame:
    """Singular values of the (uncentred) operand embedding matrix and their variance share."""
    S = torch.linalg.svdvals(operand_embeddings(model, task))
    return pd.DataFrame(
        {"index": range(len(S)), "singular_value": S.numpy(), "explained": (S.square() / S.square().sum()).numpy()}
    )


def _matrices(model: Any) -> dict[str, torch.Tensor]:
    """Every weight matrix by name (parameters named ``W...``: TransformerLens' ``W_Q``, an
    MLP's ``W``); per-head attention weights one matrix per head."""
    out: dict[str, torch.Tensor] = {}
    for name, W in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        if not leaf.startswith("W"):
            continue
        W = W.detach().double()
        if W.ndim == 3:
            for h in range(W.shape[0]):
                out[f"{name}[{h}]"] = W[h]
        elif W.ndim == 2:
            out[name] = W
    return out


def effective_rank(s: torch.Tensor) -> float:
    """exp(entropy) of the normalised squared singular values (1 = rank one, k = flat)."""
    q = s.double().square()
    q = q / q.sum().clamp_min(1e-300)
    q = q[q > 0]
    return float(torch.exp(-(q * q.log()).sum()))


def singular_spectra(model: Any, seed: int = 0) -> pd.DataFrame:
    """One row per (weight matrix, singular value index): the trained matrix's singular
    value and that of a Gaussian control of the same shape and entry std."""
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    for name, W in _matrices(model).items():
        control = torch.randn(W.shape, generator=gen, dtype=torch.float64) * W.std()
        s, c = torch.linalg.svdvals(W), torch.linalg.svdvals(control)
        er, erc = effective_rank(s), effective_rank(c)
        rows += [
            dict(
                weight=name,
                index=i,
                singular_value=float(a),
                control=float(b),
                effective_rank=er,
                control_effective_rank=erc,
            )
            for i, (a, b) in enumerate(zip(s, c))
        ]
    return pd.DataFrame(rows)


def embedding_fourier_norms(model: Any, task: Any) -> pd.DataFrame:
    """W_E's operand rows in the input Fourier basis: norm per frequency (0 = constant).

    Coordinates: the task's group coordinates (discrete logs for multiply/divide, whose
    token 0 is outside the group) where it has a group, else token order 0..m-1 (int_add,
    x2xyy2, digits). ``attrs['gini']`` is the Gini of the per-component norms, as in
    ``measures.gini_W_E``."""
    gf = GroupFourier.for_task(task) if hasattr(task, "group") else None
    W_E = operand_embeddings(model, task)
    rows = W_E[gf.elements] if gf is not None else W_E
    basis = gf.basis if gf is not None else fourier_basis(rows.shape[0])
    comp = fourier_component_norms(rows, basis)  # [m]
    per_freq = torch.zeros(basis.max_freq + 1, dtype=torch.float64).index_add_(0, basis.freqs, comp.square()).sqrt()
    df = pd.DataFrame({"freq": range(basis.max_freq + 1), "norm": per_freq.numpy()})
    df.attrs["gini"] = gini(comp)
    df.attrs["modulus"] = basis.n
    return df


# --------------------------------------------------------------------------- probes
class _RidgePath:
    """Ridge regressions of many targets on one design matrix, for many alphas, from one SVD.

    Centring X and Y on the fitted rows takes care of the (unshrunk) intercept; then
    w(alpha) = V diag(s / (s^2 + alpha)) U^T Y."""

    def __init__(self, X: torch.Tensor) -> None:
        self.mean = X.mean(dim=0)
        self.U, self.S, Vt = torch.linalg.svd(X - self.mean, full_matrices=False)
        self.V = Vt.T

    def weights(self, Y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        y_mean = Y.mean(dim=0)
        w = self.V @ ((self.S / (self.S.square() + alpha))[:, None] * (self.U.T @ (Y - y_mean)))
        return w, y_mean - self.mean @ w

    def predict(self, X: torch.Tensor, Y: torch.Tensor, alpha: float) -> torch.Tensor:
        w, b = self.weights(Y, alpha)
        return X @ w + b


def _score(pred: torch.Tensor, y: torch.Tensor, kind: str) -> float:
    if kind == CLASSIFICATION:
        return float((pred.argmax(dim=1) == y).double().mean())
    sst = (y - y.mean()).square().sum()
    return float(1.0 - (pred[:, 0] - y).square().sum() / sst) if sst > 0 else float("nan")


@dataclass(frozen=True)
class ProbeResult:
    target: str
    kind: str
    score: float  # held-out R^2 (regression) or accuracy (classification)
    train_score: float
    chance: float  # R^2 0, or the majority class's held-out share
    alpha: float
    n_train: int
    n_test: int


ALPHAS = (1e-4, 1e-2, 1.0, 1e2, 1e4)


def ridge_probes(
    acts: torch.Tensor,
    targets: Sequence[Target],
    test_frac: float = 0.3,
    seed: int = 0,
    alphas: Sequence[float] = ALPHAS,
) -> list[ProbeResult]:
    """Fit a ridge probe ``acts`` [n, ...] -> each target on a random (1 - test_frac) of the
    inputs and score it on the rest. ``alpha`` is chosen on a validation fifth of the
    training inputs, then the probe is refitted on all of them. Classification targets
    are one-hot regressed and read by arg-max (a ridge classifier). Features are
    standardised on the training inputs."""
    X = acts.detach().reshape(acts.shape[0], -1).double()
    n = X.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(test_frac * n)))
    test, train = perm[:n_test], perm[n_test:]
    X = (X - X[train].mean(0)) / X[train].std(0).clamp_min(1e-8)
    n_val = max(1, len(train) // 5)
    fit, val = train[n_val:], train[:n_val]
    path_fit, path_train = _RidgePath(X[fit]), _RidgePath(X[train])
    out = []
    for target in targets:
        if target.kind == CLASSIFICATION:
            y = target.values.long()
            Y = torch.nn.functional.one_hot(y, int(y.max()) + 1).double()
            chance = float((y[test] == torch.mode(y[train]).values).double().mean())
        else:
            y = target.values.double()
            Y, chance = y[:, None], 0.0
        best = max(alphas, key=lambda a: _score(path_fit.predict(X[val], Y[fit], a), y[val], target.kind))
        w, b = path_train.weights(Y[train], best)
        out.append(
            ProbeResult(
                target.name,
                target.kind,
                _score(X[test] @ w + b, y[test], target.kind),
                _score(X[train] @ w + b, y[train], target.kind),
                chance,
                float(best),
                len(train),
                n_test,
            )
        )
    return out


def ridge_probe(
    acts: torch.Tensor, target: Target, test_frac: float = 0.3, seed: int = 0, alphas: Sequence[float] = ALPHAS
) -> ProbeResult:
    """One target's probe; see :func:`ridge_probes`."""
    return ridge_probes(acts, [target], test_frac, seed, alphas)[0]


def probe_hooks(
    model: Any,
    task: Any,
    hooks: Sequence[str],
    positions: Sequence[int] | None = None,
    targets: Sequence[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Probe each hook at each position for each declared target of the task.

    ``positions`` default to the answer positions; ``targets`` to all the task declares
    (``AnswerSet.targets``: a, b, the answer, a+b for int_add, digits and carries for
    digit tasks). One row per (hook, position, target)."""
    aset = answer_set(task)
    _, cache = run_cache(model, aset, hooks)
    pos = list(aset.positions) if positions is None else list(positions)
    names = list(aset.targets) if targets is None else list(targets)
    rows = []
    for hook in hooks:
        for p in pos:
            for r in ridge_probes(cache[hook][:, p], [aset.targets[t] for t in names], seed=seed):
                rows.append(dict(hook=hook, position=p, **r.__dict__))
    return pd.DataFrame(rows)


@torch.no_grad()
def probe_neurons(model: Any, task: Any, seed: int = 0, chunk: int = 4096) -> pd.DataFrame:
    """Probe the model's neurons (the model protocol's ``neurons`` reading: last-position
    activations) for each declared target of the task; rows as :func:`probe_hooks`'s, hook ``neurons``."""
    aset = answer_set(task)
    acts = torch.cat(
        [
            model.last_position_activations(aset.tokens[i : i + chunk])[1].detach().double()
            for i in range(0, aset.n, chunk)
        ]
    )
    position = aset.tokens.shape[1] - 1
    rows = [
        dict(hook="neurons", position=position, **r.__dict__)
        for r in ridge_probes(acts, list(aset.targets.values()), seed=seed)
    ]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- neurons
def mlp_acts(model: Any, task: Any, layer: int, position: int | None = None) -> torch.Tensor:
    """[n, d_mlp] MLP activations (``hook_post``) of block ``layer`` at ``position``
    (default: the first answer position)."""
    aset = answer_set(task)
    name = f"blocks.{layer}.mlp.hook_post"
    _, cache = run_cache(model, aset, [name])
    return cache[name][:, aset.positions[0] if position is None else position].double()


def neuron_correlations(acts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[d_mlp] Pearson correlation of each neuron (columns of ``acts`` [n, d_mlp]) with
    ``target`` [n]; 0 for constant neurons."""
    x = acts.double() - acts.double().mean(0)
    y = target.double() - target.double().mean()
    denom = x.norm(dim=0) * y.norm()
    return torch.where(denom > 0, (x * y[:, None]).sum(0) / denom.clamp_min(1e-300), 0.0)


def top_neuron_maps(model: Any, task: Any, target: str, layer: int = 0, k: int = 6) -> pd.DataFrame:
    """The ``k`` neurons most correlated (|r|) with ``target``; ``attrs['maps']`` holds
    their activation maps on the (a, b) grid, [k, m, m]."""
    aset = answer_set(task)
    acts = mlp_acts(model, aset, layer)
    r = neuron_correlations(acts, aset.targets[target].values)
    top = r.abs().argsort(descending=True)[:k]
    df = pd.DataFrame({"neuron": top.numpy(), "r": r[top].numpy()})
    if aset.has_grid:
        df.attrs["maps"] = aset.to_grid(acts[:, top]).permute(2, 0, 1)
    df.attrs["n_over_0.9"] = int((r.abs() > 0.9).sum())
    return df


@dataclass(frozen=True)
class NeuronClusters:
    """Neurons by dominant input frequency on the (a, b) grid (mod ``modulus``)."""

    modulus: int
    neuron_freq: torch.Tensor  # [d_mlp] dominant frequency, -1 dead
    frac: torch.Tensor  # [d_mlp] share of variance at it
    counted: torch.Tensor  # [d_mlp] share above threshold
    counts: torch.Tensor  # [W] counted neurons per frequency
    key_freqs: list[int]

    def groups(self, min_size: int = 1) -> dict[str, list[int]]:
        """{"freq w": neurons} for counted neurons (a partition of them), for ``direct_logit_attribution``."""
        out: dict[str, list[int]] = {}
        for w in self.key_freqs:
            idx = torch.nonzero(self.counted & (self.neuron_freq == w)).flatten().tolist()
            if len(idx) >= min_size:
                out[f"freq {w}"] = idx
        return out


def grid_acts(task: Any, acts: torch.Tensor) -> torch.Tensor:
    """[n, d] per-example activations -> [m, m, d] on the grid the Fourier measures use
    (group coordinates when the task has a group, token order otherwise)."""
    gf = GroupFourier.for_task(task) if hasattr(task, "group") else None
    if gf is not None:
        return gf.to_grid(acts)
    aset = answer_set(task)
    grid = aset.to_grid(acts)
    assert not bool(grid.isnan().any()), f"{aset.name}: the (a, b) grid is not complete"
    return grid


def neuron_clusters(
    model: Any, task: Any, layer: int = 0, threshold: float = 0.85, min_neurons: int = 1
) -> NeuronClusters:
    """Dominant frequency of each neuron on the (a, b) grid (the progress measures'
    definition: share of variance in the (w,0), (0,w), (w,w) 2-D components), and the
    key frequencies (at least ``min_neurons`` neurons above ``threshold``)."""
    grid = grid_acts(task, mlp_acts(model, task, layer))
    basis = fourier_basis(grid.shape[0])
    frac, dead = neuron_freq_fractions(grid, basis)
    freq, best, counted = assign_neuron_freqs(frac, dead, threshold)
    counts = neuron_counts(freq, counted, basis.max_freq)
    key = [int(w) + 1 for w in torch.nonzero(counts >= max(min_neurons, 1)).flatten()]
    return NeuronClusters(basis.n, freq, best, counted, counts, key)


# --------------------------------------------------------------------------- attention
def attention_patterns(model: Any, task: Any) -> torch.Tensor:
    """[n_layers, n_heads, n_answers, seq] mean attention from each answer position."""
    aset = answer_set(task)
    n_layers, _ = n_layers_heads(model)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    _, cache = run_cache(model, aset, names)
    pos = list(aset.positions)
    return torch.stack([cache[n][:, :, pos].mean(dim=0) for n in names])


def declared_targets(task: Any) -> dict[str, Target]:
    return dict(answer_set(task).targets)


__all__ = [
    "AnswerSet",
    "CLASSIFICATION",
    "REGRESSION",
    "PCA",
    "NeuronClusters",
    "ProbeResult",
    "attention_patterns",
    "declared_targets",
    "embedding_fourier_norms",
    "embedding_pca",
    "embedding_svd",
    "effective_rank",
    "grid_acts",
    "mlp_acts",
    "neuron_clusters",
    "neuron_correlations",
    "pca",
    "probe_hooks",
    "probe_neurons",
    "ridge_probe",
    "ridge_probes",
    "singular_spectra",
    "top_neuron_maps",
]

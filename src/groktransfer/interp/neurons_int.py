"""Readings of a model adding small integers (``int_add``): embedding PCs as functions of the
token, neurons as functions of the PCs, and what the PCs are needed for.

Why these: a model that adds without a modulus can lay the operands on a line (PC1 ∝ the
token) plus a bend (PC2 ≈ a parabola of the token), and compute a+b in MLP neurons that
are nearly linear in both operands' PC scores. Each step is measured here:

* :func:`pc_token_fits` -- each embedding PC's score against the token, with a linear and
  a quadratic least-squares fit (R² and coefficients);
* :func:`sum_neurons` -- every neuron's correlation with a+b, before (``hook_pre``) and after
  (``hook_post``) the activation, and the count above a threshold;
* :func:`neuron_pc_regression` -- a neuron's pre-activation at the answer position
  regressed on the top embedding PC scores of a and of b (R² and coefficients);
* :func:`pre_activation_maps` -- the pre-activation of chosen neurons on the (a, b) grid;
* :func:`keep_only_pc` -- the operand embeddings replaced by their mean plus their
  component along one PC only (the complement of removing that PC).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from .ablation import AblationEffect, ablate
from .answers import answer_set
from .forward import Score, run_cache
from .representations import PCA, embedding_pca, neuron_correlations


def _least_squares(X: torch.Tensor, y: torch.Tensor) -> tuple:
    """(coefficients [k], intercept, R²) of y ~ X with an intercept."""
    A = torch.cat([X.double(), torch.ones(X.shape[0], 1, dtype=torch.float64)], dim=1)
    sol = torch.linalg.lstsq(A, y.double()[:, None]).solution[:, 0]
    resid = y.double() - A @ sol
    sst = (y.double() - y.double().mean()).square().sum()
    r2 = float(1 - resid.square().sum() / sst) if sst > 0 else float("nan")
    return sol[:-1], float(sol[-1]), r2


def pc_token_fits(model: Any, task: Any, n_pcs: int = 3, pca: PCA | None = None) -> pd.DataFrame:
    """One row per PC: R² of the linear and of the quadratic fit of its score against the
    token, and the fits' coefficients. A PC score's sign is arbitrary, so are the
    coefficients'."""
    pca = pca if pca is not None else embedding_pca(model, task)
    t = torch.arange(pca.scores.shape[0], dtype=torch.float64)
    rows = []
    for k in range(min(n_pcs, pca.scores.shape[1])):
        s = pca.scores[:, k]
        (lin,), lin_b, lin_r2 = _least_squares(t[:, None], s)
        (q1, q2), q_b, q_r2 = _least_squares(torch.stack([t, t.square()], dim=1), s)
        rows.append(
            dict(
                pc=k + 1,
                explained=float(pca.explained[k]),
                linear_r2=lin_r2,
                quadratic_r2=q_r2,
                slope=float(lin),
                quad_t=float(q1),
                quad_t2=float(q2),
                quad_intercept=q_b,
            )
        )
    return pd.DataFrame(rows)


def _acts(model: Any, aset: Any, layer: int, kind: str) -> torch.Tensor:
    name = f"blocks.{layer}.mlp.hook_{kind}"
    _, cache = run_cache(model, aset, [name])
    return cache[name][:, aset.positions[0]].double()  # [n, d_mlp]


def sum_neurons(model: Any, task: Any, layer: int = 0, threshold: float = 0.9, target: str = "a+b") -> pd.DataFrame:
    """One row per neuron: its correlation with ``target`` before and after the activation;
    ``attrs`` hold the counts with correlation above ``threshold`` (``n_post``, ``n_pre``)
    and ``d_mlp``."""
    aset = answer_set(task)
    y = aset.targets[target].values
    r_pre = neuron_correlations(_acts(model, aset, layer, "pre"), y)
    r_post = neuron_correlations(_acts(model, aset, layer, "post"), y)
    df = pd.DataFrame({"neuron": range(len(r_pre)), "r_pre": r_pre.numpy(), "r_post": r_post.numpy()})
    df.attrs.update(
        n_post=int((r_post > threshold).sum()),
        n_pre=int((r_pre > threshold).sum()),
        d_mlp=len(r_pre),
        threshold=threshold,
    )
    return df


def pre_activation_maps(model: Any, task: Any, neurons: Sequence[int], layer: int = 0) -> torch.Tensor:
    """[k, m, m] pre-activation of each neuron at the answer position on the (a, b) grid."""
    aset = answer_set(task)
    idx = torch.as_tensor(list(neurons), dtype=torch.long)
    return aset.to_grid(_acts(model, aset, layer, "pre")[:, idx]).permute(2, 0, 1)


def neuron_pc_regression(
    model: Any, task: Any, neurons: Sequence[int], layer: int = 0, n_pcs: int = 2, pca: PCA | None = None
) -> pd.DataFrame:
    """One row per neuron: R² of its pre-activation regressed (least squares, with an
    intercept) on the scores of PC1..PC``n_pcs`` of a and of b, and the coefficients
    (columns ``PC1(a)``, ``PC2(a)``, ..., ``PC1(b)``, ...). Pair tasks only."""
    aset = answer_set(task)
    assert aset.operands is not None, f"{aset.name}: needs the operands of each example"
    pca = pca if pca is not None else embedding_pca(model, aset)
    S = pca.scores[:, :n_pcs]
    X = torch.cat([S[aset.operands[:, 0]], S[aset.operands[:, 1]]], dim=1)
    names = [f"PC{k + 1}({x})" for x in "ab" for k in range(S.shape[1])]
    pre = _acts(model, aset, layer, "pre")
    rows = []
    for i in neurons:
        coef, b, r2 = _least_squares(X, pre[:, int(i)])
        rows.append(dict(neuron=int(i), r2=r2, intercept=b, **dict(zip(names, coef.tolist()))))
    return pd.DataFrame(rows)


def keep_only_pc_hook(pca: PCA, k: int, positions: Sequence[int]) -> tuple:
    """``(hook_embed, fn)``: at ``positions``, each embedding -> PCA mean + its component
    along PC``k`` (1-based)."""
    direction, mean = pca.components[k - 1], pca.mean
    pos: list[int] = list(positions)

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        out = act.clone()
        x = act[:, pos].double() - mean
        out[:, pos] = (mean + (x @ direction)[..., None] * direction).to(act.dtype)
        return out

    return "hook_embed", hook


def keep_only_pc(model: Any, task: Any, k: int, pca: PCA | None = None, clean: Score | None = None) -> AblationEffect:
    """The model with the operand embeddings reduced to PC``k`` alone (see :func:`keep_only_pc_hook`)."""
    aset = answer_set(task)
    pca = pca if pca is not None else embedding_pca(model, aset)
    return ablate(model, aset, [keep_only_pc_hook(pca, k, aset.operand_positions)], f"only embedding PC{k}", clean)

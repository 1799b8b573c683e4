"""The symmetric-group task family: ``a . b`` in S4 or S5, registered with groktransfer.

This module is the plugin's entry point (``groktransfer.plugins`` in ``pyproject.toml``):
importing it registers the family, its four tasks and its measures. Nothing under
groktransfer's ``src/`` names it.

Tokens are ``[a, b, =]`` with a, b the indices of permutations in lexicographic order and
``=`` = n! (so the model, the fast path and the trainer are groktransfer's own); the
answer is the index of the composition, read at the last position.

Measures (Chughtai et al. 2023, "A toy model of universality": networks learn group
composition through the group's irreducible representations). The Fourier measures of
the modular family need a cyclic group's characters, so they are absent here; instead
each checkpoint records how much of the token embedding is a linear image of two
representations that are cheap to write down:

* ``sign_rep_r2``: the 1-dimensional sign representation;
* ``perm_rep_r2``: the 5x5 (4x4) permutation matrices, i.e. trivial + standard irreps;

each the fraction of the embedding's variance (over the n! group tokens) that a least-
squares linear map from the representation's entries explains. A model that reads a
representation of the group has it in its embedding; a fresh one scores about
dim(rep)/n!. Higher irreps (S5 has 7) are left out: building them takes a character
table, and these two already separate a grokked embedding from a random one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Dict, Optional, Tuple

import torch

from groktransfer.config.ranges import bounded
from groktransfer.config.schema import TaskConfig
from groktransfer.measures.registry import CHECKPOINT_MEASURES, FamilyMeasures
from groktransfer.tasks.family import TaskFamily
from groktransfer.tasks.registry import register_family

#: task name -> (points permuted, compose b . a instead of a . b)
TASKS: Dict[str, Tuple[int, bool]] = {
    "s4_compose": (4, False),
    "s4_compose_rev": (4, True),
    "s5_compose": (5, False),
    "s5_compose_rev": (5, True),
}


def permutations(n: int) -> torch.Tensor:
    """[n!, n] every permutation of 0..n-1, lexicographic: row i is element i."""
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long)


def composition_table(perms: torch.Tensor) -> torch.Tensor:
    """[n!, n!] index of a . b, where (a . b)(x) = a(b(x))."""
    n = perms.shape[1]
    index = {tuple(p.tolist()): i for i, p in enumerate(perms)}
    composed = perms[:, None, :].expand(-1, len(perms), -1).gather(2, perms[None, :, :].expand(len(perms), -1, -1))
    return torch.tensor([index[tuple(row)] for row in composed.reshape(-1, n).tolist()]).reshape(len(perms), len(perms))


def sign(perms: torch.Tensor) -> torch.Tensor:
    """[n!] +1 / -1: the parity of each permutation (by counting inversions)."""
    inv = (perms[:, :, None] > perms[:, None, :]).triu(diagonal=1).sum((1, 2))
    return 1.0 - 2.0 * (inv % 2).double()


class SymmetricTask:
    """``a . b`` in S_n over every ordered pair, split by ``frac_train`` from ``data_seed``."""

    family = "symmetric"
    threshold_metric = "accuracy"
    seq_len = 3
    group = None  # the modular Fourier measures need a cyclic group
    no_structure_reason = "S_n is not cyclic: its structure is in irreducible representations (see sign_rep_r2, perm_rep_r2)"

    def __init__(self, name: str, frac_train: float, data_seed: int) -> None:
        self.name = name
        self.n_points, self.reversed = TASKS[name]
        self.order = math.factorial(self.n_points)
        self.p = self.order  # recorded in status.json; the group's size
        self.frac_train = frac_train
        self.data_seed = int(data_seed)
        self.d_vocab = self.order + 1  # elements and '='
        self.d_vocab_out = self.order
        self.equals_token = self.order

    @cached_property
    def perms(self) -> torch.Tensor:
        return permutations(self.n_points)

    @cached_property
    def tokens(self) -> torch.Tensor:
        """[order^2, 3] ``a, b, =``, row-major in (a, b)."""
        a = torch.arange(self.order).repeat_interleave(self.order)
        b = torch.arange(self.order).repeat(self.order)
        return torch.stack([a, b, torch.full_like(a, self.equals_token)], dim=1)

    @cached_property
    def labels(self) -> torch.Tensor:
        table = composition_table(self.perms)
        table = table.T if self.reversed else table
        return table.reshape(-1)

    @property
    def n_pairs(self) -> int:
        return self.order * self.order

    @cached_property
    def split(self) -> Tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.data_seed)
        perm = torch.randperm(self.n_pairs, generator=gen)
        n_train = min(max(int(round(self.frac_train * self.n_pairs)), 1), self.n_pairs - 1)
        return perm[:n_train].sort().values, perm[n_train:].sort().values

    @cached_property
    def train_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.n_pairs, dtype=torch.bool)
        mask[self.split[0]] = True
        return mask

    def describe(self) -> str:
        op = "b . a" if self.reversed else "a . b"
        return f"{op} in S{self.n_points}"


@dataclass
class SymmetricTaskConfig(TaskConfig):
    """The family's task keys (Hydra's ``symmetric_schema``): the group is named by the task."""

    KIND: ClassVar[str] = "the symmetric task family"
    # fraction of the ordered pairs in the training set (the rest is the test set); the
    # range beside the field is checked with every other value, before anything is written
    frac_train: float = bounded(0.5, gt=0, lt=1)


class SymmetricFamily(TaskFamily):
    name = "symmetric"
    task_names = tuple(TASKS)
    config_class = SymmetricTaskConfig
    exact_n_ctx = True

    def build(self, task_cfg: Any, data_seed: int) -> SymmetricTask:
        return SymmetricTask(str(task_cfg.name), float(task_cfg.frac_train), data_seed)

    def shapes(self, task_cfg: Any) -> Optional[Tuple[int, int, int]]:
        order = math.factorial(TASKS[str(task_cfg.name)][0])
        return order + 1, order, 3

    def label(self, task_cfg: Any) -> str:
        return str(task_cfg.name)



def representation_r2(embedding: torch.Tensor, features: torch.Tensor) -> float:
    """Fraction of the embedding's variance (rows = group elements) that a linear map of
    ``features`` (plus a constant) explains: 1 - residual / total, by least squares."""
    x = embedding.double() - embedding.double().mean(0)
    f = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.lstsq(f, x).solution
    residual = x - f @ coef
    return float(1.0 - residual.pow(2).sum() / x.pow(2).sum().clamp_min(1e-30))


def symmetric_measures(task: SymmetricTask, model: torch.nn.Module, key_freq_threshold: float):
    """``sign_rep_r2`` and ``perm_rep_r2`` of the token embedding (see the module docstring)."""
    W_E = model.token_embedding().detach().cpu()[: task.order]  # [order, d_model]: the model protocol's reading
    perms = task.perms
    perm_matrices = torch.nn.functional.one_hot(perms, task.n_points).reshape(task.order, -1)  # [order, n*n]
    scalars = {
        "sign_rep_r2": representation_r2(W_E, sign(perms)[:, None]),
        "perm_rep_r2": representation_r2(W_E, perm_matrices),
        "fourier_status": "absent",
        "fourier_note": task.no_structure_reason,
    }
    return scalars, []


register_family(SymmetricFamily())
CHECKPOINT_MEASURES.register(
    "symmetric",
    FamilyMeasures(symmetric_measures, on_file_starts=True),
)

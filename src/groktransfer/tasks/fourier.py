"""Fourier bases of each task's own group, and the maps from task data onto them.

The progress measures of Nanda et al. (2023) only make sense in the Fourier basis of
the group the task is an operation of. Using the wrong group silently produces
numbers that look like measures but are not (the classic bug: reading a subtraction
model with the cos(w(a+b)) directions of addition). This module therefore owns, per
task, *which* group, *which* coordinates and *which* target direction, so that
``measures.py`` never has to know what a task is:

* ``add``      -- Z_p, x=a, y=b, z=c, target cos(w(x+y-z)).
* ``subtract`` -- Z_p, x=a, y=b, z=c, target cos(w(x-y-z)).
* ``multiply`` -- the multiplicative group of the p-1 non-zero residues, which is cyclic:
  with the smallest primitive root g, x=log_g a, y=log_g b, z=log_g c live in Z_{p-1}
  and a*b=c becomes x+y=z. Target cos(w(x+y-z)).
* ``divide``   -- same coordinates, a/b=c becomes x-y=z. Target cos(w(x-y-z)).
* tasks whose ``group`` is None have no such basis: ``GroupFourier.for_task`` returns
  None and the caller reports the task's ``no_structure_reason`` instead.

Inputs with a=0 or b=0 and the output class 0 are not in the multiplicative group, so
they are left out of multiply/divide measures; ``GroupFourier`` counts and describes them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # tasks imports config; keep this module importable on its own
    from groktransfer.tasks.modular import Task

# Per group: (coordinates are discrete logs?, sign of y in the target x ± y - z).
_GROUPS: dict[str, tuple[bool, int]] = {
    "add": (False, +1),
    "subtract": (False, -1),
    "multiply": (True, +1),
    "divide": (True, -1),
}

CONST, COS, SIN = 0, 1, 2  # values of FourierBasis.kinds


# ---------------------------------------------------------------------------------------
# 1-D real Fourier basis
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FourierBasis:
    """Orthonormal real Fourier basis of functions on Z_n.

    Rows of ``matrix`` ([n, n]) are the basis vectors, in the order constant,
    cos 1, sin 1, cos 2, sin 2, ..., and for even n a final cos(n/2) (whose sine is
    identically zero, so it has no partner). Orthonormality makes every measure a
    plain matrix product and every "fraction of variance" a sum of squares.
    """

    n: int
    matrix: torch.Tensor  # [n, n] float64, rows orthonormal
    freqs: torch.Tensor  # [n] long, frequency of each row (0 for the constant)
    kinds: torch.Tensor  # [n] long, CONST / COS / SIN
    scales: torch.Tensor  # [n] float64, norm of the raw cos/sin/1 vector the row normalises

    @property
    def max_freq(self) -> int:
        """Largest frequency, floor(n/2); frequencies are 1..max_freq."""
        return self.n // 2

    @property
    def names(self) -> list[str]:
        """Human-readable row labels ("const", "cos 3", "sin 3", ...) for plots."""
        label = {CONST: "const", COS: "cos", SIN: "sin"}
        return [
            label[int(k)] if int(k) == CONST else f"{label[int(k)]} {int(f)}" for k, f in zip(self.kinds, self.freqs)
        ]

    def rows_in(self, freqs: list[int]) -> torch.Tensor:
        """Bool mask [n] of the rows (cos and sin) whose frequency is in ``freqs``."""
        wanted = torch.tensor(sorted(set(int(f) for f in freqs)), dtype=torch.long, device=self.freqs.device)
        return torch.isin(self.freqs, wanted) & (self.kinds != CONST)

    def to(self, device: torch.device) -> FourierBasis:
        """This basis on ``device`` (cached per device: the measures use it at every checkpoint)."""
        return self if self.matrix.device == torch.device(device) else _basis_on(self.n, torch.device(device))


@lru_cache(maxsize=32)
def fourier_basis(n: int) -> FourierBasis:
    """Build the orthonormal real Fourier basis of Z_n (cached: it is reused every epoch)."""
    if n < 1:
        raise ValueError(f"modulus must be >= 1, got {n}")
    k = torch.arange(n, dtype=torch.float64)
    n_pairs = (n - 1) // 2  # frequencies with both a cos and a sin
    w = torch.arange(1, n_pairs + 1, dtype=torch.float64)
    angle = 2 * torch.pi * w[:, None] * k[None, :] / n  # [n_pairs, n]
    # Interleave cos/sin rows: [cos1, sin1, cos2, sin2, ...].
    trig = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1).reshape(2 * n_pairs, n)
    rows = [torch.ones(1, n, dtype=torch.float64), trig]
    freqs = [torch.zeros(1, dtype=torch.long), torch.arange(1, n_pairs + 1).repeat_interleave(2)]
    kinds = [torch.tensor([CONST]), torch.tensor([COS, SIN]).repeat(n_pairs)]
    if n % 2 == 0:  # Nyquist frequency n/2: cos(pi k) = (-1)^k, sine vanishes
        rows.append(torch.cos(torch.pi * k)[None, :])
        freqs.append(torch.tensor([n // 2]))
        kinds.append(torch.tensor([COS]))
    raw = torch.cat(rows)
    scales = raw.norm(dim=1)
    return FourierBasis(
        n=n,
        matrix=raw / scales[:, None],
        freqs=torch.cat(freqs),
        kinds=torch.cat(kinds).long(),
        scales=scales,
    )


@lru_cache(maxsize=32)
def _basis_on(n: int, device: torch.device) -> FourierBasis:
    b = fourier_basis(n)
    return replace(
        b, matrix=b.matrix.to(device), freqs=b.freqs.to(device), kinds=b.kinds.to(device), scales=b.scales.to(device)
    )


# ---------------------------------------------------------------------------------------
# Discrete logarithms
# ---------------------------------------------------------------------------------------
def _prime_factors(n: int) -> list[int]:
    out, f = [], 2
    while f * f <= n:
        if n % f == 0:
            out.append(f)
            while n % f == 0:
                n //= f
        f += 1
    if n > 1:
        out.append(n)
    return out


def primitive_root(p: int) -> int:
    """Smallest generator of the multiplicative group mod a prime p.

    g generates iff g^((p-1)/q) != 1 for every prime q dividing p-1; choosing the
    smallest one makes the coordinates (and so every measure) reproducible.
    """
    if p == 2:
        return 1
    factors = _prime_factors(p - 1)
    for g in range(2, p):
        if all(pow(g, (p - 1) // q, p) != 1 for q in factors):
            return g
    raise ValueError(f"{p} has no primitive root (is it prime?)")


@lru_cache(maxsize=32)
def discrete_log_table(p: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(g, powers, logs) for prime p.

    ``powers[x] = g^x mod p`` for x in 0..p-2 (coordinate -> residue) and
    ``logs[a] = log_g a`` for a in 1..p-1, ``logs[0] = -1`` (0 has no logarithm).
    """
    g = primitive_root(p)
    powers = [1]
    for _ in range(p - 2):  # p residues at set-up, once per p (cached)
        powers.append(powers[-1] * g % p)
    powers_t = torch.tensor(powers, dtype=torch.long)
    logs = torch.full((p,), -1, dtype=torch.long)
    logs[powers_t] = torch.arange(p - 1)
    return g, powers_t, logs


# ---------------------------------------------------------------------------------------
# A task's group, coordinates and target direction
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupFourier:
    """Everything the measures need to read a task's data in its group's Fourier basis.

    Coordinates: a group element is a residue; ``elements[x]`` is the residue with
    coordinate x (x itself for Z_p, g^x for the multiplicative group) and
    ``coord_of_residue[r]`` the inverse (-1 when r is not in the group). The same map
    serves input tokens (rows of W_E) and output classes (columns of the logits), since
    both are numbered by residue.

    The task's examples that take part form a full n x n grid: ``grid_index[x, y]`` is
    the row of ``task.tokens`` whose inputs have coordinates (x, y). The target
    structure is cos(2 pi w (x + y_sign*y - z) / n). Building one costs ~1 ms at p=113;
    its basis and discrete-log tables are cached and shared, so treat them as read-only.
    """

    group: str
    p: int
    n: int
    y_sign: int
    generator: int | None  # primitive root for multiply/divide, None for Z_p
    basis: FourierBasis
    elements: torch.Tensor  # [n] coordinate -> residue (input token id / output class)
    coord_of_residue: torch.Tensor  # [p] residue -> coordinate or -1
    grid_index: torch.Tensor  # [n, n] row of task.tokens at (x, y)
    pair_mask: torch.Tensor  # [n_pairs] bool, row takes part in the measures
    n_excluded_pairs: int
    note: str

    @classmethod
    def for_task(cls, task: Task) -> GroupFourier | None:
        """The task's group basis, or None when the task has no group structure."""
        if task.group is None:
            return None
        a, b = task.pairs
        return _build(task.group, task.p, task.name, a, b)

    # ---- derived index tensors --------------------------------------------------
    @property
    def max_freq(self) -> int:
        return self.basis.max_freq

    @property
    def input_combo(self) -> torch.Tensor:
        """[n, n] long: (x + y_sign*y) mod n, the input combination the logits depend on."""
        x = torch.arange(self.n, device=self.grid_index.device)
        return (x[:, None] + self.y_sign * x[None, :]) % self.n

    @cached_property
    def grid_is_identity(self) -> bool:
        """True when task rows already are the grid in row-major order (add, subtract)."""
        return self.pair_mask.numel() == self.n * self.n and bool(
            (self.grid_index.reshape(-1) == torch.arange(self.n * self.n, device=self.grid_index.device)).all()
        )

    def to(self, device: torch.device) -> GroupFourier:
        """This map on ``device``: the measures run where the model is. Whether the grid is the
        identity is decided here, on the CPU copy (on a GPU that comparison would stop the host)."""
        if self.grid_index.device == torch.device(device):
            return self
        moved = replace(
            self,
            basis=self.basis.to(device),
            elements=self.elements.to(device),
            coord_of_residue=self.coord_of_residue.to(device),
            grid_index=self.grid_index.to(device),
            pair_mask=self.pair_mask.to(device),
        )
        moved.__dict__["grid_is_identity"] = self.grid_is_identity  # cached_property's slot
        return moved

    def to_grid(self, per_example: torch.Tensor) -> torch.Tensor:
        """[n_pairs, ...] (rows in task.tokens order) -> [n, n, ...] on the (x, y) grid.

        A view when no reordering is needed: at p=113, d_mlp=512 the copy is a
        noticeable share of the measures' cost.
        """
        if self.grid_is_identity:
            return per_example.reshape(self.n, self.n, *per_example.shape[1:])
        flat = per_example.index_select(0, self.grid_index.reshape(-1))
        return flat.reshape(self.n, self.n, *per_example.shape[1:])

    def output_grid(self, logits_all: torch.Tensor) -> torch.Tensor:
        """[n_pairs, d_vocab_out] logits -> [n, n, n] logit tensor indexed [x, y, z]."""
        grid = self.to_grid(logits_all)
        if self.generator is None:  # Z_p: output coordinate z is the class id itself
            return grid[..., : self.n]
        return grid.index_select(2, self.elements)

    def labels_z(self, labels_all: torch.Tensor) -> torch.Tensor:
        """[n_pairs] class labels -> [n, n] output coordinates z of the grid's answers."""
        z = self.coord_of_residue[self.to_grid(labels_all)]
        if bool((z < 0).any()):
            raise ValueError(f"{self.group}: a grid answer lies outside the group")
        return z


def _build(group: str, p: int, name: str, a: torch.Tensor, b: torch.Tensor) -> GroupFourier:
    """Construct a task's GroupFourier from its pairs (row order = task.tokens)."""
    if group not in _GROUPS:
        raise ValueError(f"no Fourier basis for group {group!r}; known: {sorted(_GROUPS)}")
    use_logs, y_sign = _GROUPS[group]
    sign = "+" if y_sign > 0 else "-"
    if use_logs:
        generator, elements, coord = discrete_log_table(p)
        n = p - 1
        space = f"discrete logs base g={generator} over the {n} non-zero residues (Z_{n})"
        coords = "x=log a, y=log b, z=log c"
    else:
        generator, n = None, p
        elements = torch.arange(p)
        coord = torch.arange(p)
        space, coords = f"Z_{p}", "x=a, y=b, z=c"

    cx, cy = coord[a], coord[b]
    keep = (cx >= 0) & (cy >= 0)
    grid_index = torch.full((n, n), -1, dtype=torch.long)
    grid_index[cx[keep], cy[keep]] = torch.nonzero(keep).squeeze(1)
    if int(keep.sum()) != n * n or bool((grid_index < 0).any()):
        raise ValueError(f"task {name!r} does not cover the full {n}x{n} grid of {group}")

    n_excluded = int((~keep).sum())
    note = f"{group}: {space}; {coords}; target cos(w(x{sign}y-z))"
    if use_logs:
        what = "a=0 or b=0" if bool((b == 0).any()) else "a=0 (b=0 is not in the task)"
        note += f"; {n_excluded} pairs with {what} and output class 0 excluded"
    return GroupFourier(
        group=group,
        p=p,
        n=n,
        y_sign=y_sign,
        generator=generator,
        basis=fourier_basis(n),
        elements=elements,
        coord_of_residue=coord,
        grid_index=grid_index,
        pair_mask=keep,
        n_excluded_pairs=n_excluded,
        note=note,
    )

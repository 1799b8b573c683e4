"""Fourier bases and group coordinates: the part every progress measure stands on."""

from __future__ import annotations

import pytest
import torch

from groktransfer.tasks.fourier import (
    CONST,
    COS,
    SIN,
    GroupFourier,
    discrete_log_table,
    fourier_basis,
    primitive_root,
)
from groktransfer.tasks.modular import Task


@pytest.mark.parametrize("n", [1, 2, 5, 22, 23, 112, 113])
def test_basis_is_orthonormal(n: int) -> None:
    b = fourier_basis(n)
    assert b.matrix.shape == (n, n)
    torch.testing.assert_close(b.matrix @ b.matrix.T, torch.eye(n, dtype=torch.float64))


@pytest.mark.parametrize("n", [22, 23])
def test_basis_rows_are_the_named_waves(n: int) -> None:
    b = fourier_basis(n)
    k = torch.arange(n, dtype=torch.float64)
    assert b.max_freq == n // 2
    for r in range(n):
        w, kind = int(b.freqs[r]), int(b.kinds[r])
        wave = {CONST: torch.ones(n, dtype=torch.float64),
                COS: torch.cos(2 * torch.pi * w * k / n),
                SIN: torch.sin(2 * torch.pi * w * k / n)}[kind]  # fmt: skip
        torch.testing.assert_close(b.matrix[r], wave / wave.norm())
        assert b.scales[r] == pytest.approx(float(wave.norm()))
    # every frequency 1..(n-1)//2 has a cos and a sin; an even n's Nyquist only a cos
    counts = torch.bincount(b.freqs, minlength=n // 2 + 1)
    assert counts[0] == 1 and bool((counts[1 : (n - 1) // 2 + 1] == 2).all())
    if n % 2 == 0:
        assert counts[n // 2] == 1 and b.kinds[-1] == COS and b.names[-1] == f"cos {n // 2}"
    assert b.names[:3] == ["const", "cos 1", "sin 1"]


def test_rows_in_selects_cos_and_sin_only() -> None:
    b = fourier_basis(22)
    rows = b.rows_in([3, 11])
    assert sorted(b.names[i] for i in torch.nonzero(rows).flatten()) == ["cos 11", "cos 3", "sin 3"]
    assert not bool(b.rows_in([]).any())


@pytest.mark.parametrize("p,g", [(2, 1), (3, 2), (7, 3), (23, 5), (31, 3), (41, 6), (113, 3)])
def test_primitive_root_is_the_smallest_generator(p: int, g: int) -> None:
    assert primitive_root(p) == g
    assert len({pow(g, k, p) for k in range(p - 1)}) == p - 1
    for h in range(2, g):  # nothing smaller generates
        assert len({pow(h, k, p) for k in range(p - 1)}) < p - 1


@pytest.mark.parametrize("p", [5, 23, 113])
def test_discrete_log_is_a_bijection_and_inverts_powers(p: int) -> None:
    g, powers, logs = discrete_log_table(p)
    assert g == primitive_root(p)
    assert sorted(powers.tolist()) == list(range(1, p))
    assert logs[0] == -1 and sorted(logs[1:].tolist()) == list(range(p - 1))
    for a in range(1, p):
        assert pow(g, int(logs[a]), p) == a and int(powers[logs[a]]) == a


def test_tasks_without_group_have_no_basis() -> None:
    for name in ("x2xyy2", "int_add"):
        task = Task(name, 11, 0.5, 0)
        assert GroupFourier.for_task(task) is None
        assert task.spec.no_structure_reason


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "divide"])
def test_grid_coordinates_turn_the_task_into_its_group_law(name: str) -> None:
    """z(label) = x + s*y (mod n) on every grid cell: the coordinates are right."""
    p = 13
    task = Task(name, p, 0.5, 0)
    gf = GroupFourier.for_task(task)
    assert gf is not None and gf.group == name and gf.basis.n == gf.n
    n = p - 1 if name in ("multiply", "divide") else p
    assert gf.n == n and gf.y_sign == (1 if name in ("add", "multiply") else -1)
    a, b = task.pairs
    x = torch.arange(n)
    ga, gb = gf.to_grid(a), gf.to_grid(b)
    # rows at (x, y) have inputs with those coordinates, and elements inverts coordinates
    assert bool((gf.coord_of_residue[ga] == x[:, None]).all())
    assert bool((gf.coord_of_residue[gb] == x[None, :]).all())
    assert bool((gf.coord_of_residue[gf.elements] == x).all())
    z = gf.labels_z(task.labels)
    assert bool((z == gf.input_combo).all())


def test_excluded_pairs_are_counted_and_described() -> None:
    p = 13
    names = ("add", "subtract", "multiply", "divide")
    gfs = {name: GroupFourier.for_task(Task(name, p, 0.5, 0)) for name in names}
    assert gfs["add"].n_excluded_pairs == 0 and gfs["subtract"].n_excluded_pairs == 0
    assert gfs["multiply"].n_excluded_pairs == 2 * p - 1  # a=0 or b=0
    assert gfs["divide"].n_excluded_pairs == p - 1  # a=0; b=0 is not in the task's data
    for name in ("multiply", "divide"):
        gf = gfs[name]
        assert gf.generator == primitive_root(p)
        assert f"{gf.n_excluded_pairs} pairs" in gf.note and "output class 0" in gf.note
        assert int(gf.pair_mask.sum()) == gf.n**2
        assert 0 not in gf.elements.tolist() and gf.coord_of_residue[0] == -1
    assert "x-y-z" in gfs["subtract"].note and "x+y-z" in gfs["add"].note


def test_to_grid_is_a_view_for_additive_groups() -> None:
    task = Task("add", 7, 0.5, 0)
    gf = GroupFourier.for_task(task)
    values = torch.randn(task.n_pairs, 3)
    grid = gf.to_grid(values)
    assert grid.data_ptr() == values.data_ptr()
    torch.testing.assert_close(grid[2, 5], values[2 * 7 + 5])
    logits = torch.randn(task.n_pairs, task.d_vocab_out)
    torch.testing.assert_close(gf.output_grid(logits)[4, 1, 6], logits[4 * 7 + 1, 6])


def test_output_grid_reorders_classes_by_discrete_log() -> None:
    p = 11
    task = Task("multiply", p, 0.5, 0)
    gf = GroupFourier.for_task(task)
    g, powers, logs = discrete_log_table(p)
    logits = torch.randn(task.n_pairs, task.d_vocab_out)
    L = gf.output_grid(logits)
    a, b, c = 7, 3, 5
    row = a * p + b  # pairs are row-major over 0..p-1
    torch.testing.assert_close(L[logs[a], logs[b], logs[c]], logits[row, c])

"""Progress measures against known answers.

Synthetic logits and neurons are built here from independently computed coordinates
(plain residues, or discrete logs by brute force), so the tests do not trust the
module's own coordinate maps.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F

from groktransfer.tasks.fourier import GroupFourier, fourier_basis, primitive_root
from groktransfer.measures.modular import (
    BASE_COLUMNS,
    FOURIER_COLUMNS,
    assign_neuron_freqs,
    compute_progress_measures,
    gini,
    input_freq_part,
    neuron_freq_fractions,
    target_freq_part,
    weight_sq_norms,
)
from groktransfer.runs.rundir import FREQ_ROW_KEYS
from groktransfer.tasks.modular import Task

MULTIPLICATIVE = ("multiply", "divide")


# ---------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------
def _coords(task: Task) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """x, y per task row and z per output class (-1 outside the group), and n."""
    p = task.p
    a, b = task.pairs
    if task.name in MULTIPLICATIVE:
        g = primitive_root(p)
        log = torch.full((p,), -1, dtype=torch.long)
        for k in range(p - 1):
            log[pow(g, k, p)] = k
        return log[a], log[b], log, p - 1
    return a, b, torch.arange(task.d_vocab_out), p


def wave_logits(
    task: Task, freqs: Dict[int, float], sign: int, kind: str = "cos", noise_seed: int = 0
) -> torch.Tensor:
    """sum_w alpha_w cos(2 pi w (x + sign*y - z) / n) on the group, noise elsewhere."""
    x, y, z, n = _coords(task)
    arg = 2 * torch.pi * (x[:, None] + sign * y[:, None] - z[None, :]).double() / n
    wave = torch.cos if kind == "cos" else torch.sin
    logits = sum(alpha * wave(w * arg) for w, alpha in freqs.items())
    inside = (x >= 0)[:, None] & (y >= 0)[:, None] & (z >= 0)[None, :]
    gen = torch.Generator().manual_seed(noise_seed)
    noise = torch.randn(logits.shape, generator=gen, dtype=torch.float64)
    return torch.where(inside, logits, 3.0 * noise)


def wave_neurons(task: Task, freqs: List[int], per_freq: int, sign: int, seed: int = 0) -> torch.Tensor:
    """Neurons cos(2 pi w (x + sign*y)/n + phase) plus a first, dead neuron."""
    x, y, _, n = _coords(task)
    gen = torch.Generator().manual_seed(seed)
    w = torch.tensor(freqs).repeat_interleave(per_freq)
    phase = 2 * torch.pi * torch.rand(len(w), generator=gen)
    acts = torch.cos(2 * torch.pi * w[None, :] * (x + sign * y)[:, None].double() / n + phase)
    return torch.cat([torch.zeros(len(x), 1, dtype=torch.float64), acts], dim=1).float()


def random_params(
    task: Task, d_model: int = 8, d_mlp: int = 16, seed: int = 0
) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "embed.W_E": torch.randn(task.d_vocab, d_model, generator=gen),
        "pos_embed.W_pos": torch.randn(3, d_model, generator=gen),
        "blocks.0.attn.W_Q": torch.randn(2, d_model, 4, generator=gen),
        "blocks.0.attn.IGNORE": torch.tensor(-1e5),
        "blocks.0.mlp.W_in": torch.randn(d_model, d_mlp, generator=gen),
        "blocks.0.mlp.W_out": torch.randn(d_mlp, d_model, generator=gen),
        "unembed.W_U": torch.randn(d_model, task.d_vocab_out, generator=gen),
    }


def _sign(name: str) -> int:
    return 1 if name in ("add", "multiply") else -1


# ---------------------------------------------------------------------------------------
# Known answers: logits with exactly the target structure
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,p", [("add", 23), ("subtract", 31), ("multiply", 23), ("divide", 31)])
def test_pure_target_logits_are_recognised(name: str, p: int) -> None:
    task = Task(name, p, 0.3, 0)
    n = p - 1 if name in MULTIPLICATIVE else p
    logits = wave_logits(task, {3: 4.0, 7: 2.5}, _sign(name))
    acts = wave_neurons(task, [3, 7], per_freq=6, sign=_sign(name))
    pm = compute_progress_measures(task, logits, acts, random_params(task, d_mlp=acts.shape[1]))
    fm = pm.fourier
    assert fm is not None and fm.modulus == n

    cos = dict(zip(fm.freqs.tolist(), fm.logit_cos_coef.tolist()))
    assert cos[3] == pytest.approx(4.0, abs=1e-9) and cos[7] == pytest.approx(2.5, abs=1e-9)
    others = fm.logit_cos_coef[~torch.isin(fm.freqs, torch.tensor([3, 7]))]
    assert float(others.abs().max()) < 1e-9 and float(fm.logit_sin_coef.abs().max()) < 1e-9
    assert fm.logit_residual_frac == pytest.approx(0.0, abs=1e-9)

    s = pm.scalars()
    assert fm.key_freqs == [3, 7] and s["key_freqs"] == "3 7" and s["n_key_freqs"] == 2
    assert s["n_dead_neurons"] == 1 and fm.neuron_freq[0] == -1
    # restricted keeps everything; excluded leaves a uniform guess over the group's outputs
    assert s["restricted_loss"] == pytest.approx(s["restricted_ref_loss"], rel=1e-9)
    assert s["restricted_strict_loss"] == pytest.approx(s["restricted_ref_loss"], rel=1e-9)
    assert s["restricted_acc"] == 1.0 and s["restricted_strict_acc"] == 1.0
    assert s["excluded_loss"] == pytest.approx(math.log(n), rel=1e-9)
    assert s["excluded_strict_loss"] == pytest.approx(math.log(n), rel=1e-9)
    if name in MULTIPLICATIVE:
        assert s["fourier_excluded_pairs"] == (2 * p - 1 if name == "multiply" else p - 1)
        assert "excluded" in s["fourier_note"]
    else:  # all pairs are the grid: the reference is the ordinary full loss
        full = F.cross_entropy(logits.double(), task.labels)
        assert s["restricted_ref_loss"] == pytest.approx(float(full), rel=1e-12)


def test_subtraction_structure_is_read_by_subtract_not_by_add() -> None:
    """The bug to avoid: reading a subtraction model with addition's directions."""
    p = 23
    params = None
    results = {}
    for name in ("subtract", "add"):
        task = Task(name, p, 0.3, 0)
        logits = wave_logits(task, {3: 4.0, 7: 2.5}, sign=-1)  # cos(w(a - b - c)) for both
        acts = wave_neurons(task, [3, 7], per_freq=4, sign=-1)
        params = params or random_params(task, d_mlp=acts.shape[1])
        results[name] = compute_progress_measures(task, logits, acts, params)
    sub, add = results["subtract"].fourier, results["add"].fourier
    assert sub.logit_residual_frac == pytest.approx(0.0, abs=1e-9)
    assert float(sub.logit_cos_coef[[2, 6]].min()) == pytest.approx(2.5)
    assert add.logit_residual_frac == pytest.approx(1.0, abs=1e-9)
    assert float(add.logit_cos_coef.abs().max()) < 1e-9 and float(add.logit_frac.abs().max()) < 1e-9
    # the a-b neurons still sit at w in 2-D, but add's restricted logits keep nothing
    assert add.key_freqs == [3, 7]
    assert add.losses["restricted_loss"] == pytest.approx(math.log(p), rel=1e-9)
    assert add.losses["excluded_loss"] == pytest.approx(add.losses["excluded_ref_loss"], rel=1e-9)


def test_multiply_and_divide_tell_their_structures_apart() -> None:
    p = 23  # n = 22; w = 4 is not the Nyquist frequency, where x+y and x-y coincide
    for name, other in (("multiply", "divide"), ("divide", "multiply")):
        task = Task(name, p, 0.3, 0)
        logits = wave_logits(task, {4: 3.0}, _sign(other))  # the other task's structure
        acts = wave_neurons(task, [4], per_freq=3, sign=_sign(name))
        params = random_params(task, d_mlp=acts.shape[1])
        fm = compute_progress_measures(task, logits, acts, params).fourier
        assert fm.logit_residual_frac == pytest.approx(1.0, abs=1e-9)
        assert float(fm.logit_cos_coef.abs().max()) < 1e-9


def test_coefficients_are_amplitudes_and_nyquist_has_only_a_cosine() -> None:
    task = Task("multiply", 23, 0.3, 0)  # n = 22, Nyquist w = 11
    logits = wave_logits(task, {11: 1.5, 2: -0.5}, +1) + wave_logits(task, {5: 2.0}, +1, kind="sin")
    acts = wave_neurons(task, [2], per_freq=2, sign=1)
    fm = compute_progress_measures(task, logits, acts, random_params(task, d_mlp=acts.shape[1])).fourier
    assert fm.freqs.tolist() == list(range(1, 12))
    assert fm.logit_cos_coef[10] == pytest.approx(1.5) and fm.logit_cos_coef[1] == pytest.approx(-0.5)
    assert fm.logit_sin_coef[4] == pytest.approx(2.0) and fm.logit_sin_coef[10] == 0.0
    # shares of norm^2: ||c_11||^2 = n^3 (no sine partner), ||c_w||^2 = n^3 / 2 otherwise
    energy = torch.tensor([1.5**2 * 2, 0.5**2, 2.0**2], dtype=torch.float64)
    torch.testing.assert_close(fm.logit_frac[[10, 1, 4]], energy / energy.sum(), rtol=1e-9, atol=1e-12)
    assert fm.logit_residual_frac == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------------------
# Projections against brute force
# ---------------------------------------------------------------------------------------
def _project(directions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Least-squares projection of the columns of values onto span(directions columns)."""
    q, _ = torch.linalg.qr(directions)
    return q @ (q.T @ values)


@pytest.mark.parametrize("name,p", [("add", 11), ("subtract", 11), ("multiply", 11), ("divide", 13)])
def test_key_parts_match_brute_force_projections(name: str, p: int) -> None:
    task = Task(name, p, 0.5, 0)
    gf = GroupFourier.for_task(task)
    n, s = gf.n, gf.y_sign
    freqs = [2, n // 2]
    L = torch.randn(n, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = torch.arange(n, dtype=torch.float64)
    combo = (x[:, None] + s * x[None, :]).reshape(-1)  # over inputs, row-major
    # paper: per output, project onto const, cos/sin(w(x + s y))
    waves = [f(2 * torch.pi * w * combo / n) for w in freqs for f in (torch.cos, torch.sin)]
    cols = [torch.ones_like(combo)] + waves
    inputs = torch.stack([c for c in cols if float(c.norm()) > 1e-9], dim=1)  # Nyquist sine = 0
    expected = _project(inputs, L.reshape(n * n, n)).reshape(n, n, n)
    torch.testing.assert_close(input_freq_part(L, gf, freqs, with_mean=True), expected)
    # strict: project the whole tensor onto cos/sin(w(x + s y - z))
    arg = (x[:, None, None] + s * x[None, :, None] - x[None, None, :]).reshape(-1)
    cols = [f(2 * torch.pi * w * arg / n) for w in freqs for f in (torch.cos, torch.sin)]
    cols = [c for c in cols if float(c.norm()) > 1e-9]
    expected = _project(torch.stack(cols, dim=1), L.reshape(-1, 1)).reshape(n, n, n)
    torch.testing.assert_close(target_freq_part(L, gf, freqs), expected)


@pytest.mark.parametrize("n", [11, 12])
def test_neuron_fractions_match_a_full_2d_transform(n: int) -> None:
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(n, n, 6, generator=gen, dtype=torch.float64) + 5.0
    acts[..., 0] += 3 * torch.cos(2 * torch.pi * 2 * torch.arange(n) / n)[:, None]  # a (w,0) term
    basis = fourier_basis(n)
    centred = acts - acts.mean(dim=(0, 1))
    energy = torch.einsum("ix,jy,xyd->ijd", basis.matrix, basis.matrix, centred).square()
    fx, fy = basis.freqs[:, None], basis.freqs[None, :]
    expected = []
    for w in range(1, n // 2 + 1):
        mask = ((fx == w) | (fx == 0)) & ((fy == w) | (fy == 0)) & ((fx + fy) > 0)
        expected.append(energy[mask].sum(dim=0) / energy.sum(dim=(0, 1)))
    frac, dead = neuron_freq_fractions(acts, basis)
    torch.testing.assert_close(frac, torch.stack(expected, dim=1), rtol=1e-4, atol=1e-5)
    assert not bool(dead.any())


# ---------------------------------------------------------------------------------------
# Neurons
# ---------------------------------------------------------------------------------------
def test_single_frequency_neurons_dead_and_mixed_neurons() -> None:
    n = 23
    x = torch.arange(n, dtype=torch.float64)
    X, Y = x[:, None], x[None, :]
    wave = lambda w, z: torch.cos(2 * torch.pi * w * z / n + 0.3)  # noqa: E731
    cols = [
        torch.zeros(n, n),  # dead ReLU
        torch.full((n, n), 3.7),  # constant: dead too
        wave(5, X + Y),  # (w, w) term
        torch.relu(wave(4, X) + wave(4, Y)),  # ReLU of linear terms: mostly at w=4
        wave(6, X) * torch.ones_like(Y),  # linear in x only
        wave(2, X + Y) + wave(9, X + Y),  # two frequencies: half each
        10.0 + 1e-3 * wave(7, X - Y),  # small variation on a large mean is still alive
    ]
    acts = torch.stack([c.expand(n, n) for c in cols], dim=-1).float()
    frac, dead = neuron_freq_fractions(acts, fourier_basis(n))
    freq, best, counted = assign_neuron_freqs(frac, dead, 0.85)
    assert freq.tolist() == [-1, -1, 5, 4, 6, freq[5].item(), 7]
    assert freq[5].item() in (2, 9)
    assert best[0] == 0 and best[1] == 0
    assert best[2] == pytest.approx(1.0, abs=1e-5) and best[4] == pytest.approx(1.0, abs=1e-5)
    assert best[3] > 0.85 and best[5] == pytest.approx(0.5, abs=1e-4)
    assert best[6] == pytest.approx(1.0, abs=1e-3)
    assert counted.tolist() == [False, False, True, True, True, False, True]


def test_key_frequency_minimum_neuron_count() -> None:
    task = Task("add", 23, 0.3, 0)
    acts = torch.cat([wave_neurons(task, [3], 5, +1), wave_neurons(task, [8], 1, +1)[:, 1:]], dim=1)
    logits = wave_logits(task, {3: 1.0}, +1)
    params = random_params(task, d_mlp=acts.shape[1])
    assert compute_progress_measures(task, logits, acts, params).fourier.key_freqs == [3, 8]
    pm = compute_progress_measures(task, logits, acts, params, key_freq_min_neurons=2)
    assert pm.fourier.key_freqs == [3] and pm.fourier.neuron_count[7] == 1
    rows = {r["freq"]: r for r in pm.per_frequency_rows()}
    assert rows[3]["neuron_count"] == 5 and rows[3]["is_key"] == 1 and rows[8]["is_key"] == 0
    s = pm.scalars()
    assert s["frac_neurons_explained"] == pytest.approx(6 / 7) and s["n_dead_neurons"] == 1


# ---------------------------------------------------------------------------------------
# Gini and weights
# ---------------------------------------------------------------------------------------
def test_gini_known_values() -> None:
    m = 50
    one_hot = torch.zeros(m)
    one_hot[7] = 2.0
    assert gini(one_hot) == pytest.approx((m - 1) / m)
    assert gini(torch.ones(m)) == pytest.approx(0.0, abs=1e-12)
    v = torch.rand(m, generator=torch.Generator().manual_seed(0))
    assert gini(v * 123.0) == pytest.approx(gini(v))
    assert 0.0 < gini(v) < 1.0
    assert gini(torch.zeros(m)) == 0.0


@pytest.mark.parametrize("name", ["add", "multiply"])
def test_gini_of_single_frequency_embeddings_and_unembeddings(name: str) -> None:
    p = 23
    task = Task(name, p, 0.3, 0)
    _, _, z, n = _coords(task)
    coord = z[:p]  # coordinate of each residue (-1 for 0: outside the multiplicative group)
    params = random_params(task, d_model=6, d_mlp=10)
    row_wave = torch.cos(2 * torch.pi * 4 * coord.double() / n).float()
    params["embed.W_E"][:p] = row_wave[:, None] * torch.randn(6)  # one Fourier component
    params["unembed.W_U"][:] = torch.randn(6)[:, None] * row_wave[None, :]
    acts = wave_neurons(task, [4], 9, _sign(name))
    pm = compute_progress_measures(task, wave_logits(task, {4: 1.0}, _sign(name)), acts, params)
    assert pm.scalars()["gini_W_E"] == pytest.approx((n - 1) / n, abs=1e-6)
    assert pm.scalars()["gini_W_L"] == pytest.approx((n - 1) / n, abs=1e-6)
    rows = {r["freq"]: r for r in pm.per_frequency_rows()}
    assert rows[4]["embed_norm"] > 0 and rows[5]["embed_norm"] == pytest.approx(0.0, abs=1e-5)
    logits = wave_logits(task, {4: 1.0}, 1)
    random = compute_progress_measures(task, logits, acts, random_params(task, 6, 10))
    assert random.scalars()["gini_W_E"] < 0.5


def test_w_l_uses_the_last_mlp_block_unless_told() -> None:
    p, n = 23, 23
    task = Task("add", p, 0.3, 0)
    params = random_params(task, d_model=6, d_mlp=10)
    wave = torch.cos(2 * torch.pi * 5 * torch.arange(p) / n)
    params["unembed.W_U"][:] = torch.randn(6)[:, None] * wave[None, :]
    params["blocks.0.mlp.W_out"] = torch.randn(10, 6)  # W_L single-frequency either way...
    params["blocks.1.mlp.W_out"] = torch.zeros(10, 6)  # ...unless it is all zeros
    acts = wave_neurons(task, [5], 9, 1)
    logits = wave_logits(task, {5: 1.0}, 1)
    assert compute_progress_measures(task, logits, acts, params).fourier.gini_wl == 0.0
    pm0 = compute_progress_measures(task, logits, acts, params, mlp_block=0)
    assert pm0.fourier.gini_wl == pytest.approx((n - 1) / n, abs=1e-5)  # float32 weights


def test_weight_norms_by_component_skip_buffers() -> None:
    params = {
        "embed.W_E": torch.full((3, 2), 1.0),  # 6
        "pos_embed.W_pos": torch.full((1, 2), 2.0),  # 8
        "blocks.0.attn.W_Q": torch.ones(4),  # 4
        "blocks.1.attn.b_O": torch.ones(1),  # 1
        "blocks.0.attn.IGNORE": torch.tensor(-1e5),  # buffer, not a weight
        "blocks.0.attn.mask": torch.ones(3, 3, dtype=torch.bool),
        "blocks.0.mlp.W_out": torch.full((2,), 3.0),  # 18
        "blocks.1.mlp.b_in": torch.ones(2),  # 2
        "blocks.0.ln1.w": torch.ones(5),  # 5
        "ln_final.b": torch.ones(1),  # 1
        "unembed.W_U": torch.ones(7),  # 7
    }
    expected = {"embed": 6, "pos_embed": 8, "attn": 5, "mlp": 20, "unembed": 7, "ln": 6, "other": 0}
    assert weight_sq_norms(params) == pytest.approx({**expected, "total": 52})


# ---------------------------------------------------------------------------------------
# Output contract
# ---------------------------------------------------------------------------------------
def test_losses_use_the_train_mask_and_columns_are_stable() -> None:
    task = Task("subtract", 13, 0.4, 3)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(task.n_pairs, task.d_vocab_out, generator=gen)
    acts = torch.relu(torch.randn(task.n_pairs, 12, generator=gen))
    pm = compute_progress_measures(task, logits, acts, random_params(task, d_mlp=12))
    s = pm.scalars()
    assert list(s) == list(BASE_COLUMNS + FOURIER_COLUMNS)
    assert all(isinstance(v, (int, float, str)) for v in s.values())
    m = task.train_mask
    assert s["train_loss"] == pytest.approx(float(F.cross_entropy(logits[m].double(), task.labels[m])))
    assert s["test_loss"] == pytest.approx(float(F.cross_entropy(logits[~m].double(), task.labels[~m])))
    hits = logits[~m].argmax(1) == task.labels[~m]
    assert s["test_acc"] == pytest.approx(float(hits.float().mean()))
    assert s["excluded_ref_loss"] == pytest.approx(s["train_loss"])
    assert s["fourier_status"] == "present" and s["fourier_group"] == "subtract"
    rows = pm.per_frequency_rows()
    assert [r["freq"] for r in rows] == list(range(1, 7))
    assert all(list(r) == list(FREQ_ROW_KEYS) for r in rows)
    assert pm.fourier.neuron_freq.shape == (12,) and pm.fourier.neuron_frac_explained.shape == (12,)


@pytest.mark.parametrize("name", ["x2xyy2"])
def test_tasks_without_structure_report_absence_not_numbers(name: str) -> None:
    task = Task(name, 11, 0.5, 0)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(task.n_pairs, task.d_vocab_out, generator=gen)
    acts = torch.randn(task.n_pairs, 8, generator=gen)
    pm = compute_progress_measures(task, logits, acts, random_params(task, d_mlp=8))
    assert pm.fourier is None and pm.no_structure_reason == task.spec.no_structure_reason
    s = pm.scalars()
    assert list(s) == list(BASE_COLUMNS)
    assert s["fourier_status"] == "absent" and s["fourier_note"] == task.spec.no_structure_reason
    assert pm.per_frequency_rows() == []
    m = task.train_mask
    assert s["train_loss"] == pytest.approx(float(F.cross_entropy(logits[m].double(), task.labels[m])))
    assert s["weight_norm_total"] > 0


def test_rejects_logits_that_are_not_for_all_pairs() -> None:
    task = Task("add", 7, 0.5, 0)
    logits = torch.randn(task.n_pairs - 1, task.d_vocab_out)
    with pytest.raises(ValueError, match="all of task.tokens"):
        acts = torch.randn(task.n_pairs, 4)
        compute_progress_measures(task, logits, acts, random_params(task, d_mlp=4))


def test_int_add_input_side_measures_find_planted_frequencies() -> None:
    """int_add: neurons planted at frequencies 2 and 4 of a (and b) on the grid, and an
    embedding on frequency 4 only -> key freqs [2, 4], Gini of W_E high; output-side
    columns absent with the reason."""
    from groktransfer.measures.modular import INPUT_FOURIER_COLUMNS

    p = 11
    task = Task("int_add", p, 0.5, 0)
    a, b = (x.double() for x in task.pairs)
    w = 2 * math.pi / p
    acts = torch.stack([torch.cos(w * 2 * a) + torch.cos(w * 2 * b), torch.sin(w * 4 * (a + b)),
                        torch.cos(w * 4 * a), torch.zeros_like(a), a * b / p**2], dim=1)  # fmt: skip
    params = random_params(task, d_mlp=5)
    t = torch.arange(p + 1, dtype=torch.float64)
    params["embed.W_E"] = torch.stack([torch.cos(w * 4 * t), torch.sin(w * 4 * t)] + [0 * t] * 6, dim=1)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(task.n_pairs, task.d_vocab_out, generator=gen)
    pm = compute_progress_measures(task, logits, acts, params, key_freq_threshold=0.85)
    assert pm.fourier is None and pm.input_fourier is not None
    s = pm.scalars()
    assert list(s) == list(BASE_COLUMNS + INPUT_FOURIER_COLUMNS)
    assert s["fourier_status"] == "input_only" and task.spec.no_structure_reason in s["fourier_note"]
    assert s["key_freqs"] == "2 4" and s["n_key_freqs"] == 2 and s["n_dead_neurons"] == 1
    assert s["frac_neurons_explained"] == pytest.approx(3 / 5)
    assert s["gini_W_E"] > 0.8
    assert "restricted_loss" not in s and "gini_W_L" not in s
    rows = pm.per_frequency_rows()
    assert [r["freq"] for r in rows] == list(range(1, 6)) and all(list(r) == list(FREQ_ROW_KEYS) for r in rows)
    assert [r["neuron_count"] for r in rows] == [0, 1, 0, 2, 0]
    norms = [r["embed_norm"] for r in rows]
    assert max(range(5), key=lambda i: norms[i]) == 3 and all(math.isnan(r["wl_norm"]) for r in rows)

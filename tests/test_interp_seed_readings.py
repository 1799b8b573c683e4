"""The seed analyses' hand-made readings (``interp.circuits_qkov``, ``unembed_geometry``,
``by_class``, ``neurons_int``), the family registry and the findings, each on a hand-built
model whose answer is known."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from groktransfer.model.transformer import TransformerConfig
from groktransfer.tasks.digits import DigitSettings, DigitTask
from groktransfer.interp import by_class, circuits_qkov, neurons_int, unembed_geometry
from groktransfer.interp.ablation import AblationEffect
from groktransfer.interp.answers import answer_set
from groktransfer.interp.reading import FAMILY_READINGS, family_key
from groktransfer.interp.findings import findings_table
from groktransfer.interp.forward import Score
from groktransfer.interp.representations import embedding_pca
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.tasks.modular import Task


@pytest.fixture(scope="module")
def task() -> DigitTask:
    return DigitTask(DigitSettings("digit_add", n_digits=2, frac_train=0.3), 0)


def attn_model(task, n_layers=1, n_heads=2, d_model=16, d_head=16, d_vocab_out=None, unembed_bias=False, ln=None):
    cfg = TransformerConfig(name="hand", attn_only=True, n_layers=n_layers, n_heads=n_heads, d_model=d_model, d_head=d_head,
                      d_mlp=1, normalization=ln, n_ctx=task.seq_len, d_vocab=task.d_vocab,
                      d_vocab_out=d_vocab_out or task.d_vocab_out, attn_bias=ln is not None, mlp_bias=False,
                      unembed_bias=unembed_bias)  # fmt: skip
    model = HookedGrokTransformer(cfg, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model.eval()


def _set(model, **weights) -> None:
    sd = model.state_dict()
    sd.update({k.replace("__", "."): v for k, v in weights.items()})
    model.load_state_dict(sd)


# --------------------------------------------------------------------------- QK / OV / paths
def test_mean_query_qk_finds_the_position_each_head_was_built_to_read(task) -> None:
    aset = answer_set(task)
    seq = task.seq_len  # 8: a1 a2 + b1 b2 = s1 s2
    model = attn_model(task, d_model=seq, d_head=seq)
    # head 0 reads the tens digit of a (position 0) from the first answer position and the ones digit of b
    # (position 4) from the second; head 1 reads position 2 ('+') from everywhere it can
    target0 = {q: 0 for q in range(seq)} | {aset.positions[1]: 4}
    K = torch.zeros(2, seq, seq)
    for q, j in target0.items():
        K[0, j, q] = 60.0
    for q in range(seq):
        K[1, min(2, q), q] = 60.0
    _set(model, pos_embed__W_pos=torch.eye(seq), blocks__0__attn__W_Q=torch.eye(seq).expand(2, -1, -1).clone(),
         blocks__0__attn__W_K=K)  # fmt: skip
    qk = circuits_qkov.mean_query_qk(model, task, layer=0)
    assert qk.shape == (2, seq, seq)
    torch.testing.assert_close(qk.sum(-1), torch.ones(2, seq, dtype=torch.float64))
    assert float(qk[0, aset.positions[0], 0]) > 0.99 and float(qk[0, aset.positions[1], 4]) > 0.99
    assert float(qk[1, 6, 2]) > 0.99 and float(qk[0, 3, 4]) == 0.0  # causal: position 3 cannot see 4
    cd = circuits_qkov.corresponding_digit_share(qk, task).set_index(["head", "answer"]).share
    # digit 0 (tens) reads positions 0 and 3, digit 1 (ones) positions 1 and 4
    assert cd[(0, "digit 0")] > 0.99 and cd[(0, "digit 1")] > 0.99 and cd[(1, "digit 0")] < 0.01


def test_ov_circuit_and_composition_equal_the_products_built_by_hand(task) -> None:
    d = 12
    model = attn_model(task, n_layers=2, d_model=d, d_head=d)
    shift = torch.eye(d)
    shift[:10, :10] = torch.roll(torch.eye(10), 1, dims=1)  # digit i -> i+1 mod 10
    _set(model, embed__W_E=torch.eye(d), unembed__W_U=torch.eye(d)[:, :10],
         **{f"blocks__{l}__attn__W_V": torch.eye(d).expand(2, -1, -1).clone() for l in (0, 1)},
         blocks__0__attn__W_O=torch.stack([shift, 2 * torch.eye(d)]), blocks__1__attn__W_O=torch.stack([shift, shift]))  # fmt: skip
    one = torch.roll(torch.eye(10), 1, dims=1).double()
    torch.testing.assert_close(circuits_qkov.ov_circuit(model, task, 0, 0), one)
    torch.testing.assert_close(circuits_qkov.ov_composition(model, task, (0, 0), (1, 1)), one @ one)  # i -> i+2
    torch.testing.assert_close(circuits_qkov.ov_composition(model, task, (0, 1), (1, 0)), 2 * one)
    t = circuits_qkov.ov_composition_table(model, task).set_index("path")
    assert list(t.index) == [f"L0H{a} → L1H{b}" for a in range(2) for b in range(2)]
    assert t.loc["L0H1 → L1H0", "norm"] == pytest.approx(2 * math.sqrt(10))
    single = circuits_qkov.ov_circuit_table(model, task).set_index("head")
    assert list(single.index) == ["L0H0", "L0H1", "L1H0", "L1H1"]
    assert single.norm.tolist() == pytest.approx([math.sqrt(10), 2 * math.sqrt(10), math.sqrt(10), math.sqrt(10)])
    # a one-hot row has the same power at every frequency 1..4 and half of it at 5: share 2/9 at frequency 1
    assert single.freq1_share.tolist() == pytest.approx([2 / 9] * 4)


def test_frequency_share_of_a_pure_cosine_is_all_at_its_frequency() -> None:
    i = torch.arange(10, dtype=torch.float64)
    M = torch.stack([torch.cos(2 * math.pi * 3 * i / 10 + 0.4), 5 + torch.sin(2 * math.pi * 3 * i / 10)])
    share = circuits_qkov.frequency_share(M)
    assert int(share.argmax()) == 3 and float(share[3]) == pytest.approx(1.0)
    # shares are of the energy over the ten columns: cos at frequency 1 has sum of squares 5, the alternating
    # +1, -1 (frequency 5, no conjugate partner) 10
    both = torch.cos(2 * math.pi * i / 10) + torch.cos(math.pi * i)
    share = circuits_qkov.frequency_share(both[None])
    assert float(share[1]) == pytest.approx(1 / 3) and float(share[5]) == pytest.approx(2 / 3)


def test_path_attribution_reproduces_the_logit_of_a_layernorm_model(task) -> None:
    from tests.test_interp_digits import attn_only  # a random 2-layer LN model with every bias trained

    model = attn_only(task, seed=3)
    attr = circuits_qkov.path_attribution(model, task)
    assert attr.completeness_error() < 1e-4
    parts = set(attr.parts)
    assert {"embed", "L0H2", "L0H1 → L1H2", "pos_embed → L1H0", "L1H1 bias", "L1 b_O", "L0 b_O → L1H1"} <= parts
    # the paths through a last-layer head add up to that head's direct attribution
    from groktransfer.interp.attribution import direct_logit_attribution

    direct = direct_logit_attribution(model, task)
    via = sum(v for k, v in attr.parts.items() if k.endswith("→ L1H1") or k == "L1H1 bias")
    torch.testing.assert_close(attr.correct(via), direct.correct(direct.parts["L1H1"]), atol=1e-4, rtol=1e-4)


def test_path_attribution_refuses_a_model_with_an_mlp() -> None:
    t = Task("int_add", 5, 0.5, 0)
    model = HookedGrokTransformer(TransformerConfig(n_layers=2, d_model=8, n_heads=2, d_head=4, d_mlp=8, n_ctx=3, d_vocab=6,
                                              d_vocab_out=10), seed=0)  # fmt: skip
    with pytest.raises(ValueError, match="attention-only"):
        circuits_qkov.path_attribution(model, t)


# --------------------------------------------------------------------------- W_U geometry
def _wu_model(task, freq: int, d_model: int = 16):
    """W_U's ten digit columns: amplitude 2 cos / 1.5 sin of ``freq`` in dims 3 and 7; two unused columns."""
    model = attn_model(task, d_model=d_model, d_head=4, d_vocab_out=12)
    i = torch.arange(10, dtype=torch.float32)
    W_U = torch.zeros(d_model, 12)
    W_U[3, :10] = 2 * torch.cos(2 * math.pi * freq * i / 10 + 0.3)
    W_U[7, :10] = 2 * torch.sin(2 * math.pi * freq * i / 10 + 0.3)
    W_U[:, 10:] = torch.randn(d_model, 2, generator=torch.Generator().manual_seed(0))  # '+' and '=' outputs: ignored
    _set(model, unembed__W_U=W_U)
    return model


def test_unembed_geometry_of_a_frequency_one_unembedding_is_a_circle_in_digit_order(task) -> None:
    g = unembed_geometry.unembed_geometry(_wu_model(task, 1), task)
    assert g.top_freq == 1 and float(g.freq_share[1]) == pytest.approx(1.0, abs=1e-9)
    assert g.dims_for_90 == 2 and g.top2_share == pytest.approx(1.0)
    assert g.radius_cv < 1e-6 and g.circle_freq == pytest.approx(1.0) and g.angle_step_spread < 1e-6
    assert g.rebuilt_error < 1e-6
    torch.testing.assert_close(g.gram, g.gram.roll((1, 1), dims=(0, 1)), atol=1e-5, rtol=1e-5)  # circulant: depends on i - j only
    dims = g.dims_table(2)
    assert set(dims.dim) == {3, 7} and dims.amplitude_f1.tolist() == pytest.approx([2.0, 2.0])
    phases = dict(zip(dims.dim, dims.phase_f1))
    assert phases[3] == pytest.approx(0.3, abs=1e-6) and phases[7] == pytest.approx(0.3 - math.pi / 2, abs=1e-6)
    # W_U^T W_U of a radius-2 circle: 4 cos(2π (i - j) / 10), shown as a table (interp_unembed_gram.csv)
    i = torch.arange(10, dtype=torch.float64)
    torch.testing.assert_close(g.gram, 4 * torch.cos(2 * math.pi * (i[:, None] - i[None, :]) / 10), atol=1e-5, rtol=0)
    gram = g.gram_table()
    assert list(gram.columns) == ["token", *map(str, range(10))] and gram.loc[3, "3"] == pytest.approx(4.0)
    # every dimension at every frequency 1..5: amplitude 2 at frequency 1 in dims 3 and 7, nothing elsewhere
    f = g.fourier_table().set_index(["dim", "freq"])
    assert len(f) == 16 * 5 and f.loc[(3, 1), "amplitude"] == pytest.approx(2.0) and f.loc[(7, 1), "phase"] == pytest.approx(0.3 - math.pi / 2)
    assert f.amplitude.drop([(3, 1), (7, 1)]).abs().max() < 1e-6 and f.loc[(3, 1), "dim_power_share"] == pytest.approx(0.5)


def test_unembed_amplitude_of_the_mean_free_alternating_column_is_its_amplitude(task) -> None:
    """Frequency 5 of ten tokens (+A, -A, ...) has no conjugate partner: its amplitude is A, not 2A."""
    model = attn_model(task, d_model=8, d_head=4, d_vocab_out=12)
    W_U = torch.zeros(8, 12)
    W_U[2, :10] = 1.5 * torch.cos(math.pi * torch.arange(10.0))
    W_U[5, :10] = 0.7 * torch.cos(2 * math.pi * 2 * torch.arange(10.0) / 10)
    _set(model, unembed__W_U=W_U)
    g = unembed_geometry.unembed_geometry(model, task)
    assert float(g.amplitude[2, 5]) == pytest.approx(1.5) and float(g.amplitude[5, 2]) == pytest.approx(0.7)


def test_unembed_geometry_reads_another_frequency_as_that_frequency(task) -> None:
    g = unembed_geometry.unembed_geometry(_wu_model(task, 3), task)
    assert g.top_freq == 3 and g.circle_freq == pytest.approx(3.0)
    assert g.rebuilt_error == pytest.approx(1.0)  # nothing of it is at frequency 1
    assert unembed_geometry.unembed_geometry(_wu_model(task, 3), task, rebuild_freq=3).rebuilt_error < 1e-6


def test_rebuilding_w_u_from_its_only_frequency_leaves_the_model_unchanged(task) -> None:
    model = _wu_model(task, 1)
    W_U = model.state_dict()["unembed.W_U"].clone()
    W_U[:, 10:] = 0.0
    _set(model, embed__W_E=torch.randn(task.d_vocab, 16, generator=torch.Generator().manual_seed(1)), unembed__W_U=W_U)
    aset = answer_set(task)
    from groktransfer.interp.ablation import clean_score

    rebuilt, clean = unembed_geometry.rebuilt_unembed_score(model, aset, 1), clean_score(model, aset)
    torch.testing.assert_close(rebuilt.ce, clean.ce, atol=1e-5, rtol=1e-5)
    other = unembed_geometry.rebuilt_unembed_score(model, aset, 2)  # nothing at frequency 2: all logits equal
    assert torch.allclose(other.ce, torch.full_like(other.ce, math.log(12)), atol=1e-5)


# --------------------------------------------------------------------------- by class
def test_probability_stats_of_a_model_whose_output_is_its_bias(task) -> None:
    model = attn_model(task, unembed_bias=True)
    b_U = torch.linspace(-1.0, 2.0, 10)
    _set(model, unembed__b_U=b_U)
    t = by_class.probability_stats(model, task).set_index("answer")
    p = b_U.double().softmax(0)[task.labels]  # [n, answers]
    assert t.loc["digit 0", "mean"] == pytest.approx(float(p[:, 0].mean()))
    assert t.loc["all", "min"] == pytest.approx(float(p.min()))
    assert t.loc["digit 1", "median"] == pytest.approx(float(p[:, 1].median()))


def test_attention_by_class_splits_a_token_driven_pattern_by_carry_class(task) -> None:
    d = 4
    model = attn_model(task, d_model=d, d_head=d)
    W_E = torch.zeros(task.d_vocab, d)
    W_E[5:10, 0] = 1.0  # digits 5..9 carry a key feature
    _set(model, embed__W_E=W_E, pos_embed__W_pos=torch.zeros(task.seq_len, d).index_fill_(1, torch.tensor([1]), 1.0),
         blocks__0__attn__W_Q=(40 * torch.eye(d)[:, [1, 0, 2, 3]]).expand(2, -1, -1).clone(),
         blocks__0__attn__W_K=torch.eye(d).expand(2, -1, -1).clone())  # fmt: skip
    # query: the constant position feature -> feature 0; key: feature 0 = "a digit >= 5 sits here"
    aset = answer_set(task)
    t = by_class.attention_by_class(model, task, layer=0)
    big = (task.tokens >= 5) & (task.tokens <= 9)
    for j, q in enumerate(aset.positions):
        seen = big[:, : q + 1].double()
        uniform = torch.full_like(seen, 1.0 / (q + 1))
        expect = torch.where(seen.sum(1, keepdim=True) > 0, seen / seen.sum(1, keepdim=True).clamp_min(1), uniform)
        for c, cname in enumerate(aset.class_names):
            sel = task.carry_classes[:, j] == c
            if not bool(sel.any()):
                continue
            row = t[(t.answer == aset.answer_names[j]) & (t.cls == cname) & (t["head"] == 0)].iloc[0]
            got = torch.tensor([row[f"pos {k}"] for k in range(q + 1)], dtype=torch.float64)
            torch.testing.assert_close(got, expect[sel].mean(0), atol=1e-6, rtol=0)
    carry = t[(t.answer == "digit 0") & (t.cls != "no carry")]
    assert (carry.tv > 0.05).all()  # a carry into the tens needs a large ones digit: more attention lands on it


def test_loss_change_by_class_averages_within_each_class(task) -> None:
    aset = answer_set(task)
    n = aset.n
    clean_ce = torch.zeros(n, 2, dtype=torch.float64)
    ablated_ce = task.carry_classes.double() * 1.5 + 0.25  # class c loses 1.5 c + 0.25
    correct = torch.ones(n, 2, dtype=torch.bool)
    eff = AblationEffect("L1H0 k mean", Score(clean_ce, correct), Score(ablated_ce, correct))
    t = by_class.loss_change_by_class({(1, 0, "k"): eff}, aset).set_index(["answer", "cls"])
    assert t.loc[("digit 0", "direct carry"), "d_loss"] == pytest.approx(1.75)
    assert t.loc[("digit 1", "no carry"), "d_loss"] == pytest.approx(0.25)
    assert t.loc[("digit 0", "no carry"), "n"] == int((task.carry_classes[:, 0] == 0).sum())


def test_carry_subsets_split_the_examples_by_any_incoming_carry(task) -> None:
    subsets = by_class.carry_subsets(task)
    assert list(subsets) == [by_class.NO_CARRY_ANYWHERE, by_class.SOME_CARRY]
    ones = task.tokens[:, 1] + task.tokens[:, 4]  # a1 b1: with two digits only the ones can carry (into the tens)
    none = subsets[by_class.NO_CARRY_ANYWHERE]
    assert none.n == int((ones < 10).sum()) and subsets[by_class.SOME_CARRY].n == int((ones >= 10).sum())
    assert bool((none.tokens[:, 1] + none.tokens[:, 4] < 10).all()) and bool((none.classes == 0).all())


def test_ablation_within_a_subset_replaces_by_that_subsets_own_mean(task) -> None:
    """A subset of one example: its mean is the example itself, so no ablation changes anything; with the mean
    over every input the same ablations do."""
    from tests.test_interp_digits import attn_only
    from groktransfer.interp.ablation import ablate_heads
    from groktransfer.interp.answers import select

    model = attn_only(task, seed=3)
    aset = answer_set(task)
    one = select(aset, torch.arange(aset.n) == 7, "example 7")
    t = by_class.ablation_within_subsets(model, {"one": one, "all": aset}, sites=("q", "k", "v"))
    assert len(t) == 2 * 2 * 3 * 3 and set(t.n) == {1, aset.n}
    assert t[t.subset == "one"].d_loss.abs().max() < 1e-6
    everywhere, _ = ablate_heads(model, aset, sites=["k"])
    got = t[(t.subset == "all") & (t.site == "k")].set_index(["layer", "head"]).d_loss
    want = everywhere.groupby(["layer", "head"]).d_loss.mean()
    assert got.to_dict() == pytest.approx(want.to_dict()) and float(want.abs().max()) > 1e-3


# --------------------------------------------------------------------------- int_add
@pytest.fixture(scope="module")
def int_task() -> Task:
    return Task("int_add", 10, 0.72, 598)


def sum_model(task: Task) -> HookedGrokTransformer:
    """Embedding a·u + 0.3 (a - 4.5)² v; uniform attention copying (E[a] + E[b]) / 3 to '=';
    neurons 0-3 read u (+1 bias: never below zero), neurons 4-7 read v."""
    d = 8
    cfg = TransformerConfig(n_layers=1, n_heads=1, d_model=d, d_head=d, d_mlp=8, n_ctx=3, d_vocab=task.d_vocab,
                      d_vocab_out=task.d_vocab_out, mlp_bias=True)  # fmt: skip
    model = HookedGrokTransformer(cfg, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    a = torch.arange(10, dtype=torch.float32)
    W_E = torch.zeros(task.d_vocab, d)
    W_E[:10, 0], W_E[:10, 1] = a, 0.3 * (a - 4.5) ** 2
    W_in = torch.zeros(d, 8)
    W_in[0, :4] = torch.tensor([1.0, 2.0, 0.5, 3.0])
    W_in[1, 4:] = 1.0
    _set(model, embed__W_E=W_E, blocks__0__attn__W_V=torch.eye(d)[None], blocks__0__attn__W_O=torch.eye(d)[None],
         blocks__0__mlp__W_in=W_in, blocks__0__mlp__b_in=torch.tensor([1.0] * 4 + [0.0] * 4))  # fmt: skip
    return model.eval()


def test_pc_token_fits_find_the_line_and_the_parabola(int_task) -> None:
    t = neurons_int.pc_token_fits(sum_model(int_task), int_task).set_index("pc")
    assert t.loc[1, "linear_r2"] == pytest.approx(1.0) and abs(t.loc[1, "slope"]) == pytest.approx(1.0)
    assert t.loc[2, "quadratic_r2"] == pytest.approx(1.0) and t.loc[2, "linear_r2"] == pytest.approx(0.0, abs=1e-9)
    assert abs(t.loc[2, "quad_t2"]) == pytest.approx(0.3)


def test_sum_neurons_count_exactly_the_neurons_built_to_equal_a_plus_b(int_task) -> None:
    t = neurons_int.sum_neurons(sum_model(int_task), int_task)
    assert t.attrs["n_post"] == 4 and t.attrs["n_pre"] == 4 and t.attrs["d_mlp"] == 8
    assert t.r_post[:4].tolist() == pytest.approx([1.0] * 4) and (t.r_post[4:].abs() < 0.5).all()


def test_neuron_pc_regression_recovers_the_built_coefficients(int_task) -> None:
    model = sum_model(int_task)
    reg = neurons_int.neuron_pc_regression(model, int_task, [1, 5]).set_index("neuron")
    sign = float(torch.sign(embedding_pca(model, int_task).components[0, 0]))  # PC1 = ±u
    # neuron 1: pre = 2 (a + b) / 3 + 1 = 2/3 (PC1(a) + PC1(b)) * sign + const
    assert reg.loc[1, "r2"] == pytest.approx(1.0)
    assert reg.loc[1, "PC1(a)"] == pytest.approx(sign * 2 / 3) and reg.loc[1, "PC1(b)"] == pytest.approx(sign * 2 / 3)
    assert reg.loc[1, "PC2(a)"] == pytest.approx(0.0, abs=1e-5)
    assert reg.loc[5, "r2"] == pytest.approx(1.0) and reg.loc[5, "PC1(a)"] == pytest.approx(0.0, abs=1e-5)
    maps = neurons_int.pre_activation_maps(model, int_task, [1])
    a = torch.arange(10, dtype=torch.float64)
    torch.testing.assert_close(maps[0], 2 * (a[:, None] + a[None, :]) / 3 + 1, atol=1e-5, rtol=0)


def test_keep_only_pc_replaces_the_operands_by_mean_plus_that_component(int_task) -> None:
    model = sum_model(int_task)
    pca = embedding_pca(model, int_task)
    name, hook = neurons_int.keep_only_pc_hook(pca, 1, (0, 1))
    emb = model.state_dict()["embed.W_E"][int_task.tokens]  # [n, 3, d]
    out = hook(emb, None)
    a = int_task.tokens[:, 0].double()
    expect_u, expect_v = a, torch.full_like(a, 0.3 * 8.25)  # the line stays, the parabola becomes its mean
    torch.testing.assert_close(out[:, 0, 0].double(), expect_u, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 0, 1].double(), expect_v, atol=1e-5, rtol=0)
    assert name == "hook_embed" and torch.equal(out[:, 2], emb[:, 2])  # '=' untouched
    eff = neurons_int.keep_only_pc(model, int_task, 1)
    assert eff.name == "only embedding PC1" and eff.ablated.ce.shape == (int_task.tokens.shape[0], 1)


# --------------------------------------------------------------------------- registry and findings
def test_each_family_has_its_readings_in_one_registry() -> None:
    assert family_key("digit_add") == family_key("digit_sub") == "digit"
    assert family_key("int_add") == "int_add" and family_key("add") == "add"
    assert {r.name for r in FAMILY_READINGS["digit"]} >= {"qk_mean_query", "unembed_geometry", "path_dla"}
    assert "add" not in FAMILY_READINGS


def test_findings_say_holds_or_differs_from_the_numbers() -> None:
    s = {"wu_top_freq": 1.0, "wu_top_freq_share": 0.95, "wu_dims_for_90": 4.0,
         "head_mean_q_L0H0_d_loss[digit 0]": 0.001, "head_mean_z_L0H0_d_loss[digit 0]": 3.0,
         "head_mean_z_L1H0_d_loss[digit 0]": 1.0}  # fmt: skip
    t = findings_table("digit", s).set_index("claim").verdict
    by = {k.split(" (")[0].split(",")[0]: v for k, v in t.items()}
    assert by["W_U's digit columns are one frequency"] == "holds"
    assert by["W_U lives on a few residual dimensions"] == "holds"
    assert by["Mean-ablating the layer-0 queries changes nothing"] == "holds"
    assert by["Layer-0 heads are the most critical to ablate"] == "holds"
    assert by["The model is confident"] == "not measured"
    s.update({"wu_top_freq": 2.0, "head_mean_q_L0H0_d_loss[digit 0]": 0.5, "head_mean_z_L1H0_d_loss[digit 0]": 9.0})
    t = findings_table("digit", s).set_index("claim").verdict
    by = {k.split(" (")[0].split(",")[0]: v for k, v in t.items()}
    assert by["W_U's digit columns are one frequency"] == "differs"
    assert by["Mean-ablating the layer-0 queries changes nothing"] == "differs"
    assert by["Layer-0 heads are the most critical to ablate"] == "differs"
    assert findings_table("add", s).empty


def test_the_carry_key_finding_reads_the_ablations_within_carry_subsets() -> None:
    s = {f"subset_d_loss[L1H{h} k/{c}]": v for h, (a, b) in enumerate([(0.01, 2.0), (0.2, 0.5), (0.0, 0.1)])
         for c, v in (("no carry anywhere", a), ("some carry", b))}  # fmt: skip
    s |= {"subset_d_loss[L0H0 k/no carry anywhere]": 9.0, "subset_d_loss[L0H0 k/some carry]": 9.0,
          "subset_n[no carry anywhere]": 12.0, "subset_n[some carry]": 88.0}  # layer 0 is not the claim's
    row = findings_table("digit", s).set_index("verdict")["this model"]
    assert list(row.index).count("holds") == 1 and "H0 0.010 / 2.000" in row["holds"] and "(12 / 88 examples)" in row["holds"]
    s["subset_d_loss[L1H1 k/no carry anywhere]"] = 0.6  # 0.6 >= 0.25 x 2.0
    assert (findings_table("digit", s).verdict == "differs").sum() == 1


def test_interpretation_of_the_sum_model_states_its_int_add_findings(int_task, tmp_path) -> None:
    from groktransfer.analysis.settings import InterpSettings
    from groktransfer.interp import interpret
    from groktransfer.interp.writeup import sections

    res = interpret(sum_model(int_task), int_task, InterpSettings(spectra=False, probes=False, head_ablation=[]))
    assert res.family == "int_add"
    assert res.scalars["n_sum_neurons_post"] == 4 and res.scalars["pc1_linear_r2"] == pytest.approx(1.0)
    t = findings_table(res.family, res.scalars).set_index("claim").verdict
    assert t[t.index.str.startswith("PC1")].iloc[0] == "holds" and t[t.index.str.startswith("PC2")].iloc[0] == "holds"
    md = "\n".join(sections(res))
    assert "### Findings" in md and "### Sum neurons" in md and "Keeping only one embedding PC" in md
    from groktransfer.interp import plots

    assert plots.plot_pc_token_fits(res, tmp_path / "pc.png", 30).is_file()
    assert plots.plot_pre_activation_maps(res, tmp_path / "pre.png", 30).is_file()


def test_the_sweep_report_lists_findings_per_run() -> None:
    import pandas as pd

    from groktransfer.analysis.interp_section import findings_by_run

    rows = [dict(run=f"r{i}", condition=c, seed=i, task="int_add", p=10, measure=m, value=v)
            for i, (c, r2) in enumerate([("random", 0.99), ("grokked", 0.5)])
            for m, v in [("pc1_linear_r2", r2), ("embed_pc1_explained", 0.7)]]  # fmt: skip
    t = findings_by_run("int_add", pd.DataFrame(rows))
    assert list(t.columns) == ["claim", "seed analysis", "random s0", "grokked s1"]
    pc1 = t[t.claim.str.startswith("PC1")].iloc[0]
    assert pc1["random s0"].startswith("holds: linear R² 0.990") and pc1["grokked s1"].startswith("differs")
    assert findings_by_run("add", pd.DataFrame([dict(rows[0], task="add")])).empty


def test_an_int_add_preset_run_gets_its_findings_first_in_the_sweep_report(tmp_path) -> None:
    """The int_add_p10 preset (p = 10, 72% of the pairs, split seed 598) trained a few epochs, read by the
    sweep report's interpretability provider: its findings table comes first, one column per run."""
    import pandas as pd

    from conftest import run_in
    from groktransfer.analysis.collect import collect_runs
    from groktransfer.analysis.interp_section import interp_sections, run_task
    from groktransfer.analysis.settings import to_settings

    sweep = tmp_path / "sweep"
    result = run_in(sweep, "int_add_s3", ["experiment=int_add_p10", "logger=none", "train.max_epochs=20",
                                          "train.eval_every=10", "train.checkpoint_every=10", "train.progress_bar=false"])  # fmt: skip
    assert result.status == "completed", result.record
    runs = collect_runs([sweep])
    task = run_task(runs[0])
    assert (task.name, task.p, task.frac_train, int(task.train_mask.sum())) == ("int_add", 10, 0.72, 72)
    fast = {"dpi": 30, "interp": {"probe_hooks": ["blocks.{L}.mlp.hook_post"], "head_sites": ["z"], "spectra": False}}
    sections = interp_sections(runs, tmp_path / "out", to_settings({"analysis": fast}))
    assert [s.title for s in sections] == ["Interpretability: int_add"]
    first = sections[0].tables[0]
    assert first.caption.startswith("Findings") and len(first.frame) == 6
    assert first.frame.iloc[:, -1].str.match(r"^(holds|differs): ").all()  # every finding measured on this run
    assert (tmp_path / "out" / "interp" / "interp_int_add_findings.csv").is_file()
    assert "n_sum_neurons_post" in set(pd.read_csv(tmp_path / "out" / "interp" / "interp_runs.csv").measure)


def test_markdown_tables_escape_a_pipe_inside_a_cell() -> None:
    import pandas as pd

    from groktransfer.interp.writeup import md_table

    text = md_table(pd.DataFrame({"claim": ["more |DLA| than"], "v": [0.5]}))
    assert text.splitlines()[2] == "| more \\|DLA\\| than | 0.5 |"
    rows = md_table(findings_table("digit", {"dla_L1H0[digit 0]": 2.0, "dla_L0H0[digit 0]": -1.0})).splitlines()
    assert all(len(r.replace("\\|", "").split("|")) == 6 for r in rows)  # 4 cells on every row

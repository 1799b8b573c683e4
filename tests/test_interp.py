"""Known-answer tests of the interpretability toolkit (groktransfer.interp)."""

from __future__ import annotations

import math
import pytest
import torch

from groktransfer.model.transformer import TransformerConfig
from groktransfer.interp import ablation, attribution, processing, representations
from groktransfer.interp.answers import CLASSIFICATION, REGRESSION, AnswerSet, Target, answer_set
from groktransfer.interp.forward import answer_logits, score
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.tasks.modular import Task

P = 7  # operand tokens 0..6, '=' = 7


def copy_a_task() -> AnswerSet:
    """[a, b, =] -> a, on all p^2 pairs: the answer lives only in position 0."""
    a = torch.arange(P).repeat_interleave(P)
    b = torch.arange(P).repeat(P)
    tokens = torch.stack([a, b, torch.full_like(a, P)], dim=1)
    targets = {"a": Target("a", a.double(), REGRESSION), "answer": Target("answer", a, CLASSIFICATION)}
    return AnswerSet("copy a", tokens, a[:, None], (2,), ("=",), torch.ones(len(a), dtype=torch.bool),
                     out_modulus=P, input_modulus=P, operands=torch.stack([a, b], 1), targets=targets)  # fmt: skip


def one_head_model() -> HookedGrokTransformer:
    """Head 0 attends from '=' to position 0 and copies its token into the logits; head 1
    attends too but writes only to dimensions the unembedding does not read; the MLP is off.

    d_model 16: dims 0..7 token one-hot, 8..10 position one-hot, 12..15 head 1's output.
    """
    cfg = TransformerConfig(n_layers=1, n_heads=2, d_model=16, d_head=8, d_mlp=4, n_ctx=3, d_vocab=P + 1, d_vocab_out=P,
                      attn_bias=True, mlp_bias=True, unembed_bias=True)  # fmt: skip
    model = HookedGrokTransformer(cfg, seed=0)
    with torch.no_grad():
        for prm in model.parameters():
            prm.zero_()
        eye = torch.eye(16)
        model.embed.W_E.copy_(eye[: P + 1])
        model.pos_embed.W_pos.copy_(eye[8:11])
        attn = model.blocks[0].attn
        attn.W_Q[0, 10, 0] = 10.0  # the '=' position asks ...
        attn.W_K[0, 8, 0] = 10.0  # ... for position 0
        attn.W_V[0, :8, :8] = torch.eye(8)  # copy the token
        attn.W_O[0, :8, :8] = 10 * torch.eye(8)
        attn.W_Q[1, 10, 0], attn.W_K[1, 9, 0] = 10.0, 10.0  # head 1 reads b ...
        attn.W_V[1, :4, :4] = torch.eye(4)
        attn.W_O[1, :4, 12:16] = 5 * torch.eye(4)  # ... and writes where nothing reads
        model.unembed.W_U[:P, :P] = torch.eye(P)
    return model.eval()


def random_ln_model(seed: int = 0, n_layers: int = 2) -> HookedGrokTransformer:
    cfg = TransformerConfig(n_layers=n_layers, n_heads=2, d_model=16, d_head=4, d_mlp=24, n_ctx=3, d_vocab=P + 1,
                      d_vocab_out=P, normalization="LN", act="gelu", attn_bias=True, unembed_bias=True)  # fmt: skip
    model = HookedGrokTransformer(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if prm.ndim == 1 or name.endswith(("b_Q", "b_K", "b_V")):  # LN gains/biases and all biases random
                prm.add_(0.3 * torch.randn(prm.shape, generator=gen))
    return model.eval()


# --------------------------------------------------------------------------- ablation
def test_ablating_the_answer_head_breaks_exactly_it() -> None:
    model, task = one_head_model(), copy_a_task()
    assert float(score(answer_logits(model, task), task.labels).acc[0]) == 1.0
    table, effects = ablation.ablate_heads(model, task, kind="mean", sites=("z", "q", "k", "v"))
    acc = {(r.head, r.site): r.acc for r in table.itertuples()}
    for site in "zv":  # the head's output and its value input carry the answer
        assert acc[(0, site)] == pytest.approx(1 / P)
    assert acc[(0, "q")] == 1.0 and acc[(0, "k")] == 1.0  # position-only attention: mean Q/K change nothing there
    for site in "zqkv":
        assert acc[(1, site)] == 1.0
        assert int(effects[(0, 1, site)].broken.sum()) == 0
    d_loss = {(r.head, r.site): r.d_loss for r in table.itertuples()}
    assert max(abs(d_loss[(1, s)]) for s in "zqkv") < 1e-9  # exactly nothing
    zero, _ = ablation.ablate_heads(model, task, kind="zero")
    assert zero.set_index("head").loc[0, "acc"] < 0.5 and zero.set_index("head").loc[1, "acc"] == 1.0


def test_failure_map_marks_the_broken_pairs() -> None:
    model, task = one_head_model(), copy_a_task()
    _, effects = ablation.ablate_heads(model, task, kind="mean")
    grid = ablation.failure_map(effects[(0, 0, "z")], task)
    assert grid.shape == (P, P)
    logits = answer_logits(model, task, [ablation.head_hook(0, 0, "zero")])
    guess = int(logits[0, 0].argmax())  # zeroed head: the same logits for every input
    eff = ablation.ablate(model, task, [ablation.head_hook(0, 0, "zero")], "zero")
    grid = ablation.failure_map(eff, task)
    expected = (torch.arange(P) != guess).double()[:, None].expand(P, P)
    torch.testing.assert_close(grid, expected)


def test_subspace_and_neuron_ablation() -> None:
    model, task = one_head_model(), copy_a_task()
    eye = torch.eye(16)
    broken = ablation.ablate_subspace(model, task, "hook_embed", eye[:P], kind="zero", positions=[0])
    assert float(broken.ablated.acc[0]) < 0.2
    unread = ablation.ablate_subspace(model, task, "hook_embed", eye[12:14], kind="zero")
    assert float(unread.ablated.acc[0]) == 1.0 and int(unread.broken.sum()) == 0
    same = ablation.ablate_subspace(model, task, "blocks.0.hook_resid_post", eye[:P] + eye[1:P + 1], kind="mean")
    assert float(same.ablated.acc[0]) < 1.0  # a non-orthogonal basis is orthonormalised, not rejected
    neurons = ablation.ablate_each_neuron(model, task, 0, range(4))
    assert (neurons.d_loss.abs() < 1e-12).all()  # the MLP is off


def test_top_pcs_of_a_circular_embedding_are_the_cos_sin_pair() -> None:
    gen = torch.Generator().manual_seed(0)
    m, d, k = 23, 32, 3
    u, v = torch.linalg.qr(torch.randn(d, 2, generator=gen, dtype=torch.float64))[0].T
    t = torch.arange(m, dtype=torch.float64)
    E = torch.outer(torch.cos(2 * math.pi * k * t / m), u) * 3 + torch.outer(torch.sin(2 * math.pi * k * t / m), v) * 3
    E = E + 0.01 * torch.randn(m, d, generator=gen, dtype=torch.float64)
    res = representations.pca(E)
    assert float(res.explained[:2].sum()) > 0.999 and res.explained[0] == pytest.approx(0.5, abs=0.01)
    span = torch.stack([u, v])
    # the top-2 components lie in span(u, v) and the scores are cos/sin of frequency k
    assert torch.linalg.matrix_norm(res.components[:2] - res.components[:2] @ span.T @ span) < 0.01
    cs = torch.stack([torch.cos(2 * math.pi * k * t / m), torch.sin(2 * math.pi * k * t / m)], 1)
    fit = torch.linalg.lstsq(cs, res.scores[:, :2]).solution
    assert float((cs @ fit - res.scores[:, :2]).norm() / res.scores[:, :2].norm()) < 0.01


def test_probe_recovers_a_planted_feature_and_not_a_shuffled_one() -> None:
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(600, 20, generator=gen)
    w = torch.randn(20, generator=gen)
    y = X @ w + 0.05 * torch.randn(600, generator=gen)
    good = representations.ridge_probe(X, Target("y", y, REGRESSION))
    bad = representations.ridge_probe(X, Target("y", y[torch.randperm(600, generator=gen)], REGRESSION))
    assert good.score > 0.99 and bad.score < 0.05
    cls = (X[:, :3] @ torch.tensor([1.0, -1.0, 0.5]) > 0.3).long()
    good = representations.ridge_probe(X, Target("c", cls, CLASSIFICATION))
    bad = representations.ridge_probe(X, Target("c", cls[torch.randperm(600, generator=gen)], CLASSIFICATION))
    assert good.score > 0.9 and bad.score < bad.chance + 0.1


def test_probe_hooks_reads_the_copied_token() -> None:
    model, task = one_head_model(), copy_a_task()
    df = representations.probe_hooks(model, task, ["blocks.0.hook_resid_post"])
    assert set(df.target) == {"a", "answer"}
    assert (df.score > 0.99).all()


# --------------------------------------------------------------------------- attribution
def test_dla_puts_the_answer_on_the_answer_head() -> None:
    model, task = one_head_model(), copy_a_task()
    attr = attribution.direct_logit_attribution(model, task, centre=False)
    assert attr.completeness_error() < 1e-9
    table = attr.table().set_index("part")
    assert table.loc["L0H0", "mean"] == pytest.approx(10.0, rel=1e-3)
    assert abs(table.loc["L0H1", "mean"]) < 1e-9 and abs(table.loc["embed", "mean"]) < 1e-9


@pytest.mark.parametrize("centre", [True, False])
def test_dla_is_complete_on_random_ln_models(centre: bool) -> None:
    model = random_ln_model(3)
    task = Task("add", P, 0.5, 0)
    groups = {1: {"first half": range(12)}}  # the rest becomes "L1 mlp other"
    attr = attribution.direct_logit_attribution(model, task, neuron_groups=groups, centre=centre)
    assert "L1 mlp other" in attr.parts and "first half" in attr.parts
    scale = float(attr.correct(attr.logits).abs().max())
    assert attr.completeness_error() < 1e-5 * max(scale, 1.0)
    fourier = attribution.fourier_attribution(attr, P)
    per_part = fourier.groupby("part")["mean"].sum()
    plain = attr.table().set_index("part")["mean"]
    for part, value in per_part.items():
        assert value == pytest.approx(plain[part], abs=1e-9)


# --------------------------------------------------------------------------- processing
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_processing_keeps_log_probs_on_random_ln_models(seed: int) -> None:
    model = random_ln_model(seed)
    processed = processing.process_weights(model)
    tokens = Task("add", P, 0.5, 0).tokens
    with torch.no_grad():
        before, after = model(tokens).log_softmax(-1), processed(tokens).log_softmax(-1)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    sd = processed.state_dict()
    assert torch.allclose(sd["ln_final.w"], torch.ones(16)) and torch.allclose(sd["blocks.1.ln2.b"], torch.zeros(16))
    assert float(sd["blocks.0.attn.b_V"].abs().max()) == 0.0
    assert float(sd["embed.W_E"].mean(-1).abs().max()) < 1e-6
    assert float(sd["unembed.W_U"].mean(-1).abs().max()) < 1e-6
    assert model.state_dict()["ln_final.w"].ne(1).any()  # the original is untouched


def test_processing_without_ln_only_centres_unembed_and_folds_value_biases() -> None:
    model = one_head_model()
    sd = processing.process_state_dict(model.state_dict())
    torch.testing.assert_close(sd["embed.W_E"], model.state_dict()["embed.W_E"])
    tokens = copy_a_task().tokens
    processed = processing.process_weights(model)
    with torch.no_grad():
        torch.testing.assert_close(processed(tokens).log_softmax(-1), model(tokens).log_softmax(-1))


# --------------------------------------------------------------------------- representations
def test_weight_spectra_see_a_rank_one_matrix() -> None:
    model = one_head_model()
    with torch.no_grad():
        model.unembed.W_U.copy_(torch.outer(torch.ones(16), torch.arange(P, dtype=torch.float32)))
    df = representations.singular_spectra(model)
    wu = df[df.weight == "unembed.W_U"]
    assert wu.effective_rank.iloc[0] == pytest.approx(1.0) and wu.control_effective_rank.iloc[0] > 3
    assert set(df.weight) >= {"embed.W_E", "blocks.0.attn.W_Q[0]", "blocks.0.attn.W_O[1]", "blocks.0.mlp.W_in"}


def test_embedding_fourier_norms_find_the_planted_frequency_for_int_add() -> None:
    task = Task("int_add", 11, 0.5, 0)
    model = HookedGrokTransformer(TransformerConfig(d_model=8, d_head=2, d_mlp=8, d_vocab=12, d_vocab_out=22), seed=0)
    t = torch.arange(11, dtype=torch.float32)
    with torch.no_grad():
        model.embed.W_E.zero_()
        model.embed.W_E[:11, 0] = torch.cos(2 * math.pi * 4 * t / 11)
        model.embed.W_E[:11, 1] = torch.sin(2 * math.pi * 4 * t / 11)
    df = representations.embedding_fourier_norms(model, task)
    assert int(df.norm.idxmax()) == 4 and df.norm.drop(4).max() < 1e-5
    assert df.attrs["gini"] > 0.8


def test_neuron_clusters_and_correlations_on_planted_neurons() -> None:
    task = Task("int_add", 11, 0.5, 0)
    a, b = task.pairs
    acts = torch.stack([torch.cos(2 * math.pi * 3 * (a + b) / 11), torch.cos(2 * math.pi * 5 * a / 11),
                        (a + b).float(), torch.zeros(len(a))], 1).double()  # fmt: skip
    r = representations.neuron_correlations(acts, (a + b).double())
    assert r[2] == pytest.approx(1.0) and r[3] == 0.0
    grid = representations.grid_acts(task, acts)
    from groktransfer.tasks.fourier import fourier_basis
    from groktransfer.measures.modular import assign_neuron_freqs, neuron_freq_fractions

    frac, dead = neuron_freq_fractions(grid, fourier_basis(11))
    freq, _, counted = assign_neuron_freqs(frac, dead, 0.85)
    assert freq[:2].tolist() == [3, 5] and counted[:2].all() and bool(dead[3])


def test_attention_patterns_and_model_level_clusters() -> None:
    model, task = one_head_model(), copy_a_task()
    pat = representations.attention_patterns(model, task)
    assert pat.shape == (1, 2, 1, 3)
    assert float(pat[0, 0, 0, 0]) > 0.99 and float(pat[0, 1, 0, 1]) > 0.99
    trained_like = HookedGrokTransformer(TransformerConfig(d_model=16, d_head=4, d_mlp=32, d_vocab=12, d_vocab_out=11), seed=0)
    cl = representations.neuron_clusters(trained_like, Task("add", 11, 0.5, 0), threshold=0.0)
    assert cl.counts.sum() == int(cl.counted.sum()) and set(cl.key_freqs) <= set(range(1, 6))
    groups = cl.groups()
    assert sorted(i for idx in groups.values() for i in idx) == torch.nonzero(cl.counted).flatten().tolist()


def test_pair_answer_set_targets() -> None:
    aset = answer_set(Task("int_add", 5, 0.5, 0))
    assert set(aset.targets) == {"a", "b", "answer", "a+b"} and aset.out_modulus == 10
    assert aset.positions == (2,) and aset.labels.shape == (25, 1)
    div = answer_set(Task("divide", 5, 0.5, 0))
    grid = div.to_grid(torch.ones(div.n))
    assert bool(grid[:, 0].isnan().all()) and bool((grid[:, 1:] == 1).all())


def test_two_layer_tables_name_every_head_and_layer() -> None:
    model = random_ln_model(5)
    task = Task("subtract", P, 0.5, 0)
    table, _ = ablation.ablate_heads(model, task)
    assert sorted(zip(table["layer"], table["head"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    parts = set(attribution.direct_logit_attribution(model, task).parts)
    assert parts == {"embed", "pos_embed", "L0H0", "L0H1", "L1H0", "L1H1", "L0 b_O", "L1 b_O", "L0 mlp", "L1 mlp",
                     "L0 b_out", "L1 b_out"}  # fmt: skip


def test_subsample_keeps_rows_aligned() -> None:
    from dataclasses import replace as dc_replace

    from groktransfer.interp.answers import subsample

    full = dc_replace(copy_a_task(), operands=None, classes=torch.arange(P * P) % 3, class_names=("x", "y", "z"))
    sub = subsample(full, 10, seed=1)
    assert sub.n == 10 and sub.tokens.shape == (10, 3)
    torch.testing.assert_close(sub.labels[:, 0], sub.tokens[:, 0])  # labels still belong to their tokens
    torch.testing.assert_close(sub.targets["a"].values, sub.tokens[:, 0].double())
    assert subsample(full, 10, seed=1).tokens.equal(sub.tokens) and subsample(full, 1000) is full
    with pytest.raises(AssertionError, match="grid"):
        subsample(copy_a_task(), 10)


def test_a_pair_task_without_a_pairs_attribute_is_read_from_its_tokens() -> None:
    """A plugin's pair task need only follow the task protocol (tokens ``[a, b, =]``, labels):
    the interpretability view reads the operands from the tokens, as the S5 example's needs."""
    from types import SimpleNamespace

    import torch

    from groktransfer.interp.answers import answer_set

    a = torch.arange(4).repeat_interleave(4)
    b = torch.arange(4).repeat(4)
    tokens = torch.stack([a, b, torch.full_like(a, 4)], dim=1)
    task = SimpleNamespace(name="toy", tokens=tokens, labels=(a * b) % 4, train_mask=torch.arange(16) % 2 == 0,
                           d_vocab_out=4, p=4, describe=lambda: "toy")  # fmt: skip
    aset = answer_set(task)
    assert torch.equal(aset.operands, torch.stack([a, b], dim=1))
    assert torch.equal(aset.targets["a"].values, a.double()) and aset.positions == (2,)

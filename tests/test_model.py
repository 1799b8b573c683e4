"""HookedGrokTransformer: layout, init, hooks, and the fast path's exactness."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from groktransfer.model.transformer import TransformerConfig

from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.model.transformer import transformer_component_of as component_of
from groktransfer.transfer.components import set_component_trainable

SMALL = TransformerConfig(n_heads=2, d_model=16, d_head=8, d_mlp=32, d_vocab=8, d_vocab_out=7)


def randomized(cfg: TransformerConfig, seed: int = 0) -> HookedGrokTransformer:
    """Init-scale weights, sharpened queries/keys (so patterns are far from uniform) and
    random non-zero biases everywhere -- including the ones the config does not train."""
    model = HookedGrokTransformer(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("W_Q", "W_K"):
                param.mul_(3.0)
            elif param.ndim == 1 or leaf.startswith("b_"):
                param.add_(0.5 * torch.randn(param.shape, generator=gen))
    return model


def random_tokens(cfg: TransformerConfig, batch: int = 64, seed: int = 0, n_pos: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.d_vocab, (batch, n_pos or cfg.n_ctx or 3), generator=gen)


# --------------------------------------------------------------------------- reference
def reference_forward(model: HookedGrokTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Per-example, per-head loops straight from the paper's equations (no LayerNorm)."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    cfg = model.config
    act = F.relu if cfg.act == "relu" else F.gelu
    out = []
    for seq in tokens:
        n = len(seq)
        x = sd["embed.W_E"][seq] + sd["pos_embed.W_pos"][:n]  # [p, d]
        for i in range(cfg.n_layers):
            a = f"blocks.{i}.attn."
            attn_out = sd[a + "b_O"].expand(n, -1).clone()
            for h in range(cfg.n_heads):
                q = x @ sd[a + "W_Q"][h] + sd[a + "b_Q"][h]
                k = x @ sd[a + "W_K"][h] + sd[a + "b_K"][h]
                v = x @ sd[a + "W_V"][h] + sd[a + "b_V"][h]
                scores = (q @ k.T) / math.sqrt(cfg.d_head)
                scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), -float("inf"))
                attn_out += (scores.softmax(-1) @ v) @ sd[a + "W_O"][h]
            x = x + attn_out
            m = f"blocks.{i}.mlp."
            x = x + act(x @ sd[m + "W_in"] + sd[m + "b_in"]) @ sd[m + "W_out"] + sd[m + "b_out"]
        out.append(x @ sd["unembed.W_U"] + sd["unembed.b_U"])
    return torch.stack(out)


# --------------------------------------------------------------------------- layout
def test_parameter_names_and_shapes_follow_transformer_lens():
    cfg = replace(SMALL, n_layers=2, normalization="LN")
    shapes = {n: tuple(p.shape) for n, p in HookedGrokTransformer(cfg, seed=0).named_parameters()}
    h, d, e, m, v, vo, c = 2, 16, 8, 32, 8, 7, 3
    expected = {"embed.W_E": (v, d), "pos_embed.W_pos": (c, d), "unembed.W_U": (d, vo), "unembed.b_U": (vo,)}
    expected.update({"ln_final.w": (d,), "ln_final.b": (d,)})
    for i in range(2):
        b = f"blocks.{i}."
        expected.update({b + f"attn.W_{x}": (h, d, e) for x in "QKV"})
        expected.update({b + f"attn.b_{x}": (h, e) for x in "QKV"})
        expected.update({b + "attn.W_O": (h, e, d), b + "attn.b_O": (d,)})
        expected.update({b + "mlp.W_in": (d, m), b + "mlp.b_in": (m,), b + "mlp.W_out": (m, d), b + "mlp.b_out": (d,)})
        expected.update({b + f"{ln}.{w}": (d,) for ln in ("ln1", "ln2") for w in "wb"})
    assert shapes == expected


def test_unresolved_vocab_is_a_clear_error():
    with pytest.raises(ValueError, match="d_vocab"):
        HookedGrokTransformer(TransformerConfig(), seed=0)
    with pytest.raises(ValueError, match="d_vocab_out"):
        HookedGrokTransformer(TransformerConfig(d_vocab=8), seed=0)


def test_config_from_mapping_and_hooked_transformer_fields():
    model = HookedGrokTransformer(
        {"d_vocab": 8, "d_vocab_out": 7, "n_heads": 2, "d_model": 16, "d_head": 8, "d_mlp": 32}, seed=3
    )
    assert isinstance(model.config, TransformerConfig)
    tl = model.hooked_transformer_config_dict()
    assert tl["d_vocab"] == 8 and tl["d_vocab_out"] == 7 and tl["n_heads"] == 2 and tl["d_mlp"] == 32
    assert tl["act_fn"] == "relu" and tl["normalization_type"] is None
    assert tl["positional_embedding_type"] == "standard" and tl["attn_only"] is False
    assert tl["default_prepend_bos"] is False


# --------------------------------------------------------------------------- init
def test_init_is_a_function_of_the_seed_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = (HookedGrokTransformer(SMALL, seed=s) for s in (5, 5, 6))
    assert torch.equal(torch.get_rng_state(), state)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        if name.rsplit(".", 1)[-1].startswith("W_"):
            assert not torch.equal(pa, pc), name


def test_init_scales_biases_and_trainability():
    cfg = TransformerConfig(d_vocab=114, d_vocab_out=113)
    model = HookedGrokTransformer(cfg, seed=0)
    params = dict(model.named_parameters())
    assert params["embed.W_E"].std().item() == pytest.approx(1 / math.sqrt(128), rel=0.05)
    assert params["blocks.0.mlp.W_in"].std().item() == pytest.approx(1 / math.sqrt(128), rel=0.05)
    assert params["unembed.W_U"].std().item() == pytest.approx(1 / math.sqrt(113), rel=0.05)
    for name, param in params.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("b_"):
            assert torch.count_nonzero(param) == 0, name
            trained = leaf in ("b_in", "b_out")  # defaults: only the MLP biases train
            assert param.requires_grad == trained, name
        else:
            assert param.requires_grad, name


def test_reinit_component_reproduces_a_fresh_model_and_touches_nothing_else():
    target = HookedGrokTransformer(SMALL, seed=1)
    fresh = dict(HookedGrokTransformer(SMALL, seed=2).named_parameters())
    before = {n: p.clone() for n, p in target.named_parameters()}
    identity = {n: id(p) for n, p in target.named_parameters()}
    target.reinit_component("mlp", seed=2)
    for name, param in target.named_parameters():
        assert id(param) == identity[name]
        expected = fresh[name] if component_of(name) == "mlp" else before[name]
        assert torch.equal(param, expected), name
    assert target.blocks[0].mlp.b_in.requires_grad


def test_components_partition_the_parameters():
    model = HookedGrokTransformer(replace(SMALL, n_layers=2, normalization="LN"), seed=0)
    owned = [n for c in model.components for n in model.component_parameters(c)]
    assert sorted(owned) == sorted(n for n, _ in model.named_parameters())
    assert "blocks.1.ln2.w" in model.component_parameters("mlp")


def test_set_component_trainable_keeps_disabled_biases_frozen():
    model = HookedGrokTransformer(SMALL, seed=0)
    set_component_trainable(model, "attn", False)
    assert not any(p.requires_grad for p in model.component_parameters("attn").values())
    set_component_trainable(model, "attn", True)
    attn = model.blocks[0].attn
    assert attn.W_Q.requires_grad and not attn.b_Q.requires_grad and not attn.b_O.requires_grad


# --------------------------------------------------------------------------- forward
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_forward_matches_loop_reference_and_is_causal(act):
    cfg = replace(SMALL, act=act, n_ctx=4, attn_bias=True, unembed_bias=True)
    model = randomized(cfg)
    tokens = random_tokens(cfg, batch=6)
    logits = model(tokens)
    assert logits.shape == (6, 4, cfg.d_vocab_out)
    torch.testing.assert_close(logits, reference_forward(model, tokens), atol=1e-5, rtol=1e-5)
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % cfg.d_vocab
    torch.testing.assert_close(model(changed)[:, :-1], logits[:, :-1])


FAST_CASES = [
    pytest.param(replace(SMALL), id="p7-ctx3"),
    pytest.param(replace(SMALL, act="gelu", n_ctx=5, d_vocab=60, d_vocab_out=118), id="v60-ctx5-gelu"),
    pytest.param(TransformerConfig(d_vocab=114, d_vocab_out=113, d_mlp=64), id="p113-ref-heads"),
]


@pytest.mark.parametrize("base", FAST_CASES)
@pytest.mark.parametrize("biases", [False, True], ids=["nanda-biases", "all-biases"])
def test_forward_last_equals_forward_at_last_position(base, biases):
    cfg = replace(base, attn_bias=biases, unembed_bias=biases, mlp_bias=biases)
    model = randomized(cfg, seed=3)
    tokens = random_tokens(cfg, batch=200, seed=4)
    torch.testing.assert_close(model.forward_last(tokens), model(tokens)[:, -1], atol=1e-5, rtol=1e-5)
    shorter = tokens[:, : (cfg.n_ctx or 3) - 1]  # fewer positions than n_ctx
    torch.testing.assert_close(model.forward_last(shorter), model(shorter)[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("base", FAST_CASES[:2])
def test_forward_last_gradients_equal_full_forward_gradients(base):
    cfg = replace(base, attn_bias=True, unembed_bias=True)
    model = randomized(cfg, seed=7)
    tokens = random_tokens(cfg, batch=128, seed=8)
    labels = torch.randint(0, cfg.d_vocab_out, (128,), generator=torch.Generator().manual_seed(9))

    def grads(logits_fn):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(logits_fn(tokens).double(), labels).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    fast, full = grads(model.forward_last), grads(lambda t: model(t)[:, -1])
    assert fast.keys() == full.keys() and "blocks.0.attn.b_K" in fast
    for name in full:
        torch.testing.assert_close(fast[name], full[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("extra", [{"n_layers": 2}, {"normalization": "LN"}])
def test_forward_last_of_deeper_and_layernorm_models(extra):  # every shape: tests/test_lastpos.py
    cfg = replace(SMALL, **extra)
    model = randomized(cfg)
    tokens = random_tokens(cfg)
    torch.testing.assert_close(model.forward_last(tokens), model(tokens)[:, -1])


def test_layernorm_matches_torch_layernorm():
    cfg = replace(SMALL, normalization="LN")
    model = randomized(cfg)
    x = torch.randn(5, 3, cfg.d_model)
    ln = model.blocks[0].ln1
    torch.testing.assert_close(ln(x), F.layer_norm(x, (cfg.d_model,), ln.w, ln.b, eps=1e-5))


# --------------------------------------------------------------------------- hooks
def test_run_with_cache_names_shapes_and_consistency():
    cfg = replace(SMALL, attn_bias=True)
    model = randomized(cfg)
    tokens = random_tokens(cfg, batch=5)
    logits, cache = model.run_with_cache(tokens)
    b, p, h, e, d, m = 5, 3, 2, 8, 16, 32
    expected = {
        "hook_embed": (b, p, d),
        "hook_pos_embed": (b, p, d),
        "blocks.0.hook_resid_pre": (b, p, d),
        "blocks.0.attn.hook_q": (b, p, h, e),
        "blocks.0.attn.hook_k": (b, p, h, e),
        "blocks.0.attn.hook_v": (b, p, h, e),
        "blocks.0.attn.hook_attn_scores": (b, h, p, p),
        "blocks.0.attn.hook_pattern": (b, h, p, p),
        "blocks.0.attn.hook_z": (b, p, h, e),
        "blocks.0.hook_attn_out": (b, p, d),
        "blocks.0.hook_resid_mid": (b, p, d),
        "blocks.0.mlp.hook_pre": (b, p, m),
        "blocks.0.mlp.hook_post": (b, p, m),
        "blocks.0.hook_mlp_out": (b, p, d),
        "blocks.0.hook_resid_post": (b, p, d),
    }
    assert {k: tuple(v.shape) for k, v in cache.items()} == expected
    assert set(model.hook_names) == set(expected) == set(model.hook_dict)
    assert not any(t.requires_grad for t in cache.values())
    assert not model.has_hooks()
    pattern = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(b, h, p))
    assert torch.all(pattern[:, :, 0, 1:] == 0)
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_mid"], cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"]
    )
    torch.testing.assert_close(model.unembed(cache["blocks.0.hook_resid_post"]), logits)


def test_run_with_cache_filter_and_cleanup_on_error():
    model = HookedGrokTransformer(SMALL, seed=0)
    tokens = random_tokens(SMALL, batch=3)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert list(cache) == ["blocks.0.attn.hook_pattern"]
    _, cache = model.run_with_cache(tokens, names_filter="hook_embed")
    assert list(cache) == ["hook_embed"]
    with pytest.raises(KeyError, match="hook_nonexistent"):
        model.run_with_cache(tokens, names_filter=["hook_nonexistent"])
    with pytest.raises(Exception):
        model.run_with_cache(tokens[:, :, None])  # wrong rank fails mid-forward
    assert not model.has_hooks()


def test_run_with_hooks_ablation_and_forward_last_respects_hooks():
    cfg = replace(SMALL, attn_bias=True)
    model = randomized(cfg)
    tokens = random_tokens(cfg, batch=4)
    _, cache = model.run_with_cache(tokens)

    def zero(activation, hook):
        return torch.zeros_like(activation)

    ablated = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_mlp_out", zero)])
    torch.testing.assert_close(ablated, model.unembed(cache["blocks.0.hook_resid_mid"]))
    assert not model.has_hooks()
    seen = []
    with model.hooks([("blocks.0.hook_mlp_out", zero), ("hook_embed", lambda a, hook: seen.append(hook.name))]):
        torch.testing.assert_close(model.forward_last(tokens), ablated[:, -1])  # hooks force the full path
    assert seen == ["hook_embed"] and not model.has_hooks()


@pytest.mark.parametrize("extra", [{}, {"act": "gelu"}, {"n_layers": 2}])
def test_last_position_activations_match_the_cache(extra):
    cfg = replace(SMALL, **extra)
    model = randomized(cfg, seed=5)
    tokens = random_tokens(cfg, batch=50, seed=6)
    hook = f"blocks.{cfg.n_layers - 1}.mlp.hook_post"
    logits, cache = model.run_with_cache(tokens, names_filter=hook)
    last_logits, post = model.last_position_activations(tokens)
    torch.testing.assert_close(last_logits, logits[:, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(post, cache[hook][:, -1], atol=1e-5, rtol=1e-5)

"""The last-position fast path at every depth: equal to the full forward, member by member.

Two kinds of equality, as the arithmetic allows:

* fast path against the full forward (``model(tokens)[:, -1]``): the same function with
  its float32 sums reordered (tables, one product for Q/K/V, LayerNorm as one kernel), so
  to a stated tolerance -- logits within 1e-5 of the full forward's relative to their
  scale, gradients within 1e-4 relative;
* one member of a stacked call against the same model alone (K = 1): the same
  arithmetic, so bit for bit (``torch.equal``), forward and gradients.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from groktransfer.config.schema import CpuGemm
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.gemm import onednn_available, set_cpu_gemm
from groktransfer.model.lastpos import fast_last_supported, last_position_logits, param_names
from groktransfer.model.transformer import HookedGrokTransformer

from test_model import randomized

BASE = TransformerConfig(n_heads=3, d_model=24, d_head=8, d_mlp=40, d_vocab=11, d_vocab_out=10, n_ctx=4)

# every shape the fast path serves: depth, LayerNorm, activation, MLPs or none, biases trained or not
SHAPES = [
    pytest.param(replace(BASE, n_layers=n, normalization=ln, act=act, attn_only=ao, attn_bias=bias, unembed_bias=bias),
                 id=f"L{n}-{ln or 'noLN'}-{act}{'-attn_only' if ao else ''}{'-biases' if bias else ''}")
    for n, ln, act, ao, bias in itertools.product((1, 2, 3), (None, "LN"), ("relu", "gelu"), (False, True), (False, True))
    if not (ao and act == "gelu")  # an attention-only model has no activation
]  # fmt: skip


def pick(*ids: str) -> list:
    """The SHAPES with these ids."""
    by_id = {param.id: param for param in SHAPES}
    return [by_id[i] for i in ids]


def _tokens(cfg: TransformerConfig, n_pos: int, batch: int = 37, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, cfg.d_vocab, (batch, n_pos), generator=torch.Generator().manual_seed(seed))


def _assert_close_to_scale(fast: torch.Tensor, full: torch.Tensor, rtol: float) -> None:
    """Within ``rtol`` of the reference's largest magnitude (deep LayerNorm-free models grow their logits)."""
    scale = float(full.detach().abs().max().clamp(min=1.0))
    torch.testing.assert_close(fast, full, atol=rtol * scale, rtol=rtol)


@pytest.mark.parametrize("cfg", SHAPES)
def test_fast_path_equals_the_full_forward(cfg: TransformerConfig) -> None:
    model = randomized(cfg, seed=3)
    assert fast_last_supported(cfg) and model._fast_path_applies()
    for n_pos in (4, 3, 1):  # n_ctx, fewer positions, one position (it attends to itself)
        tokens = _tokens(cfg, n_pos)
        _assert_close_to_scale(model.forward_last(tokens), model(tokens)[:, -1], rtol=1e-5)


@pytest.mark.parametrize("cfg", pick("L1-noLN-gelu-biases", "L1-LN-relu-attn_only", "L2-LN-gelu", "L2-noLN-relu-biases",
                                      "L3-LN-gelu-biases", "L3-noLN-relu-attn_only-biases"))
def test_fast_path_gradients_equal_the_full_forward_gradients(cfg: TransformerConfig) -> None:
    model = randomized(cfg, seed=5)
    tokens = _tokens(cfg, 4, batch=64, seed=6)
    labels = torch.randint(0, cfg.d_vocab_out, (64,), generator=torch.Generator().manual_seed(7))

    def grads(logits_fn):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(logits_fn(tokens).double(), labels).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    fast, full = grads(model.forward_last), grads(lambda t: model(t)[:, -1])
    assert fast.keys() == full.keys()
    for name in full:
        _assert_close_to_scale(fast[name], full[name], rtol=1e-4)


@pytest.mark.parametrize("cfg", pick("L1-LN-gelu", "L2-LN-gelu-biases", "L2-noLN-relu", "L3-LN-relu-biases"))
def test_last_position_activations_are_the_caches_at_every_depth(cfg: TransformerConfig) -> None:
    model = randomized(cfg, seed=8)
    tokens = _tokens(cfg, 4, seed=9)
    hook = f"blocks.{cfg.n_layers - 1}.mlp.hook_post"
    logits, cache = model.run_with_cache(tokens, names_filter=hook)
    fast_logits, post = model.last_position_activations(tokens)
    _assert_close_to_scale(fast_logits, logits[:, -1], rtol=1e-5)
    _assert_close_to_scale(post, cache[hook][:, -1], rtol=1e-5)


@pytest.mark.parametrize(
    "extra", [{}, {"n_layers": 2, "normalization": "LN", "act": "gelu"}, {"n_layers": 3, "attn_only": True, "normalization": "LN"},
              {"n_layers": 2, "act": "relu", "attn_bias": True}]
)  # fmt: skip
@pytest.mark.parametrize("gemm", [CpuGemm.blas, CpuGemm.onednn])
def test_a_member_of_a_stacked_call_is_the_model_alone_bit_for_bit(extra, gemm) -> None:
    """Every depth, bit for bit. The one-layer LayerNorm-free model keeps its original table
    algorithm, whose batched query/score products round a member's *gradients* differently in
    a batch of several (its logits are bit-equal): there to 1e-6 of their scale."""
    if gemm == CpuGemm.onednn and not onednn_available():
        pytest.skip("this torch build has no oneDNN linear")
    set_cpu_gemm(gemm)
    try:
        _check_members(replace(BASE, **extra), exact_grads=bool(extra))
    finally:
        set_cpu_gemm(CpuGemm.auto)


def _check_members(cfg: TransformerConfig, exact_grads: bool) -> None:
    models = [randomized(cfg, seed=s) for s in (0, 1, 2)]
    names = param_names(cfg)
    stacked = {n: torch.stack([m.get_parameter(n).detach() for m in models]).requires_grad_() for n in names}
    tokens = torch.stack([_tokens(cfg, 4, seed=s) for s in (10, 11, 12)])  # each member its own examples
    labels = torch.randint(0, cfg.d_vocab_out, tokens.shape[:2], generator=torch.Generator().manual_seed(13))
    logits = last_position_logits(stacked, tokens, cfg)
    F.cross_entropy(logits.double().flatten(0, 1), labels.flatten(), reduction="none").view(3, -1).mean(dim=1).sum().backward()
    for i, model in enumerate(models):
        alone = {n: model.get_parameter(n).detach().unsqueeze(0).requires_grad_() for n in names}
        own = last_position_logits(alone, tokens[i : i + 1], cfg)
        F.cross_entropy(own.double()[0], labels[i]).backward()
        assert torch.equal(logits[i], own[0]), i
        for n in names:
            if exact_grads:
                assert torch.equal(stacked[n].grad[i], alone[n].grad[0]), (i, n)
            else:
                _assert_close_to_scale(stacked[n].grad[i], alone[n].grad[0], rtol=1e-6)


def test_hooks_still_force_the_full_path_at_every_depth() -> None:
    cfg = replace(BASE, n_layers=2, normalization="LN", act="gelu")
    model = randomized(cfg)
    tokens = _tokens(cfg, 4)
    seen = []
    with model.hooks([("blocks.1.hook_resid_mid", lambda a, hook: seen.append(hook.name))]):
        assert not model._fast_path_applies()
        model.forward_last(tokens)
    assert seen == ["blocks.1.hook_resid_mid"] and model._fast_path_applies()


def test_what_the_fast_path_does_not_compute_is_refused() -> None:
    assert not fast_last_supported(replace(BASE, normalization="RMS"))
    assert not fast_last_supported(replace(BASE, act="silu"))
    with pytest.raises(ValueError, match="fast last-position path"):
        last_position_logits({"embed.W_E": torch.zeros(1, 11, 24)}, torch.zeros(1, 2, 4, dtype=torch.long),
                             replace(BASE, act="silu"))  # fmt: skip


def test_param_names_are_the_models_parameters() -> None:
    for cfg in (BASE, replace(BASE, n_layers=3, normalization="LN"), replace(BASE, n_layers=2, attn_only=True, normalization="LN")):
        assert set(param_names(cfg)) == {n for n, _ in HookedGrokTransformer(cfg, seed=0).named_parameters()}

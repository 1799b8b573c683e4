"""Checkpoints written by this project load into TransformerLens -- 3.x's HookedTransformer or
4.x's TransformerBridge, whichever is installed -- and TransformerLens' files load into ours.

CI runs this module twice (``.ci/run``): in the main environment with the ``tl`` extra (3.x,
``GROKTRANSFER_REQUIRE_TL=3``) and in a small second one with the ``tl4`` extra (4.x,
``GROKTRANSFER_REQUIRE_TL=4``); there a missing or wrong TransformerLens is an error, not a
skip. Elsewhere the module is skipped without TransformerLens.

What is checked, under either version: the documented recipe (``docs/how-to/interpretability.md``)
and :func:`groktransfer.model.transformer_lens.to_transformer_lens` reproduce our logits on all
p^2 inputs and every activation at our hook names; the analyses read the same numbers from
either model; our weight processing equals TransformerLens'; and a state dict TransformerLens
itself wrote loads through ``load_checkpoint`` with its logits. Where TransformerLens 4 differs
from 3 (``hook_attn_scores``, the unembedding's centring) a test pins the difference, so it
fails when TransformerLens changes.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import transformer_lens_or_skip
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.checkpoint import load_checkpoint, save_checkpoint
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.model.transformer_lens import TL4_DIVERGENT_HOOKS, installed_major, to_transformer_lens
from groktransfer.tasks.modular import Task

tl = transformer_lens_or_skip()
TL4 = installed_major() == 4
only_tl3 = pytest.mark.skipif(TL4, reason="reads weights in HookedTransformer names; a TransformerLens 4 bridge's state_dict() has its own")

P = 13
ONE_LAYER = TransformerConfig(d_vocab=P + 1, d_vocab_out=P)  # the Nanda et al. shape: 128 / 4 heads / 512
LN_TWO_LAYER = replace(ONE_LAYER, n_layers=2, normalization="LN", act="gelu", attn_bias=True, unembed_bias=True,
                       d_model=64, d_head=16, d_mlp=128)  # fmt: skip
ATTN_ONLY = replace(ONE_LAYER, n_layers=2, n_heads=3, d_model=48, d_head=24, normalization="LN", attn_only=True,
                    attn_bias=True, unembed_bias=True)  # fmt: skip
SHAPES = pytest.mark.parametrize("cfg", [ONE_LAYER, LN_TWO_LAYER, ATTN_ONLY], ids=["one_layer", "two_layer_ln_gelu", "attn_only"])


def _trained_looking(cfg: TransformerConfig, seed: int) -> HookedGrokTransformer:
    """Random weights plus non-zero biases, so every parameter's layout is exercised."""
    model = HookedGrokTransformer(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 or name.endswith(("b_Q", "b_K", "b_V")):
                param.add_(0.2 * torch.randn(param.shape, generator=gen))
    return model


def _documented_recipe(path: Path):
    """The recipe of docs/how-to/interpretability.md for the installed version, verbatim apart from the path."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if TL4:
        from transformer_lens import TransformerBridge
        from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

        model = TransformerBridge.boot_native(ckpt["config"])
        model.load_state_dict(convert_tl_checkpoint(ckpt["state_dict"], model.cfg), strict=True)
    else:
        model = tl.HookedTransformer(tl.HookedTransformerConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval()


def _exported(model: HookedGrokTransformer, tmp_path: Path):
    return _documented_recipe(save_checkpoint(tmp_path / "c.pt", model, epoch=0, metrics={}))


@SHAPES
def test_exported_checkpoint_reproduces_our_logits(tmp_path: Path, cfg: TransformerConfig) -> None:
    ours = _trained_looking(cfg, seed=1).eval()
    path = save_checkpoint(tmp_path / "checkpoints" / "final.pt", ours, epoch=7, metrics={"test_acc": 0.5})
    tokens = Task("subtract", P, 0.3, 0).tokens  # all p^2 inputs
    for theirs in (_documented_recipe(path), to_transformer_lens(path), to_transformer_lens(ours)):
        assert type(theirs).__name__ == ("TransformerBridge" if TL4 else "HookedTransformer")
        with torch.no_grad():
            torch.testing.assert_close(theirs(tokens), ours(tokens), atol=1e-5, rtol=1e-5)


@SHAPES
def test_exported_checkpoint_gives_the_same_cache(tmp_path: Path, cfg: TransformerConfig) -> None:
    """Every hook point we have exists in TransformerLens' cache with the same values
    (under 4.x: as a bridge alias; ``hook_attn_scores`` there is pinned below)."""
    ours = _trained_looking(cfg, seed=4).eval()
    theirs = _exported(ours, tmp_path)
    tokens = Task("add", P, 0.3, 0).tokens
    with torch.no_grad():
        our_logits, our_cache = ours.run_with_cache(tokens)
        tl_logits, tl_cache = theirs.run_with_cache(tokens)
    torch.testing.assert_close(tl_logits, our_logits, atol=1e-5, rtol=1e-5)
    assert set(our_cache) <= set(tl_cache.keys()), sorted(set(our_cache) - set(tl_cache.keys()))
    compared = 0
    for name, act in our_cache.items():
        if TL4 and name.endswith(TL4_DIVERGENT_HOOKS):
            continue
        finite = torch.isfinite(act)  # masked attention scores: -inf in both (TL may use a large negative)
        assert tl_cache[name].shape == act.shape, name
        torch.testing.assert_close(tl_cache[name][finite], act[finite], atol=1e-5, rtol=1e-4, msg=name)
        compared += 1
    assert compared >= len(our_cache) - cfg.n_layers


def test_transformer_lens_4_fires_hook_attn_scores_with_the_pattern(tmp_path: Path) -> None:
    """The one hook TransformerLens 4.0-4.3 report differently (TL4_DIVERGENT_HOOKS): a
    ``boot_native`` bridge's ``hook_attn_scores`` holds the softmaxed pattern. When this
    fails, TransformerLens has fixed it: drop the name from TL4_DIVERGENT_HOOKS."""
    if not TL4:
        pytest.skip("TransformerLens 3 fires hook_attn_scores with the scores (checked with the cache above)")
    ours = _trained_looking(LN_TWO_LAYER, seed=4).eval()
    tokens = Task("add", P, 0.3, 0).tokens[:20]
    with torch.no_grad():
        _, ours_cache = ours.run_with_cache(tokens)
        _, cache = _exported(ours, tmp_path).run_with_cache(tokens)
    for layer in range(LN_TWO_LAYER.n_layers):
        a = f"blocks.{layer}.attn."
        torch.testing.assert_close(cache[a + "hook_attn_scores"], ours_cache[a + "hook_pattern"], atol=1e-6, rtol=1e-5)


def test_circuit_analysis_reads_the_same_activations_from_transformer_lens(tmp_path: Path) -> None:
    from groktransfer.interp.forward import run_all_inputs

    ours = _trained_looking(ONE_LAYER, seed=2).eval()
    theirs = _exported(ours, tmp_path)
    tokens = Task("add", P, 0.3, 0).tokens
    a, b = run_all_inputs(ours, tokens, chunk=50), run_all_inputs(theirs, tokens, chunk=50)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.neuron_acts, a.neuron_acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.attention, a.attention, atol=1e-6, rtol=1e-6)


def test_original_paper_checkpoint_reaches_transformer_lens_through_our_loader(tmp_path: Path) -> None:
    """A paper-format file (p+1 outputs) -> load_checkpoint -> our format -> TransformerLens."""
    from test_circuits import paper_format_file  # the synthetic paper-format writer

    ours = _trained_looking(ONE_LAYER, seed=3)
    with torch.no_grad():  # the paper's model has no attention / unembedding biases
        for name, param in ours.named_parameters():
            if name.endswith(("b_Q", "b_K", "b_V", "b_O", "b_U")):
                param.zero_()
    paper_path = paper_format_file(ours, tmp_path / "paper.pth")
    theirs = to_transformer_lens(paper_path)
    tokens = Task("add", P, 0.3, 0).tokens
    with torch.no_grad():
        logits = theirs(tokens)[:, -1]
        assert logits.shape[-1] == P + 1  # the paper's extra '=' output survives the round trip
        torch.testing.assert_close(logits[:, :P], ours(tokens)[:, -1], atol=1e-5, rtol=1e-5)


def _processed_transformer_lens(theirs):
    """TransformerLens' load-time processing (fold LN, centre writing weights, centre the
    unembedding, fold value biases), and its weights in HookedTransformer names."""
    if TL4:
        theirs.enable_compatibility_mode(disable_warnings=True)
        return {k: v.detach() for k, v in theirs.get_params().items()}
    theirs.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    return {k: v for k, v in theirs.state_dict().items() if k.rsplit(".", 1)[-1] not in ("mask", "IGNORE")}


@SHAPES
def test_our_weight_processing_equals_transformer_lens(tmp_path: Path, cfg: TransformerConfig) -> None:
    """groktransfer.interp.processing == TransformerLens' processing on the same model.

    One difference under 4.x, pinned: with LayerNorm, 4.0-4.3 leave the unembedding's
    mean over d_model in (3.x and we remove it); the final LayerNorm's output has zero mean
    there, so the two compute the same function, and the logits are compared too."""
    from groktransfer.interp.processing import process_state_dict

    ours = _trained_looking(cfg, seed=5).eval()
    theirs = _exported(ours, tmp_path)
    processed = _processed_transformer_lens(theirs)
    mine = process_state_dict(ours.state_dict())
    compared = 0
    for name, value in processed.items():
        if name not in mine and TL4:  # get_params() reports an attention-only model's absent MLP as zeros
            assert cfg.attn_only and ".mlp." in name and not value.any(), name
            continue
        if TL4 and name == "unembed.W_U" and cfg.normalization == "LN":
            assert value.mean(dim=0).abs().max() > 1e-3  # the difference is there (else: drop this branch)
            value = value - value.mean(dim=0, keepdim=True)
        torch.testing.assert_close(value, mine[name], atol=1e-5, rtol=1e-5, msg=name)
        compared += 1
    assert compared >= 10
    dropped = set(mine) - set(processed)  # TransformerLens deletes folded LayerNorm parameters
    assert all(".ln" in k or k.startswith("ln_final") or k.endswith(("mask", "IGNORE")) for k in dropped), dropped
    for k in dropped:
        if k.endswith(".w"):
            assert bool((mine[k] == 1).all())
        elif k.endswith(".b") and (".ln" in k or k.startswith("ln_final")):
            assert bool((mine[k] == 0).all())
    tokens = Task("add", P, 0.3, 0).tokens
    ours_processed = ours.__class__(ours.config, seed=0)
    ours_processed.load_state_dict(mine)
    with torch.no_grad():
        torch.testing.assert_close(ours_processed(tokens), theirs(tokens), atol=1e-4, rtol=1e-4)


def test_head_ablation_reads_the_same_numbers_from_transformer_lens(tmp_path: Path) -> None:
    from groktransfer.interp import ablation

    ours = _trained_looking(LN_TWO_LAYER, seed=6).eval()
    theirs = _exported(ours, tmp_path)
    task = Task("add", P, 0.3, 0)
    a, _ = ablation.ablate_heads(ours, task, kind="mean", sites=("z", "v"))
    b, _ = ablation.ablate_heads(theirs, task, kind="mean", sites=("z", "v"))
    torch.testing.assert_close(torch.tensor(b.loss.values), torch.tensor(a.loss.values), atol=1e-5, rtol=1e-5)


@only_tl3
def test_direct_logit_attribution_reads_the_same_numbers_from_hooked_transformer(tmp_path: Path) -> None:
    from groktransfer.interp import attribution

    ours = _trained_looking(LN_TWO_LAYER, seed=6).eval()
    theirs = _exported(ours, tmp_path)
    task = Task("add", P, 0.3, 0)
    da = attribution.direct_logit_attribution(ours, task).table()
    db = attribution.direct_logit_attribution(theirs, task).table()
    assert list(da.part) == list(db.part)
    torch.testing.assert_close(torch.tensor(db["mean"].values), torch.tensor(da["mean"].values), atol=1e-4, rtol=1e-4)


def test_export_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    """Seeds are honoured: exporting in the middle of a seeded computation changes nothing."""
    ours = _trained_looking(LN_TWO_LAYER, seed=7)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    to_transformer_lens(ours)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]


# --------------------------------------------------------------------------- TransformerLens' files -> ours
def _transformer_lens_model(normalization, act: str, attn_only: bool, d_vocab_out: int = P):
    """A randomly initialised model built and written by TransformerLens itself."""
    fields = dict(n_layers=2, n_heads=2, d_head=8, d_model=16, d_mlp=None if attn_only else 32, n_ctx=3, d_vocab=P + 1,
                  d_vocab_out=d_vocab_out, act_fn=act, normalization_type=normalization, attn_only=attn_only, seed=3,
                  device="cpu")  # fmt: skip
    if TL4:
        from transformer_lens import TransformerBridge
        from transformer_lens.config import TransformerBridgeConfig

        model = TransformerBridge.boot_native(TransformerBridgeConfig(**fields))
    else:
        model = tl.HookedTransformer(tl.HookedTransformerConfig(**fields))
    with torch.no_grad():  # TransformerLens initialises biases (and LayerNorm) to constants
        gen = torch.Generator().manual_seed(0)
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen))
    return model.eval()


SHAPES_TL = pytest.mark.parametrize("normalization,act,attn_only", [(None, "relu", False), ("LN", "gelu", False), ("LN", "relu", True)],
                                    ids=["no_ln_relu", "ln_gelu", "attn_only"])  # fmt: skip


@SHAPES_TL
def test_a_state_dict_transformer_lens_wrote_loads_with_its_logits(tmp_path: Path, normalization, act, attn_only) -> None:
    """``torch.save(model.state_dict())`` -- what both versions' own training code writes --
    with the model's shape given (a 4.x state dict cannot say how many heads it has)."""
    theirs = _transformer_lens_model(normalization, act, attn_only)
    torch.save(theirs.state_dict(), tmp_path / "model.pt")
    shape = TransformerConfig(name="tl", n_layers=2, n_heads=2, d_head=8, d_model=16, d_mlp=1 if attn_only else 32, n_ctx=3,
                        d_vocab=P + 1, d_vocab_out=P, act=act, normalization=normalization, attn_only=attn_only,
                        attn_bias=True, unembed_bias=True)  # fmt: skip
    loaded = load_checkpoint(tmp_path / "model.pt", model_config=shape)
    assert loaded.source_format == "transformer_lens"
    tokens = Task("add", P, 0.3, 0).tokens
    with torch.no_grad():
        torch.testing.assert_close(loaded.build_model().eval()(tokens), theirs(tokens), atol=1e-5, rtol=1e-5)
    if not TL4:  # a HookedTransformer state dict also tells its shape (the activation apart)
        assert load_checkpoint(tmp_path / "model.pt").model_config == replace(shape, name="transformer_lens", act="relu")


@SHAPES_TL
def test_a_transformer_lens_4_model_saved_with_its_config_loads_alone(tmp_path: Path, normalization, act, attn_only) -> None:
    if not TL4:
        pytest.skip("bridge_checkpoint saves TransformerLens 4 bridges")
    from groktransfer.model.transformer_lens import bridge_checkpoint

    theirs = _transformer_lens_model(normalization, act, attn_only)
    torch.save(bridge_checkpoint(theirs), tmp_path / "model.pt")
    loaded = load_checkpoint(tmp_path / "model.pt")
    cfg = loaded.model_config
    assert (cfg.n_heads, cfg.d_head, cfg.act, cfg.normalization, cfg.attn_only) == (2, 8, act, normalization, attn_only)
    tokens = Task("add", P, 0.3, 0).tokens
    with torch.no_grad():
        torch.testing.assert_close(loaded.build_model().eval()(tokens), theirs(tokens), atol=1e-5, rtol=1e-5)


@SHAPES
def test_our_import_inverts_transformer_lens_4s_converter(cfg: TransformerConfig) -> None:
    """hooked_state_dict(convert_tl_checkpoint(sd)) == sd, bit for bit (the buffers aside)."""
    if not TL4:
        pytest.skip("convert_tl_checkpoint is TransformerLens 4's")
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    from groktransfer.model.transformer_lens import hooked_state_dict

    ours = _trained_looking(cfg, seed=8)
    sd = ours.state_dict()
    bridge_cfg = TransformerBridgeConfig.from_dict(ours.hooked_transformer_config_dict())
    back = hooked_state_dict(convert_tl_checkpoint(sd, bridge_cfg), cfg.n_heads)
    assert set(sd) - set(back) == {f"blocks.{i}.attn.{b}" for i in range(cfg.n_layers) for b in ("mask", "IGNORE")}
    for name, value in back.items():
        assert torch.equal(value, sd[name]), name


def test_a_source_checkout_of_transformer_lens_is_told_apart_by_its_layout(monkeypatch) -> None:
    """TransformerLens' own repository installs as version 0.0.0: 4.x has no HookedTransformer module."""
    from groktransfer.model import transformer_lens as interop

    monkeypatch.setattr(interop.metadata, "version", lambda name: "0.0.0")
    assert interop.installed_major() == (4 if TL4 else 3)

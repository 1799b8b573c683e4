"""Checkpoints written by this project load into TransformerLens' HookedTransformer, and
our weight processing equals TransformerLens'.

CI installs TransformerLens 3.x through the ``tl`` extra (``.ci/run`` sets
``GROKTRANSFER_EXTRAS=test,tl`` and ``GROKTRANSFER_REQUIRE_TL=1``), so there these tests
run and a missing or unusable TransformerLens is an error, not a skip. Elsewhere they are
skipped when ``transformer_lens`` is missing or has no ``HookedTransformer`` (removed in 4.0).

What is checked is the README recipe: ``HookedTransformer(HookedTransformerConfig(
**ckpt["config"]))`` + ``load_state_dict(ckpt["state_dict"])`` reproduces our logits on all
p^2 inputs and every activation in the cache, the analyses read the same numbers from
either model, and ``groktransfer.interp.processing`` gives TransformerLens' processed weights.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from groktransfer.model.checkpoint import load_checkpoint, save_checkpoint
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.tasks.modular import Task

if os.environ.get("GROKTRANSFER_REQUIRE_TL") == "1":
    import transformer_lens as tl  # CI: must be importable

    assert hasattr(tl, "HookedTransformer"), f"TransformerLens {tl.__version__ if hasattr(tl, '__version__') else '?'} has no HookedTransformer"
else:
    tl = pytest.importorskip("transformer_lens")
    if not hasattr(tl, "HookedTransformer") or not hasattr(tl, "HookedTransformerConfig"):
        pytest.skip("this TransformerLens has no HookedTransformer (removed in 4.0)", allow_module_level=True)

P = 13
ONE_LAYER = TransformerConfig(d_vocab=P + 1, d_vocab_out=P)  # the Nanda et al. shape: 128 / 4 heads / 512


def _trained_looking(cfg: TransformerConfig, seed: int) -> HookedGrokTransformer:
    """Random weights plus non-zero biases, so every parameter's layout is exercised."""
    model = HookedGrokTransformer(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 or name.endswith(("b_Q", "b_K", "b_V")):
                param.add_(0.2 * torch.randn(param.shape, generator=gen))
    return model


def _load_into_transformer_lens(path: Path):
    """The README recipe, verbatim apart from the path."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = tl.HookedTransformer(tl.HookedTransformerConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval()


@pytest.mark.parametrize("cfg", [ONE_LAYER, "LN_TWO_LAYER"], ids=["one_layer", "two_layer_ln_gelu"])
def test_exported_checkpoint_reproduces_our_logits_in_hooked_transformer(tmp_path: Path, cfg) -> None:
    cfg = LN_TWO_LAYER if cfg == "LN_TWO_LAYER" else cfg
    ours = _trained_looking(cfg, seed=1).eval()
    path = save_checkpoint(tmp_path / "checkpoints" / "final.pt", ours, epoch=7, metrics={"test_acc": 0.5})
    hooked = _load_into_transformer_lens(path)
    tokens = Task("subtract", P, 0.3, 0).tokens  # all p^2 inputs
    with torch.no_grad():
        torch.testing.assert_close(hooked(tokens), ours(tokens), atol=1e-5, rtol=1e-5)


def test_circuit_analysis_reads_the_same_activations_from_transformer_lens(tmp_path: Path) -> None:
    from groktransfer.interp.forward import run_all_inputs

    ours = _trained_looking(ONE_LAYER, seed=2).eval()
    hooked = _load_into_transformer_lens(save_checkpoint(tmp_path / "c.pt", ours, epoch=0, metrics={}))
    tokens = Task("add", P, 0.3, 0).tokens
    a, b = run_all_inputs(ours, tokens, chunk=50), run_all_inputs(hooked, tokens, chunk=50)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.neuron_acts, a.neuron_acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.attention, a.attention, atol=1e-6, rtol=1e-6)


def test_original_paper_checkpoint_reaches_transformer_lens_through_our_loader(tmp_path: Path) -> None:
    """A paper-format file (p+1 outputs) -> load_checkpoint -> our format -> HookedTransformer."""
    from test_circuits import paper_format_file  # the synthetic paper-format writer

    ours = _trained_looking(ONE_LAYER, seed=3)
    with torch.no_grad():  # the paper's model has no attention / unembedding biases
        for name, param in ours.named_parameters():
            if name.endswith(("b_Q", "b_K", "b_V", "b_O", "b_U")):
                param.zero_()
    paper_path = paper_format_file(ours, tmp_path / "paper.pth")
    converted = load_checkpoint(paper_path).build_model()
    path = save_checkpoint(tmp_path / "converted.pt", converted, epoch=0, metrics={})
    hooked = _load_into_transformer_lens(path)
    tokens = Task("add", P, 0.3, 0).tokens
    with torch.no_grad():
        theirs = hooked(tokens)[:, -1]
        assert theirs.shape[-1] == P + 1  # the paper's extra '=' output survives the round trip
        torch.testing.assert_close(theirs[:, :P], ours(tokens)[:, -1], atol=1e-5, rtol=1e-5)


LN_TWO_LAYER = replace(ONE_LAYER, n_layers=2, normalization="LN", act="gelu", attn_bias=True, unembed_bias=True,
                       d_model=64, d_head=16, d_mlp=128)  # fmt: skip


@pytest.mark.parametrize("cfg", [ONE_LAYER, LN_TWO_LAYER], ids=["one_layer", "two_layer_ln_gelu"])
def test_exported_checkpoint_gives_the_same_cache_in_hooked_transformer(tmp_path: Path, cfg: TransformerConfig) -> None:
    """Every hook point we have exists in TransformerLens' cache with the same values."""
    ours = _trained_looking(cfg, seed=4).eval()
    hooked = _load_into_transformer_lens(save_checkpoint(tmp_path / "c.pt", ours, epoch=0, metrics={}))
    tokens = Task("add", P, 0.3, 0).tokens
    with torch.no_grad():
        our_logits, our_cache = ours.run_with_cache(tokens)
        tl_logits, tl_cache = hooked.run_with_cache(tokens)
    torch.testing.assert_close(tl_logits, our_logits, atol=1e-5, rtol=1e-5)
    assert set(our_cache) <= set(tl_cache.keys()), sorted(set(our_cache) - set(tl_cache.keys()))
    for name, act in our_cache.items():
        theirs = tl_cache[name]
        finite = torch.isfinite(act)  # masked attention scores: -inf in both (TL may use a large negative)
        assert theirs.shape == act.shape, name
        torch.testing.assert_close(theirs[finite], act[finite], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("cfg", [ONE_LAYER, LN_TWO_LAYER], ids=["one_layer", "two_layer_ln_gelu"])
def test_our_weight_processing_equals_transformer_lens(tmp_path: Path, cfg: TransformerConfig) -> None:
    """process_weights_ (fold LN, centre writing weights, centre unembed, fold value
    biases) in TransformerLens == groktransfer.interp.processing on the same model."""
    from groktransfer.interp.processing import process_state_dict

    ours = _trained_looking(cfg, seed=5).eval()
    hooked = _load_into_transformer_lens(save_checkpoint(tmp_path / "c.pt", ours, epoch=0, metrics={}))
    hooked.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    theirs = hooked.state_dict()
    mine = process_state_dict(ours.state_dict())
    compared = 0
    for name, value in theirs.items():
        if name.rsplit(".", 1)[-1] in ("mask", "IGNORE"):
            continue
        torch.testing.assert_close(value, mine[name], atol=1e-5, rtol=1e-5, msg=name)
        compared += 1
    assert compared >= 10
    dropped = set(mine) - set(theirs)  # TransformerLens deletes folded LayerNorm parameters
    assert all(".ln" in k or k.startswith("ln_final") or k.endswith(("mask", "IGNORE")) for k in dropped), dropped
    for k in dropped:
        if k.endswith(".w"):
            assert bool((mine[k] == 1).all())
        elif k.endswith(".b") and (".ln" in k or k.startswith("ln_final")):
            assert bool((mine[k] == 0).all())
    tokens = Task("add", P, 0.3, 0).tokens
    processed = ours.__class__(ours.config, seed=0)
    processed.load_state_dict(mine)
    with torch.no_grad():
        torch.testing.assert_close(processed(tokens), hooked(tokens), atol=1e-4, rtol=1e-4)


def test_interp_reads_the_same_numbers_from_transformer_lens(tmp_path: Path) -> None:
    """Ablation and DLA of the exported model in HookedTransformer agree with ours."""
    from groktransfer.interp import ablation, attribution

    ours = _trained_looking(LN_TWO_LAYER, seed=6).eval()
    hooked = _load_into_transformer_lens(save_checkpoint(tmp_path / "c.pt", ours, epoch=0, metrics={}))
    task = Task("add", P, 0.3, 0)
    a, _ = ablation.ablate_heads(ours, task, kind="mean", sites=("z", "v"))
    b, _ = ablation.ablate_heads(hooked, task, kind="mean", sites=("z", "v"))
    torch.testing.assert_close(torch.tensor(b.loss.values), torch.tensor(a.loss.values), atol=1e-5, rtol=1e-5)
    da = attribution.direct_logit_attribution(ours, task).table()
    db = attribution.direct_logit_attribution(hooked, task).table()
    assert list(da.part) == list(db.part)
    torch.testing.assert_close(torch.tensor(db["mean"].values), torch.tensor(da["mean"].values), atol=1e-4, rtol=1e-4)

"""Checkpoints written by this project load into TransformerLens' HookedTransformer.

Run for real with a TransformerLens 2.x/3.x install on the path, e.g.
``PYTHONPATH=/path/to/tl pytest tests/test_transformer_lens_compat.py``; skipped when
``transformer_lens`` is missing or has no ``HookedTransformer`` (removed in 4.0).

What is checked is the README recipe: ``HookedTransformer(HookedTransformerConfig(
**ckpt["config"]))`` + ``load_state_dict(ckpt["state_dict"])`` reproduces our logits on all
p^2 inputs, and the circuit analysis reads the same activations from either model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from groktransfer.checkpoint import load_checkpoint, save_checkpoint
from groktransfer.config.schema import ModelConfig
from groktransfer.model import HookedGrokTransformer
from groktransfer.tasks import Task

tl = pytest.importorskip("transformer_lens")
if not hasattr(tl, "HookedTransformer") or not hasattr(tl, "HookedTransformerConfig"):
    pytest.skip("this TransformerLens has no HookedTransformer (removed in 4.0)", allow_module_level=True)

P = 13
ONE_LAYER = ModelConfig(d_vocab=P + 1, d_vocab_out=P)  # the Nanda et al. shape: 128 / 4 heads / 512


def _trained_looking(cfg: ModelConfig, seed: int) -> HookedGrokTransformer:
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


@pytest.mark.parametrize(
    "cfg",
    [ONE_LAYER, replace(ONE_LAYER, n_layers=2, normalization="LN", act="gelu", attn_bias=True, unembed_bias=True,
                        d_model=64, d_head=16, d_mlp=128)],  # fmt: skip
    ids=["one_layer", "two_layer_ln_gelu"],
)
def test_exported_checkpoint_reproduces_our_logits_in_hooked_transformer(tmp_path: Path, cfg: ModelConfig) -> None:
    ours = _trained_looking(cfg, seed=1).eval()
    path = save_checkpoint(tmp_path / "checkpoints" / "final.pt", ours, epoch=7, metrics={"test_acc": 0.5})
    hooked = _load_into_transformer_lens(path)
    tokens = Task("subtract", P, 0.3, 0).tokens  # all p^2 inputs
    with torch.no_grad():
        torch.testing.assert_close(hooked(tokens), ours(tokens), atol=1e-5, rtol=1e-5)


def test_circuit_analysis_reads_the_same_activations_from_transformer_lens(tmp_path: Path) -> None:
    from groktransfer.analysis.circuits.forward import run_all_inputs

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

"""Files TransformerLens 4 wrote load into groktransfer without TransformerLens installed.

The files in tests/data/transformer_lens4 were written by TransformerLens 4.3.0
(``make_fixture.py`` there): a two-layer LayerNorm GELU ``TransformerBridge`` saved as
``bridge.state_dict()`` alone and with its config (``bridge_checkpoint``), and its logits
on fixed inputs. tests/test_transformer_lens_compat.py checks the same import against the
installed TransformerLens 4 itself; this module keeps it checked in every environment.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.checkpoint import CheckpointError, load_checkpoint
from groktransfer.model.transformer_lens import hooked_state_dict, is_bridge_state_dict

DATA = Path(__file__).resolve().parent / "data" / "transformer_lens4"
BARE, WITH_CONFIG = DATA / "bridge_state_dict.pt", DATA / "bridge_checkpoint.pt"
SHAPE = TransformerConfig(name="tl4", n_layers=2, n_heads=2, d_head=8, d_model=16, d_mlp=32, n_ctx=5, d_vocab=10, d_vocab_out=9,
                    act="gelu", normalization="LN", attn_bias=True, unembed_bias=True)  # fmt: skip


def _expected():
    return torch.load(DATA / "expected.pt", weights_only=True)


def _logits(loaded) -> torch.Tensor:
    with torch.no_grad():
        return loaded.build_model().eval()(_expected()["tokens"])


def test_a_bare_transformer_lens_4_state_dict_loads_with_the_models_shape() -> None:
    loaded = load_checkpoint(BARE, model_config=SHAPE)
    assert loaded.source_format == "transformer_lens" and loaded.model_config == SHAPE
    torch.testing.assert_close(_logits(loaded), _expected()["logits"], atol=1e-5, rtol=1e-5)


def test_a_transformer_lens_4_file_with_its_config_loads_alone() -> None:
    loaded = load_checkpoint(WITH_CONFIG)
    assert loaded.model_config == replace(SHAPE, name="transformer_lens")
    torch.testing.assert_close(_logits(loaded), _expected()["logits"], atol=1e-5, rtol=1e-5)


def test_the_import_gives_transformer_lens_3_names_and_per_head_shapes() -> None:
    sd = torch.load(BARE, weights_only=True)
    assert is_bridge_state_dict(sd) and not is_bridge_state_dict(load_checkpoint(BARE, model_config=SHAPE).state_dict)
    hooked = hooked_state_dict(sd, n_heads=2)
    assert hooked["blocks.0.attn.W_Q"].shape == (2, 16, 8) and hooked["blocks.0.attn.W_O"].shape == (2, 8, 16)
    assert hooked["blocks.0.attn.b_K"].shape == (2, 8) and hooked["unembed.W_U"].shape == (16, 9)
    assert hooked["blocks.1.mlp.W_in"].shape == (16, 32) and hooked["blocks.1.ln2.w"].shape == (16,)
    # head h of W_Q is rows h*d_head..(h+1)*d_head of q.weight, transposed
    assert torch.equal(hooked["blocks.1.attn.W_Q"][1], sd["blocks.1.attn.q.weight"][8:16].T)
    assert torch.equal(hooked["blocks.1.attn.W_O"][1], sd["blocks.1.attn.o.weight"][:, 8:16].T)


def test_a_bare_state_dict_without_the_models_shape_is_refused_with_the_fix() -> None:
    with pytest.raises(CheckpointError, match=r"bridge_state_dict\.pt.*does not record its number of heads.*model_config"):
        load_checkpoint(BARE)


def test_a_shape_that_splits_the_heads_differently_is_refused() -> None:
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.W_Q.*\(4, 16, 4\).*\(4, 16, 8\)"):
        load_checkpoint(BARE, model_config=replace(SHAPE, n_heads=4))


def _resaved(tmp_path: Path, edit) -> Path:
    obj = torch.load(WITH_CONFIG, weights_only=True)
    edit(obj)
    path = tmp_path / "edited.pt"
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("field,value", [("eps", 1e-6), ("positional_embedding_type", "rotary"), ("act_fn", "silu"),
                                         ("normalization_type", "RMS"), ("attn_scores_soft_cap", 30.0),
                                         ("attention_dir", "bidirectional"), ("gated_mlp", True)])  # fmt: skip
def test_a_config_our_model_does_not_compute_is_refused_by_name(tmp_path: Path, field: str, value) -> None:
    path = _resaved(tmp_path, lambda obj: obj["config"].update({field: value}))
    with pytest.raises(CheckpointError, match=rf"edited\.pt \(TransformerLens 4 state dict\).*{field}={value!r}"):
        load_checkpoint(path)


def test_a_config_that_contradicts_the_weights_is_refused(tmp_path: Path) -> None:
    path = _resaved(tmp_path, lambda obj: obj["config"].update(n_heads=4, d_head=8))
    with pytest.raises(CheckpointError, match=r"d_head=8 \(the weights have 4\)"):
        load_checkpoint(path)
    path = _resaved(tmp_path, lambda obj: obj["config"].update(n_heads="2"))
    with pytest.raises(CheckpointError, match=r"n_heads must be a positive int, got '2'"):
        load_checkpoint(path)


def test_parameters_our_model_does_not_have_are_refused_by_name(tmp_path: Path) -> None:
    gate = {"blocks.0.mlp.gate.weight": torch.zeros(32, 16), "blocks.0.attn.rotary.inv_freq": torch.zeros(4)}
    path = _resaved(tmp_path, lambda obj: obj["state_dict"].update(gate))
    with pytest.raises(CheckpointError, match=r"does not have: \['blocks\.0\.attn\.rotary\.inv_freq', 'blocks\.0\.mlp\.gate\.weight'\]"):
        load_checkpoint(path)


def test_a_state_dict_missing_a_layernorm_bias_is_refused(tmp_path: Path) -> None:
    """An RMS-norm model's state dict has a scale and no bias: refused, not read as LayerNorm."""
    path = _resaved(tmp_path, lambda obj: obj["state_dict"].pop("blocks.1.ln2.bias"))
    with pytest.raises(CheckpointError, match=r"blocks\.1\.ln2\.b"):
        load_checkpoint(path)

"""Checkpoints: round trip, refusal of bad files, and the original paper's format."""

from __future__ import annotations

import collections
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from groktransfer.model.checkpoint import (
    FORMAT,
    CheckpointError,
    detect_format,
    load_checkpoint,
    load_into,
    save_checkpoint,
)
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.transformer import HookedGrokTransformer

SMALL = TransformerConfig(n_heads=2, d_model=16, d_head=8, d_mlp=32, d_vocab=8, d_vocab_out=7)


def all_pairs(p: int) -> torch.Tensor:
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.full_like(a, p)], dim=1)


# --------------------------------------------------------------------------- our format
def test_round_trip_gives_identical_logits_and_metadata(tmp_path: Path):
    model = HookedGrokTransformer(replace(SMALL, attn_bias=True), seed=4)
    with torch.no_grad():
        model.blocks[0].attn.b_Q.normal_()
    path = save_checkpoint(
        tmp_path / "ckpt" / "epoch_000010.pt", model, epoch=10, metrics={"test_acc": 0.5}, extra={"note": "x"}
    )
    assert [p.name for p in path.parent.iterdir()] == ["epoch_000010.pt"]  # no temp file left

    raw = torch.load(path, map_location="cpu", weights_only=True)  # readable without this package
    assert raw["format"] == FORMAT and raw["note"] == "x"
    assert raw["config"]["d_vocab_out"] == 7 and raw["config"]["n_heads"] == 2
    assert raw["state_dict"]["embed.W_E"].shape == (8, 16)

    loaded = load_checkpoint(path)
    assert loaded.source_format == "groktransfer"
    assert loaded.epoch == 10 and loaded.metrics == {"test_acc": 0.5} and loaded.raw["note"] == "x"
    assert loaded.model_config == model.config
    tokens = torch.randint(0, 8, (20, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.build_model()(tokens), model(tokens))

    target = HookedGrokTransformer(model.config, seed=99)
    load_into(target, loaded)
    assert torch.equal(target(tokens), model(tokens))


def test_save_refuses_values_weights_only_could_not_load(tmp_path: Path):
    model = HookedGrokTransformer(SMALL, seed=0)
    with pytest.raises(TypeError, match=r"metrics\.bad"):
        save_checkpoint(tmp_path / "a.pt", model, epoch=1, metrics={"bad": object()})
    with pytest.raises(ValueError, match="state_dict"):
        save_checkpoint(tmp_path / "a.pt", model, epoch=1, metrics={}, extra={"state_dict": {}})
    assert not list(tmp_path.iterdir())


def test_truncated_file_is_a_checkpoint_error(tmp_path: Path):
    path = save_checkpoint(tmp_path / "full.pt", HookedGrokTransformer(SMALL, seed=0), epoch=1, metrics={})
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_checkpoint(broken)
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


class Payload:
    """An arbitrary class: unpickling it would mean importing and running code."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_pickled_object_is_refused_by_weights_only(tmp_path: Path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*weights_only=True"):
        load_checkpoint(path)


def test_shape_mismatch_names_the_parameter(tmp_path: Path):
    path = save_checkpoint(tmp_path / "c.pt", HookedGrokTransformer(SMALL, seed=0), epoch=1, metrics={})
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["blocks.0.mlp.W_in"] = torch.zeros(16, 33)
    del raw["state_dict"]["unembed.b_U"]
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "c.pt" in message and "'blocks.0.mlp.W_in'" in message and "(16, 33)" in message and "(16, 32)" in message
    assert "unembed.b_U" in message


def test_unknown_layout_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="unrecognised"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- the paper's format
def paper_state_dict(p: int, d_model: int, n_heads: int, d_mlp: int, seed: int) -> dict:
    """Random weights in the original code's layout (with its float causal-mask buffer)."""
    gen = torch.Generator().manual_seed(seed)
    d_head, d_vocab = d_model // n_heads, p + 1

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) / math.sqrt(shape[-1])

    return collections.OrderedDict(
        {
            "embed.W_E": randn(d_model, d_vocab),
            "pos_embed.W_pos": randn(3, d_model),
            "blocks.0.attn.W_K": 2 * randn(n_heads, d_head, d_model),
            "blocks.0.attn.W_Q": 2 * randn(n_heads, d_head, d_model),
            "blocks.0.attn.W_V": randn(n_heads, d_head, d_model),
            "blocks.0.attn.W_O": randn(d_model, d_head * n_heads),
            "blocks.0.attn.mask": torch.tril(torch.ones(3, 3)),
            "blocks.0.mlp.W_in": randn(d_mlp, d_model),
            "blocks.0.mlp.b_in": 0.3 * torch.randn(d_mlp, generator=gen),
            "blocks.0.mlp.W_out": randn(d_model, d_mlp),
            "blocks.0.mlp.b_out": 0.3 * torch.randn(d_model, generator=gen),
            "unembed.W_U": randn(d_model, d_vocab),
        }
    )


def paper_forward(sd: dict, tokens: torch.Tensor, act: str = "ReLU") -> torch.Tensor:
    """The original model's forward, written on the original layout (independent of ours)."""
    d_head = sd["blocks.0.attn.W_Q"].shape[1]
    x = torch.einsum("dbp->bpd", sd["embed.W_E"][:, tokens])
    x = x + sd["pos_embed.W_pos"][: x.shape[-2]]
    k = torch.einsum("ihd,bpd->biph", sd["blocks.0.attn.W_K"], x)
    q = torch.einsum("ihd,bpd->biph", sd["blocks.0.attn.W_Q"], x)
    v = torch.einsum("ihd,bpd->biph", sd["blocks.0.attn.W_V"], x)
    scores = torch.einsum("biph,biqh->biqp", k, q)
    mask = sd["blocks.0.attn.mask"]
    scores = torch.tril(scores) - 1e10 * (1 - mask)
    pattern = F.softmax(scores / math.sqrt(d_head), dim=-1)
    z = torch.einsum("biph,biqp->biqh", v, pattern)
    z_flat = z.permute(0, 2, 1, 3).reshape(z.shape[0], z.shape[2], -1)  # b q (i h)
    x = x + torch.einsum("df,bqf->bqd", sd["blocks.0.attn.W_O"], z_flat)
    hidden = torch.einsum("md,bpd->bpm", sd["blocks.0.mlp.W_in"], x) + sd["blocks.0.mlp.b_in"]
    hidden = F.relu(hidden) if act == "ReLU" else F.gelu(hidden)
    x = x + torch.einsum("dm,bpm->bpd", sd["blocks.0.mlp.W_out"], hidden) + sd["blocks.0.mlp.b_out"]
    return x @ sd["unembed.W_U"]


@pytest.mark.parametrize("p,d_model,n_heads,act", [(7, 16, 2, "ReLU"), (11, 24, 4, "GeLU"), (11, 12, 3, "ReLU")])
def test_paper_import_reproduces_the_original_logits(tmp_path: Path, p, d_model, n_heads, act):
    sd = paper_state_dict(p, d_model, n_heads, d_mlp=4 * d_model, seed=p + n_heads)
    config = {"p": p, "d_model": d_model, "num_heads": n_heads, "d_mlp": 4 * d_model, "n_ctx": 3}
    config.update({"num_layers": 1, "act_type": act, "fn_name": "add", "frac_train": 0.3, "seed": 0, "use_ln": False})
    path = tmp_path / "paper.pth"
    torch.save({"model": sd, "config": config, "epoch": 500, "train_loss": 0.25, "test_loss": 2.0}, path)

    loaded = load_checkpoint(path)
    assert loaded.source_format == "nanda2023" and loaded.epoch == 500
    assert loaded.metrics == {"train_loss": 0.25, "test_loss": 2.0}
    cfg = loaded.model_config
    assert (cfg.d_vocab, cfg.d_vocab_out, cfg.n_heads, cfg.d_head) == (p + 1, p + 1, n_heads, d_model // n_heads)
    assert cfg.act == act.lower() and cfg.mlp_bias and not cfg.attn_bias and not cfg.unembed_bias
    assert loaded.raw["config"]["fn_name"] == "add"

    model = loaded.build_model()
    tokens = all_pairs(p)
    expected = paper_forward(sd, tokens, act)
    torch.testing.assert_close(model(tokens), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.forward_last(tokens), expected[:, -1], atol=1e-5, rtol=1e-5)


def test_paper_state_dicts_list_picks_by_index(tmp_path: Path):
    sds = [paper_state_dict(7, 16, 2, 32, seed=s) for s in range(3)]
    path = tmp_path / "run.pth"
    torch.save({"state_dicts": sds, "epochs": [0, 100, 200], "config": {"p": 7}}, path)
    assert detect_format(torch.load(path, weights_only=True)) == "nanda2023"
    tokens = all_pairs(7)
    for index, expected_sd, epoch in ((None, sds[-1], 200), (0, sds[0], 0), (-2, sds[1], 100)):
        loaded = load_checkpoint(path, index=index)
        assert loaded.epoch == epoch
        expected = paper_forward(expected_sd, tokens)
        torch.testing.assert_close(loaded.build_model()(tokens), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(CheckpointError, match="index 5"):
        load_checkpoint(path, index=5)


def test_paper_import_refuses_inconsistent_files(tmp_path: Path):
    sd = paper_state_dict(7, 16, 2, 32, seed=0)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd, "config": {"p": 11}}, path)
    with pytest.raises(CheckpointError, match=r"bad\.pth.*p=11"):
        load_checkpoint(path)
    torch.save({"model": {**sd, "blocks.0.ln1.w_ln": torch.ones(16)}}, path)
    with pytest.raises(CheckpointError, match="LayerNorm"):
        load_checkpoint(path)
    broken = dict(sd)
    broken["blocks.0.attn.W_O"] = torch.zeros(16, 15)
    torch.save({"model": broken}, path)
    with pytest.raises(CheckpointError, match=r"bad\.pth.*'blocks\.0\.attn\.W_O' has shape \(16, 15\)"):
        load_checkpoint(path)


def test_checkpoint_loads_into_transformer_lens(tmp_path: Path):
    """The contract with TransformerLens (<4, which still has HookedTransformer); skipped without it."""
    tl = pytest.importorskip("transformer_lens")
    if not hasattr(tl, "HookedTransformerConfig"):
        pytest.skip("this TransformerLens has no HookedTransformer (removed in 4.0)")
    cfg = replace(SMALL, n_layers=2, normalization="LN", act="gelu", attn_bias=True, unembed_bias=True)
    model = HookedGrokTransformer(cfg, seed=0)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(0.3 * torch.randn_like(param))
    raw = torch.load(save_checkpoint(tmp_path / "c.pt", model, epoch=0, metrics={}), weights_only=True)
    hooked = tl.HookedTransformer(tl.HookedTransformerConfig(**raw["config"]))
    hooked.load_state_dict(raw["state_dict"], strict=True)
    tokens = torch.randint(0, 8, (10, 3), generator=torch.Generator().manual_seed(0))
    ours, our_cache = model.run_with_cache(tokens)
    theirs, their_cache = hooked.run_with_cache(tokens)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert set(our_cache) <= set(their_cache.keys())
    for name in our_cache:
        torch.testing.assert_close(our_cache[name], their_cache[name], atol=1e-5, rtol=1e-5, msg=name)

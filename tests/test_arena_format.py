"""ARENA's digit-sum model format: a bare TransformerLens ``state_dict()`` of a 2-layer,
3-head attention-only LayerNorm model with 12 outputs ('+' and '=' unused) loads, is read
by ``analyze.py checkpoint=...`` and can be a transfer source.

The file is written by the installed TransformerLens: under 3.x ARENA's own layout
(``HookedTransformer.state_dict()``), under 4.x the same model as a ``TransformerBridge``
saved with its config (``bridge_checkpoint``: a 4.x state dict alone does not say how
many heads it has)."""

from __future__ import annotations

import subprocess

import pytest
import torch

from conftest import PYTHON, REPO, script_env, transformer_lens_or_skip
from groktransfer.model.checkpoint import CheckpointError, load_checkpoint
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.transformer_lens import installed_major

transformer_lens = transformer_lens_or_skip()
TL4 = installed_major() == 4


@pytest.fixture(scope="module")
def arena_file(tmp_path_factory):
    fields = dict(n_layers=2, n_heads=3, d_head=24, d_model=48, normalization_type="LN", attn_only=True, d_vocab=12,
                  d_vocab_out=12, n_ctx=14, act_fn="relu", seed=0, device="cpu")  # fmt: skip
    path = tmp_path_factory.mktemp("arena") / "sum_model.pt"
    if TL4:
        from transformer_lens import TransformerBridge
        from transformer_lens.config import TransformerBridgeConfig

        from groktransfer.model.transformer_lens import bridge_checkpoint

        tl = TransformerBridge.boot_native(TransformerBridgeConfig(**fields)).eval()
        torch.save(bridge_checkpoint(tl), path)
    else:
        tl = transformer_lens.HookedTransformer(transformer_lens.HookedTransformerConfig(**fields)).eval()
        torch.save(tl.state_dict(), path)
    return path, tl


def test_an_arena_state_dict_loads_as_an_attention_only_model_with_twelve_outputs(arena_file) -> None:
    path, tl = arena_file
    ckpt = load_checkpoint(path)
    cfg = ckpt.model_config
    assert ckpt.source_format == "transformer_lens" and cfg.attn_only and cfg.normalization == "LN"
    assert (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model, cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx) == (2, 3, 24, 48, 12, 12, 14)
    tokens = torch.tensor([[2, 7, 6, 4, 10, 1, 5, 0, 4, 11, 4, 2, 6, 8]])
    with torch.no_grad():
        torch.testing.assert_close(ckpt.build_model().eval()(tokens), tl(tokens), atol=1e-5, rtol=1e-5)


def test_an_arena_state_dict_is_a_transfer_source_with_the_targets_shape(arena_file) -> None:
    path, _ = arena_file
    shape = dict(name="attn_only_2l", attn_only=True, n_layers=2, n_heads=3, d_model=48, d_head=24, d_mlp=1,
                 normalization="LN", n_ctx=14, d_vocab=12, attn_bias=True, mlp_bias=False, unembed_bias=True)  # fmt: skip
    assert load_checkpoint(path, model_config=TransformerConfig(**shape, d_vocab_out=12)).model_config.d_vocab_out == 12
    with pytest.raises(CheckpointError, match=r"set model.d_vocab_out=12"):
        load_checkpoint(path, model_config=TransformerConfig(**shape, d_vocab_out=10))


def test_a_state_dict_that_cannot_be_attention_only_is_refused(arena_file, tmp_path) -> None:
    path, tl = arena_file
    saved = torch.load(path, weights_only=True)
    sd = dict(saved["state_dict"] if TL4 else saved)
    if TL4:  # an MLP in one block only
        sd.update({"blocks.0.mlp.in.weight": torch.zeros(16, 48), "blocks.0.mlp.in.bias": torch.zeros(16)})
    else:
        sd["blocks.0.mlp.W_in"] = torch.zeros(48, 16)
    bad = tmp_path / "bad.pt"
    torch.save({**saved, "state_dict": sd} if TL4 else sd, bad)
    with pytest.raises(CheckpointError, match="neither a full nor an attention-only model"):
        load_checkpoint(bad)
    from groktransfer.analysis.circuits import analyze_checkpoint

    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="attention-only"):  # analyze.py: one line on stderr, exit 2
        analyze_checkpoint(bad, "digit_add", out_dir=out)
    assert not out.exists()


def _fast_interp():
    from groktransfer.analysis.settings import HeadSite, InterpSettings

    return InterpSettings(max_inputs=64, head_sites=[HeadSite("z"), HeadSite("q"), HeadSite("k")], spectra=False, probes=False)


SECTIONS = ("### Findings", "Layer-0 QK circuit with mean queries", "OV circuits and their composition", "Path attribution",
            "Unembedding geometry", "Last-layer attention by carry class", "Probability on the correct token",
            "per carry class", "| W_U's digit columns are one frequency")  # fmt: skip


def test_the_interpretation_of_an_arena_state_dict_states_the_findings(arena_file, tmp_path) -> None:
    """What ``analyze.py checkpoint=...`` shows, without its figures of the generic analyses (slow to draw);
    the whole command runs in the slow test below."""
    from groktransfer.tasks.digits import DigitSettings, DigitTask
    from groktransfer.interp import plots
    from groktransfer.interp import interpret
    from groktransfer.interp.writeup import sections, summary_json

    path, _ = arena_file
    task = DigitTask(DigitSettings("digit_add", n_digits=4, n_train=64, n_test=64), 0)
    res = interpret(load_checkpoint(path).build_model(), task, _fast_interp())
    text = "\n".join(sections(res))
    for section in SECTIONS:
        assert section in text, section
    findings = summary_json(res)["findings"]
    assert len(findings) == 12 and {f["verdict"] for f in findings} <= {"holds", "differs", "not measured"}
    assert plots.plot_unembed_circle(res, tmp_path / "u.png", 30).is_file()
    assert plots.plot_qk_mean_query(res, tmp_path / "q.png", 30).is_file()
    assert plots.plot_prob_correct(res, tmp_path / "p.png", 30).is_file()
    assert plots.plot_attention_by_class(res, tmp_path / "c.png", 30).is_file()
    assert {"unembed_gram", "unembed_fourier", "attention_by_class"} <= set(res.tables)


@pytest.mark.skipif(TL4, reason="the readings read weights in HookedTransformer names; a TransformerLens 4 bridge's state_dict() has its own")
def test_the_readings_give_the_same_numbers_on_the_transformer_lens_model(arena_file) -> None:
    from groktransfer.tasks.digits import DigitSettings, DigitTask
    from groktransfer.interp import interpret

    path, tl = arena_file
    task = DigitTask(DigitSettings("digit_add", n_digits=4, n_train=64, n_test=64), 0)
    ours = interpret(load_checkpoint(path).build_model(), task, _fast_interp()).scalars
    theirs = interpret(tl, task, _fast_interp()).scalars
    keys = [k for k in ours if k.startswith(("wu_", "qk_cd_share", "path_share", "prob_correct", "attn_class_tv", "ov_freq1"))]
    assert len(keys) > 50 and set(keys) <= set(theirs)
    assert [theirs[k] for k in keys] == pytest.approx([ours[k] for k in keys], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_analyze_py_reads_an_arena_state_dict_and_states_the_findings(arena_file, tmp_path) -> None:
    path, _ = arena_file
    out = tmp_path / "out"
    proc = subprocess.run([PYTHON, str(REPO / "scripts" / "analyze.py"), f"checkpoint={path}", "checkpoint_task=digit_add",
                           f"analysis.out_dir={out}", "analysis.dpi=30", "analysis.interp.max_inputs=64",
                           "analysis.interp.head_sites=[z,q,k]", "analysis.interp.spectra=false",
                           "analysis.interp.probes=false"],
                          capture_output=True, text=True, cwd=tmp_path, env=script_env(), timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Format: bare TransformerLens state dict" in proc.stdout
    for section in SECTIONS:
        assert section in proc.stdout, section

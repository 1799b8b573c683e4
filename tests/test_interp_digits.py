"""The interpretability toolkit on digit tasks (multi-position answers, carries) and
attention-only LayerNorm models (the ARENA setting)."""

from __future__ import annotations

import pytest
import torch

from groktransfer.model.transformer import TransformerConfig

from groktransfer.tasks.digits import DigitSettings, DigitTask
from groktransfer.interp import ablation, attribution, processing
from groktransfer.interp.answers import CARRY_CLASS_NAMES, answer_set
from groktransfer.interp import interpret
from groktransfer.model.transformer import HookedGrokTransformer


@pytest.fixture(scope="module")
def task() -> DigitTask:
    return DigitTask(DigitSettings("digit_add", n_digits=2, frac_train=0.3), 0)


def attn_only(task: DigitTask, seed: int = 0) -> HookedGrokTransformer:
    cfg = TransformerConfig(name="attn_only_2l", attn_only=True, n_layers=2, n_heads=3, d_model=24, d_head=8, d_mlp=1,
                      normalization="LN", n_ctx=task.seq_len, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out,
                      attn_bias=True, mlp_bias=False, unembed_bias=True)  # fmt: skip
    model = HookedGrokTransformer(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if prm.ndim == 1 or name.endswith(("b_Q", "b_K", "b_V")):
                prm.add_(0.3 * torch.randn(prm.shape, generator=gen))
    return model.eval()


def test_digit_answer_set_reads_the_tasks_positions_and_carries(task: DigitTask) -> None:
    aset = answer_set(task)
    assert aset.positions == tuple(int(p) for p in task.answer_positions)
    assert aset.labels.shape == task.labels.shape and aset.out_modulus == 10 and aset.input_modulus == 10
    assert aset.operand_positions == (0, 1, 3, 4)  # a1 a2 + b1 b2 =
    assert torch.equal(task.tokens[:, 2], torch.full_like(task.tokens[:, 2], 10))  # '+' is not an operand
    assert set(aset.targets) >= {"a", "b", "answer", "digit 0", "carry 1"}
    # carry bit of digit 0 (most significant) is set exactly when the lower digits sum past 9
    a, b = task.operands
    torch.testing.assert_close(aset.targets["carry 0"].values, ((a % 10 + b % 10) >= 10).long())


def test_failure_map_by_carry_class_and_digit(task: DigitTask) -> None:
    model = attn_only(task)
    eff = ablation.ablate(model, task, [ablation.head_hook(1, 0, "zero")], "L1H0 zero")
    table = ablation.failure_map(eff, task)
    assert set(table.answer) == {"digit 0", "digit 1"} and set(table.cls) <= set(CARRY_CLASS_NAMES)
    # the per-class counts add up to every example at every digit
    assert table.groupby("answer").n.sum().tolist() == [task.tokens.shape[0]] * 2
    # the least significant digit never receives a carry
    assert set(table[table.answer == "digit 1"].cls) == {"no carry"}
    row = table[(table.answer == "digit 0") & (table.cls == "direct carry")].iloc[0]
    sel = (task.carry_classes[:, 0] == 1)
    assert row.acc == pytest.approx(float(eff.ablated.correct[sel, 0].double().mean()))


def test_dla_and_processing_on_attention_only_ln_models(task: DigitTask) -> None:
    model = attn_only(task, seed=3)
    attr = attribution.direct_logit_attribution(model, task)
    assert "L0 mlp" not in attr.parts and {"L0H0", "L1H2", "L1 b_O"} <= set(attr.parts)
    assert attr.completeness_error() < 1e-4
    fourier = attribution.fourier_attribution(attr, 10)
    assert set(fourier.freq) == set(range(6))  # mod 10: constant, 1..4 and the Nyquist 5
    sums = fourier.groupby(["answer", "part"])["mean"].sum()
    plain = attr.table().set_index(["answer", "part"])["mean"]
    for key, value in sums.items():
        assert value == pytest.approx(plain[key], abs=1e-6)
    processed = processing.process_weights(model)
    with torch.no_grad():
        torch.testing.assert_close(processed(task.tokens).log_softmax(-1), model(task.tokens).log_softmax(-1),
                                   atol=1e-5, rtol=1e-5)  # fmt: skip


def test_interpretation_of_a_digit_model_has_every_family(task: DigitTask) -> None:
    res = interpret(attn_only(task), task)
    assert {"head_ablation_mean", "dla", "dla_fourier", "probes", "spectra", "failures_worst_head"} <= set(res.tables)
    assert "neuron_clusters" not in res.tables  # attention-only: no neurons
    assert res.tables["embedding_fourier"].attrs["modulus"] == 10
    hooks = set(res.tables["probes"].hook)
    assert hooks == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}  # no resid_mid / mlp in attn-only blocks
    assert set(res.tables["probes"].position) == set(answer_set(task).positions)


# --------------------------------------------------------------------------- where users meet it
@pytest.fixture(scope="module")
def digit_run(tmp_path_factory: pytest.TempPathFactory):
    """One tiny trained digit job (1-digit sums with carry-out, test_digits.TINY_DIGIT) in a sweep dir."""
    from conftest import run_in
    from test_digits import TINY_DIGIT

    sweep = tmp_path_factory.mktemp("digit_sweep")
    result = run_in(sweep, "tiny_digit_s0", TINY_DIGIT + ["train.max_epochs=20"])
    assert result.status == "completed", result.record
    return result


FAST = {"dpi": 40, "interp": {"probe_hooks": ["blocks.{L}.hook_resid_post"], "head_sites": ["z"]}}


def test_a_digit_run_gets_an_interp_section_in_the_sweep_report(digit_run, tmp_path) -> None:
    import pandas as pd

    from groktransfer.analysis.collect import collect_runs
    from groktransfer.analysis.interp_section import interp_sections, run_task
    from groktransfer.analysis.settings import to_settings

    runs = collect_runs([digit_run.run_dir.parent])
    task = run_task(runs[0])  # the run's own task, rebuilt through make_task with its data seed
    assert isinstance(task, DigitTask) and task.n_digits == 1 and task.settings.carry_out
    trained = DigitTask(DigitSettings("digit_add", n_digits=1, carry_out=True, frac_train=0.6), runs[0].seed)
    assert torch.equal(task.tokens, trained.tokens) and torch.equal(task.train_mask, trained.train_mask)

    sections = interp_sections(runs, tmp_path, to_settings({"analysis": FAST}))
    assert [s.title for s in sections] == ["Interpretability: digit_add"]
    assert not any("Runs not analysed" in t.caption for t in sections[0].tables)
    long = pd.read_csv(tmp_path / "interp" / "interp_runs.csv")
    assert set(long.task) == {"digit_add"} and set(long.p) == {10}
    # head ablations per answer position (2 digits: '=' predicts digit 0, digit 0 predicts digit 1)
    for pos in ("digit 0", "digit 1"):
        assert f"head_mean_z_L1H1_d_loss[{pos}]" in set(long.measure)
    # DLA adds up to the logit (completeness) and a carry-class failure map ran
    dla_err = long[long.measure == "dla_completeness_error"].value
    assert len(dla_err) == 1 and float(dla_err.iloc[0]) < 1e-4
    captions = " ".join(t.caption for t in sections[0].tables)
    assert "Head ablation" in captions and "Direct logit attribution" in captions
    assert captions.startswith("Findings")  # the seed analysis' claims on this run, first


def test_analyze_py_reads_a_digit_checkpoint(digit_run, tmp_path) -> None:
    import json
    import subprocess

    from conftest import PYTHON, REPO, script_env

    final = digit_run.run_dir / "checkpoints" / "final.pt"
    out = tmp_path / "out"
    proc = subprocess.run([PYTHON, str(REPO / "scripts" / "analyze.py"), f"checkpoint={final}", "checkpoint_task=digit_add",
                           f"analysis.out_dir={out}", "analysis.dpi=40", "analysis.interp.head_sites=[z]"],
                          capture_output=True, text=True, cwd=tmp_path, env=script_env(), timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Interpretability write-up written to" in proc.stdout
    text = (out / "summary.md").read_text()
    assert "Circuit analysis: not applicable" in text and "no modular Fourier circuit" in text
    assert "## Interpretability" in text and "Task settings and split from" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["circuits"].startswith("not applicable")
    assert "head_mean_z_L0H0_d_loss[digit 0]" in summary["interp"]["scalars"]
    assert (out / "interp_head_ablation.png").is_file() and not (out / "logit_spectrum.png").exists()
    # a p for a digit task is bad input (analyze.py turns the ValueError into one line and exit 2)
    from groktransfer.analysis.circuits import analyze_checkpoint

    with pytest.raises(ValueError, match="checkpoint_p=113"):
        analyze_checkpoint(final, "digit_add", p=113, out_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()

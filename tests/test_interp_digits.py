"""The interpretability toolkit on digit tasks (multi-position answers, carries) and
attention-only LayerNorm models (the ARENA setting)."""

from __future__ import annotations

import pytest
import torch

from groktransfer.config.schema import ModelConfig

# The digit family arrives with issue 10; these tests run as soon as it is on the branch.
pytest.importorskip("groktransfer.digit_tasks", reason="digit tasks (issue 10) are not in this tree yet")
from groktransfer.digit_tasks import DigitSettings, DigitTask  # noqa: E402
from groktransfer.interp import ablation, attribution, processing  # noqa: E402
from groktransfer.interp.answers import CARRY_CLASS_NAMES, answer_set  # noqa: E402
from groktransfer.interp.summary import interpret  # noqa: E402
from groktransfer.model import HookedGrokTransformer  # noqa: E402


@pytest.fixture(scope="module")
def task() -> DigitTask:
    return DigitTask(DigitSettings("digit_add", n_digits=2, frac_train=0.3), 0)


def attn_only(task: DigitTask, seed: int = 0) -> HookedGrokTransformer:
    cfg = ModelConfig(name="attn_only_2l", attn_only=True, n_layers=2, n_heads=3, d_model=24, d_head=8, d_mlp=1,
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

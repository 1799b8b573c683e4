"""Digit tasks, attention-only models, multi-position loss and digit measures, against known answers."""

from __future__ import annotations

import copy
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import PYTHON, REPO, compose_job, run_in, script_env
from groktransfer.config.schema import CpuGemm, OptimizerConfig, TrainConfig
from groktransfer.model.transformer import TransformerConfig
from groktransfer.config.validate import ConfigError, validate_job_config
from groktransfer.measures.digits import class_accuracy, compute_digit_measures, fourier_power_over_digits, per_position
from groktransfer.tasks.digits import (
    CASCADE,
    DIRECT,
    NO_CARRY,
    DigitSettings,
    DigitTask,
    carry_classes,
    decode,
    encode,
    from_digits,
    to_digits,
)
from groktransfer.model.gemm import set_cpu_gemm
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import Trainer


def attn_only_config(n_ctx: int = 14, **kw) -> TransformerConfig:
    base = dict(
        name="attn_only_2l", attn_only=True, n_layers=2, n_heads=3, d_model=48, d_head=24, d_mlp=1,
        normalization="LN", n_ctx=n_ctx, d_vocab=12, d_vocab_out=10, attn_bias=True, unembed_bias=True,
    )  # fmt: skip
    base.update(kw)
    return TransformerConfig(**base)


def tiny_digit_model(n_ctx: int, seed: int = 0) -> HookedGrokTransformer:
    return HookedGrokTransformer(attn_only_config(n_ctx, d_model=16, d_head=8, n_heads=2), seed=seed)


# --------------------------------------------------------------------------- tokens and labels
def test_tokenisation_round_trips() -> None:
    x = torch.tensor([0, 7, 42, 2764, 4999])
    assert to_digits(x, 4).tolist()[3] == [2, 7, 6, 4]
    assert torch.equal(from_digits(to_digits(x, 4)), x)
    tokens = encode(torch.tensor([2764]), torch.tensor([1504]), torch.tensor([4268]), 4, 4)
    assert tokens.tolist() == [[2, 7, 6, 4, 10, 1, 5, 0, 4, 11, 4, 2, 6, 8]]  # ARENA's example
    assert decode(tokens) == ["2764+1504=4268"]
    task = DigitTask(DigitSettings("digit_add", 4, n_train=50, n_test=20), data_seed=3)
    a, b = task.operands
    for row, text, x, y in zip(task.tokens, decode(task.tokens), a, b):
        assert text == f"{int(x):04d}+{int(y):04d}={int(x + y):04d}"
        assert from_digits(row[-4:]) == x + y


def test_labels_and_carries_on_hand_picked_sums() -> None:
    a = torch.tensor([4999, 1234, 2500, 1999])
    b = torch.tensor([1, 4321, 2500, 1])
    tokens = encode(a, b, a + b, 4, 4)
    assert decode(tokens) == ["4999+0001=5000", "1234+4321=5555", "2500+2500=5000", "1999+0001=2000"]
    classes = carry_classes(to_digits(a, 4), to_digits(b, 4), subtract=False, n_answer=4)
    assert classes.tolist() == [
        [CASCADE, CASCADE, DIRECT, NO_CARRY],  # 4999+1: the carry out of 9+1 ripples through two 9s
        [NO_CARRY] * 4,
        [DIRECT, NO_CARRY, NO_CARRY, NO_CARRY],  # 5+5 carries into the thousands
        [CASCADE, CASCADE, DIRECT, NO_CARRY],
    ]
    # subtraction: borrows, 4000-1 = 3999 borrows through two zeros
    a, b = torch.tensor([4000, 3456]), torch.tensor([1, 1234])
    assert carry_classes(to_digits(a, 4), to_digits(b, 4), subtract=True, n_answer=4).tolist() == [
        [CASCADE, CASCADE, DIRECT, NO_CARRY],
        [NO_CARRY] * 4,
    ]
    # carry-out: 999+1 = 1000, the leading answer digit is the cascaded carry out of the 9
    out = carry_classes(to_digits(torch.tensor([999]), 3), to_digits(torch.tensor([1]), 3), False, n_answer=4)
    assert out.tolist() == [[CASCADE, CASCADE, DIRECT, NO_CARRY]]


def test_digit_sub_and_carry_out_tasks() -> None:
    sub = DigitTask(DigitSettings("digit_sub", 2, frac_train=0.5), data_seed=0)
    a, b = sub.operands
    assert (a >= b).all() and (a < 50).all()
    assert sub.n_pairs == 50 * 51 // 2 == len(set(zip(a.tolist(), b.tolist())))  # every a >= b exactly once
    assert torch.equal(from_digits(sub.labels), a - b)
    big = DigitTask(DigitSettings("digit_add", 3, carry_out=True, n_train=300, n_test=100), data_seed=0)
    assert big.labels.shape == (400, 4) and big.seq_len == 3 * 3 + 3
    a, b = big.operands
    assert a.max() >= 500 and torch.equal(from_digits(big.labels), a + b)
    assert big.tokens[0, big.answer_positions[0]] == 11  # the first answer digit is predicted at '='


def test_splits_enumerated_and_sampled() -> None:
    small = DigitTask(DigitSettings("digit_add", 2, frac_train=0.3), data_seed=0)
    assert small.n_pairs == 2500 and small.train_mask.sum() == 750
    a, b = small.operands
    assert len(set(zip(a.tolist(), b.tolist()))) == 2500
    big = DigitTask(DigitSettings("digit_add", 4, n_train=3000, n_test=500), data_seed=1)
    a, b = big.operands
    pairs = list(zip(a.tolist(), b.tolist()))
    assert len(set(pairs)) == 3500  # train and test disjoint, no duplicates
    assert big.train_mask.sum() == 3000 and (a < 5000).all() and (b < 5000).all()
    again = DigitTask(DigitSettings("digit_add", 4, n_train=3000, n_test=500), data_seed=1)
    other = DigitTask(DigitSettings("digit_add", 4, n_train=3000, n_test=500), data_seed=2)
    assert torch.equal(big.tokens, again.tokens) and not torch.equal(big.tokens, other.tokens)


def test_settings_problems_are_readable() -> None:
    assert "at least 1" in DigitSettings("digit_add", 0).problems()[0]
    too_many = DigitSettings("digit_add", 3, n_train=200_000, n_test=100_000).problems()
    assert "exceeds the 250000 distinct problems" in too_many[0]
    assert "carry-out" in DigitSettings("digit_sub", 3, carry_out=True, n_train=1, n_test=1).problems()[0]
    assert "set task.n_train" in DigitSettings("digit_add", 3).problems()[0]


# --------------------------------------------------------------------------- loss mask
def test_loss_mask_covers_exactly_the_answer_positions() -> None:
    task = DigitTask(DigitSettings("digit_add", 4, n_train=40, n_test=10), data_seed=0)
    assert task.loss_mask.nonzero().flatten().tolist() == [9, 10, 11, 12]
    # the logits at answer position i are scored against the token right after it
    assert torch.equal(task.tokens[:, task.answer_positions + 1], task.labels)
    model = tiny_digit_model(task.seq_len)
    trainer = Trainer(model, task, OptimizerConfig(), TrainConfig(progress_bar=False))
    base = trainer.loss(task.tokens, task.labels)

    def perturb(positions):
        def hook(logits, hook):
            logits = logits.clone()
            logits[:, positions] += torch.randn_like(logits[:, positions]) * 5
            return logits

        return hook

    other = [p for p in range(task.seq_len) if not task.loss_mask[p]]
    model.unembed.register_forward_hook(lambda m, i, out: perturb(other)(out, None))
    assert torch.equal(trainer.loss(task.tokens, task.labels), base)  # non-answer positions never count
    model.unembed._forward_hooks.clear()
    model.unembed.register_forward_hook(lambda m, i, out: perturb([12])(out, None))
    assert not torch.equal(trainer.loss(task.tokens, task.labels), base)
    model.unembed._forward_hooks.clear()


# --------------------------------------------------------------------------- measures
def test_carry_categories_counted_exactly_on_a_hand_made_batch() -> None:
    correct = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)
    classes = torch.tensor([[2, 2, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    acc = class_accuracy(correct, classes, 3)
    assert acc[NO_CARRY] == (7 / 8, 8)
    assert acc[DIRECT] == (0.0, 2)  # the '1' at [0, 2] and [2, 0] are both wrong
    assert acc[CASCADE] == (1.0, 2)
    assert class_accuracy(correct, torch.zeros_like(classes), 3)[CASCADE] == (None, 0)


def test_per_position_loss_and_probability() -> None:
    logits = torch.full((1, 2, 10), -1e9, dtype=torch.float64)
    logits[0, 0, 3] = 0.0  # certain and right
    logits[0, 1, :2] = 0.0  # 50/50 between 0 and 1; label 1
    stats = per_position(logits, torch.tensor([[3, 1]]))
    assert stats["loss"][0].tolist() == pytest.approx([0.0, math.log(2)])
    assert stats["prob"][0].tolist() == pytest.approx([1.0, 0.5])
    assert stats["correct"][0, 0]


def test_wu_fourier_concentration_known_answer() -> None:
    i = torch.arange(10, dtype=torch.float64)
    amp = torch.tensor([1.0, 2.0, 0.5])[:, None]
    phase = torch.tensor([0.0, 1.0, 2.5])[:, None]
    power = fourier_power_over_digits(amp * torch.cos(2 * math.pi * 3 * i / 10 + phase))
    assert power[3] == pytest.approx(1.0) and power.sum() == pytest.approx(1.0)
    mixed = fourier_power_over_digits(torch.stack([math.sqrt(2) * torch.cos(2 * math.pi * i / 10), torch.ones(10)]))
    assert mixed[0] == pytest.approx(mixed[1])  # equal power: a constant row and a cosine of the same norm


def test_digit_measures_on_a_model_and_their_names() -> None:
    task = DigitTask(DigitSettings("digit_add", 2, frac_train=0.5), data_seed=0)
    model = tiny_digit_model(task.seq_len)
    m = compute_digit_measures(task, model).scalars()
    assert m["exact_match_test"] == m["test_acc"]
    assert m["n_no_carry_test"] + m["n_direct_test"] + m["n_cascade_test"] == 2 * int((~task.train_mask).sum())
    assert m["weight_norm_total"] == pytest.approx(
        sum(float(p.detach().double().pow(2).sum()) for p in model.parameters()), rel=1e-12
    )
    assert m["weight_norm_mlp"] == 0.0 and m["weight_norm_attn"] == pytest.approx(
        m["weight_norm_attn_L0"] + m["weight_norm_attn_L1"]
    )
    assert sum(m[f"wu_fourier_f{k}"] for k in range(6)) == pytest.approx(1.0)
    assert m["fourier_status"] == "absent" and "do not apply" in m["fourier_note"]


# --------------------------------------------------------------------------- the model
def test_attention_only_model_layout_and_export() -> None:
    model = HookedGrokTransformer(attn_only_config(), seed=0)
    keys = set(model.state_dict())
    assert not any(".mlp." in k or ".ln2." in k for k in keys)
    assert {"blocks.1.ln1.w", "ln_final.b", "blocks.0.attn.W_O", "unembed.b_U"} <= keys
    assert "blocks.0.hook_mlp_out" not in model.hook_names and "blocks.1.attn.hook_pattern" in model.hook_names
    tokens = DigitTask(DigitSettings("digit_add", 4, n_train=8, n_test=8), 0).tokens
    logits, cache = model.run_with_cache(tokens)
    assert logits.shape == (16, 14, 10) and cache["blocks.0.attn.hook_pattern"].shape == (16, 3, 14, 14)
    # the fast path (14 positions, two attention-only LN blocks) reorders float32 sums: a tolerance, not bits
    torch.testing.assert_close(model.forward_last(tokens), logits[:, -1], atol=1e-5, rtol=1e-5)
    cfg = model.hooked_transformer_config_dict()
    assert cfg["attn_only"] is True and cfg["d_mlp"] is None and cfg["normalization_type"] == "LN"


def test_attention_only_export_equals_hooked_transformer() -> None:
    from groktransfer.model.transformer_lens import installed_major, to_transformer_lens

    if installed_major() not in (3, 4):
        pytest.skip("TransformerLens 3.x or 4.x is not installed")
    model = HookedGrokTransformer(attn_only_config(), seed=0)
    reference = to_transformer_lens(model)
    tokens = DigitTask(DigitSettings("digit_add", 4, n_train=32, n_test=8), 0).tokens
    assert torch.allclose(reference(tokens), model(tokens), atol=1e-5)


# --------------------------------------------------------------------------- the trainer
# Recorded from main at cc31dc0 (before multi-position targets and batch_size existed):
# a p=23 'add' run, 30 full-batch epochs; (loss at the last step, final train loss, test loss).
# Those runs multiplied with torch's BLAS; the test keeps that backend (train.cpu_gemm=blas).
# The figures were recorded on an AVX-512 CPU: another instruction set sums float32
# products in another order, so the check is to a tolerance the science allows (1e-5
# relative after 30 epochs, where a changed loss or optimiser step moves the third digit),
# never to the last bit of one machine. Bit-identity is checked between two code paths on
# the same machine instead (ensemble against separate runs, resumed against uninterrupted).
_BEFORE = {
    (1, None): ("0x1.73e4904d0252ep+1", "0x1.71be12a79ecd7p+1", "0x1.b622fcbee4daap+1"),
    (2, "LN"): ("0x1.eb104b482e402p+0", "0x1.d91811118fdbep+0", "0x1.fae248610099fp+1"),
}


@pytest.fixture
def blas_gemm():
    set_cpu_gemm(CpuGemm.blas)
    yield
    set_cpu_gemm(CpuGemm.auto)


# The 2-layer LayerNorm run was recorded on the full forward, and since the fast path covers every
# depth (issue 32) it trains on a path that sums in another order. That run sits on a branch point:
# multiplying its initial weights by (1 + 1e-7 noise) moves the test loss by 3.5e-4 relative, on the
# full path too, and the fast path lands on that same neighbouring trajectory. So the full path is
# held to the recorded figures at 1e-5, and the fast path to 1e-3 (a wrong forward or gradient
# is off by far more).
_PATHS = [(1, None, True, 1e-5), (2, "LN", False, 1e-5), (2, "LN", True, 1e-3)]


@pytest.mark.parametrize("n_layers,norm,fast_path,rel", _PATHS)
def test_full_batch_modular_training_matches_the_recorded_losses(n_layers, norm, fast_path, rel, blas_gemm) -> None:
    task = Task("add", 23, 0.4, 0)
    cfg = TransformerConfig(n_layers=n_layers, normalization=norm, d_model=32, d_head=8, d_mlp=64, d_vocab=24, d_vocab_out=23)
    trainer = Trainer(
        HookedGrokTransformer(cfg, seed=0), task, OptimizerConfig(lr=3e-3),
        TrainConfig(max_epochs=30, batch_size=None, progress_bar=False, fast_path=fast_path),
    )  # fmt: skip
    losses = [float(trainer.train_step()) for _ in range(30)]
    trainer.epoch = 30
    result = trainer.evaluate()
    recorded = [float.fromhex(h) for h in _BEFORE[(n_layers, norm)]]
    assert [losses[-1], result.train_loss, result.test_loss] == pytest.approx(recorded, rel=rel)


def _digit_trainer(batch_size, seed=0):
    task = DigitTask(DigitSettings("digit_add", 2, frac_train=0.2), data_seed=0)
    return Trainer(
        tiny_digit_model(task.seq_len, seed), task, OptimizerConfig(lr=3e-3, weight_decay=0.1),
        TrainConfig(batch_size=batch_size, progress_bar=False),
    )  # fmt: skip


def test_minibatches_are_deterministic_and_resume_exactly() -> None:
    a, b = _digit_trainer(128), _digit_trainer(128)
    for t in (a, b):
        for _ in range(2):
            t.train_step()
            t.epoch += 1
    a.last_eval = a.evaluate()
    state = copy.deepcopy(a.state_dict())  # the job saves it to disk at once
    for _ in range(2):
        a.train_step()
        a.epoch += 1
    b.load_state_dict(state)
    for _ in range(2):
        b.train_step()
        b.epoch += 1
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert a.optimizer.state_dict()["state"][0]["step"] == 4 * 4  # 500 examples / 128 = 4 steps per epoch
    full, big = _digit_trainer(None), _digit_trainer(10_000)  # a batch larger than the set is the full batch
    assert torch.equal(full.train_step(), big.train_step())


def test_digit_eval_reports_exact_match_and_digit_accuracy() -> None:
    trainer = _digit_trainer(None)
    result = trainer.evaluate()
    assert result.test_acc <= result.test_digit_acc
    assert set(result.as_dict()) >= {"train_digit_acc", "test_digit_acc"}
    modular = Trainer(
        HookedGrokTransformer(TransformerConfig(d_vocab=24, d_vocab_out=23, d_model=16, d_head=4, d_mlp=16), 0),
        Task("add", 23, 0.4, 0), OptimizerConfig(), TrainConfig(progress_bar=False),
    )  # fmt: skip
    assert "test_digit_acc" not in modular.evaluate().as_dict()  # metrics.csv of modular runs is unchanged


# --------------------------------------------------------------------------- config checks
DIGIT = ["task=digit_add", "model=attn_only_2l", "logger=none"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task.n_digits=0"], "task.n_digits=0: must be >= 1"),
        (["task.n_digits=3", "task.n_train=200000", "task.n_test=60000"], "exceeds the 250000 distinct problems"),
        (["model.n_ctx=10"], "shorter than the task's sequence (14 tokens"),
        (["transfer=grokked", "transfer.source.task=add", "transfer.source.p=7"], "transfer copies component 'embed' but the source and target models differ"),
        (["transfer=grokked", "transfer.source.task=add", "transfer.source.p=11"], "transfer copies component 'pos_embed' but the source and target models differ"),
        (["transfer=grokked", "transfer.source.task=digit_sub", "task.carry_out=true"], "only digit_add has a carry-out"),
        (["train.batch_size=0"], "batch_size=0"),
    ],
)
def test_impossible_digit_settings_are_refused(overrides, message) -> None:
    with pytest.raises(ConfigError) as err:
        validate_job_config(compose_job(DIGIT + overrides))
    assert message in str(err.value)


def test_bad_digit_config_exits_2_before_writing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, str(REPO / "scripts" / "train.py"), *DIGIT, "task.n_digits=0", f"paths.root={tmp_path}"],
        capture_output=True, text=True, env=script_env(), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "n_digits=0" in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))  # not even Hydra's run directory


# --------------------------------------------------------------------------- jobs
# 1-digit sums with a carry-out digit (0..9 + 0..9, 60 of 100 pairs to train): memorises in ~140 epochs
TINY_DIGIT = DIGIT + [
    "task.n_digits=1", "task.carry_out=true", "task.frac_train=0.6", "model.d_model=16", "model.d_head=8",
    "model.n_heads=2", "optimizer.lr=1e-2", "optimizer.weight_decay=0.1", "train.max_epochs=60",
    "train.eval_every=10", "train.checkpoint_every=20", "train.patience=20", "train.progress_bar=false",
]  # fmt: skip


def test_digit_job_writes_digit_measures(tmp_path: Path) -> None:
    result = run_in(tmp_path, "job", TINY_DIGIT)
    assert result.status == "completed", result.record
    final = result.record.final
    assert final["test_acc"] == final["exact_match_test"] and final["train_acc"] > 0.3
    measures = pd.read_csv(result.run_dir / "measures.csv")
    assert {"pos0_acc_test", "acc_direct_test", "wu_fourier_top_frac", "weight_norm_attn_L1"} <= set(measures)
    freqs = pd.read_csv(result.run_dir / "measures_freqs.csv")
    assert sorted(freqs[freqs.epoch == 0].freq) == [0, 1, 2, 3, 4, 5]


def test_plain_transformer_lens_state_dict_loads_by_path(tmp_path: Path) -> None:
    cfg = attn_only_config(n_ctx=6, d_model=16, d_head=8, n_heads=2)  # 1 digit + carry-out: 6 tokens
    donor = HookedGrokTransformer(cfg, seed=7)
    path = tmp_path / "sum_model.pt"
    torch.save({k: v for k, v in donor.state_dict().items() if not k.endswith((".mask", ".IGNORE"))}, path)
    overrides = TINY_DIGIT + ["transfer=grokked", f"transfer.source.path={path}", "train.max_epochs=1"]
    result = run_in(tmp_path, "loaded", overrides)
    assert result.status == "completed"
    from groktransfer.model.checkpoint import load_checkpoint

    start = load_checkpoint(result.run_dir / "checkpoints" / "epoch_000000.pt")
    assert all(torch.equal(start.state_dict[k], v) for k, v in donor.state_dict().items())
    wrong = run_in  # the same file under a different shape is refused with the parameter named
    with pytest.raises(Exception, match="embed.W_E"):
        wrong(tmp_path, "wrong", overrides + ["model.d_model=32", "model.d_head=16"])


@pytest.mark.slow
def test_tiny_digit_sweep_through_a_launcher_and_its_analysis(tmp_path: Path) -> None:
    """memorized + random, 2 seeds, through Hydra's basic launcher; then the analysis report.

    Slow (about 30 s idle, minutes on a loaded 2-core machine): 5 jobs and an analysis in subprocesses."""
    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in TINY_DIGIT if not o.startswith("train.max_epochs")] + [
        "experiment_name=tiny_digit", "train.max_epochs=30", "transfer.source.task=digit_add",
        "transfer.source.max_epochs=150", "transfer.source.source_seed=0", "seed=0,1", "transfer=memorized,random",
    ]  # fmt: skip
    cmd = [PYTHON, "scripts/train.py", "-m", *overrides, f"paths.root={tmp_path}", f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    statuses = [json.loads(p.read_text()) for p in sweep_dir.glob("*/status.json")]
    assert sorted((s["condition"], s["seed"], s["status"]) for s in statuses) == [
        ("memorized", 0, "completed"), ("memorized", 1, "completed"),
        ("random", 0, "completed"), ("random", 1, "completed"),
    ]  # fmt: skip
    chosen = json.loads(next(sweep_dir.glob("*memorized_s0/source.json")).read_text())["chosen"]
    assert chosen["train_acc"] >= 0.999 and chosen["test_acc"] <= 0.2  # a memorised digit model, verified
    proc = subprocess.run(
        [PYTHON, "scripts/analyze.py", f"sweep_dir={sweep_dir}"], cwd=REPO, env=script_env(),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    analysis = sweep_dir / "analysis"
    report = (analysis / "report.md").read_text()
    assert "## Digit measures: per position and per carry class" in report
    assert "are digit tasks, which have no modular Fourier circuit" in report
    assert "## Interpretability: digit_add" in report  # head ablations per answer digit, DLA, carries
    table = pd.read_csv(analysis / "digit_summary.csv")
    assert sorted(table.condition) == ["memorized", "random"] and (table.n == 2).all()
    assert {"pos0_acc_test", "pos1_acc_test", "acc_direct_test", "exact_carries_test"} <= set(table.columns)
    assert (analysis / "digit_positions.png").exists() and (analysis / "digit_carries.png").exists()

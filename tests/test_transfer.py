"""Source cache and the transfer conditions, end to end on the tiny problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY, run_in
from groktransfer.jobs import run_job as run_module
from groktransfer.config.schema import OptimizerConfig, TrainConfig
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.tasks.modular import Task
from groktransfer.training.trainer import Trainer
from groktransfer.transfer.components import TransferError, apply_transfer, carry_optimizer_state, named_optimizer_state

TRANSFER = TINY + ["task=subtract", "task.p=23", "task.frac_train=0.6", "transfer.source.source_seed=0"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """grokked then memorized (same source run), one seed each, in one sweep root."""
    root = tmp_path_factory.mktemp("sweep")
    grokked = run_in(root, "grokked", TRANSFER + ["transfer=grokked"])
    return root, grokked


def test_grokked_job_trains_the_source_once_and_records_its_choice(sweep) -> None:
    root, grokked = sweep
    assert grokked.status == "completed"
    sources = [p for p in (root / ".sources").iterdir() if p.is_dir()]
    assert len(sources) == 1
    record = json.loads((grokked.run_dir / "source.json").read_text())
    chosen = record["chosen"]
    assert chosen["condition"] == "grokked" and chosen["test_acc"] >= 0.999 and chosen["train_acc"] >= 0.999
    assert Path(chosen["checkpoint"]).exists()
    assert record["spec"]["task"]["name"] == "add"
    # every parameter; buffers (the attention mask) are constants of the architecture, not transferred
    assert sorted(record["plan"]["copied"]) == sorted(n for n, _ in HookedGrokTransformer(_tiny_model_cfg(), 0).named_parameters())


def test_second_job_finds_the_cached_source_and_trains_nothing(sweep, monkeypatch) -> None:
    root, grokked = sweep

    def must_not_train(*args, **kwargs):
        raise AssertionError("the source run was trained a second time")

    monkeypatch.setattr(run_module, "train_source_run", must_not_train)
    memorized = run_in(root, "memorized", TRANSFER + ["transfer=memorized"])
    g = json.loads((grokked.run_dir / "source.json").read_text())
    m = json.loads((memorized.run_dir / "source.json").read_text())
    assert g["source_hash"] == m["source_hash"]
    # memorized: same run, earlier checkpoint, fits train but not test
    assert m["chosen"]["train_acc"] >= 0.999 and m["chosen"]["test_acc"] <= 0.4
    assert m["chosen"]["epoch"] < g["chosen"]["epoch"]


def test_memorized_refuses_when_no_clean_checkpoint_exists(sweep) -> None:
    root, _ = sweep
    from groktransfer.transfer.source_runs import SourceSelectionError

    with pytest.raises(SourceSelectionError, match="no clean memorised phase"):
        run_in(root, "strict", TRANSFER + ["transfer=memorized", "transfer.memorized.max_test_acc=0.001"])


def _tiny_model_cfg(**kw) -> TransformerConfig:
    return TransformerConfig(d_model=16, d_mlp=32, d_head=4, n_heads=4, d_vocab=12, d_vocab_out=11, **kw)


def test_copy_reinit_freeze_per_component() -> None:
    source = HookedGrokTransformer(_tiny_model_cfg(), seed=1)
    fresh = HookedGrokTransformer(_tiny_model_cfg(), seed=2)
    target = HookedGrokTransformer(_tiny_model_cfg(), seed=2)
    plan = apply_transfer(target, source.state_dict(), {"embed": "copy", "attn": "reinit", "mlp": "freeze", "unembed": "copy"})
    sd, src, new = target.state_dict(), source.state_dict(), fresh.state_dict()
    assert torch.equal(sd["embed.W_E"], src["embed.W_E"])
    assert torch.equal(sd["blocks.0.attn.W_Q"], new["blocks.0.attn.W_Q"])  # reinit = target's own fresh init
    assert torch.equal(sd["blocks.0.mlp.W_in"], src["blocks.0.mlp.W_in"])
    assert "blocks.0.mlp.W_in" in plan.frozen and "blocks.0.attn.W_Q" in plan.reinitialised
    params = dict(target.named_parameters())
    assert not params["blocks.0.mlp.W_in"].requires_grad and params["embed.W_E"].requires_grad

    task = Task("subtract", 11, 0.5, 0)
    trainer = Trainer(target, task, OptimizerConfig(), TrainConfig(max_epochs=5, progress_bar=False, patience=0))
    trainer.fit()
    after = target.state_dict()
    assert torch.equal(after["blocks.0.mlp.W_in"], src["blocks.0.mlp.W_in"])  # frozen: untouched, no decay
    assert not torch.equal(after["embed.W_E"], src["embed.W_E"])


def test_shape_mismatch_names_the_parameter() -> None:
    source = HookedGrokTransformer(TransformerConfig(d_model=16, d_mlp=48, d_head=4, n_heads=4, d_vocab=12, d_vocab_out=11), seed=1)
    target = HookedGrokTransformer(_tiny_model_cfg(), seed=2)
    with pytest.raises(TransferError, match=r"blocks\.0\.mlp\.W_in: source \(16, 48\) vs target \(16, 32\)"):
        apply_transfer(target, source.state_dict(), {})
    apply_transfer(target, source.state_dict(), {"mlp": "reinit"})  # fine once mlp is re-initialised


def test_optimizer_state_reset_or_carried() -> None:
    task = Task("add", 11, 0.5, 0)
    source = HookedGrokTransformer(_tiny_model_cfg(), seed=1)
    src_trainer = Trainer(source, task, OptimizerConfig(), TrainConfig(max_epochs=3, progress_bar=False, patience=0))
    src_trainer.fit()
    saved = named_optimizer_state(src_trainer.optimizer, source)
    assert saved["embed.W_E"]["exp_avg"].abs().sum() > 0

    target = HookedGrokTransformer(_tiny_model_cfg(), seed=2)
    apply_transfer(target, source.state_dict(), {})
    reset = Trainer(target, task, OptimizerConfig(), TrainConfig(max_epochs=1, progress_bar=False))
    assert len(reset.optimizer.state) == 0  # reset: fresh AdamW moments
    kept = Trainer(target, task, OptimizerConfig(), TrainConfig(max_epochs=1, progress_bar=False))
    n = carry_optimizer_state(kept.optimizer, target, saved, [n for n, _ in target.named_parameters()])
    assert n == sum(1 for p in target.parameters() if p.requires_grad)
    state = kept.optimizer.state[dict(target.named_parameters())["embed.W_E"]]
    assert torch.equal(state["exp_avg"], saved["embed.W_E"]["exp_avg"])

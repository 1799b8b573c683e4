"""The model protocol and the task keys, through a plugin that brings its own of both.

The plugin is ``examples/parity_plugin`` (sparse parity, a plain ReLU MLP), imported from its
source: nothing under ``src/`` names it. It trains, is a transfer source for every start
condition, checkpoints into files that load back into the MLP, trains as a seed ensemble, and
its task keys and model keys are validated like the built-in ones -- before anything is written.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import List

import pandas as pd
import pytest
import torch

from conftest import PYTHON, REPO, compose_job, run_in, script_env

PARITY = REPO / "examples" / "parity_plugin" / "src"
#: a parity task and MLP small enough for seconds: 12 bits, 200 strings each side, 32 units
SMALL = [
    "task=parity", "model=parity_mlp", "task.n_bits=12", "task.n_train=200", "task.n_test=200",
    "model.d_hidden=64", "logger=none", "optimizer.lr=1e-2", "train.max_epochs=60", "train.eval_every=10",
    "train.checkpoint_every=20", "train.patience=0", "train.progress_bar=false", "transfer.source.max_epochs=200",
    "transfer.source.task=sparse_parity",
]  # fmt: skip


@pytest.fixture()
def parity(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The parity plugin registered (as its entry point would) and its configs on Hydra's search
    path; returns the overrides that find them. Registrations made here are undone after."""
    from groktransfer.measures.registry import CHECKPOINT_MEASURES
    from groktransfer.model.registry import MODELS
    from groktransfer.tasks.registry import TASK_FAMILIES, TASKS
    from groktransfer.utils.registry import load_plugins

    load_plugins()  # the built-ins (and installed plugins) first: they are what is restored after
    registries = (TASK_FAMILIES, TASKS, CHECKPOINT_MEASURES, MODELS)
    saved = [dict(r._entries) for r in registries]
    monkeypatch.syspath_prepend(str(PARITY))
    if "sparse_parity" not in TASKS:  # not installed: register it from its source
        import importlib

        import groktransfer_parity.plugin as plugin

        if "parity" not in TASK_FAMILIES:
            importlib.reload(plugin)
    yield [f"hydra.searchpath=[file://{PARITY / 'groktransfer_parity' / 'conf'}]"]
    for r, entries in zip(registries, saved):
        r._entries = entries


def test_a_plugin_model_trains_and_its_checkpoints_load_back_into_it(parity, tmp_path: Path) -> None:
    from groktransfer.model.checkpoint import load_checkpoint
    from groktransfer_parity.model import ParityMLP

    result = run_in(tmp_path, "job", parity + SMALL)
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["epoch"] == 60 and status["task"] == "sparse_parity"
    assert status["p"] is None  # a task without a modulus records none
    final = load_checkpoint(result.run_dir / "checkpoints" / "final.pt")
    assert final.architecture == "parity_mlp" and final.raw["format"] == "groktransfer/2"
    model = final.build_model()
    assert isinstance(model, ParityMLP) and model.config.n_inputs == 12 and model.config.d_hidden == 64
    measures = pd.read_csv(result.run_dir / "measures.csv")
    assert {"subset_weight_frac", "weight_norm_hidden", "weight_norm_readout", "weight_norm_total"} <= set(measures.columns)
    assert 0.0 < measures["subset_weight_frac"].iloc[0] < 1.0


@pytest.mark.parametrize(
    "condition",
    [
        ["transfer=memorized"],  # relative to chance: test accuracy at most 0.6 for a binary task
        ["transfer=grokked", "transfer.grokked.min_test_acc=0", "transfer.grokked.held_for=0"],
        ["transfer=checkpoint", "transfer.source.epoch=40"],
    ],
    ids=["memorized", "grokked", "checkpoint"],
)
def test_a_plugin_model_is_a_transfer_source(parity, tmp_path: Path, condition: List[str]) -> None:
    result = run_in(tmp_path, "job", parity + SMALL + condition + ["+transfer.source.task_keys.subset=[3,4,5]"])
    record = json.loads((result.run_dir / "source.json").read_text())
    assert record["plan"]["copied"] == ["hidden.W", "hidden.b", "readout.W", "readout.b"]
    assert json.loads((result.run_dir / "status.json").read_text())["status"] == "completed"
    spec = record["spec"]
    assert spec["task"]["subset"] == [3, 4, 5] and spec["model"]["architecture"] == "parity_mlp"
    assert "subset_weight_frac" in record["chosen"]["measures"]  # the plugin's own measures reach the record


def test_copied_shapes_are_checked_before_the_source_trains(parity, tmp_path: Path) -> None:
    from groktransfer.config.validate import ConfigError, validate_job_config

    job = compose_job(parity + SMALL + ["transfer=grokked", "+transfer.source.model.d_hidden=16"], root=tmp_path)
    with pytest.raises(ConfigError, match=r"transfer copies component 'hidden' but the source and target models differ .*hidden.W \(12, 16\) vs \(12, 64\)"):
        validate_job_config(job)
    # the advice names this model's components, not the transformer's
    job = compose_job(parity + SMALL + ["transfer=grokked", "transfer.components.pos_embed=reinit"], root=tmp_path)
    with pytest.raises(ConfigError, match=r"no component 'pos_embed'; its components are hidden, readout"):
        validate_job_config(job)
    job = compose_job(parity + SMALL + ["transfer=grokked", "transfer.embed_map=true"], root=tmp_path)
    with pytest.raises(ConfigError, match=r"the parity_mlp model has no embedding map"):
        validate_job_config(job)
    assert not (tmp_path / ".sources").exists()


def test_a_model_that_cannot_read_the_task_is_refused(parity, tmp_path: Path) -> None:
    from groktransfer.config.validate import ConfigError, validate_job_config

    with pytest.raises(ConfigError, match=r"parity_mlp reads bit strings \(2 tokens\); add, p=23 has 24"):
        validate_job_config(compose_job(parity + ["debug=smoke", "model=parity_mlp"]))
    with pytest.raises(ConfigError, match=r"model.d_hidden=0: must be >= 1"):
        validate_job_config(compose_job(parity + SMALL + ["model.d_hidden=0"]))
    # a task answered at several positions needs a model that gives logits at every position
    with pytest.raises(ConfigError, match=r"answered at 2 position\(s\) inside the sequence, and this model gives logits at the last position only"):
        validate_job_config(compose_job(parity + ["debug=smoke", "task=digit_add", "task.n_digits=2", "model=parity_mlp"]))


def test_plugin_members_train_together_as_separate_runs_would(parity) -> None:
    """The MLP's stacked forward is a capability the ensemble asks for, not a class it knows."""
    from groktransfer.config.schema import OptimizerConfig, TrainConfig
    from groktransfer.training.ensemble import EnsembleTrainer
    from groktransfer.training.trainer import Trainer
    from groktransfer_parity.model import ParityMLP, ParityMLPConfig
    from groktransfer_parity.task import ParityTask

    def member(seed: int) -> Trainer:
        task = ParityTask("sparse_parity", 12, [0, 1, 2], 200, 200, data_seed=seed)
        cfg = ParityMLPConfig(n_inputs=12, d_hidden=32, d_vocab_out=2)
        train = TrainConfig(max_epochs=50, eval_every=10, checkpoint_every=10, patience=0, progress_bar=False)
        return Trainer(ParityMLP(cfg, seed=seed), task, OptimizerConfig(lr=3e-3), train)

    separate = [member(s) for s in (0, 1)]
    for t in separate:
        t.fit()
    together = [member(s) for s in (0, 1)]
    EnsembleTrainer(together).fit()
    for a, b in zip(together, separate):
        assert a.last_eval.train_acc == b.last_eval.train_acc and a.last_eval.test_acc == b.last_eval.test_acc
        for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-9, msg=name)


def test_a_key_the_family_does_not_declare_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, "scripts/train.py", "debug=smoke", "+task.subset=[0,1,2]", f"paths.root={tmp_path}", "logger=none"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "unknown config key task.subset: task (the modular task family) has name, data_seed, p, frac_train" in errors[0]
    assert not any(tmp_path.rglob("status.json"))


@pytest.mark.parametrize("override", ["+train.batchsize=512", "+model.foo=1", "+optimizer.foo=1", "+foo=1"])
def test_keys_no_schema_declares_are_refused(override: str) -> None:
    from groktransfer.config.schema import ConfigError, TrainJobConfig, to_typed

    key = override.lstrip("+").split("=")[0]
    with pytest.raises(ConfigError, match=rf"unknown config key {key}: .* has "):
        to_typed(TrainJobConfig, compose_job(["debug=smoke", override]))


def test_a_plugin_task_key_changes_the_identity_only_off_its_default(parity) -> None:
    from groktransfer.runs.identity import run_identity

    ident = lambda extra: run_identity(compose_job(parity + SMALL + extra))  # noqa: E731
    assert ident([]) == ident(["task.subset=[0,1,2]"]) == ident(["task.n_test=200"])
    assert len({ident([]), ident(["task.subset=[0,1,3]"]), ident(["task.n_bits=13"]), ident(["model.d_hidden=33"])}) == 4


def test_memorized_is_stated_relative_to_chance(tmp_path: Path) -> None:
    from groktransfer.config.schema import TransferConfig, to_plain
    from groktransfer.runs.rundir import RunDir
    from groktransfer.transfer.source_runs import SourceSelectionError, accuracy_limits, select_checkpoint

    memorized = to_plain(TransferConfig(name="memorized").memorized)
    assert accuracy_limits(memorized, chance=0.5)["max_test_acc"] == pytest.approx(0.6)
    assert accuracy_limits(memorized, chance=1 / 113)["max_test_acc"] == pytest.approx(0.2 + 0.8 / 113)
    assert accuracy_limits({**memorized, "relative_to_chance": False}, chance=0.5)["max_test_acc"] == 0.2
    run = RunDir(tmp_path / "source")
    run.checkpoint_dir.mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 20, 40], "train_acc": [0.5, 1.0, 1.0], "test_acc": [0.5, 0.55, 1.0]}).to_csv(run.metrics_path, index=False)
    for epoch in (0, 20, 40):
        run.checkpoint_path(epoch).touch()
    assert select_checkpoint(run, "memorized", memorized, chance=0.5).epoch == 20  # a binary task memorises at chance
    with pytest.raises(SourceSelectionError, match="no clean memorised phase"):
        select_checkpoint(run, "memorized", {**memorized, "relative_to_chance": False}, chance=0.5)


def test_a_version_1_checkpoint_is_the_transformer(tmp_path: Path) -> None:
    from groktransfer.model.checkpoint import load_checkpoint, save_checkpoint
    from groktransfer.model.transformer import HookedGrokTransformer, TransformerConfig

    model = HookedGrokTransformer(TransformerConfig(d_model=16, d_head=4, d_mlp=32, d_vocab=8, d_vocab_out=7), seed=0)
    path = save_checkpoint(tmp_path / "v2.pt", model, 5, {})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "groktransfer/2" and payload["architecture"] == "hooked_transformer"
    old = {k: v for k, v in payload.items() if k != "architecture"}
    old["format"] = "groktransfer/1"
    old["model_config"] = {k: v for k, v in old["model_config"].items() if k != "architecture"}
    torch.save(old, tmp_path / "v1.pt")
    loaded = load_checkpoint(tmp_path / "v1.pt")
    assert loaded.architecture == "hooked_transformer"
    rebuilt = loaded.build_model()
    tokens = torch.tensor([[1, 2, 7], [3, 4, 7]])
    assert torch.equal(rebuilt(tokens), model(tokens))


def test_a_checkpoint_of_an_architecture_not_installed_names_it(tmp_path: Path) -> None:
    from groktransfer.model.checkpoint import CheckpointError, load_checkpoint

    torch.save({"format": "groktransfer/2", "architecture": "someone_elses", "state_dict": {}, "model_config": {}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=r"architecture 'someone_elses' is not registered here .* install the plugin"):
        load_checkpoint(tmp_path / "x.pt")

"""The open framework: a task family and its measures added from an installed package.

The plugin here is a real distribution on ``sys.path`` (a ``*.dist-info`` with an
``entry_points.txt``), found through ``importlib.metadata`` exactly as ``pip install``
would leave it; nothing under ``src/`` knows its name.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import run_in
from groktransfer.utils import registry

PLUGIN = '''
"""A toy family: max(a, b) over 0..p-1, one answer at the last position."""
import torch
from groktransfer.measures.registry import CHECKPOINT_MEASURES, FamilyMeasures
from groktransfer.tasks.family import TaskFamily
from groktransfer.tasks.modular import ModularTaskConfig, Task
from groktransfer.tasks.registry import register_family


class MaxTask(Task):
    family = "toy"

    def __init__(self, p, frac_train, data_seed):
        super().__init__("add", p, frac_train, data_seed)  # reuse the pair enumeration and split
        self.name = "toy_max"

    @property
    def labels(self):
        a, b = self.pairs
        return torch.maximum(a, b)

    @property
    def group(self):
        return None

    @property
    def no_structure_reason(self):
        return "max is not a group operation"

    def describe(self):
        return f"max(a, b) below {self.p}"


class ToyFamily(TaskFamily):
    name = "toy"
    task_names = ("toy_max",)
    config_class = ModularTaskConfig  # the same keys as the modular tasks: p and frac_train
    exact_n_ctx = True

    def build(self, task_cfg, data_seed):
        return MaxTask(int(task_cfg.p), float(task_cfg.frac_train), data_seed)

    def shapes(self, task_cfg):
        return int(task_cfg.p) + 1, int(task_cfg.p), 3

    def problems(self, task_cfg, prefix="task"):
        return [] if int(task_cfg.p) >= 5 else [f"{prefix}.p={task_cfg.p}: toy_max needs p >= 5"]


def answer_is_max_share(task, model, key_freq_threshold):
    return {"embed_norm": float(model.token_embedding().detach().norm())}, []


register_family(ToyFamily())
CHECKPOINT_MEASURES.register("toy", FamilyMeasures(answer_is_max_share))
'''


@pytest.fixture()
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install the toy plugin as a distribution on sys.path and let the registries load it afresh."""
    site = tmp_path / "site"
    (site / "toy_family_plugin").mkdir(parents=True)
    (site / "toy_family_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "toy_family_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-family-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[groktransfer.plugins]\ntoy = toy_family_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    from groktransfer.measures.registry import CHECKPOINT_MEASURES
    from groktransfer.tasks.registry import TASK_FAMILIES, TASKS

    saved = [dict(r._entries) for r in (TASK_FAMILIES, TASKS, CHECKPOINT_MEASURES)]
    yield
    for r, entries in zip((TASK_FAMILIES, TASKS, CHECKPOINT_MEASURES), saved):
        r._entries = entries
    sys.modules.pop("toy_family_plugin", None)


def test_an_installed_plugin_adds_a_task_family_that_trains_and_measures(installed_plugin, tmp_path: Path) -> None:
    from groktransfer.tasks.registry import TASKS, family_of

    assert "toy_max" in TASKS.names() and family_of("toy_max").name == "toy"
    result = run_in(tmp_path, "job", ["debug=smoke", "task.name=toy_max", "train.max_epochs=60", "train.patience=0"])
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["task"] == "toy_max" and status["epoch"] == 60
    measures = (result.run_dir / "measures.csv").read_text().splitlines()
    assert measures[0].split(",")[:2] == ["epoch", "embed_norm"] and len(measures) == 1 + 4  # epochs 0, 20, 40, 60


def test_the_plugin_family_validates_its_own_config(installed_plugin, tmp_path: Path) -> None:
    from groktransfer.config.schema import TrainJobConfig, to_typed
    from groktransfer.config.validate import ConfigError, validate_job_config
    from conftest import compose_job

    with pytest.raises(ConfigError, match=r"task.p=3: toy_max needs p >= 5"):
        validate_job_config(to_typed(TrainJobConfig, compose_job(["debug=smoke", "task.name=toy_max", "task.p=3"])))


def test_an_unknown_task_lists_the_registered_ones(tmp_path: Path) -> None:
    from groktransfer.config.schema import TrainJobConfig, to_typed
    from groktransfer.config.validate import ConfigError, validate_job_config
    from conftest import compose_job

    with pytest.raises(ConfigError, match=r"task='power': unknown task; registered: add, digit_add, .*x2xyy2"):
        validate_job_config(to_typed(TrainJobConfig, compose_job(["debug=smoke", "task.name=power"])))
    with pytest.raises(ConfigError, match=r"transfer.source.task='power': unknown task; registered: add,"):
        validate_job_config(to_typed(TrainJobConfig, compose_job(["debug=smoke", "transfer=grokked", "transfer.source.task=power"])))
    from groktransfer.analysis.circuits import analyze_checkpoint
    from groktransfer.utils.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match=r"unknown task task='power'; registered: add, digit_add, .*x2xyy2"):
        analyze_checkpoint(tmp_path / "model.pt", "power", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_plugin_family_checkpoint_is_read_without_a_fourier_circuit(installed_plugin, tmp_path: Path) -> None:
    """The single-checkpoint analysis asks the family, not an if: a plugin's checkpoint in its
    run directory gets the interpretability write-up on the plugin's task; without the run's
    config the family cannot infer its task from the model, and the error says so."""
    from groktransfer.analysis.circuits import analyze_checkpoint
    from groktransfer.analysis.circuits.single import CHECKPOINT_ANALYSES

    assert "modular" in CHECKPOINT_ANALYSES and "toy_mod" not in CHECKPOINT_ANALYSES
    run_dir = run_in(tmp_path, "job", ["debug=smoke", "task.name=toy_max", "train.max_epochs=20", "train.patience=0"]).run_dir
    out = analyze_checkpoint(run_dir / "checkpoints" / "final.pt", "toy_max", out_dir=tmp_path / "one")
    assert out["profile"] is None and out["summary"]["circuits"].startswith("not applicable: the toy family")
    assert "Task settings and split from" in out["text"]
    loose = tmp_path / "loose.pt"
    loose.write_bytes((run_dir / "checkpoints" / "final.pt").read_bytes())
    with pytest.raises(ValueError, match="cannot tell the .* task's settings from the model"):
        analyze_checkpoint(loose, "toy_max", out_dir=tmp_path / "two")


def test_a_broken_plugin_is_reported_and_the_built_ins_still_work(tmp_path: Path, monkeypatch, caplog) -> None:
    site = tmp_path / "site"
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[groktransfer.plugins]\nbroken = no_such_module_here\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    from groktransfer.tasks.registry import family_of

    with caplog.at_level("WARNING", logger="groktransfer.utils.registry"):
        assert family_of("add").name == "modular"
    assert "'broken' (no_such_module_here) failed to load" in caplog.text


def test_a_name_registered_twice_is_refused() -> None:
    from groktransfer.tasks.modular import ModularFamily
    from groktransfer.tasks.registry import register_family

    with pytest.raises(ValueError, match="registered twice"):
        register_family(ModularFamily())


def test_a_registered_model_is_what_a_job_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``model.architecture`` picks the builder; an unknown one is refused naming the registered ones."""
    import torch

    from groktransfer.model.registry import MODELS
    from groktransfer.model.transformer import HookedGrokTransformer
    from groktransfer.utils.errors import UserError

    built = []

    class ZeroEmbedStart(HookedGrokTransformer):  # a model of one's own: the same names, another init
        def __init__(self, cfg, seed):
            super().__init__(cfg, seed=seed)
            with torch.no_grad():
                self.embed.W_E.mul_(0.5)
            built.append(self)

    from groktransfer.model.registry import register_model

    monkeypatch.setitem(MODELS._entries, "half_embed", ZeroEmbedStart)  # removed again after the test
    register_model("half_embed", ZeroEmbedStart)  # its schema (the transformer's) under its name
    result = run_in(tmp_path, "job", ["debug=smoke", "model.architecture=half_embed", "train.max_epochs=20"])
    assert len(built) == 1 and json.loads((result.run_dir / "status.json").read_text())["status"] == "completed"
    default = run_in(tmp_path, "default", ["debug=smoke", "train.max_epochs=20"])
    run_id = lambda r: json.loads((r.run_dir / "status.json").read_text())["run_id"]  # noqa: E731
    assert run_id(default) != run_id(result)  # another architecture is another experiment
    with pytest.raises(UserError, match=r"unknown model architecture model.architecture='nope'; registered: .*hooked_transformer"):
        run_in(tmp_path, "bad", ["debug=smoke", "model.architecture=nope"])
    assert not (tmp_path / "bad").exists()


def test_a_registered_transfer_condition_picks_its_own_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A condition a plugin registers selects the source checkpoint by its own criteria."""
    from groktransfer.config.conditions import CONDITIONS, TransferCondition
    from groktransfer.config.schema import CheckpointCriteria
    from groktransfer.utils.errors import UserError

    monkeypatch.setitem(
        CONDITIONS._entries, "half_grokked",
        TransferCondition(criteria=CheckpointCriteria(min_train_acc=0.999, min_test_acc=0.5, max_test_acc=0.9)),
    )  # fmt: skip
    result = run_in(tmp_path, "job", ["debug=smoke", "transfer=grokked", "transfer.name=half_grokked", "train.max_epochs=20"])
    chosen = json.loads((result.run_dir / "source.json").read_text())["chosen"]
    assert chosen["condition"] == "half_grokked" and 0.5 <= chosen["test_acc"] <= 0.9 and chosen["train_acc"] >= 0.999
    # the config's own criteria win over the registered ones
    again = run_in(tmp_path, "job2", ["debug=smoke", "transfer=grokked", "transfer.name=half_grokked", "train.max_epochs=20",
                                      "+transfer.criteria.half_grokked={min_train_acc: 0.999, max_test_acc: 0.4}"])  # fmt: skip
    assert json.loads((again.run_dir / "source.json").read_text())["chosen"]["test_acc"] <= 0.4
    with pytest.raises(UserError, match=r"transfer.name='nope': unknown transfer condition; registered: checkpoint, embedding"):
        run_in(tmp_path, "bad", ["debug=smoke", "transfer=grokked", "transfer.name=nope"])

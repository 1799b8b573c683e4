"""Config composition and validation: bad input is refused before anything trains."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import PYTHON, REPO, TINY, compose_job, script_env
from groktransfer.config.validate import ConfigError, resolve_seeds, validate_job_config


def test_defaults_compose_to_the_reference_setup() -> None:
    cfg = compose_job(["experiment=nanda_p113"])
    validate_job_config(cfg)
    assert (cfg.task.name, cfg.task.p, cfg.task.frac_train) == ("add", 113, 0.3)
    assert (cfg.model.d_model, cfg.model.n_heads, cfg.model.d_head, cfg.model.d_mlp) == (128, 4, 32, 512)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, list(cfg.optimizer.betas)) == (1e-3, 1.0, [0.9, 0.98])
    assert cfg.transfer.name == "random" and cfg.experiment_name == "nanda_p113"


@pytest.mark.parametrize("override", ["task.colour=red", "model.d_modle=64"])
def test_unknown_key_fails_at_compose_time(override: str) -> None:
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose_job([override])


def test_wrong_type_fails_at_compose_time() -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_job(["task.p=eleven"])


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("transfer.components.mlp=keep", "[copy, reinit, freeze]"),
        ("transfer.grokked.pick=middle", "[first, last]"),
        ("logger.mode=onlin", "[online, offline, disabled]"),
        ("model.act=tanh", "[relu, gelu]"),
    ],
)
def test_invalid_choice_fails_at_compose_time_listing_the_choices(override: str, allowed: str) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_job(["transfer=grokked", override])
    assert allowed in str(info.value.__cause__ or info.value)


@pytest.mark.parametrize("override", ["+transfer.components.head=copy", "+transfer.components.head=freeze"])
def test_a_component_the_model_does_not_have_is_refused_naming_its_components(override: str) -> None:
    # components are the model's (the model protocol), so the name is checked against the model
    with pytest.raises(ConfigError, match=r"no component 'head'; its components are embed, pos_embed, attn, mlp, unembed"):
        validate_job_config(compose_job(["transfer=grokked", override]))


def test_registered_tasks_are_the_implemented_tasks() -> None:
    from groktransfer.tasks.digits import DIGIT_TASKS
    from groktransfer.tasks.modular import TASKS
    from groktransfer.tasks.registry import TASKS as REGISTERED, family_of

    assert set(TASKS) | set(DIGIT_TASKS) <= set(REGISTERED.names())
    assert family_of("add").name == "modular" and family_of("digit_sub").name == "digit"


def test_invalid_choice_exits_2_with_one_message(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, "scripts/train.py", *TINY, f"paths.root={tmp_path}", "transfer.components.mlp=keep"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "expected one of [copy, reinit, freeze]" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("status.json"))


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["task.p=100"], "must be prime"),
        (["task.frac_train=1.0"], "task.frac_train=1.0: must be < 1"),
        (["train.thresholds=[0.5,1.2]"], "train.thresholds[1]=1.2: must be <= 1"),
        (["transfer=grokked", "transfer.source.p=29"], "set transfer.components.embed=reinit"),
        (["task=int_add", "transfer=grokked"], "transfer.components.unembed=reinit"),
        (["transfer=grokked", "transfer.source.path=/no/such/file.pt"], "no such file"),
    ],
)
def test_semantic_errors_are_clear(overrides, fragment: str) -> None:
    cfg = compose_job(overrides)
    with pytest.raises(ConfigError) as info:
        validate_job_config(cfg)
    assert fragment in str(info.value)


def test_all_problems_reported_at_once() -> None:
    cfg = compose_job(["task.p=100", "task.frac_train=0", "optimizer.lr=-1"])
    with pytest.raises(ConfigError) as info:
        validate_job_config(cfg)
    message = str(info.value)
    assert "\n" not in message and message.count(" | ") == 2  # one line, three problems
    assert all(k in message for k in ("task.p=100: must be prime", "task.frac_train=0.0", "optimizer.lr=-1.0"))


def test_int_add_needs_no_prime() -> None:
    validate_job_config(compose_job(["task=int_add", "task.p=10"]))


def test_seed_fills_unpinned_seeds_only() -> None:
    seeds = resolve_seeds(compose_job(["seed=7", "task.data_seed=1"]))
    assert (seeds.data_seed, seeds.model_seed, seeds.source_seed) == (1, 7, 7)


def test_bad_config_exits_nonzero_with_one_readable_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, "scripts/train.py", *TINY, f"paths.root={tmp_path}", "task.p=100"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "task.p=100: must be prime" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    statuses = list(tmp_path.rglob("status.json"))
    assert all(json.loads(p.read_text())["status"] != "completed" for p in statuses)
    assert not statuses


@pytest.mark.parametrize(
    "script, override, line",
    [
        ("train", "task.p=eleven", "train: error: Error merging override task.p=eleven: Value 'eleven' of type 'str' could not be converted to Integer"),
        ("train", "transfer.components.mlp=keep", "expected one of [copy, reinit, freeze]"),
        ("train", "model=nonexistent", "Could not find 'model/nonexistent' (Available options in 'model': attn_only_2l, one_layer"),
        ("analyze", "analysis.foo=1", "analyze: error: Could not override 'analysis.foo'"),
    ],
)
def test_a_config_that_does_not_compose_is_one_line_and_exit_2(script: str, override: str, line: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, f"scripts/{script}.py", override, f"paths.root={tmp_path}" if script == "train" else f"sweep_dir={tmp_path}"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(out) == 1 and line in out[0], out
    assert not any(tmp_path.rglob("*"))


def test_source_optimizer_overrides_enter_the_source_hash() -> None:
    from groktransfer.transfer.source_runs import source_spec_from_config

    plain = source_spec_from_config(compose_job(["transfer=grokked"]), 0)
    faster = source_spec_from_config(compose_job(["transfer=grokked", "+transfer.source.optimizer.lr=3e-3"]), 0)
    assert plain.optimizer["lr"] == 1e-3 and faster.optimizer["lr"] == 3e-3
    assert faster.optimizer["weight_decay"] == plain.optimizer["weight_decay"]
    assert plain.content_hash != faster.content_hash
    # selection criteria are not part of the hash: grokked and memorized share one source run
    assert source_spec_from_config(compose_job(["transfer=memorized"]), 0).content_hash == plain.content_hash
    with pytest.raises(ConfigError, match="unknown optimizer field"):
        validate_job_config(compose_job(["transfer=grokked", "+transfer.source.optimizer.lrate=1"]))


# --------------------------------------------------------------------------- every option composes
GROUPS = ("task", "model", "optimizer", "transfer", "logger", "experiment", "debug")


def _options(group: str) -> list:
    """Every option of a group, sub-folders included (``experiment=repro/nanda2023``)."""
    root = REPO / "conf" / group
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_of_every_group_composes_and_validates(group: str, option: str) -> None:
    from groktransfer.config.schema import TrainJobConfig, to_typed

    job = to_typed(TrainJobConfig, compose_job([f"{group}={option}"]))
    validate_job_config(job)
    assert getattr(job, group, option) is not None


@pytest.mark.parametrize("experiment", _options("experiment"))
@pytest.mark.parametrize("transfer", _options("transfer"))
def test_every_experiment_validates_under_every_transfer_condition(experiment: str, transfer: str) -> None:
    from groktransfer.config.schema import TrainJobConfig, to_typed

    overrides = [f"experiment={experiment}", f"transfer={transfer}"]
    if transfer == "checkpoint":  # its default epoch (1500) lies beyond shorter sources: refused, so pick one inside
        overrides.append("transfer.source.epoch=100")
    job = to_typed(TrainJobConfig, compose_job(overrides))
    from groktransfer.model.registry import model_class

    components = set(model_class(job.model).components)
    foreign = sorted(set(job.transfer.components or {}) - components)
    try:
        validate_job_config(job)
    except ConfigError as exc:  # only a preset written for the transformer's parts (embedding) on another model
        assert foreign and f"has no component '{foreign[0]}'" in str(exc), str(exc)


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local", "slurm"])
def test_every_launcher_composes(launcher: str) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert "Launcher" in cfg.hydra.launcher._target_


def test_smoke_preset_is_the_tiny_job_and_yields_to_overrides() -> None:
    cfg = compose_job(["debug=smoke", "experiment=quickstart", "train.max_epochs=200", "logger=wandb"])
    assert (cfg.task.p, cfg.model.d_model, cfg.logger.name) == (23, 64, "wandb")  # preset over experiment
    assert cfg.train.max_epochs == 200  # the command line over the preset
    assert compose_job(["debug=smoke"]).logger.name == "none"

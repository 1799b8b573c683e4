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
    "overrides, fragment",
    [
        (["task.p=100"], "must be prime"),
        (["task.frac_train=1.0"], "strictly between 0 and 1"),
        (["train.thresholds=[0.5,1.2]"], "(0, 1]"),
        (["transfer=grokked", "transfer.source.p=29"], "set transfer.components.embed=reinit"),
        (["task=int_add", "transfer=grokked"], "transfer.components.unembed=reinit"),
        (["transfer=grokked", "transfer.source.path=/no/such/file.pt"], "no such file"),
        (["transfer=grokked", "transfer.components.mlp=keep"], "choose one of"),
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
    assert str(info.value).count("\n  - ") == 3


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
    assert proc.returncode != 0
    assert "task.p=100: must be prime" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    statuses = list(tmp_path.rglob("status.json"))
    assert all(json.loads(p.read_text())["status"] != "completed" for p in statuses)
    assert not statuses


def test_source_optimizer_overrides_enter_the_source_hash() -> None:
    from groktransfer.source import source_spec_from_config

    plain = source_spec_from_config(compose_job(["transfer=grokked"]), 0)
    faster = source_spec_from_config(compose_job(["transfer=grokked", "+transfer.source.optimizer.lr=3e-3"]), 0)
    assert plain.optimizer["lr"] == 1e-3 and faster.optimizer["lr"] == 3e-3
    assert faster.optimizer["weight_decay"] == plain.optimizer["weight_decay"]
    assert plain.content_hash != faster.content_hash
    # selection criteria are not part of the hash: grokked and memorized share one source run
    assert source_spec_from_config(compose_job(["transfer=memorized"]), 0).content_hash == plain.content_hash
    with pytest.raises(ConfigError, match="unknown optimizer field"):
        validate_job_config(compose_job(["transfer=grokked", "+transfer.source.optimizer.lrate=1"]))

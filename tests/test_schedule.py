"""The lr schedule (optimizer.schedule): known factors, the lr a trainer actually uses,
resume mid-schedule, the ensemble trainer, and run identities of constant-lr jobs."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import compose_job
from groktransfer.config.schema import OptimizerConfig, TrainConfig
from groktransfer.config.validate import ConfigError, validate_job_config
from groktransfer.tasks.digits import DigitSettings, DigitTask
from groktransfer.training.ensemble import EnsembleTrainer, incompatibility
from groktransfer.jobs.run_job import run_identity
from groktransfer.transfer.source_runs import source_spec_from_config
from groktransfer.training.trainer import Trainer, lr_factor, steps_per_epoch
from test_digits import tiny_digit_model
from test_ensemble import assert_same_run, tiny_member


def test_cosine_factor_at_known_steps() -> None:
    f = lr_factor(OptimizerConfig(warmup_steps=10, schedule="cosine", final_lr_frac=0.1), total_steps=110)
    got = [f(s) for s in (0, 5, 10, 35, 60, 85, 110, 500)]
    half = 0.1 + 0.9 * 0.5  # the cosine's midpoint
    want = [0.0, 0.5, 1.0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), half, 0.1 + 0.9 * 0.5 * (1 - math.cos(math.pi / 4)), 0.1, 0.1]
    assert got == pytest.approx(want, abs=1e-15)
    constant = lr_factor(OptimizerConfig(warmup_steps=10), total_steps=110)
    assert [constant(s) for s in (0, 5, 10, 110, 500)] == [0.0, 0.5, 1.0, 1.0, 1.0]  # the warm-up alone, as before
    assert lr_factor(OptimizerConfig(warmup_steps=0, schedule="cosine"), 4)(4) == 0.0


def test_steps_per_epoch_counts_the_short_last_batch() -> None:
    assert [steps_per_epoch(500, b) for b in (None, 128, 500, 10_000, 100)] == [1, 4, 1, 1, 5]


def _cosine_digit_trainer(max_epochs: int = 4) -> Trainer:
    task = DigitTask(DigitSettings("digit_add", 2, frac_train=0.2), data_seed=0)  # 500 training pairs
    opt = OptimizerConfig(lr=4e-3, weight_decay=0.1, warmup_steps=2, schedule="cosine", final_lr_frac=0.25)
    train = TrainConfig(max_epochs=max_epochs, batch_size=128, progress_bar=False)  # 4 steps per epoch
    return Trainer(tiny_digit_model(task.seq_len, 0), task, opt, train)


def test_trainer_follows_the_schedule_and_resumes_on_it_exactly() -> None:
    a, b = _cosine_digit_trainer(), _cosine_digit_trainer()
    assert a.total_steps == 16
    lrs = []
    for t in (a, b):
        for _ in range(2):
            t.train_step()
            t.epoch += 1
    lrs.append(a.evaluate().lr)
    a.last_eval = a.evaluate()
    state = copy.deepcopy(a.state_dict())
    for _ in range(2):
        a.train_step()
        a.epoch += 1
    lrs.append(a.evaluate().lr)
    b.load_state_dict(state)  # a resumed job: the schedule continues from step 8, not from 0
    for _ in range(2):
        b.train_step()
        b.epoch += 1
    # after 8 of 16 steps (warm-up 2): cosine at 6/14 of its span; after 16: the floor, 0.25 * lr
    assert lrs == pytest.approx([4e-3 * (0.25 + 0.75 * 0.5 * (1 + math.cos(math.pi * 6 / 14))), 1e-3], rel=1e-12)
    assert b.evaluate().lr == lrs[-1]
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_ensemble_members_follow_the_same_schedule_as_separate_runs() -> None:
    cosine = dict(schedule="cosine", final_lr_frac=0.1)
    spec = [dict(seed=0, data_seed=0, max_epochs=60), dict(seed=1, data_seed=1, lr=1e-3, max_epochs=60)]
    separate = [tiny_member(**m, opt=cosine) for m in spec]
    for t in separate:
        t.fit()
    assert separate[0].callbacks[0].evals[-1].lr == pytest.approx(0.1 * 3e-3)
    members = [tiny_member(**m, opt=cosine) for m in spec]
    EnsembleTrainer(members).fit()
    for ens, sep in zip(members, separate):
        assert_same_run(ens, sep)
    assert incompatibility([tiny_member(0, 0, opt=cosine), tiny_member(1, 1)]) == "lr schedules differ"


def test_a_constant_schedule_leaves_run_and_source_identities_unchanged() -> None:
    job = compose_job(["task=add", "transfer=grokked"])
    explicit = compose_job(["task=add", "transfer=grokked", "optimizer.schedule=constant", "optimizer.final_lr_frac=0.5"])
    cosine = compose_job(["task=add", "transfer=grokked", "optimizer.schedule=cosine"])
    assert run_identity(job) == run_identity(explicit) != run_identity(cosine)
    spec = lambda j: source_spec_from_config(j, 0).content_hash  # noqa: E731
    assert spec(job) == spec(explicit) != spec(cosine)
    assert "schedule" not in source_spec_from_config(job, 0).optimizer


def test_final_lr_frac_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="final_lr_frac"):
        validate_job_config(compose_job(["optimizer.schedule=cosine", "optimizer.final_lr_frac=1.5"]))

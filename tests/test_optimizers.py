"""Optimizers (adamw, adam, sgd, muon) and Grokfast gradient filters (ema, ma): configs, maths,
identities, ensembles, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import deque
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import PYTHON, REPO, TINY, compose_job, run_in, script_env
from faults import status_now
from groktransfer.config.schema import GradFilterConfig, OptimizerConfig, TrainJobConfig, to_typed
from groktransfer.config.validate import ConfigError, validate_job_config
from groktransfer.runs.identity import run_identity
from groktransfer.training.ensemble import EnsembleTrainer, incompatibility
from groktransfer.training.gradfilters import GRADFILTERS, EMAFilter, MAFilter
from groktransfer.training.optimizers import OPTIMIZERS, MuonWithAdamW, build_optimizer, check_registered
from groktransfer.training.trainer import TrainOutcome
from test_ensemble import assert_same_run, tiny_member


def test_registered_optimizers_and_filters() -> None:
    assert {"adamw", "adam", "sgd", "muon"} <= set(OPTIMIZERS.names())
    assert {"none", "ema", "ma"} <= set(GRADFILTERS.names())
    for name in ("adamw", "adam", "sgd", "muon"):
        cfg = compose_job([f"optimizer={name}"])
        validate_job_config(cfg)
        assert cfg.optimizer.name == name
    for name in ("none", "ema", "ma"):
        assert compose_job([f"gradfilter={name}"]).gradfilter.name == name


# --------------------------------------------------------------------------- the filters' maths
def _grads(n: int, shape=(3, 4), seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(n)]


def test_ema_filter_is_grokfast_ema() -> None:
    alpha, lamb = 0.9, 2.0
    f, mu = EMAFilter(alpha, lamb), None
    for g in _grads(20):
        mu = g.clone() if mu is None else alpha * mu + (1 - alpha) * g
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        f.apply([("w", p)])
        torch.testing.assert_close(p.grad, g + lamb * mu)


def test_ma_filter_adds_the_window_mean_once_full() -> None:
    window, lamb = 5, 3.0
    f, seen = MAFilter(window, lamb), deque(maxlen=window)
    for step, g in enumerate(_grads(17)):
        seen.append(g)
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        f.apply([("w", p)])
        expected = g if step + 1 < window else g + lamb * torch.stack(list(seen)).mean(0)
        torch.testing.assert_close(p.grad, expected)


# --------------------------------------------------------------------------- Muon's split
def test_muon_gets_the_hidden_matrices_and_adamw_the_rest() -> None:
    from groktransfer.model.transformer import TransformerConfig
    from groktransfer.model.registry import build_model

    model = build_model(TransformerConfig(d_vocab=24, d_vocab_out=23, n_ctx=3), 0)
    opt = build_optimizer(model, OptimizerConfig(name="muon"))
    assert isinstance(opt, MuonWithAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    adam_names = {names[id(p)] for g in opt.adamw.param_groups for p in g["params"]}
    assert adam_names == {"embed.W_E", "pos_embed.W_pos", "unembed.W_U", "blocks.0.mlp.b_in", "blocks.0.mlp.b_out"}
    muon_shapes = sorted(tuple(p.shape) for g in opt.muon.param_groups for p in g["params"])
    # W_Q/W_K/W_V as [d_model, n_heads*d_head], W_O as [n_heads*d_head, d_model], W_in, W_out
    assert muon_shapes == sorted([(128, 128)] * 4 + [(128, 512), (512, 128)])
    # the warm-up scales every group; a step moves every trainable weight
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.tensor([[1, 2, 23]])).sum().backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n, p in model.named_parameters() if p.requires_grad}
    state = opt.state_dict()
    assert set(state) == {"adamw", "muon"} and state["muon"]["state"]


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["gradfilter=ema", "gradfilter.ema.alpha=1.0"], "gradfilter.ema.alpha=1.0: must be < 1"),
        (["gradfilter=ema", "gradfilter.ema.alpha=-0.1"], "gradfilter.ema.alpha=-0.1: must be >= 0"),
        (["gradfilter=ema", "gradfilter.ema.lamb=-1"], "gradfilter.ema.lamb=-1.0: must be >= 0"),
        (["gradfilter=ma", "gradfilter.ma.window=0"], "gradfilter.ma.window=0: must be >= 1"),
        (["optimizer=sgd", "optimizer.sgd.momentum=-0.5"], "optimizer.sgd.momentum=-0.5: must be >= 0"),
        (["optimizer=muon", "optimizer.muon.momentum=-1"], "optimizer.muon.momentum=-1.0: must be >= 0"),
        (["optimizer=sgd", "optimizer.lr=-0.1"], "optimizer.lr=-0.1: must be > 0"),
        (["optimizer=muon", "optimizer.muon.lr=0"], "optimizer.muon.lr=0.0: must be > 0"),
        (["transfer=grokked", "+transfer.source.gradfilter.ema={alpha: 2}"], "transfer.source.gradfilter.ema.alpha=2"),
    ],
)
def test_bad_optimizer_and_filter_values_are_refused(overrides, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_job_config(compose_job(overrides))
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["optimizer.name=lion"], "optimizer.name='lion': unknown optimizer; registered: adam, adamw, muon, sgd"),
        (["gradfilter.name=lowpass"], "gradfilter.name='lowpass': unknown gradient filter; registered: ema, ma, none"),
        (["transfer=grokked", "+transfer.source.gradfilter.name=fast"], "transfer.source.gradfilter.name='fast'"),
        (["transfer=grokked", "+transfer.source.optimizer.name=lion"], "transfer.source.optimizer.name='lion'"),
        (["transfer=grokked", "optimizer=sgd", "transfer.reset_optimizer=false"], "carries Adam moments"),
    ],
)
def test_unregistered_names_are_refused_in_one_line_when_planned(overrides, fragment: str) -> None:
    job = to_typed(TrainJobConfig, compose_job(overrides))
    validate_job_config(job)  # the ranges are fine; the registries say no
    with pytest.raises(ConfigError) as info:
        check_registered(job)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_unknown_optimizer_exits_2_in_one_line_writing_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, "scripts/train.py", *TINY, f"paths.root={tmp_path}", "optimizer.name=lion"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert "optimizer.name='lion': unknown optimizer; registered: adam, adamw, muon, sgd" in out
    assert "Traceback" not in out
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- identities
def _id(overrides) -> str:
    return run_identity(to_typed(TrainJobConfig, compose_job(overrides)))


def test_defaults_and_unused_blocks_keep_identities() -> None:
    base = _id(["experiment=nanda_p113"])
    # the default filter, and parameters of optimizers / filters not chosen, are not hashed
    assert _id(["experiment=nanda_p113", "gradfilter=none"]) == base
    assert _id(["experiment=nanda_p113", "optimizer.sgd.momentum=0.5", "gradfilter.ema.alpha=0.5"]) == base
    assert _id(["experiment=nanda_p113", "optimizer=adamw"]) == base
    ids = {_id(["experiment=nanda_p113", *o]) for o in (
        ["gradfilter=ema"], ["gradfilter=ma"], ["gradfilter=ema", "gradfilter.ema.alpha=0.9"],
        ["optimizer=sgd"], ["optimizer=sgd", "optimizer.sgd.momentum=0.5"], ["optimizer=adam"], ["optimizer=muon"],
    )}
    assert len(ids) == 7 and base not in ids


def test_source_optimizer_and_filter_enter_the_source_cache_key() -> None:
    from groktransfer.transfer.source_runs import source_spec_from_config

    def spec(overrides):
        return source_spec_from_config(compose_job(["transfer=grokked", *overrides]), 0)

    plain = spec([])
    assert "gradfilter" not in plain.as_dict()  # today's key: unchanged
    assert spec(["+transfer.source.gradfilter.name=none"]).content_hash == plain.content_hash
    ema_source = spec(["+transfer.source.gradfilter.name=ema"])
    assert ema_source.gradfilter == {"name": "ema"} and ema_source.content_hash != plain.content_hash
    # the target's filter is the source's unless transfer.source.gradfilter says otherwise
    assert spec(["gradfilter=ema"]).content_hash == ema_source.content_hash
    assert spec(["gradfilter=ema", "+transfer.source.gradfilter.name=none"]).content_hash == plain.content_hash
    sgd = spec(["+transfer.source.optimizer={name: sgd, sgd: {momentum: 0.5}}"])
    assert sgd.optimizer["name"] == "sgd" and sgd.optimizer["sgd"] == {"momentum": 0.5}
    assert "sgd" not in plain.optimizer and "muon" not in plain.optimizer


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    "overrides",
    [["optimizer=sgd", "optimizer.lr=0.05", "optimizer.weight_decay=1e-3"], ["optimizer=adam", "optimizer.weight_decay=0"],
     ["optimizer=muon"], ["gradfilter=ema"], ["gradfilter=ma", "gradfilter.ma.window=10"]],
)
def test_each_optimizer_and_filter_trains_a_job(tmp_path: Path, overrides) -> None:
    result = run_in(tmp_path, "run", TINY + ["train.max_epochs=60", *overrides])
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["epoch"] == 60
    config = json.loads((result.run_dir / "config.json").read_text()) if (result.run_dir / "config.json").exists() else None
    if config is not None:
        assert config["optimizer"]["name"] in ("adamw", "adam", "sgd", "muon")


def test_the_source_filter_and_optimizer_default_to_the_targets_and_can_be_pinned() -> None:
    from groktransfer.config.schema import source_gradfilter, source_optimizer

    inherited = to_typed(TrainJobConfig, compose_job(["transfer=grokked", "gradfilter=ma", "optimizer=sgd"]))
    assert source_gradfilter(inherited).name == "ma" and source_optimizer(inherited).name == "sgd"
    pinned = to_typed(TrainJobConfig, compose_job(["experiment=grokfast_transfer", "transfer=grokked", "gradfilter=ema"]))
    assert pinned.gradfilter.name == "ema" and source_gradfilter(pinned).name == "none"
    assert source_optimizer(pinned).lr == 3e-3 and pinned.optimizer.lr == 1e-3


# --------------------------------------------------------------------------- ensembles
STACKABLE = [
    dict(opt=dict(name="sgd"), lr=0.05, wd=1e-3),
    dict(opt=dict(name="adam"), wd=0.0),
]


@pytest.mark.parametrize("case", STACKABLE + [dict(filt="ema"), dict(filt="ma", opt=dict(name="sgd"), lr=0.01, wd=1e-3)])
def test_stacked_members_equal_separate_runs(case) -> None:
    from dataclasses import replace

    filt = case.get("filt")
    def member(seed, data_seed, **kw):
        t = tiny_member(seed, data_seed, opt=case.get("opt"), max_epochs=120,
                        **{k: v for k, v in (("lr", case.get("lr")), ("wd", case.get("wd"))) if v is not None}, **kw)
        if filt is not None:  # as the trainer builds it from the job's gradfilter block
            from groktransfer.training.gradfilters import build_gradfilter
            t.gradfilter_cfg = GradFilterConfig(name=filt, ma=replace(GradFilterConfig().ma, window=7))
            t.gradfilter = build_gradfilter(t.gradfilter_cfg)
        return t

    specs = [dict(seed=0, data_seed=0), dict(seed=1, data_seed=3)]
    separate = [member(**m) for m in specs]
    for t in separate:
        t.fit()
    members = [member(**m) for m in specs]
    assert incompatibility(members) is None
    results = EnsembleTrainer(members).fit()
    assert all(isinstance(r, TrainOutcome) for r in results)
    for ens, sep in zip(members, separate):
        assert_same_run(ens, sep)
        if filt is not None:
            for name, s in sep.gradfilter.state.items():
                for k, v in s.items():
                    torch.testing.assert_close(ens.gradfilter.state[name][k], v, rtol=1e-6, atol=1e-9)


def test_muon_members_do_not_stack_and_say_why() -> None:
    members = [tiny_member(0, 0, opt=dict(name="muon")), tiny_member(1, 0, opt=dict(name="muon"))]
    reason = incompatibility(members)
    assert reason is not None and reason.startswith("optimizer muon:") and "\n" not in reason
    filtered = [tiny_member(0, 0), tiny_member(1, 0)]
    from groktransfer.training.gradfilters import build_gradfilter

    filtered[1].gradfilter_cfg = GradFilterConfig(name="ema")
    filtered[1].gradfilter = build_gradfilter(filtered[1].gradfilter_cfg)
    assert incompatibility(filtered) == "gradient filters differ"


# --------------------------------------------------------------------------- resume after SIGKILL
KILLABLE = TINY + ["train.max_epochs=300", "train.patience=0", "train.checkpoint_every=40"]


@pytest.mark.parametrize(
    "extra",
    [["optimizer=sgd", "optimizer.lr=0.01", "optimizer.weight_decay=1e-3", "gradfilter=ma", "gradfilter.ma.window=30"],
     ["optimizer=muon", "gradfilter=ema"],
     ["train.loss=stablemax", "gradfilter=orthograd", "optimizer.weight_decay=0"]],
)
def test_sigkill_resumes_bit_identically_with_optimizer_and_filter_state(tmp_path: Path, extra) -> None:
    args = KILLABLE + extra
    reference = run_in(tmp_path / "ref", "a", args)
    root = tmp_path / "sweeps"
    first, second = root / "launch1", root / "launch2"
    cmd = lambda d: [PYTHON, "scripts/train.py", *args, f"paths.root={root}", f"hydra.run.dir={d}"]  # noqa: E731
    proc = subprocess.Popen(cmd(first), cwd=REPO, env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and status_now(first).get("epoch", 0) < 80:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = status_now(first)["epoch"]
    assert status_now(first)["status"] == "running" and 80 <= killed_at < 300
    done = subprocess.run(cmd(second), cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from epoch" in done.stdout + done.stderr
    pd.testing.assert_frame_equal(
        pd.read_csv(reference.run_dir / "metrics.csv"), pd.read_csv(second / "metrics.csv"), check_exact=True
    )
    ref_final = torch.load(reference.run_dir / "checkpoints" / "final.pt", weights_only=True) if (
        reference.run_dir / "checkpoints" / "final.pt").exists() else None
    if ref_final is not None:
        got = torch.load(second / "checkpoints" / "final.pt", weights_only=True)
        for k, v in ref_final.get("model", ref_final).items():
            if torch.is_tensor(v):
                assert torch.equal(v, got.get("model", got)[k]), k


def test_ensemble_launcher_trains_muon_jobs_one_at_a_time_with_a_notice(tmp_path: Path, capsys) -> None:
    from test_ensemble_sweep import _planned
    from groktransfer.jobs.ensemble_launch import train_planned

    jobs = _planned(tmp_path, ["optimizer=muon", "train.max_epochs=30"])
    results = train_planned(jobs, max_members=16)
    out = capsys.readouterr().out
    assert out.count("ensemble launcher: 2 jobs train one at a time (optimizer muon: Muon orthogonalises") == 1
    assert [r.status.value for r in results] == ["completed", "completed"]


def test_ensemble_launcher_stacks_grokfast_sgd_jobs(tmp_path: Path, capsys) -> None:
    from test_ensemble_sweep import _planned
    from groktransfer.jobs.ensemble_launch import train_planned

    jobs = _planned(tmp_path, ["optimizer=sgd", "optimizer.lr=0.01", "gradfilter=ema", "train.max_epochs=30"])
    results = train_planned(jobs, max_members=16)
    assert "2 jobs train as one ensemble" in capsys.readouterr().out
    assert [r.status.value for r in results] == ["completed", "completed"]

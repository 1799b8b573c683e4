"""The CUDA path without a GPU: real jobs on a pretend GPU (``tests/fakegpu.py``).

Every tensor a job makes must follow the model's device, and the loop must not stop the
device every epoch. On a CPU neither shows; on ``fakegpu`` a tensor left on the CPU fails
the way CUDA fails ("Expected all tensors to be on the same device"), and every read on
the host is counted. Since fakegpu computes with the CPU's kernels, a job there must write
exactly what the same job writes on the CPU: that is what these tests compare, over every
task family, model, optimizer and gradient filter, transfer starts, resume across devices,
the ensemble trainer and the ensemble launcher.
"""

from __future__ import annotations

import dataclasses

import contextlib
import json
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from conftest import compose_job, run_in
from fakegpu import FAKE, NAME, DeviceMixError, fake_gpu, on_fake
from faults import FaultInjection
from groktransfer.config.schema import CpuGemm, GradFilterConfig, OptimizerConfig, TrainConfig, TrainJobConfig, to_typed
from groktransfer.model.transformer import TransformerConfig
from groktransfer.jobs.ensemble_launch import train_planned
from groktransfer.jobs.run_job import Launch, PlannedJob, plan_job
from groktransfer.model.gemm import set_cpu_gemm
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.tasks.modular import Task
from groktransfer.training import device as device_module
from groktransfer.training.ensemble import EnsembleTrainer
from groktransfer.training.gradfilters import MAFilter
from groktransfer.training.trainer import Trainer, TrainingFailure, TrainOutcome

# A short job that evaluates, checkpoints and measures several times. cpu_gemm=blas: the fast
# path's CPU-only oneDNN route is not taken on another device, so the CPU run must not take it either.
SHORT = ["debug=smoke", "train.max_epochs=12", "train.eval_every=3", "train.checkpoint_every=6", "train.patience=0",
         "train.cpu_gemm=blas"]  # fmt: skip


@pytest.fixture
def blas():
    """The fast path's CPU products on torch's own kernels, as on any other device (process-wide: reset after)."""
    set_cpu_gemm(CpuGemm.blas)
    yield
    set_cpu_gemm(CpuGemm.auto)


@pytest.fixture
def gpu(monkeypatch):
    """``train.device=fakegpu`` resolves to the pretend GPU while the test runs."""
    for name in ("resolve_device", "training_device"):
        real = getattr(device_module, name)

        def resolve(spec: str, real=real) -> torch.device:
            return FAKE if str(spec).strip().lower() == NAME else real(spec)

        for module in list(sys.modules.values()):  # every module that imported it (run_job, train_run_dir, ...)
            if getattr(module, name, None) is real:
                monkeypatch.setattr(module, name, resolve)
    with fake_gpu() as mode:
        yield mode


# --------------------------------------------------------------------------- the pretend GPU itself
def test_the_pretend_gpu_fails_where_cuda_fails_and_counts_reads(gpu) -> None:
    x = torch.randn(4, 3).to(FAKE)
    assert on_fake(x) and x.device == FAKE and on_fake(torch.zeros(2, device=x.device))
    with pytest.raises(DeviceMixError, match="Expected all tensors to be on the same device"):
        x + torch.ones(3)  # a CPU vector
    with pytest.raises(DeviceMixError, match="is written"):
        torch.zeros((), dtype=x.dtype).add_(x.sum())  # a device number added into a CPU accumulator
    with pytest.raises(DeviceMixError):
        torch.nn.functional.cross_entropy(x, torch.tensor([0, 1, 2, 0]))  # CPU labels
    with pytest.raises(DeviceMixError):
        x.gather(1, torch.zeros(4, 1, dtype=torch.long))  # a CPU index where CUDA wants the device's
    with pytest.raises(DeviceMixError, match="indices"):
        torch.ones(5)[torch.tensor([0, 1]).to(FAKE)]  # device indices into a CPU tensor
    # what CUDA allows: a CPU number as a scalar, CPU indices into a device tensor, copies
    with pytest.raises(DeviceMixError, match="deterministic"):
        torch.nn.functional.cross_entropy(x.reshape(2, 3, 2), torch.zeros(2, 2, dtype=torch.long).to(FAKE))
    assert on_fake(torch.nn.functional.cross_entropy(  # without a reduction it is deterministic
        x.reshape(2, 3, 2), torch.zeros(2, 2, dtype=torch.long).to(FAKE), reduction="none"))
    assert on_fake(x * torch.tensor(2.0)) and on_fake(x[torch.tensor([0, 2])])
    assert torch.equal(x.cpu(), x.elem) and not on_fake(x.cpu())
    before = gpu.total
    float(x.sum()), x.tolist(), x[x > 0]
    assert gpu.syncs["item"] >= 1 and gpu.syncs["to_cpu"] >= 1 and gpu.syncs["bool_mask"] == 1
    assert gpu.total == before + 3


# --------------------------------------------------------------------------- whole jobs
def _outputs(run_dir: Path) -> Dict[str, object]:
    """What a job wrote that does not depend on timing: tables, outcome, checkpoint weights."""
    status = json.loads((run_dir / "status.json").read_text())
    out: Dict[str, object] = {k: status[k] for k in ("status", "epoch", "thresholds", "final", "stop_reason")}
    for name in ("metrics.csv", "measures.csv", "measures_freqs.csv"):
        if (run_dir / name).exists():
            out[name] = (run_dir / name).read_text()
    for ckpt in sorted((run_dir / "checkpoints").glob("*.pt")):
        state = torch.load(ckpt, weights_only=True)  # a tensor saved on the device would not load here
        out[ckpt.name] = {k: v for k, v in _flat(state).items()}
    return out


def _flat(state, prefix: str = "") -> Dict[str, object]:
    if isinstance(state, dict):
        return {k2: v2 for k, v in state.items() for k2, v2 in _flat(v, f"{prefix}{k}.").items()}
    if torch.is_tensor(state):
        assert state.device.type == "cpu" and type(state) is torch.Tensor, prefix  # saved device-independent
        return {prefix: state.tolist()}
    return {prefix: state}


# (task, model, optimizer, gradient filter, extra): every family, model, optimizer, filter and loss
# at least once (the decoder of Power et al. on the fast path in minibatches); digit tasks in minibatches as their presets train; a transfer start carrying Adam moments.
JOBS = {
    "add-one_layer-adamw": ["task=add", "model=one_layer", "optimizer=adamw", "gradfilter=none"],
    "subtract-two_layer-adam-ema": ["task=subtract", "model=two_layer", "optimizer=adam", "gradfilter=ema"],
    "multiply-one_layer-sgd-ma": ["task=multiply", "model=one_layer", "optimizer=sgd", "gradfilter=ma"],
    "int_add-one_layer-muon": ["task=int_add", "model=one_layer", "optimizer=muon", "gradfilter=ema"],
    "digit_add-attn_only-minibatch-ma": ["task=digit_add", "model=attn_only_2l", "optimizer=adamw", "gradfilter=ma",
                                         "train.batch_size=8"],
    "digit_sub-two_layer-muon-minibatch": ["task=digit_sub", "model=two_layer", "optimizer=muon", "train.batch_size=16"],
    "multiply-power_2l-operator_token-minibatch": ["task=multiply", "model=power_2l", "optimizer=adam",
                                                   "task.operator_token=true", "task.exclude_b_zero=true",
                                                   "train.batch_size=64"],
    "add-onehot_mlp-stablemax-orthograd": ["task=add", "model=onehot_mlp", "optimizer=adamw", "gradfilter=orthograd",
                                           "train.loss=stablemax"],
    "subtract-transformer_lens_init-ce_float32": ["task=subtract", "model=one_layer", "model.init=transformer_lens",
                                                  "train.loss=ce_float32"],
    "divide-grokked-carried_moments": ["task=divide", "transfer=grokked", "transfer.source.task=divide",
                                       "transfer.source.max_epochs=12", "transfer.grokked.min_train_acc=0",
                                       "transfer.grokked.min_test_acc=0", "transfer.grokked.held_for=0",
                                       "transfer.reset_optimizer=false"],
}  # fmt: skip


@pytest.mark.parametrize("name", list(JOBS))
def test_a_job_on_the_pretend_gpu_writes_what_it_writes_on_the_cpu(tmp_path: Path, gpu, name: str) -> None:
    with gpu.paused():
        cpu = run_in(tmp_path / "cpu", "job", SHORT + JOBS[name] + ["train.device=cpu"])
    on_gpu = run_in(tmp_path / "gpu", "job", SHORT + JOBS[name] + [f"train.device={NAME}"])
    assert cpu.status == on_gpu.status == "completed", (cpu.record.reason, on_gpu.record.reason)
    assert _outputs(on_gpu.run_dir) == _outputs(cpu.run_dir)


@pytest.mark.parametrize("first, then", [(NAME, "cpu"), ("cpu", NAME)])
def test_a_run_stopped_on_one_device_resumes_on_the_other_bit_identically(tmp_path: Path, gpu, first: str, then: str) -> None:
    job = SHORT + ["train.max_epochs=18", "optimizer=adamw", "gradfilter=ma"]
    with gpu.paused():
        reference = run_in(tmp_path / "ref", "job", job + ["train.device=cpu"])
    with pytest.raises(RuntimeError, match="injected failure"):
        run_in(tmp_path / "run", "crash", job + [f"train.device={first}"], [FaultInjection(raise_at_epoch=9)])
    resumed = run_in(tmp_path / "run", "rerun", job + [f"train.device={then}"])
    assert resumed.status == "completed" and resumed.record.epoch == 18
    ref, out = _outputs(reference.run_dir), _outputs(resumed.run_dir)
    assert out["final"] == ref["final"] and out["metrics.csv"] == ref["metrics.csv"]


def test_a_non_finite_loss_is_read_at_the_next_evaluation_and_names_its_epoch(tmp_path: Path, gpu) -> None:
    """On the device the loop does not read the loss each epoch; the failure still names the first bad epoch."""
    job = SHORT + ["train.max_epochs=40", "train.eval_every=10", "train.checkpoint_every=20"]
    with gpu.paused():
        cpu = run_in(tmp_path / "cpu", "nan", job + ["train.device=cpu"], [FaultInjection(nan_at_epoch=12)])
    on_gpu = run_in(tmp_path / "gpu", "nan", job + [f"train.device={NAME}"], [FaultInjection(nan_at_epoch=12)])
    assert cpu.status == on_gpu.status == "failed"
    assert cpu.record.failed_epoch == on_gpu.record.failed_epoch == 13
    assert cpu.record.reason == on_gpu.record.reason and "non-finite training loss" in cpu.record.reason


# --------------------------------------------------------------------------- measures on the device
MEASURED = {  # every family, every branch of the modular measures (group, discrete logs, input side only,
    # no structure, no MLP), the digit measures
    "add": ("add", {}), "divide": ("divide", {}), "int_add": ("int_add", {}), "x2xyy2": ("x2xyy2", {}),
    "attn_only": ("subtract", {"n_layers": 2, "attn_only": True}),
    "digit_add": ("digit_add", {}),
}  # fmt: skip


@pytest.mark.parametrize("name", list(MEASURED))
def test_checkpoint_measures_run_on_the_device_and_read_only_their_numbers(gpu, name: str) -> None:
    from groktransfer.measures.registry import measure_checkpoint
    from groktransfer.jobs.train_run_dir import resolved_model_config
    from groktransfer.tasks.registry import family_of, make_task, typed_task

    task_name, model_kw = MEASURED[name]
    keys = {"p": 23, "frac_train": 0.5, "n_digits": 2}  # each family takes the keys it declares
    declared = {f.name for f in dataclasses.fields(family_of(task_name).config_class)}
    task = make_task(typed_task({"name": task_name, **{k: v for k, v in keys.items() if k in declared}}), 0)
    cfg = resolved_model_config(TransformerConfig(d_model=32, d_mlp=64, d_head=8, **model_kw), task)
    with gpu.paused():
        model = HookedGrokTransformer(cfg, seed=1)
        on_cpu = measure_checkpoint(task, model, 0.3)
    model.to(FAKE)
    before = gpu.bytes_read
    on_gpu = measure_checkpoint(task, model, 0.3)
    assert json.dumps(on_gpu) == json.dumps(on_cpu)  # the same numbers bit for bit (NaN where absent)
    # What crossed: the numbers of one measures row and its per-frequency rows -- not the logits,
    # the activations or the weights (the old way copied those to the CPU and measured there).
    n_numbers = len(on_cpu[0]) + sum(len(r) for r in on_cpu[1])
    assert gpu.bytes_read - before <= 8 * 3 * n_numbers, dict(gpu.where)


# --------------------------------------------------------------------------- host reads per epoch
def _member(seed: int, device: torch.device, epochs: int, task: str = "add", batch_size=None, filt=None) -> Trainer:
    t = Task(task, 23, 0.6, seed)
    cfg = TransformerConfig(d_model=32, d_mlp=64, d_head=8, d_vocab=t.d_vocab, d_vocab_out=t.d_vocab_out)
    model = HookedGrokTransformer(cfg, seed=seed).to(device)
    train = TrainConfig(max_epochs=epochs, eval_every=1000, checkpoint_every=1000, patience=0, progress_bar=False,
                        batch_size=batch_size)  # fmt: skip
    return Trainer(model, t, OptimizerConfig(lr=3e-3), train, gradfilter_cfg=GradFilterConfig(name=filt) if filt else None)


def _reads(gpu, fit) -> int:
    before = gpu.total
    fit()
    return gpu.total - before


@pytest.mark.parametrize("batch_size, filt", [(None, None), (64, "ma"), (None, "ema")])
def test_the_training_loop_reads_nothing_on_the_host_between_evaluations(gpu, batch_size, filt) -> None:
    """Evaluations at epoch 0 and at the end only: 4 or 12 epochs must read the same number of times."""
    short = _reads(gpu, _member(0, FAKE, 4, batch_size=batch_size, filt=filt).fit)
    long = _reads(gpu, _member(0, FAKE, 12, batch_size=batch_size, filt=filt).fit)
    assert long == short, dict(gpu.where)


def test_the_ensemble_reads_nothing_on_the_host_between_evaluations(gpu) -> None:
    counts = [_reads(gpu, EnsembleTrainer([_member(s, FAKE, n, filt="ma") for s in (0, 1)]).fit) for n in (4, 12)]
    assert counts[0] == counts[1], dict(gpu.where)


# --------------------------------------------------------------------------- the ensemble
def test_an_ensemble_on_the_pretend_gpu_equals_one_on_the_cpu(gpu, blas) -> None:
    with gpu.paused():
        on_cpu = [_member(s, torch.device("cpu"), 20, filt="ema") for s in (0, 1, 2)]
        EnsembleTrainer(on_cpu).fit()
    on_gpu = [_member(s, FAKE, 20, filt="ema") for s in (0, 1, 2)]
    results = EnsembleTrainer(on_gpu).fit()
    assert all(isinstance(r, TrainOutcome) for r in results)
    for a, b in zip(on_gpu, on_cpu):
        assert a.last_eval == b.last_eval
        for (name, w), v in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert on_fake(w) and torch.equal(w.cpu(), v), name


def test_an_ensemble_member_with_a_non_finite_loss_fails_at_its_first_bad_epoch(gpu) -> None:
    members = [_member(s, FAKE, 12) for s in (0, 1)]
    with torch.no_grad():
        members[1].model.unembed.W_U.fill_(float("nan"))
    results = EnsembleTrainer(members).fit()
    assert isinstance(results[0], TrainOutcome)
    assert isinstance(results[1], TrainingFailure) and results[1].epoch == 1 and "non-finite" in results[1].reason


def _planned(root: Path, overrides: List[str], seeds=(0, 1)) -> List[PlannedJob]:
    held = contextlib.ExitStack()
    jobs = []
    for seed in seeds:
        job = to_typed(TrainJobConfig, compose_job(SHORT + overrides + [f"seed={seed}"], root=root))
        planned = plan_job(job, Launch(run_dir=root / f"job{seed}", cwd=root), held)
        assert isinstance(planned, PlannedJob)
        jobs.append(planned)
    return jobs


def test_the_ensemble_launcher_on_the_pretend_gpu_writes_what_it_writes_on_the_cpu(tmp_path: Path, gpu) -> None:
    with gpu.paused():
        cpu = train_planned(_planned(tmp_path / "cpu", ["gradfilter=ma", "train.device=cpu"]), max_members=2)
    on_gpu = train_planned(_planned(tmp_path / "gpu", ["gradfilter=ma", f"train.device={NAME}"]), max_members=2)
    assert [r.status.value for r in on_gpu] == ["completed"] * 2
    for a, b in zip(on_gpu, cpu):
        assert _outputs(a.run_dir) == _outputs(b.run_dir)


# --------------------------------------------------------------------------- Grokfast-MA's window layout
def test_a_resume_state_with_the_window_last_continues_exactly() -> None:
    """resume.pt files written before the window moved to the front (state version 1) still resume."""
    grads = [torch.randn(3, 4, generator=torch.Generator().manual_seed(i)) for i in range(9)]

    def run(f: MAFilter, gs) -> List[torch.Tensor]:
        out = []
        for g in gs:
            p = torch.nn.Parameter(torch.zeros(3, 4))
            p.grad = g.clone()
            f.apply([("w", p)])
            out.append(p.grad)
        return out

    straight = run(MAFilter(4, 2.0), grads)
    first = MAFilter(4, 2.0)
    run(first, grads[:6])
    old = {"steps": first.steps, "state": {"w": {"ring": first.state["w"]["ring"].movedim(0, -1).contiguous(),
                                                 "sum": first.state["w"]["sum"]}}}  # fmt: skip
    assert old["state"]["w"]["ring"].shape == (3, 4, 4) and "version" not in old
    resumed = MAFilter(4, 2.0)
    resumed.load_state_dict(old)
    assert resumed.state["w"]["ring"].shape == (4, 3, 4) and resumed.state["w"]["ring"].is_contiguous()
    for a, b in zip(run(resumed, grads[6:]), straight[6:]):
        assert torch.equal(a, b)
    assert MAFilter(4, 2.0).state_dict()["version"] == 2
    with pytest.raises(ValueError, match="newer"):
        MAFilter(4, 2.0).load_state_dict({**old, "version": 3})

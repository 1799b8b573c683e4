"""train.loss (float64 / float32 cross-entropy, StableMax) and gradfilter=orthograd (⊥Grad),
each against a direct implementation of its definition, in a loop, in an ensemble and on resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from groktransfer.training.gradfilters import OrthoGradFilter, build_gradfilter
from groktransfer.training.losses import LOSSES, softmax_collapse, stablemax_cross_entropy


def test_stablemax_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0], [-3.0, 0.5, 4.0]])
    labels = torch.tensor([0, 1])
    s = lambda x: x + 1 if x >= 0 else 1 / (1 - x)  # noqa: E731
    expected = []
    for row, y in zip(logits.tolist(), labels.tolist()):
        values = [s(x) for x in row]
        expected.append(-math.log(values[y] / sum(values)))
    got = stablemax_cross_entropy(logits, labels, torch.float64, "none")
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(LOSSES.get("stablemax").fn(logits, labels, torch.float64, "mean"), got.mean())


def test_cross_entropies_differ_only_in_precision_and_float32_collapses() -> None:
    logits = torch.tensor([[0.0, 30.0, -5.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([1, 2])
    f64 = LOSSES.get("ce_float64").fn(logits, labels, torch.float64, "none")
    f32 = LOSSES.get("ce_float32").fn(logits, labels, torch.float64, "none")
    assert f64.dtype == torch.float64 and f32.dtype == torch.float32
    torch.testing.assert_close(f64, F.cross_entropy(logits.double(), labels, reduction="none"))
    # the first row's other terms (e^-30, e^-35) vanish next to 1 in float32: its loss is exactly 0 (Softmax Collapse)
    assert float(f32[0]) == 0.0 and float(f64[0]) > 0.0
    assert softmax_collapse(logits) == 0.5 and softmax_collapse(logits, torch.float64) == 0.0


def test_orthograd_removes_the_radial_component_and_keeps_the_norm() -> None:
    w = torch.tensor([[3.0, 4.0], [0.0, 1.0]], requires_grad=True)
    g = torch.tensor([[1.0, 2.0], [2.0, -1.0]])
    w.grad = g.clone()
    OrthoGradFilter().apply([("w", w)])
    flat_w, flat_g = w.detach().flatten(), g.flatten()
    orth = flat_g - (flat_w @ flat_g) / (flat_w @ flat_w) * flat_w
    torch.testing.assert_close(w.grad.flatten(), orth * flat_g.norm() / orth.norm())
    assert abs(float(w.grad.flatten() @ flat_w)) < 1e-5 and math.isclose(float(w.grad.norm()), float(g.norm()), rel_tol=1e-6)


def test_orthograd_over_stacked_members_equals_each_member_alone() -> None:
    gen = torch.Generator().manual_seed(0)
    ws = [torch.randn(3, 4, generator=gen) for _ in range(3)]
    gs = [torch.randn(3, 4, generator=gen) for _ in range(3)]
    alone = []
    for w, g in zip(ws, gs):
        p = w.clone().requires_grad_(True)
        p.grad = g.clone()
        OrthoGradFilter().apply([("p", p)])
        alone.append(p.grad)
    stacked = torch.stack(ws).requires_grad_(True)
    stacked.grad = torch.stack(gs)
    f = build_gradfilter(type("C", (), {"name": "orthograd"})())
    f.member_axis = True
    f.apply([("p", stacked)])
    torch.testing.assert_close(stacked.grad, torch.stack(alone))


@pytest.mark.parametrize("case", [dict(loss="stablemax", filt="orthograd", wd=0.0), dict(loss="ce_float32", filt=None, wd=1.0)],
                         ids=["stablemax_orthograd", "ce_float32"])  # fmt: skip
def test_stacked_members_equal_separate_runs_with_the_loss_and_orthograd(case) -> None:
    from test_ensemble import assert_same_run, tiny_member

    from groktransfer.config.schema import GradFilterConfig
    from groktransfer.training.ensemble import EnsembleTrainer, incompatibility

    def member(seed: int, data_seed: int):
        t = tiny_member(seed, data_seed, wd=case["wd"], max_epochs=80, loss=case["loss"])
        if case["filt"] is not None:  # as the trainer builds it from the job's gradfilter block
            t.gradfilter_cfg = GradFilterConfig(name=case["filt"])
            t.gradfilter = build_gradfilter(t.gradfilter_cfg)
        return t

    specs = [dict(seed=0, data_seed=0), dict(seed=1, data_seed=3)]
    separate = [member(**m) for m in specs]
    for t in separate:
        t.fit()
    members = [member(**m) for m in specs]
    assert incompatibility(members) is None
    EnsembleTrainer(members).fit()
    for ens, sep in zip(members, separate):
        assert_same_run(ens, sep)


def test_an_unknown_loss_is_refused_before_anything_is_written() -> None:
    from conftest import compose_job

    from groktransfer.config.schema import ConfigError, TrainJobConfig, to_typed
    from groktransfer.training.optimizers import check_registered

    with pytest.raises(ConfigError, match="train.loss='softmax64': unknown loss; registered: ce_float32, ce_float64, stablemax"):
        check_registered(to_typed(TrainJobConfig, compose_job(["train.loss=softmax64"])))

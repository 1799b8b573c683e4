"""The training loop: thresholds, early stop, warm-up, determinism, a tiny grokking run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY, run_in
from faults import FaultInjection
from groktransfer.training.trainer import ThresholdTracker, warmup_factor


def test_threshold_tracker_first_crossing_held_and_streak() -> None:
    tr = ThresholdTracker([0.5, 0.9])
    for epoch, acc in [(0, 0.1), (10, 0.6), (20, 0.95), (30, 0.8), (40, 0.92), (50, 0.93)]:
        tr.update(epoch, acc)
    rec = tr.as_record()
    assert rec["0.5"] == {"epoch": 10, "held": True}
    assert rec["0.9"] == {"epoch": 20, "held": False}  # dipped at 30: first crossing kept, not held
    assert tr.held_for(50) == 10  # the streak restarted at 40
    restored = ThresholdTracker([0.5, 0.9])
    restored.load_state_dict(tr.state_dict())
    assert restored.as_record() == rec and restored.streak.start == 40


def test_warmup_matches_the_paper() -> None:
    f = warmup_factor(10)
    assert [f(s) for s in (0, 5, 10, 50)] == [0.0, 0.5, 1.0, 1.0]
    assert warmup_factor(0)(0) == 1.0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return root, run_in(root, "a", TINY)


def test_tiny_grokking_run_reaches_full_accuracy_and_stops_early(tiny_run) -> None:
    root, result = tiny_run
    assert result.status == "completed"
    final = result.record.final
    assert final["train_acc"] == 1.0 and final["test_acc"] >= 0.999
    thr = result.record.thresholds
    assert thr["0.9"]["epoch"] <= thr["0.999"]["epoch"] < 1500
    assert result.record.stop_reason == "early_stop"
    assert result.record.epoch >= thr["0.999"]["epoch"] + 50  # patience honoured
    metrics = pd.read_csv(result.run_dir / "metrics.csv")
    assert metrics["epoch"].is_monotonic_increasing and metrics["epoch"].iloc[0] == 0
    assert (metrics["epoch"] % 10 == 0).all()
    assert (result.run_dir / "checkpoints" / "final.pt").exists()


def test_same_config_twice_gives_identical_numbers(tiny_run) -> None:
    root, first = tiny_run
    second = run_in(root, "b", TINY + ["force=true"])
    a = pd.read_csv(first.run_dir / "metrics.csv")
    b = pd.read_csv(second.run_dir / "metrics.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert first.record.thresholds == second.record.thresholds


def test_other_seed_changes_init_and_numbers(tiny_run, tmp_path: Path) -> None:
    _, first = tiny_run
    other = run_in(tmp_path, "c", TINY + ["seed=1", "train.max_epochs=20"])
    a = pd.read_csv(first.run_dir / "metrics.csv").iloc[:3]
    b = pd.read_csv(other.run_dir / "metrics.csv").iloc[:3]
    assert not a["train_loss"].equals(b["train_loss"])


def test_non_finite_loss_marks_the_job_failed_with_epoch(tmp_path: Path) -> None:
    result = run_in(tmp_path, "nan", TINY, [FaultInjection(nan_at_epoch=7)])
    assert result.status == "failed"
    assert "non-finite" in result.record.reason and result.record.failed_epoch == 8


def test_profile_preset_writes_a_trace_into_the_run_directory(tmp_path: Path) -> None:
    result = run_in(tmp_path, "prof", ["debug=profile", "train.max_epochs=30", "train.profile_epochs=5",
                                       "task.p=23", "model.d_model=32", "model.d_mlp=64", "model.d_head=8"])
    assert result.status == "completed"
    trace = result.run_dir / "profile" / "trace.json"
    assert trace.stat().st_size > 0 and '"traceEvents"' in trace.read_text()[:2000]
    assert "first 5 epoch(s)" in (result.run_dir / "profile" / "summary.txt").read_text()

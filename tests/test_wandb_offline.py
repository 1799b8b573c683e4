"""W&B in offline mode, for real: runs are created, then read back from their .wandb files.

Reading back uses wandb's own reader of the transaction log (``wandb leet inspect
--json``, the wandb-core tool; see ``read_offline_run``). Each offline init costs
~0.1-0.5 s, each read-back ~0.3 s, so the file stays within a few seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest

from groktransfer.config.schema import LoggerConfig
from groktransfer.sinks import RunMeta, SinkGroup, make_sinks
from groktransfer.sinks.wandb_sink import WandbSink, wandb_run_id
from wandb_reader import OfflineRun, offline_run_files, read_offline_run

pytest.importorskip("wandb")

CONFIG = {"task": {"name": "add", "p": 113}, "seed": 0, "transfer": {"name": "grokked"}}


@pytest.fixture(autouse=True, scope="module")
def hermetic_wandb_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep wandb's per-user dirs (settings, artifact staging, cache) out of $HOME.

    Test-only: the sink itself never sets environment variables.
    """
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(home / var.lower()))
        mp.delenv("WANDB_API_KEY", raising=False)
        yield


def meta(run_id: str = "exp/add-grokked-s0", **kw: Any) -> RunMeta:
    fields = dict(run_id=run_id, experiment="exp", task="add", condition="grokked", seed=0)
    fields.update(kw)
    return RunMeta(**fields)


def loss(epoch: int, offset: float = 0.0) -> float:
    return offset + 1.0 / (epoch + 3)


def train(group: SinkGroup, epochs: range, offset: float = 0.0, ckpt_every: int = 50) -> None:
    """A stand-in for the trainer's calls, in its order."""
    for epoch in epochs:
        group.log_metrics(
            epoch,
            {"train_loss": loss(epoch, offset), "test_loss": 2 * loss(epoch, offset),
             "train_acc": min(1.0, epoch / 100), "test_acc": min(1.0, epoch / 150), "lr": 1e-3},
        )
        if epoch % ckpt_every == 0:
            group.log_measures(
                epoch,
                {"restricted_loss": 0.1, "gini": 0.5, "key_freqs": "3 7 11" if epoch else "", "n_key": 3,
                 "fourier_status": "present"},
                [{"freq": k, "logit_cos_coef": 0.1 * k, "neuron_count": 2 * k} for k in (3, 7, 11)],
            )
            group.log_checkpoint(Path("unused.pt"), epoch, final=False)


def wandb_sink(group: SinkGroup) -> WandbSink:
    sink = group.sinks[1]
    assert isinstance(sink, WandbSink)
    return sink


def only_run(run_dir: Path) -> OfflineRun:
    files = offline_run_files(run_dir)
    assert len(files) == 1, files
    return read_offline_run(files[0])


def history_epochs(run: OfflineRun, key: str = "train_loss") -> list[int]:
    return [row["epoch"] for row in run.history if key in row]


def test_offline_run_is_written_inside_run_dir_and_reads_back(tmp_path: Path) -> None:
    run_dir = tmp_path / "job0"
    ckpt = run_dir / "checkpoints" / "final.pt"
    cfg = LoggerConfig(mode="offline", tags=["smoke"], log_checkpoint_artifact=True)
    with make_sinks(cfg) as group:
        group.start(run_dir, CONFIG, meta())
        sink = wandb_sink(group)
        assert sink.active, "W&B failed to start offline"
        train(group, range(0, 160, 10))
        group.log_summary({"thresholds": {"0.9": {"epoch": 120, "held": True}, "0.999": {"epoch": None, "held": False}},
                           "final": {"test_acc": 1.0}})
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"not really a checkpoint")
        group.log_checkpoint(ckpt, 150, final=True)
        group.finish("completed")
    assert not group.is_disabled(sink) and not sink.active

    offline_dirs = [p for p in (run_dir / "wandb").iterdir() if p.name.startswith("offline-run-")]
    assert len(offline_dirs) == 1 and offline_dirs[0].name.endswith(wandb_run_id("exp/add-grokked-s0"))

    run = only_run(run_dir)
    assert run.run_id == wandb_run_id("exp/add-grokked-s0")
    assert (run.name, run.group, run.job_type, run.project) == ("add-grokked-s0", "exp", "grokked", "groktransfer")
    assert run.config["task"] == {"name": "add", "p": 113} and run.tags == ["smoke"]
    assert run.exit_code == 0 and run.summary["status"] == "completed"

    # history: one row per epoch, x axis = epoch = wandb step; measures merged into the rows
    assert history_epochs(run) == list(range(0, 160, 10))
    for row in run.history:
        assert row["_step"] == row["epoch"]
        if "train_loss" in row:
            assert row["train_loss"] == pytest.approx(loss(row["epoch"]))
    assert history_epochs(run, "measures/gini") == [0, 50, 100, 150]
    assert not any("measures/key_freqs" in row for row in run.history)  # strings go to the table
    assert not any("measures/fourier_status" in row for row in run.history)  # ...or the summary
    assert run.summary["measures/fourier_status"] == "present"

    # summary: threshold epochs and finals, flattened to W&B-friendly keys
    assert run.summary["thresholds/0_9/epoch"] == 120
    assert run.summary["thresholds/0_9/held"] is True
    assert run.summary["thresholds/0_999/epoch"] is None
    assert run.summary["final/test_acc"] == 1.0
    assert run.summary["run_dir"] == str(run_dir.resolve())

    # one key-frequency table for the whole run, plus the last checkpoint's frequencies
    table = {k.split(".", 1)[1]: v for k, v in run.summary.items() if k.startswith("key_freqs_table.")}
    assert table["_type"] == "table-file" and table["nrows"] == 4 and table["ncols"] == 3
    assert any(k.startswith("freqs_last_checkpoint.") for k in run.summary)
    assert "artifact" in run.record_types  # the final checkpoint (log_checkpoint_artifact)

    # the local files are unaffected and agree with W&B
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["epoch"].tolist() == history_epochs(run)


def test_two_jobs_in_one_process_get_their_own_runs(tmp_path: Path) -> None:
    """Like Hydra's basic launcher: sequential jobs in one interpreter."""
    cfg = LoggerConfig(mode="offline")
    first = make_sinks(cfg)
    first.start(tmp_path / "job1", CONFIG, meta("exp/add-grokked-s1", seed=1))
    train(first, range(0, 60, 10), offset=1.0)
    # job 1 "forgets" to finish (a bug, or a hook that swallowed the exit): job 2 must
    # not log into job 1's run -- reinit="finish_previous" closes it
    with pytest.raises(RuntimeError, match="diverged"):
        with make_sinks(cfg) as second:
            second.start(tmp_path / "job2", CONFIG, meta("exp/add-grokked-s2", seed=2))
            assert not wandb_sink(first).active
            train(second, range(0, 40, 10), offset=2.0)
            raise RuntimeError("loss diverged")  # job 2 crashes: its run is still finished
    first.finish("completed")  # late finish: harmless, already closed

    run1, run2 = only_run(tmp_path / "job1"), only_run(tmp_path / "job2")
    assert run1.run_id != run2.run_id
    assert (run1.name, run2.name) == ("add-grokked-s1", "add-grokked-s2")
    assert history_epochs(run1) == list(range(0, 60, 10))
    assert history_epochs(run2) == list(range(0, 40, 10))
    assert all(1.0 < r["train_loss"] < 2.0 for r in run1.history if "train_loss" in r)
    assert all(2.0 < r["train_loss"] < 3.0 for r in run2.history if "train_loss" in r)
    assert run1.exit_code is not None  # closed by job 2's init
    assert run2.exit_code == 1 and run2.summary["status"] == "failed"
    assert pd.read_csv(tmp_path / "job2" / "metrics.csv")["epoch"].tolist() == [0, 10, 20, 30]


def test_resume_continues_the_same_run_and_sync_dry_run_lists_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "job"
    cfg = LoggerConfig(mode="offline")
    with make_sinks(cfg) as group:  # first attempt, interrupted after epoch 80
        group.start(run_dir, CONFIG, meta())
        train(group, range(0, 90, 10))
        group.finish("stopped")
    with make_sinks(cfg) as group:  # resumed from the checkpoint at epoch 50
        group.start(run_dir, CONFIG, meta(resume=True, resume_epoch=50))
        train(group, range(60, 160, 10))
        group.log_summary({"thresholds": {"0.9": {"epoch": 120}}})

    files = offline_run_files(run_dir)
    assert len(files) == 2
    first, second = (read_offline_run(f) for f in files)
    assert first.run_id == second.run_id == wandb_run_id("exp/add-grokked-s0")
    assert first.exit_code == 130 and second.exit_code == 0
    assert history_epochs(first) == list(range(0, 90, 10))
    # steps continue (epoch = step), so `wandb sync` can append the second file
    assert history_epochs(second) == list(range(60, 160, 10))
    assert [r["_step"] for r in second.history] == list(range(60, 160, 10))
    assert second.summary["thresholds/0_9/epoch"] == 120
    # the key-frequency table of the resumed run still covers the pre-resume checkpoints
    assert second.summary["key_freqs_table.nrows"] == 4  # epochs 0, 50, 100, 150
    # the local files hold each epoch exactly once
    assert pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist() == list(range(0, 160, 10))

    # `wandb sync --dry-run` (no network needed) finds both files of the run
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run", str(run_dir / "wandb")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"Would sync 2 run", out), out
    listed = {(tmp_path / p).resolve() for p in re.findall(r"(\S+\.wandb)\b", out)}
    assert listed == {f.resolve() for f in files}, out


def test_wandb_failure_disables_only_wandb(tmp_path: Path) -> None:
    """A W&B init that fails (here: a bad name_format) leaves the local files intact."""
    cfg = LoggerConfig(mode="offline", name_format="{model}")
    with make_sinks(cfg) as group:
        group.start(tmp_path, CONFIG, meta())
        train(group, range(0, 60, 10))
    assert group.is_disabled(group.sinks[1])
    assert pd.read_csv(tmp_path / "metrics.csv")["epoch"].tolist() == list(range(0, 60, 10))
    assert offline_run_files(tmp_path) == []

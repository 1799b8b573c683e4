"""Atomic writes, the local CSV sink, SinkGroup's failure isolation and make_sinks.

No W&B run is created here (see test_wandb_offline.py); everything is fast.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from groktransfer.utils import atomic
from groktransfer.config.schema import LoggerConfig
from groktransfer.sinks import LocalSink, RunDirExistsError, RunMeta, SinkGroup, make_sinks
from groktransfer.runs.rundir import FREQS_FILE, MEASURES_FILE, METRIC_COLUMNS, METRICS_FILE
from groktransfer.sinks.wandb_sink import (
    flatten_summary,
    format_run_name,
    wandb_key,
    wandb_run_id,
)

REPO = Path(__file__).resolve().parents[1]
FILES = (METRICS_FILE, MEASURES_FILE, FREQS_FILE)


def make_meta(**kw: Any) -> RunMeta:
    base = dict(run_id="exp/add-grokked-s0", experiment="exp", task="add", condition="grokked", seed=0)
    base.update(kw)
    return RunMeta(**base)


class FakeClock:
    """Deterministic monotonic clock for the flush policy."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def metrics_at(epoch: int) -> dict[str, float]:
    # awkward floats on purpose: they must round-trip exactly through the CSV
    return {
        "train_loss": 1.0 / (epoch + 3),
        "test_loss": 2.0 / (epoch + 7),
        "train_acc": min(1.0, epoch / 250),
        "test_acc": min(1.0, epoch / 400),
        "lr": 1e-3,
    }


def measures_at(epoch: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    scalars: dict[str, Any] = {"restricted_loss": 0.5 / (epoch + 1), "gini": np.float32(0.25)}
    if epoch >= 200:  # a measure that only appears later: the header must grow
        scalars["excluded_loss"] = 3.0
    scalars["key_freqs"] = "3 7 11" if epoch >= 100 else ""
    freq_rows = [
        {"freq": k, "logit_cos_coef": 0.1 * k, "neuron_count": int(k * 2)} for k in (3, 7, 11)
    ]
    return scalars, freq_rows


def drive(sink: LocalSink, epochs: range, checkpoint_every: int = 100) -> None:
    """What the trainer does: metrics every eval, measures + checkpoint flush every ckpt."""
    for epoch in epochs:
        sink.log_metrics(epoch, metrics_at(epoch))
        if epoch % checkpoint_every == 0:
            scalars, rows = measures_at(epoch)
            sink.log_measures(epoch, scalars, rows)


def temps(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


# -- atomic ---------------------------------------------------------------------------


def test_atomic_helpers_write_replace_and_leave_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    atomic.write_json(target, {"a": np.float64(0.5), "p": tmp_path, "arr": np.arange(3), "nan": float("nan")})
    atomic.write_json(target, {"a": 1})  # replaces
    assert target.read_text() == '{\n  "a": 1\n}\n'
    atomic.write_text(tmp_path / "x.txt", "line1\nline2\n")
    atomic.write(tmp_path / "x.bin", b"\x00\x01")
    assert (tmp_path / "x.txt").read_text() == "line1\nline2\n"
    assert (tmp_path / "x.bin").read_bytes() == b"\x00\x01"
    assert temps(tmp_path) == []
    # permissions follow the umask like open() does, not mkstemp's 0600
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)
    with pytest.raises(TypeError):
        atomic.write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists() and temps(tmp_path) == []


def test_atomic_exception_mid_write_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.csv"
    atomic.write_text(target, "epoch\n0\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_open(target, "w") as f:
            f.write("epoch\n0\n10\n2")  # half a file...
            raise RuntimeError("boom")  # ...and the writer dies
    assert target.read_text() == "epoch\n0\n"
    assert temps(tmp_path) == []


def test_remove_stale_temps_only_touches_named_file(tmp_path: Path) -> None:
    (tmp_path / ".metrics.csv.123.abcd.tmp").write_text("orphan of a SIGKILL")
    (tmp_path / ".status.json.9.ff.tmp").write_text("someone else's")
    removed = atomic.remove_stale_temps(tmp_path, "metrics.csv")
    assert [p.name for p in removed] == [".metrics.csv.123.abcd.tmp"]
    assert [p.name for p in temps(tmp_path)] == [".status.json.9.ff.tmp"]


# -- LocalSink ------------------------------------------------------------------------


def test_local_rows_appear_and_pandas_reads_them(tmp_path: Path) -> None:
    sink = LocalSink()
    sink.start(tmp_path, {}, make_meta())
    # readable right away: header-only files
    assert list(pd.read_csv(tmp_path / METRICS_FILE).columns) == list(METRIC_COLUMNS)
    assert len(pd.read_csv(tmp_path / MEASURES_FILE)) == 0

    sink.log_metrics(0, {**metrics_at(0), "grad_norm": 0.5})  # an extra key -> extra column
    drive(sink, range(10, 310, 10))
    sink.finish("completed")

    m = pd.read_csv(tmp_path / METRICS_FILE)
    assert list(m.columns) == [*METRIC_COLUMNS, "grad_norm"]
    assert m["epoch"].tolist() == list(range(0, 310, 10))
    for row in m.itertuples():
        assert row.train_loss == metrics_at(row.epoch)["train_loss"]  # exact round trip
    assert m["grad_norm"].iloc[0] == 0.5 and m["grad_norm"].iloc[1:].isna().all()

    ms = pd.read_csv(tmp_path / MEASURES_FILE, dtype={"key_freqs": str}, keep_default_na=False)
    assert list(ms.columns) == ["epoch", "restricted_loss", "gini", "key_freqs", "excluded_loss"]
    assert ms["epoch"].tolist() == [100, 200, 300]
    assert ms["key_freqs"].tolist() == ["3 7 11"] * 3
    assert ms["gini"].tolist() == [0.25] * 3  # numpy scalar unwrapped, not "np.float32(0.25)"
    assert ms["excluded_loss"].tolist() == ["", "3.0", "3.0"]  # absent before it existed

    fr = pd.read_csv(tmp_path / FREQS_FILE)
    assert list(fr.columns) == ["epoch", "freq", "logit_cos_coef", "neuron_count"]
    assert len(fr) == 9 and sorted(set(fr["epoch"])) == [100, 200, 300]
    assert temps(tmp_path) == []


def test_local_metrics_are_buffered_then_flushed(tmp_path: Path) -> None:
    clock = FakeClock()
    sink = LocalSink(flush_interval_s=5.0, clock=clock)
    sink.start(tmp_path, {}, make_meta())
    n_rows = lambda: len(pd.read_csv(tmp_path / METRICS_FILE))  # noqa: E731
    sink.log_metrics(10, metrics_at(10))
    sink.log_metrics(20, metrics_at(20))
    assert n_rows() == 0  # buffered: rewriting on every eval would be wasteful
    clock.t += 5.0
    sink.log_metrics(30, metrics_at(30))
    assert n_rows() == 3  # interval elapsed
    sink.log_metrics(40, metrics_at(40))
    assert n_rows() == 3
    sink.log_measures(40, *measures_at(40))  # checkpoints flush everything
    assert n_rows() == 4
    sink.log_metrics(50, metrics_at(50))
    sink.log_checkpoint(tmp_path / "x.pt", 50, final=False)
    assert n_rows() == 5
    sink.log_metrics(60, metrics_at(60))
    sink.log_summary({"final": {}})
    assert n_rows() == 6
    sink.log_metrics(70, metrics_at(70))
    sink.finish("completed")
    sink.finish("completed")  # idempotent
    assert n_rows() == 7
    with pytest.raises(RuntimeError, match="after finish"):
        sink.log_metrics(80, metrics_at(80))


def test_local_resume_matches_uninterrupted_run_exactly(tmp_path: Path) -> None:
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    s = LocalSink()
    s.start(full, {}, make_meta())
    drive(s, range(0, 510, 10))
    s.finish("completed")

    # first attempt: reaches epoch 340 (flushed at ckpt 300 and by the timer), then SIGKILL
    # (simulated: no finish, the object is dropped). resume.pt was saved at epoch 300.
    s = LocalSink(flush_interval_s=0.0)
    s.start(resumed, {}, make_meta())
    drive(s, range(0, 350, 10))
    del s
    assert pd.read_csv(resumed / METRICS_FILE)["epoch"].max() == 340

    s = LocalSink()
    s.start(resumed, {}, make_meta(resume=True, resume_epoch=300))
    # rows after the resume epoch are gone from disk at once, not only at the end
    assert pd.read_csv(resumed / METRICS_FILE)["epoch"].max() == 300
    drive(s, range(310, 510, 10))
    s.finish("completed")
    for name in FILES:
        assert (resumed / name).read_text() == (full / name).read_text(), name


def test_local_resume_edge_cases(tmp_path: Path) -> None:
    # resume requested but nothing on disk yet (killed before the first flush): fresh start
    s = LocalSink()
    s.start(tmp_path, {}, make_meta(resume=True, resume_epoch=None))
    drive(s, range(0, 110, 10))
    s.finish("failed")
    # resume with no saved state (resume_epoch=None): the run restarts from scratch
    s = LocalSink()
    s.start(tmp_path, {}, make_meta(resume=True, resume_epoch=None))
    assert len(pd.read_csv(tmp_path / METRICS_FILE)) == 0
    s.finish("failed")


def test_local_resume_warns_about_unflushed_gap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = LocalSink()
    s.start(tmp_path, {}, make_meta())
    drive(s, range(0, 110, 10))  # flushed up to epoch 100
    del s
    with caplog.at_level(logging.WARNING):
        LocalSink().start(tmp_path, {}, make_meta(resume=True, resume_epoch=200))
    assert "never flushed" in caplog.text


def test_local_refuses_to_overwrite_without_resume(tmp_path: Path) -> None:
    s = LocalSink()
    s.start(tmp_path, {}, make_meta())
    drive(s, range(0, 110, 10))
    s.finish("completed")
    before = {n: (tmp_path / n).read_text() for n in FILES}
    with pytest.raises(RunDirExistsError, match="force"):
        LocalSink().start(tmp_path, {}, make_meta())
    assert {n: (tmp_path / n).read_text() for n in FILES} == before


def test_local_same_epoch_updates_row(tmp_path: Path) -> None:
    s = LocalSink()
    s.start(tmp_path, {}, make_meta())
    s.log_metrics(100, metrics_at(100))
    s.log_metrics(100, {"train_loss": 9.0, "weight_norm": 3.0})  # same eval, more keys
    s.log_measures(100, *measures_at(100))
    s.log_measures(100, *measures_at(100))  # repeated checkpoint: replaced, not duplicated
    s.finish("completed")
    m = pd.read_csv(tmp_path / METRICS_FILE)
    assert len(m) == 1 and m["train_loss"][0] == 9.0 and m["test_loss"][0] == metrics_at(100)["test_loss"]
    assert len(pd.read_csv(tmp_path / MEASURES_FILE)) == 1
    assert len(pd.read_csv(tmp_path / FREQS_FILE)) == 3


def test_local_failed_write_keeps_old_file_and_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = LocalSink()
    s.start(tmp_path, {}, make_meta())
    drive(s, range(0, 110, 10))
    before = (tmp_path / METRICS_FILE).read_text()

    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        drive(s, range(110, 210, 10))  # the checkpoint flush at epoch 200 fails
    assert (tmp_path / METRICS_FILE).read_text() == before  # the previous file is intact
    assert temps(tmp_path) == []  # and no half-written temporary is left behind

    monkeypatch.setattr(atomic.os, "replace", real_replace)
    s.finish("completed")  # the rows were kept in memory: nothing is lost
    assert pd.read_csv(tmp_path / METRICS_FILE)["epoch"].tolist() == list(range(0, 210, 10))


def test_local_files_are_complete_for_a_concurrent_reader(tmp_path: Path) -> None:
    """A reader polling during training never sees a torn file."""
    s = LocalSink(flush_interval_s=0.0)  # rewrite on every call: worst case
    s.start(tmp_path, {}, make_meta())
    errors: list[BaseException] = []
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                m = pd.read_csv(tmp_path / METRICS_FILE)
                seen.append(len(m))
                assert m["epoch"].tolist() == list(range(0, 10 * len(m), 10))
                assert not m[list(METRIC_COLUMNS)].isna().any().any()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    try:
        drive(s, range(0, 2000, 10), checkpoint_every=500)
    finally:
        stop.set()
        t.join()
    s.finish("completed")
    assert not errors, errors[0]
    assert len(seen) > 5 and seen == sorted(seen)


# -- SinkGroup ------------------------------------------------------------------------


class Recorder:
    """A sink that records calls; ``fail`` lists methods that raise."""

    def __init__(self, *fail: str) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail = set(fail)

    def _rec(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        if method in self.fail:
            raise RuntimeError(f"{method} exploded")

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def start(self, run_dir: Path, config: Any, meta: RunMeta) -> None:
        self._rec("start", run_dir)

    def log_metrics(self, epoch: int, metrics: Any) -> None:
        self._rec("log_metrics", epoch)

    def log_measures(self, epoch: int, scalars: Any, freq_rows: Any) -> None:
        self._rec("log_measures", epoch)

    def log_summary(self, summary: Any) -> None:
        self._rec("log_summary")

    def log_checkpoint(self, path: Path, epoch: int, final: bool) -> None:
        self._rec("log_checkpoint", epoch, final)

    def finish(self, status: str) -> None:
        self._rec("finish", status)


def test_group_isolates_and_disables_a_failing_sink(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good, bad, other = Recorder(), Recorder("log_metrics"), Recorder()
    group = SinkGroup([good, bad, other], required=[good])
    with caplog.at_level(logging.WARNING, logger="groktransfer.sinks.base"):
        with group:
            group.start(tmp_path, {}, make_meta())
            for epoch in (0, 10, 20):
                group.log_metrics(epoch, {})
            group.log_measures(20, {}, [])
            group.log_summary({})
            group.log_checkpoint(tmp_path / "f.pt", 20, True)
    assert good.names() == other.names() == [
        "start", "log_metrics", "log_metrics", "log_metrics",
        "log_measures", "log_summary", "log_checkpoint", "finish",
    ]
    # disabled after its first failure, but still finished (it may hold a W&B run)
    assert bad.names() == ["start", "log_metrics", "finish"]
    assert bad.calls[-1] == ("finish", ("completed",))
    assert group.is_disabled(bad) and not group.is_disabled(good)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Recorder[1].log_metrics" in warnings[0].getMessage()


def test_group_required_sink_is_retried_not_disabled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    req, opt = Recorder("log_metrics"), Recorder()
    group = SinkGroup([req, opt], required=[req])
    group.start(tmp_path, {}, make_meta())
    with caplog.at_level(logging.WARNING, logger="groktransfer.sinks.base"):
        for epoch in range(5):
            group.log_metrics(epoch, {})
    group.finish("completed")
    assert req.names().count("log_metrics") == 5  # still called: it retries its writes
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # not spammed


def test_group_required_start_error_propagates_and_closes_started(tmp_path: Path) -> None:
    opt, req, later = Recorder(), Recorder("start"), Recorder()
    group = SinkGroup([opt, req, later], required=[req])
    with pytest.raises(RuntimeError, match="start exploded"):
        with group:
            group.start(tmp_path, {}, make_meta())
    assert opt.names() == ["start", "finish"] and opt.calls[-1][1] == ("failed",)
    assert later.names() == []  # never started, so never finished
    assert group.finished


def test_group_exit_statuses_and_idempotent_finish(tmp_path: Path) -> None:
    def run(body: Any) -> Recorder:
        r = Recorder()
        try:
            with SinkGroup([r]) as g:
                g.start(tmp_path, {}, make_meta())
                body(g)
        except (ValueError, KeyboardInterrupt):
            pass
        return r

    def raise_(exc: BaseException) -> Any:
        def body(g: SinkGroup) -> None:
            raise exc
        return body

    assert run(lambda g: None).calls[-1] == ("finish", ("completed",))
    assert run(raise_(ValueError("x"))).calls[-1] == ("finish", ("failed",))
    assert run(raise_(KeyboardInterrupt())).calls[-1] == ("finish", ("stopped",))

    def finish_then_fail(g: SinkGroup) -> None:
        g.finish("completed")
        g.finish("failed")  # ignored: already finished
        raise ValueError("after finish")

    r = run(finish_then_fail)
    assert r.names().count("finish") == 1 and r.calls[-1] == ("finish", ("completed",))

    r = run(lambda g: g.finish("done"))  # invalid status -> ValueError -> exit finishes 'failed'
    assert r.calls[-1] == ("finish", ("failed",))


def test_group_finish_failure_does_not_skip_other_sinks(tmp_path: Path) -> None:
    a, b = Recorder("finish"), Recorder()
    with SinkGroup([a, b]) as g:
        g.start(tmp_path, {}, make_meta())
    assert a.names()[-1] == b.names()[-1] == "finish"


def test_group_with_real_local_sink_survives_a_failing_sink(tmp_path: Path) -> None:
    local, bad = LocalSink(), Recorder("log_measures", "finish")
    with pytest.raises(ZeroDivisionError):
        with SinkGroup([local, bad], required=[local]) as g:
            g.start(tmp_path, {}, make_meta())
            for epoch in range(0, 210, 10):
                g.log_metrics(epoch, metrics_at(epoch))
                if epoch % 100 == 0:
                    g.log_measures(epoch, *measures_at(epoch))
            1 / 0  # the training loop crashes
    # every row logged before the crash is on disk
    assert pd.read_csv(tmp_path / METRICS_FILE)["epoch"].tolist() == list(range(0, 210, 10))
    assert pd.read_csv(tmp_path / MEASURES_FILE)["epoch"].tolist() == [0, 100, 200]


# -- factory, config files, helpers ------------------------------------------------------


def _compose_logger(name: str) -> Any:
    from hydra import compose, initialize_config_dir

    from groktransfer.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(overrides=[f"+logger={name}"]).logger


def test_make_sinks_from_the_config_group() -> None:
    wandb_cfg = _compose_logger("wandb")
    assert wandb_cfg.mode == "offline" and wandb_cfg.group is None and wandb_cfg.project == "groktransfer"
    group = make_sinks(wandb_cfg)
    assert [type(s).__name__ for s in group.sinks] == ["LocalSink", "WandbSink"]

    none_cfg = _compose_logger("none")
    assert [type(s).__name__ for s in make_sinks(none_cfg).sinks] == ["LocalSink"]
    assert [type(s).__name__ for s in make_sinks(None).sinks] == ["LocalSink"]
    disabled = LoggerConfig(mode="disabled")
    assert [type(s).__name__ for s in make_sinks(disabled).sinks] == ["LocalSink"]
    with pytest.raises(ValueError, match="logger.name"):
        make_sinks({"name": "tensorboard"})
    with pytest.raises(ValueError, match="unknown config key logger.projetc: logger has name, mode, project"):
        make_sinks({"name": "wandb", "projetc": "x"})
    with pytest.raises(ValueError, match="logger.mode"):
        make_sinks({"name": "wandb", "mode": "onlin"})


def test_local_only_logging_never_imports_wandb(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path\n"
        "from groktransfer.config.schema import LoggerConfig\n"
        "from groktransfer.sinks import make_sinks, RunMeta\n"
        "from groktransfer.sinks.wandb_sink import WandbSink\n"
        "m = RunMeta(run_id='r', experiment='e', task='add', condition='random', seed=0)\n"
        "with make_sinks(LoggerConfig(name='wandb', mode='disabled')) as g:\n"
        f"    g.start(Path({str(tmp_path)!r}) / 'a', {{}}, m); g.log_metrics(0, {{'train_loss': 1.0}})\n"
        "w = WandbSink(LoggerConfig(mode='disabled'))\n"
        f"w.start(Path({str(tmp_path)!r}) / 'b', {{}}, m); w.log_metrics(0, {{}}); w.finish('completed')\n"
        "assert 'wandb' not in sys.modules, 'wandb was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert not (tmp_path / "a" / "wandb").exists() and not (tmp_path / "b" / "wandb").exists()


def test_wandb_naming_helpers() -> None:
    rid = wandb_run_id("exp/add-grokked-s0")
    assert rid == wandb_run_id("exp/add-grokked-s0") != wandb_run_id("exp/add-grokked-s1")
    assert len(rid) == 16 and rid.isalnum()
    meta = make_meta()
    assert format_run_name("{task}-{condition}-s{seed}", meta) == "add-grokked-s0"
    assert format_run_name("{experiment}/{group}", meta) == "exp/exp"
    with pytest.raises(ValueError, match="available fields"):
        format_run_name("{model}", meta)
    assert wandb_key("measures", "key freq.9") == "measures/key_freq_9"
    flat = flatten_summary({"thresholds": {"0.9": {"epoch": 120, "held": True}}, "final": {"test_acc": np.float32(1.0)}})
    assert flat == {"thresholds/0_9/epoch": 120, "thresholds/0_9/held": True, "final/test_acc": 1.0}
    assert type(flat["final/test_acc"]) is float


def test_local_files_survive_sigkill_mid_training(tmp_path: Path) -> None:
    """SIGKILL a writer that rewrites on every call; its files stay complete and resumable."""
    code = (
        "import sys; from pathlib import Path\n"
        "from groktransfer.sinks import LocalSink, RunMeta\n"
        "m = RunMeta(run_id='r', experiment='e', task='add', condition='random', seed=0)\n"
        "s = LocalSink(flush_interval_s=0.0)\n"
        f"s.start(Path({str(tmp_path)!r}), {{}}, m)\n"
        "print('started', flush=True)\n"
        "e = 0\n"
        "while True:\n"
        "    s.log_metrics(e, {'train_loss': 1.0 / (e + 1), 'test_loss': 1.0, 'train_acc': 0.5,"
        " 'test_acc': 0.5, 'lr': 1e-3})\n"
        "    if e % 100 == 0: s.log_measures(e, {'gini': 0.5, 'key_freqs': '3 7'}, [{'freq': 3}])\n"
        "    e += 10\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        time.sleep(0.7)
    finally:
        proc.kill()  # SIGKILL: no finally blocks, no atexit in the child
        proc.wait(timeout=30)
    m = pd.read_csv(tmp_path / METRICS_FILE)
    assert len(m) > 10 and m["epoch"].tolist() == list(range(0, 10 * len(m), 10))
    assert not m[list(METRIC_COLUMNS)].isna().any().any()
    last_ckpt = int(pd.read_csv(tmp_path / MEASURES_FILE)["epoch"].max())

    s = LocalSink()
    s.start(tmp_path, {}, make_meta(resume=True, resume_epoch=last_ckpt))
    assert temps(tmp_path) == []  # an orphaned temporary, if the kill left one, is gone
    assert pd.read_csv(tmp_path / METRICS_FILE)["epoch"].max() == last_ckpt
    s.finish("completed")

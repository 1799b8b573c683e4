"""Nothing wrong gets in: bad input is one line, exit status 2, and nothing written.

Every test runs ``scripts/train.py`` on one kind of bad input and checks the exit status,
the line it prints and that no file was written or altered -- no run directory, no
``.hydra/`` files, no ``train.log``, no ``failed`` record, nothing in another run's
directory -- while a genuine crash is still recorded.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, TINY, compose_job, run_in, script_env
from faults import digests, status_now


def _train(root: Path, run_dir: Path, overrides) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "scripts/train.py", *overrides, f"paths.root={root}", f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], proc.stdout + proc.stderr
    return lines[0]


def test_refusing_a_directory_that_holds_another_run_alters_none_of_its_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "taken"
    assert _train(tmp_path, run_dir, TINY + ["train.max_epochs=20"]).returncode == 0
    before = digests(run_dir)
    assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "train.log"} <= set(before)
    proc = _train(tmp_path, run_dir, TINY + ["train.max_epochs=30"])
    assert proc.returncode == 2
    assert f"{run_dir} already holds a different run; pass force=true" in _one_error_line(proc)
    assert digests(run_dir) == before  # Hydra's provenance files and the log included


def test_a_refusal_removes_the_folders_it_made_and_keeps_those_that_were_there(tmp_path: Path) -> None:
    # an empty folder given as the run directory's parent (here also the working directory of
    # a user who made it for the run) was there before: a refusal keeps it and writes nothing
    given = tmp_path / "mine"
    given.mkdir()
    proc = subprocess.run(
        [PYTHON, str(REPO / "scripts" / "train.py"), *TINY, "optimizer.lr=nan", f"hydra.run.dir={given}/a/b/run"],
        cwd=given, env=script_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "optimizer.lr=nan: must be finite" in _one_error_line(proc)
    assert given.is_dir() and list(given.iterdir()) == []  # a/b/run made for the job, removed again
    # the default layout under the working directory: multirun/<experiment>/runs/<time> made and removed
    proc = subprocess.run([PYTHON, str(REPO / "scripts" / "train.py"), *TINY, "seed=-1"], cwd=given,
                          env=script_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and given.is_dir() and list(given.iterdir()) == []


def test_a_source_checkpoint_of_the_wrong_shape_leaves_no_run_directory(tmp_path: Path) -> None:
    from groktransfer.config.schema import TrainJobConfig, to_typed
    from groktransfer.jobs.run_job import resolved_model_config
    from groktransfer.model.checkpoint import save_checkpoint
    from groktransfer.model.registry import build_model
    from groktransfer.tasks.registry import make_task

    job = to_typed(TrainJobConfig, compose_job(TINY + ["task=subtract"]))
    model = build_model(resolved_model_config(job.model, make_task(job.task, 0)), 0)  # d_mlp 128
    source = save_checkpoint(tmp_path / "source.pt", model, 0, {})
    run_dir = tmp_path / "runs" / "wrong_shape"
    proc = _train(tmp_path, run_dir, TINY + ["task=subtract", "transfer=grokked", f"transfer.source.path={source}", "model.d_mlp=64"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "shape mismatch blocks.0.mlp.W_in" in out and "Traceback" not in out
    assert not run_dir.exists() and not (tmp_path / "runs").exists()  # no directory, no failed record
    assert not list((tmp_path / ".index").glob("*.json"))  # the run index does not know it either


def test_a_crash_while_building_the_start_is_recorded_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import groktransfer.jobs.run_job as run_job

    def crash(*args, **kwargs):
        raise MemoryError("injected while building the start")

    monkeypatch.setattr(run_job, "build_starting_point", crash)
    with pytest.raises(MemoryError):
        run_in(tmp_path, "crash", TINY)
    status = status_now(tmp_path / "crash")
    assert status["status"] == "failed" and status["failure_kind"] == "crash"
    assert status["reason"] == "could not build the starting model: MemoryError: injected while building the start"


def test_inputs_that_depend_on_the_source_run_are_checked_against_its_record(tmp_path: Path) -> None:
    # a source run that stops early: threshold 0.01 held 10 epochs -> it ends at epoch 10
    early = TINY + ["task=subtract", "transfer.source.max_epochs=40", "train.thresholds=[0.01]", "train.patience=10"]
    first = run_in(tmp_path, "first", early + ["transfer=checkpoint", "transfer.source.epoch=10", "train.max_epochs=20"])
    assert first.status == "completed"
    (source,) = [p for p in (tmp_path / ".sources").glob("*_p23_*") if p.is_dir()]
    cached = digests(source)

    beyond = _train(tmp_path, tmp_path / "beyond", early + ["transfer=checkpoint", "transfer.source.epoch=30"])
    assert beyond.returncode == 2
    assert (
        f"transfer.source.epoch=30 is beyond the source run {source}: it ended at epoch 10 and saved "
        "checkpoints at epochs 0, 10"
    ) in beyond.stdout
    assert "source run found in cache" in beyond.stdout  # checked against the record: nothing trained

    unmet = _train(tmp_path, tmp_path / "unmet", early + ["transfer=grokked"])
    assert unmet.returncode == 2
    assert f"no checkpoint of source run {source} qualifies as 'grokked'" in unmet.stdout
    assert not (tmp_path / "beyond").exists() and not (tmp_path / "unmet").exists()
    assert digests(source) == cached and [p for p in (tmp_path / ".sources").iterdir() if p.is_dir()] == [source]


def test_values_a_job_would_only_trip_over_later_are_refused_up_front(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "bad"
    proc = _train(tmp_path, run_dir, TINY + [
        "task=subtract", "transfer=checkpoint", "transfer.source.epoch=100000", "transfer.source.max_epochs=40",
        "transfer.grokked.held_for=-5", "train.timeout_minutes=-1",
    ])  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "transfer.source.epoch=100000: beyond the source run's transfer.source.max_epochs=40" in out
    assert "transfer.grokked.held_for=-5: must be >= 0" in out
    assert "train.timeout_minutes=-1.0: must be > 0" in out
    assert not (tmp_path / "runs").exists() and not (tmp_path / ".sources").exists()


@pytest.mark.parametrize("root", ["/proc/groktransfer", "a_file"])
def test_a_run_directory_that_cannot_be_created_is_one_line(tmp_path: Path, root: str) -> None:
    (tmp_path / "a_file").write_text("not a directory")
    root_path = root if root.startswith("/") else str(tmp_path / root)
    proc = subprocess.run(
        [PYTHON, "scripts/train.py", *TINY, f"paths.root={root_path}"],
        cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"cannot create the hydra.run.dir (from paths.root) {root_path}/" in _one_error_line(proc)

"""hydra/launcher=ensemble: a sweep trained as seed ensembles writes what separate jobs write."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import List

import pandas as pd
import pytest

from conftest import PYTHON, REPO, TINY, compose_job, script_env
from faults import status_now
from groktransfer.config.schema import TrainJobConfig, to_typed
from groktransfer.jobs.ensemble_launch import AUTO_MAX_MEMBERS, batch_key, chunk_groups, member_cap, train_planned
from groktransfer.runs.rundir import RunDir
from groktransfer.jobs.run_job import Launch, PlannedJob, plan_job
from groktransfer.runs.index import RunIndex

BASE = TINY + ["experiment_name=tiny_sweep", "task=subtract", "train.max_epochs=200", "transfer.source.source_seed=0"]
# default suite: seeds x learning rates (two AdamW groups in one ensemble), no source run to train
SEEDS_X_LR = BASE + ["seed=0,1", "transfer=random", "optimizer.lr=3e-3,1e-3"]
# slow: the three transfer conditions (trains the shared source run first)
CONDITIONS = BASE + ["seed=0,1", "transfer=grokked,random,memorized"]
# Float tolerance between an ensemble member and the same job run alone (see test_ensemble.py).
RTOL = 1e-6


def _sweep(sweep: List[str], root: Path, sweep_dir: Path, index: str, launcher: List[str]) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "scripts/train.py", "-m", *sweep, *launcher, f"paths.root={root}",
           f"paths.run_index={root}/{index}", f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _jobs(sweep_dir: Path) -> dict:
    return {p.parent.name: p.parent for p in sweep_dir.glob("*/status.json")}


def _files(job: Path) -> set:
    return {str(p.relative_to(job)) for p in job.rglob("*") if p.is_file() and p.suffix != ".log"}


@pytest.mark.parametrize(
    "sweep, n_jobs, workers, expected",
    [
        # two worker processes, each training one ensemble of both learning rates
        pytest.param(SEEDS_X_LR, 4, 2, ["2 ensembles on 2 worker processes, 1 thread(s) each",
                                        "2 jobs train as one ensemble"], id="seeds-x-lr-2-workers"),  # fmt: skip
        pytest.param(CONDITIONS, 6, 1, ["6 jobs train as one ensemble"], id="conditions",
                     marks=[pytest.mark.slow, pytest.mark.timeout(1800)]),  # fmt: skip
    ],
)
def test_ensemble_sweep_writes_what_separate_jobs_write_and_reruns_train_nothing(
    tmp_path: Path, sweep: List[str], n_jobs: int, workers: int, expected: List[str]
) -> None:
    root = tmp_path / "multirun"
    ens, sep = root / "tiny_sweep" / "ensemble", root / "tiny_sweep" / "separate"
    launcher = ["hydra/launcher=ensemble", "hydra.launcher.threads=1", "hydra.launcher.max_members=8",
                f"hydra.launcher.n_jobs={workers}"]  # fmt: skip
    out = _sweep(sweep, root, ens, "index_ensemble", launcher).stdout
    for line in expected:
        assert f"ensemble launcher: {line}" in out, out[-3000:]
    assert out.count("train as one ensemble") == (2 if workers == 2 else 1)
    _sweep(sweep, root, sep, "index_separate", [])  # Hydra's basic launcher: one job after another
    a, b = _jobs(ens), _jobs(sep)
    assert sorted(a) == sorted(b) and len(a) == n_jobs
    for name in a:
        sa, sb = (json.loads((d[name] / "status.json").read_text()) for d in (a, b))
        assert sa["status"] == sb["status"] == "completed", name
        assert sa["run_id"] == sb["run_id"] and sa["thresholds"] == sb["thresholds"] and sa["epoch"] == sb["epoch"]
        assert set(sa) == set(sb), name
        assert _files(a[name]) == _files(b[name]), name
        for table in ("metrics.csv", "measures.csv"):
            ma, mb = pd.read_csv(a[name] / table), pd.read_csv(b[name] / table)
            assert list(ma.columns) == list(mb.columns) and len(ma) == len(mb), (name, table)
            numeric = ma.select_dtypes("number").columns
            pd.testing.assert_frame_equal(ma[numeric], mb[numeric], rtol=RTOL, atol=1e-9, check_dtype=False)

    again = _sweep(sweep, root, root / "tiny_sweep" / "again", "index_ensemble", ["hydra/launcher=ensemble"]).stdout
    assert again.count("skipped:") == n_jobs and "train as one ensemble" not in again


def _planned(tmp_path: Path, overrides: List[str], seeds=(0, 1)) -> List[PlannedJob]:
    held = contextlib.ExitStack()
    jobs = []
    for seed in seeds:
        job = to_typed(TrainJobConfig, compose_job(TINY + overrides + [f"seed={seed}"], root=tmp_path))
        planned = plan_job(job, Launch(run_dir=tmp_path / f"job{seed}", cwd=tmp_path), held)
        assert isinstance(planned, PlannedJob)
        jobs.append(planned)
    return jobs


def test_incompatible_jobs_train_one_at_a_time_with_a_notice(tmp_path: Path, capsys) -> None:
    jobs = _planned(tmp_path, ["train.batch_size=128", "train.max_epochs=30"])
    assert batch_key(jobs[0].job, 0) == batch_key(jobs[1].job, 0)  # batchable by config ...
    results = train_planned(jobs, max_members=16)  # ... but an ensemble's step is a full-batch one
    out = capsys.readouterr().out
    assert out.count("ensemble launcher: 2 jobs train one at a time (ensembles train full batch") == 1
    assert [r.status.value for r in results] == ["completed", "completed"]


def test_batch_key_keeps_apart_what_cannot_be_batched(tmp_path: Path) -> None:
    base = to_typed(TrainJobConfig, compose_job(TINY, root=tmp_path))
    key = batch_key(base, 0)
    for batchable in (["seed=3"], ["optimizer.lr=1e-2"], ["optimizer.weight_decay=0.1"], ["transfer=grokked"]):
        assert batch_key(to_typed(TrainJobConfig, compose_job(TINY + batchable, root=tmp_path)), 0) == key, batchable
    for other in (["task.p=29"], ["model.d_mlp=64"], ["train.max_epochs=10"]):
        assert batch_key(to_typed(TrainJobConfig, compose_job(TINY + other, root=tmp_path)), 0) != key, other
    assert batch_key(base, 100) != key  # resumed at another epoch


def test_member_cap_by_device(tmp_path: Path) -> None:
    job = to_typed(TrainJobConfig, compose_job(TINY + ["train.device=cpu"], root=tmp_path))
    assert member_cap(0, job) == AUTO_MAX_MEMBERS["cpu"] and member_cap(7, job) == 7


@pytest.mark.parametrize("cap", [1, 2])
def test_member_cap_splits_groups(tmp_path: Path, cap: int, capsys) -> None:
    jobs = _planned(tmp_path, ["train.max_epochs=20"], seeds=(0, 1, 2))
    results = train_planned(jobs, max_members=cap)
    assert len(results) == 3 and all(r.status.value == "completed" for r in results)
    out = capsys.readouterr().out
    assert out.count("train as one ensemble") == (0 if cap == 1 else 1)


@pytest.mark.parametrize(
    "n, cap, workers, sizes",
    [(15, 4, 1, [4, 4, 4, 3]), (15, 4, 2, [4, 4, 4, 3]), (9, 4, 1, [3, 3, 3]), (9, 4, 2, [3, 2, 2, 2]),
     (4, 8, 2, [2, 2]), (3, 8, 4, [1, 1, 1]), (1, 4, 2, [1])],  # fmt: skip
)
def test_chunks_are_even_and_shared_out_over_workers(tmp_path: Path, n: int, cap: int, workers: int, sizes) -> None:
    from types import SimpleNamespace

    job = to_typed(TrainJobConfig, compose_job(TINY, root=tmp_path))
    planned = [SimpleNamespace(job=job, plan=SimpleNamespace(resume_state=None), name=i) for i in range(n)]
    chunks = chunk_groups(planned, max_members=cap, workers=workers)
    assert [len(c) for c in chunks] == sizes
    assert [m.name for c in chunks for m in c] == list(range(n))  # every job once, in sweep order


def test_worker_processes_write_what_one_process_writes(tmp_path: Path) -> None:
    """Ensembles trained in worker processes: the same statuses and bit-identical metrics."""
    runs = {}
    for n_jobs in (1, 2):
        jobs = _planned(tmp_path / f"n{n_jobs}", ["train.max_epochs=40"], seeds=(0, 1, 2))
        results = train_planned(jobs, max_members=2, n_jobs=n_jobs, threads=1)
        assert [r.status.value for r in results] == ["completed"] * 3
        runs[n_jobs] = [r.run_dir for r in results]
    for one, two in zip(runs[1], runs[2]):
        assert (one / "metrics.csv").read_bytes() == (two / "metrics.csv").read_bytes()
        a, b = (json.loads((d / "status.json").read_text()) for d in (one, two))
        assert a["run_id"] == b["run_id"] and a["final"] == b["final"] and a["thresholds"] == b["thresholds"]


def test_each_member_log_gets_its_own_lines_and_the_groups(tmp_path: Path) -> None:
    """What a separate job would write to its train.log: its own lines and the loop's."""
    import logging
    from types import SimpleNamespace

    from groktransfer.jobs.ensemble_launch import member_logs, speaking_for
    from groktransfer.runs.rundir import LOG_FILE, RunDir

    members = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        members.append(SimpleNamespace(run_dir=RunDir(tmp_path / name)))
    log = logging.getLogger("groktransfer.test_member_logs")
    log.setLevel(logging.INFO)
    with member_logs(members):
        log.info("the shared loop")
        with speaking_for(1):
            log.info("only b's directory")
    log.info("after the group")  # handlers are gone again
    a, b = ((tmp_path / n / LOG_FILE).read_text() for n in ("a", "b"))
    assert "the shared loop" in a and "the shared loop" in b
    assert "only b's directory" in b and "only b's directory" not in a
    assert "after the group" not in a + b


# two source tasks: two source runs, short enough for the default suite (no grokking needed)
TWO_SOURCES = BASE + ["seed=0", "transfer=checkpoint", "transfer.source.epoch=100", "transfer.source.max_epochs=200",
                      "transfer.source.task=add,multiply", "train.max_epochs=60"]  # fmt: skip


def test_source_runs_train_first_in_workers_and_equal_those_planning_trains(tmp_path: Path) -> None:
    root = tmp_path / "multirun"
    ens, sep = root / "tiny_sweep" / "ensemble", root / "tiny_sweep" / "separate"
    launcher = ["hydra/launcher=ensemble", "hydra.launcher.n_jobs=2", "hydra.launcher.threads=1"]
    out = _sweep(TWO_SOURCES, root / "w", ens, "index", launcher).stdout
    assert "ensemble launcher: 2 source runs train first, on 2 worker processes" in out, out[-3000:]
    _sweep(TWO_SOURCES, root / "s", sep, "index", [])  # the basic launcher: planning trains each source
    sources = {r: sorted((root / r / ".sources").glob("*/metrics.csv")) for r in ("w", "s")}
    assert len(sources["w"]) == 2 and [p.parent.name for p in sources["w"]] == [p.parent.name for p in sources["s"]]
    for a, b in zip(sources["w"], sources["s"]):
        assert a.read_bytes() == b.read_bytes(), a.parent.name
    a, b = _jobs(ens), _jobs(sep)
    assert sorted(a) == sorted(b) and len(a) == 2
    for name in a:
        assert (a[name] / "metrics.csv").read_bytes() == (b[name] / "metrics.csv").read_bytes(), name


def test_twin_jobs_in_one_sweep_reuse_the_first_instead_of_failing(tmp_path: Path) -> None:
    """A random start along the source axis is one run (same identity): its twin reuses it, as under joblib."""
    sweep = BASE + ["seed=0", "transfer=random", "transfer.source.task=add,multiply", "train.max_epochs=30",
                    "hydra.sweep.subdir=${hydra.job.num}_${transfer.source.task}"]  # fmt: skip
    launcher = ["hydra/launcher=ensemble", "hydra.launcher.n_jobs=1", "hydra.launcher.threads=1"]
    out = _sweep(sweep, tmp_path, tmp_path / "sweep", "index", launcher).stdout
    assert out.count("skipped: already completed") == 1, out[-3000:]
    statuses = {d.name: json.loads((d / "status.json").read_text()) for d in _jobs(tmp_path / "sweep").values()}
    assert sorted(statuses) == ["0_add", "1_multiply"]
    assert [statuses[n]["status"] for n in sorted(statuses)] == ["completed", "completed"]
    assert statuses["1_multiply"]["reused_from"].endswith("0_add")


def test_first_of_each_identity_defers_twins(tmp_path: Path) -> None:
    from groktransfer.jobs.ensemble_launch import first_of_each_identity

    a, b = (to_typed(TrainJobConfig, compose_job(TINY + [f"seed={s}"], root=tmp_path)) for s in (0, 1))
    assert first_of_each_identity([0, 1, 2, 3, 4], [a, b, a, None, None]) == ([0, 1, 3, 4], [2])
    assert first_of_each_identity([2], [a, b, a]) == ([2], [])


def test_sources_to_train_lists_each_missing_source_once(tmp_path: Path) -> None:
    from groktransfer.jobs.run_job import run_identity, sources_to_train

    def job(*overrides: str) -> TrainJobConfig:
        return to_typed(TrainJobConfig, compose_job(TINY + ["transfer.source.source_seed=0", *overrides], root=tmp_path))

    jobs = [job("transfer=random"), job("transfer=grokked", "seed=0"), job("transfer=memorized", "seed=1"),
            job("transfer=grokked", "transfer.source.task=multiply"), job("transfer=grokked", "transfer.source.path=x.pt")]  # fmt: skip
    found = sources_to_train(jobs, tmp_path)
    assert [s.spec.task["name"] for s in found] == ["add", "multiply"]  # random and file starts need none
    assert found[0].job is jobs[1]  # the first job that asks trains it
    cached = found[1].cache.run_dir(found[1].spec)  # a completed source is not trained again
    cached.path.mkdir(parents=True)
    cached.update_status(status="completed")
    known = job("transfer=grokked", "seed=7")  # a job the run index knows (reused or resumed) needs no source
    RunIndex(tmp_path / ".index").record(run_identity(known), tmp_path / "known")
    (tmp_path / "known").mkdir()
    RunDir(tmp_path / "known").update_status(status="completed")
    assert [s.spec.task["name"] for s in sources_to_train(jobs + [known], tmp_path)] == ["add"]
    assert sources_to_train([known], tmp_path) == []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children(pid: int) -> List[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_workers_do_not_outlive_a_killed_launcher(tmp_path: Path) -> None:
    """SIGKILL of the launcher (no chance to clean up) interrupts its workers: nothing trains on unlocked."""
    import signal
    import time

    root, sweep_dir = tmp_path / "multirun", tmp_path / "multirun" / "sweep"
    cmd = [PYTHON, "scripts/train.py", "-m", *BASE, "seed=0,1,2,3", "transfer=random", "train.max_epochs=1000000",
           "train.patience=0", "hydra/launcher=ensemble", "hydra.launcher.n_jobs=2", "hydra.launcher.threads=1",
           f"paths.root={root}", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    log = tmp_path / "launcher.log"  # a file, not a pipe: under pytest-xdist a pipe read here never saw the lines
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=script_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        def training() -> bool:  # both workers have started their ensembles, and all four members train
            if log.read_text().count("train as one ensemble") < 2:
                return False
            records = [status_now(p.parent) for p in sweep_dir.glob("*/status.json")]
            return len(records) == 4 and all(r.get("status") == "running" for r in records)

        while not training():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(log.read_text()[-3000:])
            time.sleep(0.2)
        workers = [pid for pid in _children(proc.pid) if "resource_tracker" not in _cmdline(pid)]
        assert len(workers) >= 2, workers
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), ("a worker outlived its launcher", [_cmdline(w) for w in workers if _alive(w)])
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/status.json")]
    assert [r["status"] for r in records] == ["stopped"] * 4, [(r["status"], r["reason"]) for r in records]  # resumable


def test_a_negative_launcher_setting_exits_2_before_planning(tmp_path: Path) -> None:
    cmd = [PYTHON, "scripts/train.py", "-m", *BASE, "seed=0,1", "hydra/launcher=ensemble", "hydra.launcher.n_jobs=-1",
           f"paths.root={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "hydra.launcher.n_jobs=-1: must be >= 0" in out and "Traceback" not in out
    assert not list(tmp_path.rglob("status.json"))

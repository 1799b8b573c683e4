"""``debug=smoke`` composes and trains with every task and every model.

Each of the 24 combinations runs once, here for 20 epochs (every step of the loop, an
evaluation, a checkpoint and its measures); the slow variant runs the whole smoke job
(1,500 epochs) as a user would and prints its time. On a 2-core AMD EPYC (AVX2) each whole
smoke job takes 13-22 s: the digit tasks are one-digit sums there (conf/debug/smoke.yaml).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import REPO, run_in

TASKS = sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))
MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))


def test_every_task_and_model_has_a_config() -> None:
    from groktransfer.tasks.registry import TASKS as REGISTERED

    # the package's own tasks (an installed plugin, e.g. examples/s5_plugin in CI, ships its own configs)
    built_in = {n for n in REGISTERED.names() if type(REGISTERED.get(n)).__module__.startswith("groktransfer.")}
    assert set(TASKS) == built_in and {"one_layer", "attn_only_2l"} <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", TASKS)
def test_smoke_trains_every_task_with_every_model(task: str, model: str, tmp_path: Path) -> None:
    result = run_in(tmp_path, "job", ["debug=smoke", f"task={task}", f"model={model}", "train.max_epochs=20", "train.patience=0"])
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["epoch"] == 20 and status["task"] == task
    assert (result.run_dir / "checkpoints" / "final.pt").is_file()
    assert len((result.run_dir / "metrics.csv").read_text().splitlines()) == 1 + 3  # epochs 0, 10, 20


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", TASKS)
def test_the_whole_smoke_job_with_every_task_and_model(task: str, model: str, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    result = run_in(tmp_path, "job", ["debug=smoke", f"task={task}", f"model={model}"])
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["status"] == "completed"
    print(f"smoke {task} x {model}: {time.perf_counter() - t0:.1f} s, epoch {status['epoch']}")

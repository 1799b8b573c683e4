"""``debug=smoke`` composes and trains with every task and every model.

Each combination runs once, here for 20 epochs (every step of the loop, an
evaluation, a checkpoint and its measures); the slow variant runs the whole smoke job
(1,500 epochs) as a user would and prints its time. A model with logits at the last position only
is refused for a task answered inside the sequence (the digit sums), before anything is written. On a 2-core AMD EPYC (AVX2) each whole
smoke job takes 13-22 s: the digit tasks are one-digit sums there (conf/debug/smoke.yaml).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import REPO, compose_job, run_in

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
    from groktransfer.config.validate import ConfigError
    from groktransfer.model.registry import model_class
    from groktransfer.tasks.registry import family_of

    cfg = compose_job(["debug=smoke", f"task={task}", f"model={model}"])
    if not model_class(cfg.model).every_position and not family_of(task).answer_at_last_position:
        # a model with logits at the last position only cannot score a task answered inside the
        # sequence (the digit sums): refused before anything is written, never a crash mid-run
        with pytest.raises(ConfigError, match="gives logits at the last position only"):
            run_in(tmp_path, "job", ["debug=smoke", f"task={task}", f"model={model}"])
        assert not (tmp_path / "job").exists()
        return
    result = run_in(tmp_path, "job", ["debug=smoke", f"task={task}", f"model={model}", "train.max_epochs=20", "train.patience=0"])
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["epoch"] == 20 and status["task"] == task
    assert (result.run_dir / "checkpoints" / "final.pt").is_file()
    assert len((result.run_dir / "metrics.csv").read_text().splitlines()) == 1 + 3  # epochs 0, 10, 20


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", TASKS)
def test_the_whole_smoke_job_with_every_task_and_model(task: str, model: str, tmp_path: Path) -> None:
    from groktransfer.model.registry import model_class
    from groktransfer.tasks.registry import family_of

    if not model_class(compose_job([f"model={model}"]).model).every_position and not family_of(task).answer_at_last_position:
        pytest.skip(f"{model} gives logits at the last position only; {task} is answered inside the sequence")
    t0 = time.perf_counter()
    result = run_in(tmp_path, "job", ["debug=smoke", f"task={task}", f"model={model}"])
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["status"] == "completed"
    print(f"smoke {task} x {model}: {time.perf_counter() - t0:.1f} s, epoch {status['epoch']}")

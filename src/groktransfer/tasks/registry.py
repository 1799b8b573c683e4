"""Task families and task names by name: the one place that maps ``task.name`` to its family.

Built-in families (modular, digit) register here; an installed package registers its own
with :func:`register_family` from its ``groktransfer.plugins`` entry point. Every question
generic code has about a task config goes through :func:`family_of`.
"""

from __future__ import annotations

from typing import Any

from groktransfer.config.schema import TaskConfig, register_task_schema
from groktransfer.tasks.digits import DigitFamily
from groktransfer.tasks.family import TaskFamily, TaskLike
from groktransfer.tasks.modular import ModularFamily
from groktransfer.utils.registry import Registry

TASK_FAMILIES: Registry[TaskFamily] = Registry("task family")
TASKS: Registry[TaskFamily] = Registry("task", "task")


def register_family(family: TaskFamily) -> TaskFamily:
    """Register a family and every task name it owns (a name owned twice is refused)."""
    if not family.name or not family.task_names:
        raise ValueError(f"{type(family).__name__}: a task family needs a name and at least one task name")
    TASK_FAMILIES.register(family.name, family)
    for task_name in family.task_names:
        TASKS.register(task_name, family)
    register_task_schema(family.name, family.task_names, family.config_class)
    return family


def family_of(task_name: Any) -> TaskFamily:
    """The family owning ``task_name``; an unknown name is a UserError listing the registered tasks."""
    return TASKS.get(str(task_name))


def typed_task(task: Any, label: str = "task") -> TaskConfig:
    """A task config (plain dict or typed) as its family's schema."""
    if isinstance(task, TaskConfig) and type(task) is not TaskConfig:
        return task
    data = dict(task) if not isinstance(task, TaskConfig) else {"name": task.name, "data_seed": task.data_seed}
    return family_of(data.get("name")).typed(data, label)


def make_task(task_cfg: Any, data_seed: int) -> TaskLike:
    """Any task from its config, built by its family."""
    return family_of(task_cfg.name).build(task_cfg, int(data_seed))


def task_seq_len(task_cfg: Any) -> int:
    """Tokens per example of a (valid) task config."""
    shapes = family_of(task_cfg.name).shapes(task_cfg)
    assert shapes is not None, f"task config {task_cfg.name} is malformed: validate it first"
    return shapes[2]


register_family(ModularFamily())
register_family(DigitFamily())

"""How much memory a job will need, estimated before anything is allocated, and the refusal when
it cannot fit.

A config can ask for far more than a machine holds (``model.d_model=100000 model.d_mlp=100000``:
40 GB of parameters; ``gradfilter.ma.window=1000000000``: terabytes of filter state). Without a
check it fails with an allocator traceback after its run directory exists -- or after its first
epoch trained. :func:`estimate_memory` adds up, for the largest single step of the job:

* parameters and their gradients (the model protocol's ``parameter_bytes``: counted on PyTorch's
  meta device, no memory, unless the model computes it);
* optimizer state (``OptimizerEntry.state_per_parameter``: AdamW's two moments) and gradient-filter
  state (``GradFilterEntry.state_per_parameter``: Grokfast-MA keeps ``window`` gradients);
* activations: one training step (forward, loss, backward) at the job's batch size and the
  evaluation forward over every example (the model protocol's ``activation_bytes``: the
  transformer's formula; any other model's traced on the meta device);
* the task's data on the device.

Allocator slack, library workspaces and Python objects are left out, and the transformer's
formula is that of its full forward (the fast path needs less), so the estimate is of the right
size but not a bound either way: it refuses what is far beyond the machine (the examples above
by orders of magnitude), not a job near the limit. :func:`check_memory` compares it with
what the device has free (CPU: ``MemAvailable`` and a cgroup's limit; CUDA: the free memory
``torch.cuda.mem_get_info`` reports) and raises :class:`MemoryLimitError` (a UserError: exit 2,
one line naming the estimate and the limit) before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from groktransfer.model.registry import model_class
from groktransfer.tasks.registry import family_of
from groktransfer.training.trainer import EVAL_CHUNK
from groktransfer.utils.errors import UserError

GIB = 1024**3


class MemoryLimitError(UserError, MemoryError):
    """The job's estimated memory exceeds what the device has free."""


@dataclass
class MemoryEstimate:
    """Bytes per part of a job's peak (see the module docstring)."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def describe(self) -> str:
        inner = ", ".join(f"{name} {_gib(n)}" for name, n in self.parts.items() if n >= 0.01 * GIB)
        return f"{_gib(self.total)}" + (f" ({inner})" if inner else "")


def _gib(n: float) -> str:
    return f"{n / GIB:.3g} GiB" if n >= 0.01 * GIB else f"{n / 1024**2:.3g} MiB"


def _n_examples(task_cfg: Any) -> int | None:
    """How many examples the task holds, from its config alone where the family says (``n_examples``)."""
    family = family_of(task_cfg.name)
    count = getattr(family, "n_examples", None)
    return count(task_cfg) if callable(count) else None


def estimate_memory(job: Any) -> MemoryEstimate:
    """The estimate for a (validated) job: its own training; a source run is estimated separately
    (:func:`estimate_source_memory`)."""
    from groktransfer.training.gradfilters import GRADFILTERS
    from groktransfer.training.optimizers import OPTIMIZERS

    return _estimate(
        job.task,
        job.model,
        job.train,
        OPTIMIZERS.get(str(job.optimizer.name)),
        GRADFILTERS.get(str(job.gradfilter.name)),
        job.gradfilter,
    )


def _estimate(
    task_cfg: Any, model_cfg: Any, train: Any, optimizer: Any, gradfilter: Any, gradfilter_cfg: Any
) -> MemoryEstimate:
    family = family_of(task_cfg.name)
    shape = family.task_shape(task_cfg)
    cls = model_class(model_cfg)
    resolved = cls.resolve_config(model_cfg, shape.d_vocab, shape.d_vocab_out, shape.seq_len)
    params = cls.parameter_bytes(resolved)
    trainable = params  # frozen parameters keep no gradient or state: an upper bound
    n = _n_examples(task_cfg) or 0
    n_train = max(1, int(round(n * float(getattr(task_cfg, "frac_train", 1.0))))) if n else 1
    batch = min(int(train.batch_size), n_train) if train.batch_size else n_train
    est = MemoryEstimate()
    est.parts["parameters"] = params
    est.parts["gradients"] = trainable
    est.parts["optimizer state"] = int(trainable * float(getattr(optimizer, "state_per_parameter", 2.0)))
    est.parts["gradient filter"] = int(trainable * float(gradfilter.state_per_parameter(gradfilter_cfg)))
    step = cls.activation_bytes(resolved, batch, shape, training=True)
    chunk = n if shape.answer_positions == 1 else min(n, EVAL_CHUNK)  # the trainer evaluates several answers in chunks
    evaluation = cls.activation_bytes(resolved, chunk, shape, training=False) if n else 0
    est.parts["activations"] = max(step, evaluation)
    est.parts["data"] = n * (shape.seq_len + shape.answer_positions) * 8 * 3  # tokens and labels, in a few copies
    return est


def estimate_source_memory(job: Any) -> MemoryEstimate | None:
    """The estimate for the job's source run (None when it has none to train)."""
    from groktransfer.config.conditions import needs_source
    from groktransfer.config.resolve import source_model_config, source_task_config
    from groktransfer.config.schema import source_gradfilter, source_optimizer
    from groktransfer.training.gradfilters import GRADFILTERS
    from groktransfer.training.optimizers import OPTIMIZERS

    if not needs_source(job.transfer.name) or job.transfer.source.path is not None:
        return None
    optimizer, gradfilter = source_optimizer(job), source_gradfilter(job)
    return _estimate(
        source_task_config(job, 0),
        source_model_config(job),
        job.train,
        OPTIMIZERS.get(str(optimizer.name)),
        GRADFILTERS.get(str(gradfilter.name)),
        gradfilter,
    )


def available_bytes(device: torch.device) -> int | None:
    """Memory free for this job on ``device`` (None where it cannot be read)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
            if text.isdigit() and int(text) < 2**60:
                usage = Path(path).with_name("memory.current" if path.endswith("max") else "memory.usage_in_bytes")
                used = int(usage.read_text().strip()) if usage.exists() else 0
                limits.append(int(text) - used)
        except OSError:
            continue
    return min(limits) if limits else None


def check_memory(job: Any, device: torch.device) -> MemoryEstimate:
    """Refuse (MemoryLimitError, exit 2) a job whose own training or whose source run's would
    not fit the memory ``device`` has free; returns the job's estimate."""
    free = available_bytes(device)
    estimate = estimate_memory(job)
    for what, est in (("the job", estimate), ("its source run", estimate_source_memory(job))):
        if est is not None and free is not None and est.total > free:
            raise MemoryLimitError(
                f"{what} needs about {est.describe()}, more than the {_gib(free)} free on {device}: make the "
                "model, the batch (train.batch_size) or the gradient filter's state smaller"
            )
    return estimate

"""Sparse parity (Barak et al. 2022, "Hidden progress in deep learning"): n random bits, the
label is the XOR of a secret subset of them.

A neural network fits a few hundred random strings long before it finds the k bits that
decide them: with weight decay, test accuracy sits at chance (0.5) and then jumps, the same
delayed generalisation as modular arithmetic, in a task with no group structure at all. The
family's task keys are its own schema (``ParityTaskConfig``): the number of bits, the secret
subset and the data sizes, so transfer from one subset to another (``transfer.source.task_keys``)
is a config line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, List, Optional, Tuple

import torch

from groktransfer.config.schema import TaskConfig
from groktransfer.tasks.family import MAX_EXAMPLES, TaskFamily

#: every string must fit an int64 while it is sampled
MAX_BITS = 62


@dataclass
class ParityTaskConfig(TaskConfig):
    """The parity family's keys (Hydra's ``parity_schema`` in the task group)."""

    KIND: ClassVar[str] = "the parity task family"

    # input bits per example
    n_bits: int = 30
    # the secret subset: the label is the XOR of these bits (distinct 0-based positions < n_bits)
    subset: List[int] = field(default_factory=lambda: [0, 1, 2])
    # distinct training strings, drawn from data_seed
    n_train: int = 1000
    # distinct test strings, drawn from data_seed, disjoint from the training ones
    n_test: int = 1000


class ParityTask:
    """``n_train + n_test`` distinct random bit strings of length ``n_bits``; the answer, read
    at the last position, is the parity of the bits in ``subset``. The first ``n_train``
    strings drawn train, the rest test."""

    family = "parity"
    threshold_metric = "accuracy"
    group = None
    no_structure_reason = "bit strings under XOR: no cyclic-group Fourier basis (see subset_weight_frac)"
    d_vocab = 2
    d_vocab_out = 2

    def __init__(self, name: str, n_bits: int, subset: List[int], n_train: int, n_test: int, data_seed: int) -> None:
        self.name = name
        self.n_bits = int(n_bits)
        self.subset = [int(i) for i in subset]
        self.n_train = int(n_train)
        self.n_test = int(n_test)
        self.data_seed = int(data_seed)
        self.seq_len = self.n_bits

    @cached_property
    def _strings(self) -> torch.Tensor:
        """[n_train + n_test] distinct integers below 2^n_bits, in draw order (a function of data_seed)."""
        need = self.n_train + self.n_test
        gen = torch.Generator().manual_seed(self.data_seed)
        seen: dict = {}
        while len(seen) < need:  # rejection of repeats: a few rounds at most unless the space is nearly full
            for x in torch.randint(0, 2**self.n_bits, (2 * need,), generator=gen).tolist():
                seen.setdefault(x, None)
                if len(seen) == need:
                    break
        return torch.tensor(list(seen), dtype=torch.long)

    @cached_property
    def tokens(self) -> torch.Tensor:
        """[N, n_bits] 0/1 tokens, bit i of each string at position i."""
        shifts = torch.arange(self.n_bits, dtype=torch.long)
        return (self._strings[:, None] >> shifts) & 1

    @cached_property
    def labels(self) -> torch.Tensor:
        return self.tokens[:, self.subset].sum(dim=1) % 2

    @property
    def n_pairs(self) -> int:
        return self.n_train + self.n_test

    @cached_property
    def split(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(self.n_train), torch.arange(self.n_train, self.n_pairs)

    @cached_property
    def train_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.n_pairs, dtype=torch.bool)
        mask[: self.n_train] = True
        return mask

    def describe(self) -> str:
        return f"parity of bits {self.subset} of {self.n_bits} ({self.n_train} train / {self.n_test} test)"


class ParityFamily(TaskFamily):
    """One task, ``sparse_parity``; everything else is a task key."""

    name = "parity"
    task_names = ("sparse_parity",)
    config_class = ParityTaskConfig
    exact_n_ctx = True

    def build(self, task_cfg: Any, data_seed: int) -> ParityTask:
        return ParityTask(str(task_cfg.name), task_cfg.n_bits, list(task_cfg.subset), task_cfg.n_train, task_cfg.n_test, data_seed)

    def shapes(self, task_cfg: Any) -> Optional[Tuple[int, int, int]]:
        n = int(task_cfg.n_bits)
        return (2, 2, n) if 1 <= n <= MAX_BITS else None

    def problems(self, task_cfg: Any, prefix: str = "task") -> List[str]:
        n, subset = int(task_cfg.n_bits), [int(i) for i in task_cfg.subset]
        errors = []
        if not 1 <= n <= MAX_BITS:
            return [f"{prefix}.n_bits={n}: must lie in 1..{MAX_BITS}"]
        if not subset or len(set(subset)) != len(subset) or not all(0 <= i < n for i in subset):
            errors.append(f"{prefix}.subset={subset}: needs distinct bit positions in 0..{n - 1}, at least one")
        for key in ("n_train", "n_test"):
            if int(getattr(task_cfg, key)) < 2:
                errors.append(f"{prefix}.{key}={getattr(task_cfg, key)}: must be at least 2")
        total = int(task_cfg.n_train) + int(task_cfg.n_test)
        if total > min(2**n, MAX_EXAMPLES):
            errors.append(
                f"{prefix}.n_train + {prefix}.n_test = {total:,}: more than the {min(2**n, MAX_EXAMPLES):,} distinct "
                f"strings {'there are' if 2**n <= MAX_EXAMPLES else 'one job holds'}"
            )
        return errors

    def label(self, task_cfg: Any) -> str:
        return f"{task_cfg.name}, bits {list(task_cfg.subset)} of {task_cfg.n_bits}"

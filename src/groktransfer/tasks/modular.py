"""The arithmetic tasks: what the inputs are, what the answer is, how pairs are split.

Every task works on pairs (a, b) of residues mod p, fed to the model as the three
tokens ``[a, b, =]`` with ``=`` = token id p (Nanda et al. 2023), or with
``operator_token`` as the four tokens ``[a, op, b, =]`` with ``op`` = token id p+1 (Power
et al. 2022, and most grokking papers after it). A task owns

* its vocabulary sizes (``d_vocab`` in, ``d_vocab_out`` out),
* the full list of valid pairs, in row-major (a, b) order, and their labels,
* the train/test split, drawn from ``data_seed`` only -- so a seed sweep that pins
  ``data_seed`` changes the initialisation and nothing else,
* ``group``: the algebra its Fourier measures live in (None when it has none).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch

from groktransfer.config.ranges import bounded
from groktransfer.config.schema import TaskConfig
from groktransfer.tasks.family import MAX_EXAMPLES, TaskCapability, TaskFamily


def is_prime(n: int) -> bool:
    """Deterministic trial division; p is at most a few thousand here."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def _mod_inverse_table(p: int) -> torch.Tensor:
    """inv[b] = b^(p-2) mod p (Fermat); inv[0] is unused and left 0."""
    return torch.tensor([pow(b, p - 2, p) if b else 0 for b in range(p)], dtype=torch.long)


@dataclass
class ModularTaskConfig(TaskConfig):
    """``a ∘ b`` over the residues mod p (add, subtract, multiply, divide, x2xyy2), and int_add
    (a + b without wrap-around): Hydra's ``modular_schema`` in the task group."""

    KIND: ClassVar[str] = "the modular task family"
    #: fields hashed into run identities whatever their value (groktransfer.runs.identity)
    RECORDED_FIELDS: ClassVar[tuple[str, ...]] = ("name", "p", "frac_train", "data_seed")

    # the modulus (prime for the modular tasks); int_add: the operand bound (a, b < p)
    p: int = bounded(113, ge=2)
    # fraction of all pairs in the training set (the rest is the test set)
    frac_train: float = bounded(0.3, gt=0, lt=1)
    # feed [a, op, b, =] (op = token p+1, '=' = token p), as Power et al. (2022) and most
    # grokking papers after them; false: [a, b, =] (Nanda et al. 2023)
    operator_token: bool = False
    # leave out every pair with b = 0, as Power et al. do for x∘y over y in 1..p-1 (divide
    # always leaves them out); an add/subtract task without them has no full grid for the
    # Fourier measures, which then say so
    exclude_b_zero: bool = False


LabelFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class TaskSpec:
    """Static facts about one kind of task."""

    label: LabelFn
    group: str | None  # Fourier group of the measures, None = no such structure
    no_structure_reason: str | None = None
    exclude_b_zero: bool = False
    out_vocab: Callable[[int], int] = lambda p: p
    needs_prime: bool = True
    # Inputs a, b still live on a p x p grid read in Z_p's Fourier basis (token order), so the
    # input-side measures (embedding Fourier norms, neuron frequencies, key frequencies)
    # are defined even where the output has no group.
    input_fourier: bool = False


def _divide(a: torch.Tensor, b: torch.Tensor, p: int) -> torch.Tensor:
    return (a * _mod_inverse_table(p)[b]) % p


TASKS: dict[str, TaskSpec] = {
    "add": TaskSpec(label=lambda a, b, p: (a + b) % p, group="add"),
    "subtract": TaskSpec(label=lambda a, b, p: (a - b) % p, group="subtract"),
    "multiply": TaskSpec(label=lambda a, b, p: (a * b) % p, group="multiply"),
    "divide": TaskSpec(label=_divide, group="divide", exclude_b_zero=True),
    "x2xyy2": TaskSpec(
        label=lambda a, b, p: (a * a + a * b + b * b) % p,
        group=None,
        no_structure_reason="a^2+ab+b^2 is not a group operation: no single Fourier basis diagonalises it",
    ),
    "int_add": TaskSpec(
        label=lambda a, b, p: a + b,
        group=None,
        no_structure_reason="integer a+b (no wrap-around) is not a cyclic-group operation",
        out_vocab=lambda p: 2 * p,
        needs_prime=False,
        input_fourier=True,
    ),
}


class Task:
    """One task instance: a TaskSpec bound to p, frac_train and data_seed."""

    family = "modular"
    threshold_metric = "accuracy"
    seq_len = 3
    #: [a, b, =] -> the answer at '=', residues mod p (what the interpretability readings read)
    capabilities = frozenset({TaskCapability.operands, TaskCapability.equals_answer, TaskCapability.fourier})

    def __init__(
        self,
        name: str,
        p: int,
        frac_train: float,
        data_seed: int,
        operator_token: bool = False,
        exclude_b_zero: bool = False,
    ) -> None:
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
        self.name = name
        self.spec = task_spec(name, exclude_b_zero)
        self.p = p
        self.frac_train = frac_train
        self.data_seed = data_seed
        self.operator_token = bool(operator_token)
        self.seq_len = 4 if self.operator_token else 3

    @classmethod
    def from_config(cls, cfg: ModularTaskConfig, data_seed: int) -> Task:
        return cls(
            str(cfg.name),
            int(cfg.p),
            float(cfg.frac_train),
            int(data_seed),
            operator_token=bool(cfg.operator_token),
            exclude_b_zero=bool(cfg.exclude_b_zero),
        )

    # ---- vocabulary -------------------------------------------------------
    @property
    def d_vocab(self) -> int:
        """Input tokens 0..p-1 plus '=' (id p), and the operator (id p+1) where there is one."""
        return self.p + 2 if self.operator_token else self.p + 1

    @property
    def operator_token_id(self) -> int | None:
        return self.p + 1 if self.operator_token else None

    @property
    def d_vocab_out(self) -> int:
        return self.spec.out_vocab(self.p)

    @property
    def equals_token(self) -> int:
        return self.p

    @property
    def group(self) -> str | None:
        return self.spec.group

    @property
    def no_structure_reason(self) -> str | None:
        return self.spec.no_structure_reason

    # ---- data -------------------------------------------------------------
    @cached_property
    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All valid (a, b), row-major; b = 0 is dropped for division."""
        a = torch.arange(self.p).repeat_interleave(self.p)
        b = torch.arange(self.p).repeat(self.p)
        if self.spec.exclude_b_zero:
            keep = b != 0
            a, b = a[keep], b[keep]
        return a, b

    @cached_property
    def tokens(self) -> torch.Tensor:
        """[n_pairs, 3] long tensor of ``a, b, =`` (or [n_pairs, 4] of ``a, op, b, =``)."""
        a, b = self.pairs
        eq = torch.full_like(a, self.equals_token)
        if self.operator_token:
            return torch.stack([a, torch.full_like(a, self.p + 1), b, eq], dim=1)
        return torch.stack([a, b, eq], dim=1)

    @cached_property
    def labels(self) -> torch.Tensor:
        a, b = self.pairs
        return self.spec.label(a, b, self.p).long()

    @property
    def n_pairs(self) -> int:
        return int(self.tokens.shape[0])

    @cached_property
    def split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train_idx, test_idx) into ``tokens``; depends on data_seed only."""
        gen = torch.Generator().manual_seed(self.data_seed)
        perm = torch.randperm(self.n_pairs, generator=gen)
        n_train = int(round(self.frac_train * self.n_pairs))
        n_train = min(max(n_train, 1), self.n_pairs - 1)
        return perm[:n_train].sort().values, perm[n_train:].sort().values

    @cached_property
    def train_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.n_pairs, dtype=torch.bool)
        mask[self.split[0]] = True
        return mask

    def describe(self) -> str:
        text = f"{self.name} mod {self.p}" if self.name != "int_add" else f"int_add (a,b < {self.p})"
        if self.spec.exclude_b_zero and not TASKS[self.name].exclude_b_zero:
            text += ", b ≠ 0"
        return text + (", [a op b =]" if self.operator_token else "")


class ModularFamily(TaskFamily):
    """The (a, b) -> answer tasks of :data:`TASKS`: three tokens ``[a, b, =]``, one answer at the last position."""

    name = "modular"
    task_names = tuple(TASKS)
    config_class = ModularTaskConfig
    exact_n_ctx = True  # the fast path reads position 2, the '=' token
    fourier_circuit = True

    def build(self, task_cfg: Any, data_seed: int) -> Task:
        return Task.from_config(task_cfg, data_seed)

    def n_examples(self, task_cfg: Any) -> int | None:
        p = int(task_cfg.p)
        return p * (p - 1) if TASKS[str(task_cfg.name)].exclude_b_zero else p * p

    def shapes(self, task_cfg: Any) -> tuple[int, int, int] | None:
        p, op = int(task_cfg.p), int(bool(getattr(task_cfg, "operator_token", False)))
        return (p + 1 + op, TASKS[str(task_cfg.name)].out_vocab(p), 3 + op) if p >= 2 else None

    def problems(self, task_cfg: Any, prefix: str = "task") -> list[str]:
        name, p, frac = str(task_cfg.name), int(task_cfg.p), float(task_cfg.frac_train)
        spec = task_spec(name, bool(getattr(task_cfg, "exclude_b_zero", False)))
        errors = []
        if p < 2:
            return [f"{prefix}.p={p}: must be at least 2"]
        n_pairs = p * (p - 1) if spec.exclude_b_zero else p * p
        if n_pairs > MAX_EXAMPLES:
            limit = int(MAX_EXAMPLES**0.5)
            return [
                f"{prefix}.p={p}: {n_pairs:,} pairs do not fit one full-batch job (at most "
                f"{MAX_EXAMPLES:,} pairs, p <= {limit})"
            ]
        if spec.needs_prime and not is_prime(p):
            errors.append(f"{prefix}.p={p}: must be prime for the modular task {name!r}")
        if not (0.0 < frac < 1.0):
            errors.append(f"{prefix}.frac_train={frac}: must lie strictly between 0 and 1")
        else:
            n_train = int(round(frac * n_pairs))
            if min(n_train, n_pairs - n_train) < MIN_SPLIT:
                errors.append(
                    f"{prefix}.p={p}, {prefix}.frac_train={frac}: {name} has {n_pairs} pairs, {n_train} for "
                    f"training and {n_pairs - n_train} for testing; each side needs at least {MIN_SPLIT}"
                )
        return errors


#: the fewest pairs a train or test set may hold: one pair gives no accuracy worth a threshold
MIN_SPLIT = 2


def task_spec(name: str, exclude_b_zero: bool = False) -> TaskSpec:
    """The spec of task ``name`` with b = 0 left out where asked.

    Leaving b = 0 out of add, subtract or int_add leaves the p x p grid incomplete, and the
    Fourier measures need every cell of it: the spec then has no group (and no input-side
    grid), and the reason says why. multiply keeps its group: its measures work in
    discrete-log coordinates over the non-zero residues, which never held b = 0.
    """
    spec = TASKS[name]
    if not exclude_b_zero or spec.exclude_b_zero:
        return spec
    if spec.group in ("add", "subtract") or spec.input_fourier:
        why = f"b = 0 is left out (task.exclude_b_zero), so the {name} grid of all (a, b) is incomplete"
        return dataclasses.replace(spec, exclude_b_zero=True, group=None, input_fourier=False, no_structure_reason=why)
    return dataclasses.replace(spec, exclude_b_zero=True)

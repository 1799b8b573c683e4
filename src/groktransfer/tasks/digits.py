"""Digit arithmetic: n-digit sums and differences written out digit by digit.

The ARENA "sum of two numbers" setting. A sequence is

    a_1 ... a_n  +  b_1 ... b_n  =  s_1 ... s_m          (most significant digit first)

with tokens 0-9 for digits, 10 for ``+`` and 11 for ``=``; m = n answer digits
(m = n + 1 with ``carry_out``). The model reads the whole sequence (causal attention,
so an answer digit is never visible to the position that predicts it) and predicts
each answer digit at the position *before* it: the logits at ``answer_positions``
are scored against ``labels``; no other position counts.

* ``digit_add``: a + b. By default both operands are below 5 * 10^(n-1), so the sum
  has exactly n digits (ARENA's choice: no carry past the leading digit). With
  ``carry_out`` the operands range over all of 0 .. 10^n - 1 and the sum gets n + 1
  digits.
* ``digit_sub``: a - b with a >= b, operands below 5 * 10^(n-1), answer zero-padded to
  n digits. Same sequence length and vocabulary as ``digit_add`` -- the in-family
  transfer pair.

Data: for n <= 2 every pair is enumerated and split by ``frac_train`` (like the
modular tasks); for larger n, ``n_train`` + ``n_test`` distinct pairs are drawn
without replacement from ``data_seed``, the first ``n_train`` for training.

Carry structure (``carry_classes``): for every answer digit, whether a carry (borrow
for subtraction) comes in from the digit to its right, and how:
``NO_CARRY`` none; ``DIRECT`` the digit pair to the right alone makes it
(a + b >= 10, or a < b); ``CASCADE`` it is passed on by a digit pair that only carries
because a carry reached *it* (a + b == 9, or a == b) -- e.g. every carry of 999 + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch

from groktransfer.config.ranges import bounded
from groktransfer.config.schema import TaskConfig
from groktransfer.tasks.family import MAX_EXAMPLES, TaskCapability, TaskFamily

PLUS_TOKEN = 10
EQUALS_TOKEN = 11
N_DIGIT_TOKENS = 10
#: The digit axis the W_U Fourier measure runs over (digits mod 10).
N_DIGIT_TASKS_FREQS = 10
VOCAB = [str(d) for d in range(10)] + ["+", "="]

NO_CARRY, DIRECT, CASCADE = 0, 1, 2
CARRY_CLASS_NAMES = ("no_carry", "direct", "cascade")
#: Example-level classes: no carry anywhere, carries but none cascades, at least one cascade.
EXAMPLE_CLASS_NAMES = ("none", "carries", "cascades")

DIGIT_TASKS: dict[str, str] = {"digit_add": "a + b", "digit_sub": "a - b (a >= b)"}
FAMILY = "digit"
#: n up to this is enumerated exhaustively and split by frac_train.
ENUMERATE_MAX_DIGITS = 2


@dataclass
class DigitTaskConfig(TaskConfig):
    """Sums and differences written digit by digit (ARENA's setting): Hydra's ``digit_schema``."""

    KIND: ClassVar[str] = "the digit task family"
    #: fields hashed into run identities whatever their value (groktransfer.runs.identity)
    RECORDED_FIELDS: ClassVar[tuple[str, ...]] = (
        "name",
        "p",
        "frac_train",
        "data_seed",
        "n_digits",
        "carry_out",
        "n_train",
        "n_test",
    )

    # the number base: digit tasks are written in base 10 (recorded in status.json; not a modulus)
    p: int = bounded(10, ge=2)
    # n_digits <= 2: every problem is enumerated and this fraction trains (the rest tests)
    frac_train: float = bounded(0.3, gt=0, lt=1)
    # operand length
    n_digits: int = bounded(4, ge=1)
    # allow any operands and an (n+1)-th answer digit (digit_add only)
    carry_out: bool = False
    # n_digits > 2: number of distinct training problems drawn from data_seed
    n_train: int | None = bounded(None, ge=1)
    # n_digits > 2: number of distinct test problems drawn, disjoint from the training ones
    n_test: int | None = bounded(None, ge=1)


@dataclass(frozen=True)
class DigitSettings:
    """Everything that defines a digit task's data, independent of config machinery."""

    name: str
    n_digits: int = 4
    carry_out: bool = False
    frac_train: float = 0.3
    n_train: int | None = None
    n_test: int | None = None

    @property
    def operand_limit(self) -> int:
        """Operands are drawn from 0 .. operand_limit - 1."""
        return 10**self.n_digits if self.carry_out else 5 * 10 ** (self.n_digits - 1)

    @property
    def n_answer(self) -> int:
        return self.n_digits + 1 if self.carry_out else self.n_digits

    @property
    def seq_len(self) -> int:
        return 2 * self.n_digits + 2 + self.n_answer

    @property
    def problem_size(self) -> int:
        """How many distinct (a, b) the task has."""
        lim = self.operand_limit
        return lim * lim if self.name == "digit_add" else lim * (lim + 1) // 2

    @property
    def enumerated(self) -> bool:
        return self.n_digits <= ENUMERATE_MAX_DIGITS

    def problems(self) -> list[str]:
        """Every reason these settings cannot make a task (empty = fine)."""
        errors = []
        if self.name not in DIGIT_TASKS:
            return [f"task.name={self.name!r}: not a digit task; choose one of {sorted(DIGIT_TASKS)}"]
        if self.n_digits < 1:
            return [f"task.n_digits={self.n_digits}: must be at least 1"]
        if self.n_digits > 9:
            errors.append(f"task.n_digits={self.n_digits}: at most 9 (operands must fit the index arithmetic)")
        if self.carry_out and self.name != "digit_add":
            errors.append("task.carry_out=true: only digit_add has a carry-out digit (a - b with a >= b never does)")
        if self.enumerated:
            if not 0.0 < self.frac_train < 1.0:
                errors.append(f"task.frac_train={self.frac_train}: must lie strictly between 0 and 1")
            return errors
        if self.n_train is None or self.n_test is None:
            errors.append(
                f"task.n_digits={self.n_digits} > {ENUMERATE_MAX_DIGITS}: set task.n_train and task.n_test "
                "(the pairs are sampled, not enumerated)"
            )
            return errors
        if self.n_train < 1 or self.n_test < 1:
            errors.append(f"task.n_train={self.n_train}, task.n_test={self.n_test}: both must be >= 1")
        elif self.n_train + self.n_test > self.problem_size:
            errors.append(
                f"task.n_train + task.n_test = {self.n_train + self.n_test} exceeds the {self.problem_size} "
                f"distinct problems of {self.name} with n_digits={self.n_digits}"
            )
        return errors


# --------------------------------------------------------------------------- pure functions
def to_digits(x: torch.Tensor, n: int) -> torch.Tensor:
    """[N] non-negative ints -> [N, n] digits, most significant first (zero-padded)."""
    powers = 10 ** torch.arange(n - 1, -1, -1, dtype=torch.long)
    return (x.unsqueeze(-1) // powers) % 10


def from_digits(d: torch.Tensor) -> torch.Tensor:
    """[N, n] digits (most significant first) -> [N] ints."""
    n = d.shape[-1]
    powers = 10 ** torch.arange(n - 1, -1, -1, dtype=torch.long)
    return (d * powers).sum(-1)


def encode(a: torch.Tensor, b: torch.Tensor, answer: torch.Tensor, n_digits: int, n_answer: int) -> torch.Tensor:
    """Token sequences ``a + b = answer``: [N] x 3 -> [N, 2n + 2 + n_answer]."""
    plus = torch.full_like(a, PLUS_TOKEN).unsqueeze(1)
    eq = torch.full_like(a, EQUALS_TOKEN).unsqueeze(1)
    return torch.cat([to_digits(a, n_digits), plus, to_digits(b, n_digits), eq, to_digits(answer, n_answer)], dim=1)


def decode(tokens: torch.Tensor) -> list[str]:
    """[N, seq] tokens -> strings such as ``'2764+1504=4268'`` (for tests and reports)."""
    return ["".join(VOCAB[int(t)] for t in row) for row in tokens]


def carry_classes(a_digits: torch.Tensor, b_digits: torch.Tensor, subtract: bool, n_answer: int) -> torch.Tensor:
    """Carry class of each answer digit: [N, n] x 2 -> [N, n_answer] in {NO_CARRY, DIRECT, CASCADE}.

    Walks from the least significant digit. Carry (borrow) into digit k comes from
    digit k+1 (to its right): DIRECT if that pair carries on its own, CASCADE if it
    carries only because a carry reached it. The least significant digit never has
    an incoming carry; a carry-out digit (n_answer = n + 1) gets the class of the
    carry out of the leading pair.
    """
    n_rows, n = a_digits.shape
    out = torch.zeros(n_rows, n, dtype=torch.long)  # out[:, k] = class of the carry *out of* digit pair k
    carry = torch.zeros(n_rows, dtype=torch.bool)
    for k in range(n - 1, -1, -1):
        a, b = a_digits[:, k], b_digits[:, k]
        alone = (a < b) if subtract else (a + b >= 10)
        passes_on = (a == b) if subtract else (a + b == 9)
        cascade = passes_on & carry
        out[:, k] = torch.where(alone, DIRECT, torch.where(cascade, CASCADE, NO_CARRY))
        carry = alone | cascade
    # the carry into answer digit k is the one out of the pair to its right
    into = torch.cat([out[:, 1:], torch.zeros(n_rows, 1, dtype=torch.long)], dim=1)  # [N, n]
    if n_answer == n + 1:
        return torch.cat([out[:, :1], into], dim=1)
    return into


def example_classes(per_digit: torch.Tensor) -> torch.Tensor:
    """[N, n_answer] carry classes -> [N] example class: 0 none, 1 carries (no cascade), 2 cascades."""
    return per_digit.max(dim=1).values


# --------------------------------------------------------------------------- the task
class DigitTask:
    """A digit task bound to its settings and data_seed; the trainer's and measures' view of it.

    Attributes used by the rest of the framework (shared with the modular ``Task``):
    ``name``, ``family``, ``p`` (the base, 10), ``d_vocab``, ``d_vocab_out``, ``seq_len``,
    ``tokens`` [N, seq], ``labels`` [N, n_answer], ``answer_positions`` [n_answer],
    ``split``, ``train_mask``, ``group`` (None: the modular Fourier measures do not apply).
    """

    family = FAMILY
    group = None
    threshold_metric = "exact_match"
    #: a + b = answer digits after '=', the ten digits read in a Fourier basis (interpretability readings)
    capabilities = frozenset({TaskCapability.operands, TaskCapability.equals_answer, TaskCapability.fourier})
    no_structure_reason = (
        "digit sequences are not (a, b) pairs of a cyclic group: the modular Fourier measures do not apply "
        "(see the digit measures instead)"
    )

    def __init__(self, settings: DigitSettings, data_seed: int) -> None:
        problems = settings.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.settings = settings
        self.name = settings.name
        self.n_digits = settings.n_digits
        self.n_answer = settings.n_answer
        self.frac_train = settings.frac_train
        self.data_seed = int(data_seed)
        self.p = 10

    @classmethod
    def from_config(cls, cfg: Any, data_seed: int) -> DigitTask:
        return cls(settings_from_config(cfg), data_seed)

    # ---- vocabulary & layout ----------------------------------------------------
    d_vocab = 12  # digits, '+', '='
    d_vocab_out = 10  # the answers are digits
    equals_token = EQUALS_TOKEN

    @property
    def seq_len(self) -> int:
        return self.settings.seq_len

    @cached_property
    def answer_positions(self) -> torch.Tensor:
        """Positions whose logits predict the answer digits: '=' and every answer digit but the last."""
        first = 2 * self.n_digits + 1
        return torch.arange(first, first + self.n_answer)

    @cached_property
    def loss_mask(self) -> torch.Tensor:
        """[seq] bool: True exactly at the answer positions (the only positions the loss reads)."""
        mask = torch.zeros(self.seq_len, dtype=torch.bool)
        mask[self.answer_positions] = True
        return mask

    # ---- data -------------------------------------------------------------------
    def _pair_from_index(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lim = self.settings.operand_limit
        if self.name == "digit_add":
            return idx // lim, idx % lim
        # a >= b, triangular numbering: idx = a (a + 1) / 2 + b
        a = ((torch.sqrt(8.0 * idx.double() + 1.0) - 1.0) / 2.0).floor().long()
        a = a - (a * (a + 1) // 2 > idx).long() + ((a + 1) * (a + 2) // 2 <= idx).long()
        return a, idx - a * (a + 1) // 2

    @cached_property
    def _indices(self) -> tuple[torch.Tensor, int]:
        """(problem indices in data order, n_train): train first, then test."""
        size = self.settings.problem_size
        gen = torch.Generator().manual_seed(self.data_seed)
        if self.settings.enumerated:
            perm = torch.randperm(size, generator=gen)
            n_train = min(max(int(round(self.frac_train * size)), 1), size - 1)
            train, test = perm[:n_train].sort().values, perm[n_train:].sort().values
            return torch.cat([train, test]), n_train
        need = int(self.settings.n_train) + int(self.settings.n_test)
        if need > size // 4:  # dense: a permutation is cheap enough and exact
            return torch.randperm(size, generator=gen)[:need], int(self.settings.n_train)
        drawn = torch.empty(0, dtype=torch.long)
        while drawn.numel() < need:  # sparse: draw with replacement, keep first occurrences in draw order
            extra = torch.randint(size, (2 * need,), generator=gen)
            pool = torch.cat([drawn, extra])
            uniq, inverse = torch.unique(pool, return_inverse=True)
            first = torch.full((uniq.numel(),), pool.numel(), dtype=torch.long)
            first.scatter_reduce_(0, inverse, torch.arange(pool.numel()), reduce="amin")
            drawn = pool[first.sort().values]
        return drawn[:need], int(self.settings.n_train)

    @cached_property
    def operands(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b): [N] each, train examples first."""
        return self._pair_from_index(self._indices[0])

    @cached_property
    def answers(self) -> torch.Tensor:
        a, b = self.operands
        return a + b if self.name == "digit_add" else a - b

    @cached_property
    def tokens(self) -> torch.Tensor:
        """[N, seq] long: the full sequences (the model's input)."""
        a, b = self.operands
        return encode(a, b, self.answers, self.n_digits, self.n_answer)

    @cached_property
    def labels(self) -> torch.Tensor:
        """[N, n_answer] long: the answer digits, most significant first."""
        return self.tokens[:, -self.n_answer :].contiguous()

    @cached_property
    def carry_classes(self) -> torch.Tensor:
        """[N, n_answer] carry class of each answer digit (NO_CARRY / DIRECT / CASCADE)."""
        a, b = self.operands
        return carry_classes(
            to_digits(a, self.n_digits), to_digits(b, self.n_digits), self.name == "digit_sub", self.n_answer
        )

    @cached_property
    def example_classes(self) -> torch.Tensor:
        """[N] 0 = no carry, 1 = carries without cascade, 2 = at least one cascading carry."""
        return example_classes(self.carry_classes)

    @property
    def n_pairs(self) -> int:
        return int(self.tokens.shape[0])

    @cached_property
    def split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train_idx, test_idx) into ``tokens``."""
        n_train = self._indices[1]
        return torch.arange(n_train), torch.arange(n_train, self.n_pairs)

    @cached_property
    def train_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.n_pairs, dtype=torch.bool)
        mask[: self._indices[1]] = True
        return mask

    def describe(self) -> str:
        s = self.settings
        extra = " with carry-out" if s.carry_out else ""
        return f"{self.name} ({s.n_digits} digits{extra}, {len(self.split[0])} train / {len(self.split[1])} test)"


def settings_from_config(cfg: Any) -> DigitSettings:
    """DigitSettings from a task config node (or any object with those attributes)."""
    return DigitSettings(
        name=str(cfg.name),
        n_digits=int(cfg.n_digits),
        carry_out=bool(cfg.carry_out),
        frac_train=float(cfg.frac_train),
        n_train=None if cfg.n_train is None else int(cfg.n_train),
        n_test=None if cfg.n_test is None else int(cfg.n_test),
    )


def settings_as_dict(s: DigitSettings) -> dict[str, Any]:
    return {
        "name": s.name,
        "n_digits": s.n_digits,
        "carry_out": s.carry_out,
        "frac_train": s.frac_train,
        "n_train": s.n_train,
        "n_test": s.n_test,
    }


class DigitFamily(TaskFamily):
    """Sums and differences written as digit sequences (``a1..an + b1..bn = s1..sm``), one answer per digit."""

    name = FAMILY
    task_names = tuple(DIGIT_TASKS)
    config_class = DigitTaskConfig
    answer_at_last_position = False  # the answer digits are read at '=' and the digits after it

    def build(self, task_cfg: Any, data_seed: int) -> DigitTask:
        return DigitTask.from_config(task_cfg, data_seed)

    def shapes(self, task_cfg: Any) -> tuple[int, int, int] | None:
        settings = settings_from_config(task_cfg)
        if settings.n_digits < 1:
            return None
        return DigitTask.d_vocab, DigitTask.d_vocab_out, settings.seq_len

    def problems(self, task_cfg: Any, prefix: str = "task") -> list[str]:
        settings = settings_from_config(task_cfg)
        errors = settings.problems()
        if (
            settings.n_digits >= 1
            and not settings.enumerated
            and settings.n_train is not None
            and settings.n_test is not None
        ):
            if settings.n_train + settings.n_test > MAX_EXAMPLES:
                errors.append(
                    f"task.n_train + task.n_test = {settings.n_train + settings.n_test:,}: more examples than "
                    f"one job holds (at most {MAX_EXAMPLES:,})"
                )
        if prefix != "task":
            errors = [f"{prefix}: {e}" for e in errors]
        return errors

    def label(self, task_cfg: Any) -> str:
        return f"{task_cfg.name}, n_digits={task_cfg.n_digits}"

    def ignored_keys(self, task_cfg: Any) -> dict[str, str]:
        base = {"p": "digit tasks are in base 10 and have no modulus"}
        if int(task_cfg.n_digits) <= ENUMERATE_MAX_DIGITS:
            why = f"with n_digits <= {ENUMERATE_MAX_DIGITS} every problem is enumerated and split by task.frac_train"
            return {**base, "n_train": why, "n_test": why}
        return {
            **base,
            "frac_train": f"with n_digits > {ENUMERATE_MAX_DIGITS} the sizes are task.n_train and task.n_test",
        }

    def task_config_for_model(self, task_name: str, model_cfg: Any) -> tuple[dict[str, Any], str] | None:
        """The layout the model's context length implies: n_ctx = 3n + 2 tokens, or 3n + 3
        with a carry-out digit; n <= 2 enumerates every problem, longer operands sample
        1000 train / 1000 test."""
        n_ctx = int(model_cfg.n_ctx)
        carry_out = n_ctx % 3 == 0
        n_digits = (n_ctx - 3) // 3 if carry_out else (n_ctx - 2) // 3
        if n_ctx % 3 == 1 or n_digits < 1:
            raise ValueError(f"a model with n_ctx={n_ctx} does not fit a digit task layout (3n+2 or 3n+3 tokens)")
        sampled = {} if n_digits <= 2 else {"n_train": 1000, "n_test": 1000}
        cfg = {"name": task_name, "n_digits": n_digits, "carry_out": carry_out, **sampled}
        return (
            cfg,
            f"{n_digits}-digit {task_name}{' with carry-out' if carry_out else ''} read from the model's n_ctx={n_ctx}",
        )

    def answer_positions(self, task_cfg: Any) -> int:
        return settings_from_config(task_cfg).n_answer

    def n_examples(self, task_cfg: Any) -> int | None:
        s = settings_from_config(task_cfg)
        if s.n_digits < 1:
            return None
        if s.enumerated:
            return s.problem_size
        return None if s.n_train is None or s.n_test is None else int(s.n_train) + int(s.n_test)

    def chance_accuracy(self, task_cfg: Any) -> float:
        """Exact match of every answer digit by guessing: 10^-(answer digits)."""
        settings = settings_from_config(task_cfg)
        return float(N_DIGIT_TOKENS) ** -settings.n_answer if settings.n_digits >= 1 else 0.0

    def source_task(self, source_cfg: Any, target_task_cfg: Any, data_seed: int) -> dict[str, Any]:
        """The target's digit layout where the target is a digit task, its own data sizes where
        given; always base 10."""
        return {**super().source_task(source_cfg, target_task_cfg, data_seed), "p": 10}

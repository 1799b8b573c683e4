"""What every interpretability function reads from a task: inputs, answers, where they are.

Why a separate view of the task: the analyses (ablations, attribution, probes) must not
care whether a task answers with one token after ``=`` (the pair tasks) or with several
tokens each predicted at its own position (digit tasks, with a loss mask). They all work
on an :class:`AnswerSet`:

* ``tokens`` [n, seq] -- every input the task has (all p^2 pairs for a pair task);
* ``labels`` [n, n_answers] -- the correct token at each answer;
* ``positions`` -- for answer j, the sequence position whose logits predict it;
* ``classes`` -- an optional per-example label used to break failure maps down
  (carry class for digit tasks); pair tasks break down on the (a, b) grid instead;
* ``targets`` -- the named quantities probes and neuron correlations are tested against.

A task provides its own view through an ``answer_set()`` method; otherwise its view follows
from what it declares (``groktransfer.tasks.family.TaskCapability``): pair tasks with operands
(:class:`groktransfer.tasks.modular.Task`) get :func:`pair_answer_set`, digit tasks
:func:`digit_answer_set`, and a task that declares nothing (a plugin's) the answers at its
answer positions with no operands, no grid and the answer as the only probe target
(:func:`plain_answer_set`): nothing is read into it that it did not say it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from groktransfer.tasks.family import TaskCapability, task_capabilities

REGRESSION, CLASSIFICATION = "regression", "classification"


@dataclass(frozen=True)
class Target:
    """A quantity a probe should recover: ``values`` [n], and how it is scored
    (``regression``: held-out R^2; ``classification``: held-out accuracy)."""

    name: str
    values: torch.Tensor
    kind: str

    def __post_init__(self) -> None:
        assert self.kind in (REGRESSION, CLASSIFICATION), self.kind


@dataclass(frozen=True)
class AnswerSet:
    """A task's inputs and answers as the interpretability functions read them."""

    name: str
    tokens: torch.Tensor  # [n, seq] long
    labels: torch.Tensor  # [n, n_answers] long
    positions: tuple[int, ...]  # sequence position predicting each answer
    answer_names: tuple[str, ...]  # e.g. ("=",) or ("digit 0", "digit 1")
    train_mask: torch.Tensor  # [n] bool
    out_modulus: int  # size of the output Fourier basis: p, 2p (int_add) or 10 (digits)
    input_modulus: int  # number of operand tokens (p, or 10 for digits)
    operand_positions: tuple[int, ...] = (0, 1)  # positions holding operand tokens
    operands: torch.Tensor | None = None  # [n, 2] long (a, b) of each example, pair tasks
    classes: torch.Tensor | None = None  # [n] or [n, n_answers] long, e.g. carry class of each answer digit
    class_names: tuple[str, ...] = ()
    targets: dict[str, Target] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.tokens.shape[0]
        assert self.labels.shape == (n, len(self.positions)), (self.labels.shape, self.positions)
        assert len(self.answer_names) == len(self.positions)
        assert self.train_mask.shape == (n,)
        if self.operands is not None:
            assert self.operands.shape == (n, 2)
        if self.classes is not None:
            assert self.classes.shape in ((n,), (n, len(self.positions))), self.classes.shape

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_answers(self) -> int:
        return len(self.positions)

    @property
    def has_grid(self) -> bool:
        return self.operands is not None

    def to_grid(self, per_example: torch.Tensor) -> torch.Tensor:
        """[n, ...] -> [m, m, ...] float on the (a, b) grid, m = input_modulus; pairs the
        task does not have (b = 0 for divide) are NaN. Pair tasks only."""
        assert self.operands is not None, f"{self.name}: no (a, b) grid"
        m = self.input_modulus
        grid = torch.full((m, m, *per_example.shape[1:]), float("nan"), dtype=torch.float64)
        grid[self.operands[:, 0], self.operands[:, 1]] = per_example.double()
        return grid


def select(aset: AnswerSet, mask: torch.Tensor, label: str) -> AnswerSet:
    """The inputs where ``mask`` ([n] bool) is true, in their order; ``label`` is added to
    the name. Pair tasks lose their (a, b) grid (it needs every pair)."""
    keep = mask.nonzero().flatten()
    return replace(
        aset,
        name=f"{aset.name}, {label}",
        tokens=aset.tokens[keep],
        labels=aset.labels[keep],
        train_mask=aset.train_mask[keep],
        classes=None if aset.classes is None else aset.classes[keep],
        operands=None,
        targets={k: replace(t, values=t.values[keep]) for k, t in aset.targets.items()},
    )


def subsample(aset: AnswerSet, max_n: int, seed: int = 0) -> AnswerSet:
    """At most ``max_n`` of the inputs, drawn without replacement from ``seed`` (kept in
    their order). For tasks without an (a, b) grid only: grid analyses need every pair."""
    assert not aset.has_grid, "an (a, b) grid task is analysed on every pair"
    if aset.n <= max_n:
        return aset
    keep = torch.randperm(aset.n, generator=torch.Generator().manual_seed(seed))[:max_n].sort().values
    return replace(
        aset,
        name=f"{aset.name}, {max_n} of {aset.n} inputs",
        tokens=aset.tokens[keep],
        labels=aset.labels[keep],
        train_mask=aset.train_mask[keep],
        classes=None if aset.classes is None else aset.classes[keep],
        targets={k: replace(t, values=t.values[keep]) for k, t in aset.targets.items()},
    )


def pair_answer_set(task: Any) -> AnswerSet:
    """The view of a pair task ``[a, b, =]`` -> one answer read at the '=' position.

    Probe targets: a and b (regression), the answer (classification with p or 2p
    classes) and, for ``int_add``, the integer sum (regression; it is the answer).
    """
    tokens = task.tokens
    a, b = tokens[:, 0], tokens[:, -2]  # the operands: [a, b, =], or [a, op, b, =] with an operator token
    labels = task.labels.long()
    targets = {
        "a": Target("a", a.double(), REGRESSION),
        "b": Target("b", b.double(), REGRESSION),
        "answer": Target("answer", labels, CLASSIFICATION),
    }
    if task.name == "int_add":
        targets["a+b"] = Target("a+b", labels.double(), REGRESSION)
    return AnswerSet(
        name=task.describe(),
        tokens=tokens,
        labels=labels[:, None],
        positions=(tokens.shape[1] - 1,),
        answer_names=("=",),
        train_mask=task.train_mask,
        out_modulus=int(task.d_vocab_out),
        input_modulus=int(task.p),
        operand_positions=(0, tokens.shape[1] - 2),
        operands=torch.stack([a, b], dim=1),
        targets=targets,
    )


#: carry classes of digit tasks (``DigitTask.carry_classes``), in class-id order
CARRY_CLASS_NAMES = ("no carry", "direct carry", "cascading carry")


def digit_answer_set(task: Any) -> AnswerSet:
    """The view of a digit task (``groktransfer.tasks.digits.DigitTask``): answers are read
    at ``task.answer_positions``, one per answer digit (most significant first); failure
    maps break down by each answer digit's carry class. Probe targets: the operands and
    the sum as integers (regression), each answer digit (10 classes) and each digit's
    incoming carry bit (classification)."""
    labels = task.labels.long()
    m = labels.shape[1]
    names = tuple(f"digit {i}" for i in range(m))
    a, b = (x.double() for x in task.operands)
    targets = {
        "a": Target("a", a, REGRESSION),
        "b": Target("b", b, REGRESSION),
        "answer": Target("answer", task.answers.double(), REGRESSION),
    }
    carries = task.carry_classes.long()
    for i in range(m):
        targets[f"digit {i}"] = Target(f"digit {i}", labels[:, i], CLASSIFICATION)
        targets[f"carry {i}"] = Target(f"carry {i}", (carries[:, i] > 0).long(), CLASSIFICATION)
    n = int(task.n_digits)
    return AnswerSet(
        name=task.describe() if hasattr(task, "describe") else str(getattr(task, "name", "digit task")),
        tokens=task.tokens,
        labels=labels,
        positions=tuple(int(x) for x in task.answer_positions),
        answer_names=names,
        train_mask=task.train_mask,
        out_modulus=10,
        input_modulus=10,
        operand_positions=tuple(range(n)) + tuple(range(n + 1, 2 * n + 1)),
        classes=carries,
        class_names=CARRY_CLASS_NAMES,
        targets=targets,
    )


def plain_answer_set(task: Any) -> AnswerSet:
    """The view of a task that declares no operands: its answers where the loss reads them (the
    last position, or ``answer_positions``), named ``=`` when it declares an answer after '='
    and ``last`` / ``answer i`` otherwise; the answer is the only probe target."""
    labels = task.labels.long()
    positions = getattr(task, "answer_positions", None)
    if positions is None:
        labels, positions = labels[:, None], (task.tokens.shape[1] - 1,)
    positions = tuple(int(x) for x in positions)
    if TaskCapability.equals_answer in task_capabilities(task) and len(positions) == 1:
        names: tuple[str, ...] = ("=",)
    else:
        names = ("last",) if len(positions) == 1 else tuple(f"answer {i}" for i in range(len(positions)))
    targets = (
        {"answer": Target("answer", labels[:, 0], CLASSIFICATION)}
        if len(positions) == 1
        else {f"answer {i}": Target(f"answer {i}", labels[:, i], CLASSIFICATION) for i in range(len(positions))}
    )
    return AnswerSet(
        name=task.describe() if hasattr(task, "describe") else str(getattr(task, "name", "task")),
        tokens=task.tokens,
        labels=labels,
        positions=positions,
        answer_names=names,
        train_mask=task.train_mask,
        out_modulus=int(task.d_vocab_out),
        input_modulus=int(task.d_vocab),
        operand_positions=(),
        targets=targets,
    )


def answer_set(task: Any) -> AnswerSet:
    """The task's :class:`AnswerSet`: its own ``answer_set()`` if it has one; else, by what it
    declares, the digit-task view (operands and several answer positions), the pair-task view
    (operands), or the plain view."""
    if isinstance(task, AnswerSet):
        return task
    own = getattr(task, "answer_set", None)
    if callable(own):
        out = own()
        assert isinstance(out, AnswerSet), f"{type(task).__name__}.answer_set() must return an AnswerSet"
        return out
    if TaskCapability.operands not in task_capabilities(task):
        return plain_answer_set(task)
    if getattr(task, "answer_positions", None) is not None:
        return digit_answer_set(task)
    return pair_answer_set(task)

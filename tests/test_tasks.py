"""Tasks: labels, vocab sizes and the data_seed-only split."""

from __future__ import annotations

import pytest
import torch

from groktransfer.tasks.modular import TASKS, Task, is_prime


@pytest.mark.parametrize(
    "name, a, b, expected",
    [
        ("add", 5, 9, (5 + 9) % 11),
        ("subtract", 3, 9, (3 - 9) % 11),
        ("multiply", 7, 8, (7 * 8) % 11),
        ("divide", 6, 4, (6 * pow(4, -1, 11)) % 11),
        ("x2xyy2", 2, 3, (4 + 6 + 9) % 11),
        ("int_add", 10, 9, 19),
    ],
)
def test_labels(name: str, a: int, b: int, expected: int) -> None:
    task = Task(name, 11, 0.5, 0)
    pa, pb = task.pairs
    idx = ((pa == a) & (pb == b)).nonzero().item()
    assert task.labels[idx].item() == expected
    assert task.tokens[idx].tolist() == [a, b, 11]


def test_divide_excludes_zero_divisor_and_inverts_multiply() -> None:
    task = Task("divide", 13, 0.5, 0)
    a, b = task.pairs
    assert task.n_pairs == 13 * 12 and not (b == 0).any()
    assert torch.equal((task.labels * b) % 13, a)


def test_vocab_sizes() -> None:
    assert Task("add", 113, 0.3, 0).d_vocab == 114
    assert Task("add", 113, 0.3, 0).d_vocab_out == 113
    int_add = Task("int_add", 10, 0.3, 0)
    assert int_add.d_vocab_out == 20 and int(int_add.labels.max()) == 18


def test_split_depends_on_data_seed_only_and_partitions() -> None:
    t1, t2, t3 = Task("add", 31, 0.3, 4), Task("subtract", 31, 0.3, 4), Task("add", 31, 0.3, 5)
    assert torch.equal(t1.split[0], t2.split[0])  # same seed, same pairs, whatever the task
    assert not torch.equal(t1.split[0], t3.split[0])
    train, test = t1.split
    assert len(train) == round(0.3 * 31 * 31)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(31 * 31))
    assert int(t1.train_mask.sum()) == len(train)


def test_is_prime() -> None:
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert set(TASKS) == {"add", "subtract", "multiply", "divide", "x2xyy2", "int_add"}

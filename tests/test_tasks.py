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


# ---- Power et al.'s layout: an operator token, b = 0 left out (task keys) --------------------
def test_operator_token_layout_and_vocab() -> None:
    task = Task("multiply", 7, 0.5, 0, operator_token=True)
    assert task.d_vocab == 9 and task.seq_len == 4 and task.d_vocab_out == 7
    a, b = task.pairs
    assert task.tokens.tolist()[:2] == [[0, 8, 0, 7], [0, 8, 1, 7]]  # [a, op = p+1, b, = = p]
    assert torch.equal(task.tokens[:, 0], a) and torch.equal(task.tokens[:, 2], b)
    assert torch.equal(task.labels, Task("multiply", 7, 0.5, 0).labels)  # the same answers
    assert torch.equal(task.split[0], Task("multiply", 7, 0.5, 0).split[0])  # and the same split


def test_exclude_b_zero_drops_those_pairs_and_keeps_the_log_grid_of_multiply() -> None:
    from groktransfer.tasks.fourier import GroupFourier

    task = Task("multiply", 97, 0.5, 0, operator_token=True, exclude_b_zero=True)
    a, b = task.pairs
    assert task.n_pairs == 97 * 96 and not bool((b == 0).any())  # Power et al.: 97 x 96 equations
    assert len(task.split[0]) == 97 * 96 // 2
    gf = GroupFourier.for_task(task)  # discrete logs over the non-zero residues: unaffected
    assert gf is not None and gf.n == 96 and gf.n_excluded_pairs == 96  # only the a = 0 row
    assert "b=0 is not in the task" in gf.note


def test_exclude_b_zero_on_add_says_the_grid_is_incomplete() -> None:
    from groktransfer.tasks.fourier import GroupFourier

    task = Task("add", 11, 0.5, 0, exclude_b_zero=True)
    assert task.n_pairs == 11 * 10 and task.group is None
    assert GroupFourier.for_task(task) is None
    assert "incomplete" in str(task.no_structure_reason)
    assert Task("add", 11, 0.5, 0).group == "add"  # the default is untouched


def test_family_shapes_and_problems_follow_the_new_keys() -> None:
    from groktransfer.tasks.modular import ModularFamily, ModularTaskConfig

    fam = ModularFamily()
    cfg = ModularTaskConfig(name="multiply", p=97, frac_train=0.5, operator_token=True, exclude_b_zero=True)
    assert fam.shapes(cfg) == (99, 97, 4)
    assert fam.problems(cfg) == []
    built = fam.build(cfg, data_seed=3)
    assert (built.d_vocab, built.d_vocab_out, built.seq_len) == fam.shapes(cfg)
    tiny = ModularTaskConfig(name="add", p=2, frac_train=0.5, exclude_b_zero=True)  # 2 pairs: 1 / 1
    assert any("at least" in msg for msg in fam.problems(tiny))


def test_int_add_notebook_split_is_the_notebooks() -> None:
    """Seed notebook 001 splits with torch.manual_seed(598); randperm(100), the first 72 for
    training: the int_add task with data_seed 598 and frac_train 0.72 holds the same pairs."""
    torch.manual_seed(598)
    notebook_train = torch.randperm(10 * 10)[: int(10 * 10 * 0.72)]
    task = Task("int_add", 10, 0.72, 598)
    assert torch.equal(task.split[0], notebook_train.sort().values)


def test_fast_path_reads_the_last_of_four_positions() -> None:
    from groktransfer.model.transformer import HookedGrokTransformer, TransformerConfig

    task = Task("multiply", 13, 0.5, 0, operator_token=True, exclude_b_zero=True)
    cfg = TransformerConfig(d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=4, d_model=32, d_head=8, d_mlp=64)
    model = HookedGrokTransformer(cfg, seed=0)
    torch.testing.assert_close(model.forward_last(task.tokens), model(task.tokens)[:, -1], atol=1e-5, rtol=1e-5)

"""Transfer as an axis: start from any source epoch, task x task matrices, embedding-only transfer.

Known answers throughout: source runs and target runs are fabricated (tests/fixtures_rundirs.py)
with epochs-to-threshold chosen so each speed-up's CI lies above, below or across 1 by
construction; the checkpoint chosen for an epoch is compared with the file on disk; the
embedding map's gradient is compared with the chain rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY, compose_job, run_in
from fixtures_rundirs import write_source_run, write_transfer_run
from groktransfer.analysis.collect import collect_runs
from groktransfer.analysis.matrix import matrix_sections
from groktransfer.analysis.settings import to_settings
from groktransfer.analysis.starts import start_sections
from groktransfer.analysis.trajectory import trajectory_sections
from groktransfer.config.schema import OptimizerConfig
from groktransfer.model.transformer import TransformerConfig
from groktransfer.config.validate import ConfigError, validate_job_config
from groktransfer.model.embedding_map import MAP_KEYS, attach_embedding_map, transformer_lens_state
from groktransfer.model.transformer import HookedGrokTransformer
from groktransfer.runs.rundir import RunDir
from groktransfer.transfer.source_runs import SourceSelectionError, select_checkpoint, select_checkpoint_near_epoch
from groktransfer.training.optimizers import build_optimizer


# --------------------------------------------------------------------------- selection by epoch


@pytest.mark.parametrize(
    "requested, chosen",
    [(0, 0), (100, 100), (1500, 1500), (1549, 1500), (1550, 1500), (1551, 1600), (2500, 2500)],
)
def test_selection_by_epoch_picks_the_nearest_saved_checkpoint(tmp_path: Path, requested: int, chosen: int) -> None:
    run = RunDir(write_source_run(tmp_path / "source"))  # checkpoints every 100 epochs, 0..2500
    pick = select_checkpoint_near_epoch(run, requested, {})
    assert (pick.epoch, pick.requested_epoch, pick.path) == (chosen, requested, run.checkpoint_path(chosen))
    row = pd.read_csv(run.path / "measures.csv").set_index("epoch").loc[chosen]
    assert pick.measures["epoch"] == chosen
    assert pick.measures["restricted_loss"] == pytest.approx(row.restricted_loss)
    assert pick.measures["restricted_test_gap"] == pytest.approx(row.restricted_acc - row.test_acc)
    assert pick.as_record()["requested_epoch"] == requested


def test_an_epoch_beyond_the_source_run_is_refused_naming_its_epochs(tmp_path: Path) -> None:
    run = RunDir(write_source_run(tmp_path / "source"))
    with pytest.raises(SourceSelectionError, match=r"transfer.source.epoch=2501 is beyond the source run .*: it ended at "
                       r"epoch 2500 and saved checkpoints at epochs 0, 100, \.\.\., 2500 \(every 100\)"):  # fmt: skip
        select_checkpoint_near_epoch(run, 2501, {})


def test_a_refused_criterion_names_the_measure_that_failed(tmp_path: Path) -> None:
    run = RunDir(write_source_run(tmp_path / "source"))
    with pytest.raises(SourceSelectionError, match=r"max_n_key_freqs=1: n_key_freqs is 4"):
        select_checkpoint_near_epoch(run, 2000, {"max_n_key_freqs": 1})
    memorized = {"min_train_acc": 0.999, "min_test_acc": 0.0, "max_test_acc": 0.2, "held_for": 0}
    with pytest.raises(SourceSelectionError, match=r"failed a progress-measure limit .*max_restricted_test_gap=-0.5: restricted_test_gap is"):
        select_checkpoint(run, "memorized", {**memorized, "max_restricted_test_gap": -0.5})
    # a limit that only later checkpoints break: the last memorised checkpoint without key frequencies
    last_clean = select_checkpoint(run, "memorized", {**memorized, "max_n_key_freqs": 0, "pick": "last"})
    assert last_clean.epoch == 400 and last_clean.measures["n_key_freqs"] == 0


def test_checkpoint_job_starts_from_exactly_the_recorded_checkpoint(tmp_path: Path) -> None:
    """A real job: the chosen epoch is the nearest saved one, and the start *is* that file's weights."""
    from groktransfer.model.checkpoint import load_checkpoint
    from groktransfer.config.schema import TrainJobConfig, to_typed
    from groktransfer.config.validate import resolve_seeds
    from groktransfer.transfer.starting_point import build_starting_point
    from groktransfer.tasks.modular import Task
    from groktransfer.jobs.train_run_dir import resolved_model_config

    overrides = TINY + ["task=subtract", "transfer=checkpoint", "transfer.source.epoch=45", "transfer.source.max_epochs=60",
                        "transfer.source.source_seed=0", "train.max_epochs=20"]  # fmt: skip
    result = run_in(tmp_path, "job", overrides)
    record = json.loads((result.run_dir / "source.json").read_text())
    assert record["chosen"]["epoch"] == 40 and record["chosen"]["requested_epoch"] == 45
    assert {"restricted_loss", "test_acc", "n_key_freqs"} <= set(record["chosen"]["measures"])
    assert json.loads((result.run_dir / "status.json").read_text())["source"]["epoch"] == 40
    job = to_typed(TrainJobConfig, compose_job(overrides, root=tmp_path))
    seeds = resolve_seeds(job)
    model_cfg = resolved_model_config(job.model, Task.from_config(job.task, seeds.data_seed))
    start = build_starting_point(job, model_cfg, seeds, tmp_path / ".sources", lambda *_: pytest.fail("source retrained"))
    saved = load_checkpoint(Path(record["chosen"]["checkpoint"])).state_dict
    for name, tensor in start.model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)


def test_a_start_from_a_checkpoint_file_records_the_measures_a_cached_start_records(tmp_path: Path) -> None:
    """Known answer: the file *is* a cached source run's checkpoint, so the measures computed at the start
    must equal the ones the source run's trainer wrote for that epoch (same task, split, weights)."""
    from groktransfer.config.schema import TrainJobConfig, to_typed
    from groktransfer.config.validate import resolve_seeds
    from groktransfer.transfer.starting_point import build_starting_point
    from groktransfer.tasks.modular import Task
    from groktransfer.jobs.train_run_dir import resolved_model_config

    source = ["task=subtract", "transfer.source.max_epochs=60", "transfer.source.source_seed=0", "train.max_epochs=1"]
    cached = json.loads((run_in(tmp_path, "cached", TINY + source + ["transfer=checkpoint", "transfer.source.epoch=40"])
                         .run_dir / "source.json").read_text())["chosen"]  # fmt: skip
    assert cached["epoch"] == 40 and "restricted_loss" in cached["measures"]

    def file_start(extra: list[str]) -> dict:
        overrides = TINY + source + ["transfer=grokked", f"transfer.source.path={cached['checkpoint']}"] + extra
        job = to_typed(TrainJobConfig, compose_job(overrides, root=tmp_path))
        seeds = resolve_seeds(job)
        model_cfg = resolved_model_config(job.model, Task.from_config(job.task, seeds.data_seed))
        return build_starting_point(job, model_cfg, seeds, tmp_path / ".sources", lambda *_: pytest.fail("trained")).record

    record = file_start([])
    assert record["measured_on"] == {"name": "add", "p": 23, "frac_train": 0.6, "data_seed": 0}
    assert set(record["measures"]) == set(cached["measures"])
    for key, value in cached["measures"].items():
        assert record["measures"][key] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-6, abs=1e-9)), key
    # another split of the same task: same weights, so the same weight measures, other train/test accuracies
    other = file_start(["transfer.source.source_seed=1"])["measures"]
    assert other["gini_W_E"] == pytest.approx(cached["measures"]["gini_W_E"]) and other["epoch"] == 40
    assert (other["train_acc"], other["test_acc"]) != (cached["measures"]["train_acc"], cached["measures"]["test_acc"])
    # a task the file's model cannot read: not measured, and the record says why
    refused = file_start(["transfer.source.p=29"])
    assert refused["measures"] == {} and "does not read" in refused["measures_note"]


def test_checkpoint_condition_needs_an_epoch() -> None:
    with pytest.raises(ConfigError, match="transfer.source.epoch"):
        validate_job_config(compose_job(TINY + ["transfer=checkpoint", "transfer.source.epoch=null"]))


# --------------------------------------------------------------------------- embedding map


def _small_model(d_model: int = 32) -> HookedGrokTransformer:
    cfg = TransformerConfig(d_model=d_model, d_head=8, d_mlp=64, d_vocab=12, d_vocab_out=11)
    return HookedGrokTransformer(cfg, seed=0)


def test_embedding_map_shapes_gradient_and_checkpoint_state() -> None:
    model = _small_model(d_model=32)
    W_source = torch.randn(12, 16, generator=torch.Generator().manual_seed(3))  # a narrower source
    mapped = attach_embedding_map(model, W_source, seed=1)
    assert mapped.W_map.shape == (16, 32) and model.embed.W_E.shape == (12, 32)
    torch.testing.assert_close(model.embed.W_E, W_source @ mapped.W_map)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "embed.W_map" in names and not any(n in names for n in ("embed.W_E", "embed.W_source"))
    opt_params = {id(p) for g in build_optimizer(model, OptimizerConfig()).param_groups for p in g["params"]}
    assert id(mapped.W_map) in opt_params

    a, b = torch.arange(11).repeat_interleave(11), torch.arange(11).repeat(11)
    tokens = torch.stack([a, b, torch.full_like(a, 11)], dim=1)  # [batch, pos]
    labels = (a + b) % 11
    loss = torch.nn.functional.cross_entropy(model.forward_last(tokens), labels)
    loss.backward()
    # chain rule: dL/dW_map = W_source^T dL/dW_E, with dL/dW_E from a model holding W_E as a leaf
    plain = _small_model(d_model=32)
    plain.load_state_dict(transformer_lens_state(model), strict=True)
    torch.nn.functional.cross_entropy(plain.forward_last(tokens), labels).backward()
    torch.testing.assert_close(mapped.W_map.grad, W_source.T @ plain.embed.W_E.grad)
    assert mapped.W_map.grad.abs().sum() > 0
    torch.testing.assert_close(model.forward_last(tokens), model(tokens)[:, -1])  # fast path = full path

    state = model.state_dict()
    assert set(MAP_KEYS) <= set(state) and "embed.W_E" in state  # measures read the composed W_E
    assert not set(MAP_KEYS) & set(transformer_lens_state(model))
    again = _small_model(d_model=32)
    attach_embedding_map(again, torch.zeros(12, 16), seed=9)
    again.load_state_dict(state, strict=True)  # resume: the map comes back, W_E is derived
    torch.testing.assert_close(again.embed.W_map, mapped.W_map)
    torch.testing.assert_close(again.embed.W_E, model.embed.W_E)


def test_embedding_map_refuses_another_vocabulary() -> None:
    with pytest.raises(ValueError, match="same p"):
        attach_embedding_map(_small_model(), torch.zeros(13, 16), seed=0)


def test_embedding_condition_job_from_a_narrower_source(tmp_path: Path) -> None:
    from groktransfer.model.checkpoint import load_checkpoint

    overrides = TINY + [
        "task=subtract", "transfer=embedding", "transfer.source.model.d_model=32", "transfer.source.max_epochs=40",
        "transfer.embedding.min_train_acc=0", "transfer.embedding.min_test_acc=0", "transfer.embedding.held_for=0",
        "transfer.source.source_seed=0", "train.max_epochs=20",
    ]  # fmt: skip
    result = run_in(tmp_path, "job", overrides)
    record = json.loads((result.run_dir / "source.json").read_text())
    assert record["embed_map"] and record["plan"]["copied"] == ["embed.W_E"]
    assert any("@ W_map (32, 64)" in note for note in record["plan"]["notes"])
    final = load_checkpoint(result.run_dir / "checkpoints" / "final.pt")
    assert tuple(final.state_dict["embed.W_E"].shape) == (24, 64) and not set(MAP_KEYS) & set(final.state_dict)
    final.build_model()  # loads strictly into a plain model: TransformerLens names and shapes only
    with pytest.raises(ConfigError, match=r"transfer copies component 'attn' but the source and target models differ"):
        validate_job_config(compose_job(overrides + ["transfer.components.attn=copy"]))


# --------------------------------------------------------------------------- analyses from hand-made run dirs

RANDOM_999 = {0: 1000, 1: 1100, 2: 1200}
# source epoch -> epochs to 0.999 per seed; known verdicts against RANDOM_999 (median 1100)
TRAJECTORY_999 = {
    100: {0: 2000, 1: 2100, 2: 2200},  # ratio 0.52, whole CI below 1 (slower)
    1000: {0: 900, 1: 1100, 2: 1300},  # ratio 1.0, CI across 1
    2000: {0: 100, 1: 110, 2: 120},  # ratio 10, whole CI above 1 (first faster)
    2500: {0: 50, 1: 60, 2: None},  # one censored at 3000, median 60 still exact
}


def _trajectory_sweep(tmp_path: Path) -> tuple[Path, Path]:
    sweep = tmp_path / "sweep"
    source = write_source_run(tmp_path / "source", memorized_at=100, grokked_at=2000, last=2500)
    for seed, reached in RANDOM_999.items():
        write_transfer_run(sweep / f"random_s{seed}", condition="random", seed=seed, reached_999=reached, run_id=f"random-s{seed}")
        # the copy a sweep makes when the epoch axis repeats a random job: reused, counted once
        write_transfer_run(sweep / f"random_copy_s{seed}", condition="random", seed=seed, reached_999=reached,
                           run_id=f"random-s{seed}", reused_from=str(sweep / f"random_s{seed}"))  # fmt: skip
    for epoch, by_seed in TRAJECTORY_999.items():
        for seed, reached in by_seed.items():
            write_transfer_run(sweep / f"ckpt_e{epoch}_s{seed}", condition="checkpoint", seed=seed, reached_999=reached,
                               source_epoch=epoch, source_run_dir=source)  # fmt: skip
    return sweep, source


def test_trajectory_table_figure_and_sentence_from_known_runs(tmp_path: Path) -> None:
    sweep, _ = _trajectory_sweep(tmp_path)
    runs = collect_runs([sweep])
    assert {r.condition for r in runs} == {"random", "checkpoint@100", "checkpoint@1000", "checkpoint@2000", "checkpoint@2500"}
    out = tmp_path / "out"
    out.mkdir()
    [section] = trajectory_sections(runs, out, to_settings(None))
    table = pd.read_csv(out / "trajectory.csv")
    t = table[np.isclose(table.threshold, 0.999)].set_index("source_epoch")
    assert (t.n_baseline == 3).all() and (t.median_baseline == 1100).all()
    assert t.loc[100, "ratio"] == pytest.approx(1100 / 2100) and t.loc[100, "excludes_one"] == -1
    assert t.loc[1000, "ratio"] == pytest.approx(1.0) and t.loc[1000, "excludes_one"] == 0
    assert t.loc[2000, "ratio"] == pytest.approx(10.0) and t.loc[2000, "excludes_one"] == 1
    assert t.loc[2500, "n_censored"] == 1 and t.loc[2500, "median"] == 60 and not t.loc[2500, "median_lower_bound"]
    assert "CI first excludes 1 at source epoch 2000" in section.text
    assert "wholly below 1 (slower than random) first at source epoch 100" in section.text
    assert "memorized checkpoint at epoch 100" in section.text and "grokked checkpoint at epoch 2000" in section.text
    assert (out / "trajectory.png").stat().st_size > 10_000


MATRIX_999 = {  # (source, target, condition) -> epochs per seed; random: add 1000, subtract 2000
    ("add", "add", "grokked"): [100, 100, 100],
    ("add", "subtract", "grokked"): [500, 500, 500],
    ("subtract", "add", "grokked"): [250, 250, 250],
    ("subtract", "subtract", "grokked"): [200, 200, 200],
    ("add", "add", "memorized"): [2000, 2000, 2000],
    ("add", "subtract", "memorized"): [None, None, None],  # all censored at 3000
    ("subtract", "add", "memorized"): [1000, 1000, 1000],
    ("subtract", "subtract", "memorized"): [1000, 1000, 1000],
}


def test_matrix_table_and_heatmap_from_known_runs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for source_task in ("add", "subtract"):  # random jobs once per source task, as the sweep lays them out
        for target, reached in (("add", 1000), ("subtract", 2000)):
            for seed in range(3):
                name = f"{source_task}_{target}_random_s{seed}"
                reuse = str(sweep / f"add_{target}_random_s{seed}") if source_task == "subtract" else None
                write_transfer_run(sweep / name, condition="random", seed=seed, task=target, source_task=source_task,
                                   reached_999=reached, run_id=f"{target}-random-s{seed}", reused_from=reuse)  # fmt: skip
    for (source_task, target, cond), values in MATRIX_999.items():
        for seed, reached in enumerate(values):
            write_transfer_run(sweep / f"{source_task}_{target}_{cond}_s{seed}", condition=cond, seed=seed,
                               task=target, source_task=source_task, reached_999=reached, source_epoch=100)  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    [section] = matrix_sections(collect_runs([sweep]), out, to_settings(None))
    table = pd.read_csv(out / "matrix.csv")
    t = table[np.isclose(table.threshold, 0.999)].set_index(["source_task", "target_task", "condition"])
    assert len(t) == 8 and (t.n_baseline == 3).all()
    expected = {("add", "add", "grokked"): 10, ("add", "subtract", "grokked"): 4, ("subtract", "add", "grokked"): 4,
                ("subtract", "subtract", "grokked"): 10, ("add", "add", "memorized"): 0.5,
                ("add", "subtract", "memorized"): 2000 / 3000, ("subtract", "add", "memorized"): 1,
                ("subtract", "subtract", "memorized"): 2}  # fmt: skip
    for key, ratio in expected.items():
        assert t.loc[key, "ratio"] == pytest.approx(ratio), key
    censored = t.loc[("add", "subtract", "memorized")]
    assert censored.n_censored == 3 and censored.bound == "upper bound"
    assert "≤ 0.67×" in section.tables[0].frame.to_string()
    assert (out / "matrix_speedup.png").stat().st_size > 10_000


def test_a_matrix_cell_whose_runs_start_at_the_threshold_says_so() -> None:
    from groktransfer.analysis.matrix import _cell_text

    solved = pd.Series({"ratio": float("inf"), "ci_low": float("inf"), "ci_high": float("inf"), "bound": "exact",
                        "median": 0.0, "n_censored": 0, "n_baseline_censored": 0})  # fmt: skip
    assert _cell_text(solved) == "at threshold\nfrom the start"
    measured = solved.copy()
    measured.update({"ratio": 2.0, "ci_low": 1.5, "ci_high": 3.0, "median": 500.0})
    assert _cell_text(measured) == "2×\n[1.5, 3]"


def test_starts_section_flags_circuit_formation_and_mixed_optimizers(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for seed in range(2):
        write_transfer_run(sweep / f"random_s{seed}", condition="random", seed=seed, reached_999=1000)
        write_transfer_run(sweep / f"mem_s{seed}", condition="memorized", seed=seed, reached_999=900, source_epoch=700,
                           start_measures={"test_acc": 0.19, "restricted_acc": 0.45, "restricted_test_gap": 0.26,
                                           "n_key_freqs": 2, "key_freqs": "4 20"})  # fmt: skip
        write_transfer_run(sweep / f"grok_s{seed}", condition="grokked", seed=seed, reached_999=300, source_epoch=3900,
                           lr=3e-3, start_measures={"test_acc": 1.0, "restricted_test_gap": 0.0, "n_key_freqs": 3})  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    fair, starts = start_sections(collect_runs([sweep]), out, to_settings(None))
    assert "**Warning:** `grokked` on `subtract` was trained with (lr, weight decay) [(0.003, 1.0)]" in fair.text
    assert "memorized" not in fair.text.split("Warning")[-1]  # the memorized runs match the baseline
    assert "`memorized` start at source epoch 700 (add) shows circuit formation under way" in starts.text
    frame = pd.read_csv(out / "starts.csv")
    assert frame.set_index("condition").loc["memorized", "n runs"] == 2


def test_a_single_run_on_either_side_is_never_judged_to_exclude_one(tmp_path: Path) -> None:
    from groktransfer.analysis.groups import compare_groups
    from groktransfer.analysis.settings import BootstrapSettings

    runs = []
    for name, cond, reached in (("r0", "random", 1000), ("r1", "random", 1100), ("c0", "grokked", 100)):
        write_transfer_run(tmp_path / name, condition=cond, seed=int(name[1]), reached_999=reached, source_epoch=5)
    runs = collect_runs([tmp_path])
    row = compare_groups([r for r in runs if r.condition == "random"], [r for r in runs if r.condition == "grokked"],
                         0.999, "grokked", BootstrapSettings())  # fmt: skip
    assert row["ratio"] == pytest.approx(10.5) and row["ci_low"] > 1 and row["excludes_one"] == 0

"""The interpretability toolkit where a user meets it: the single-checkpoint command
(all three file formats) and the sweep report's per-task-family section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from groktransfer.analysis.circuits import analyze_checkpoint
from groktransfer.analysis.collect import collect_runs
from groktransfer.analysis.interp_section import interp_sections, interpret_runs, parallel_workers
from groktransfer.analysis.settings import to_settings
from groktransfer.model.checkpoint import load_checkpoint
from groktransfer.tasks.modular import Task
from test_circuits import CFG, P, make_circuit_sweep, single_frequency_model

REPO = Path(__file__).resolve().parents[1]
FAST = {"dpi": 40, "interp": {"probe_hooks": ["blocks.{L}.hook_resid_post"], "head_sites": ["z", "v"]}}


def test_bare_transformer_lens_state_dict_loads_and_is_analysed(tmp_path: Path) -> None:
    model = single_frequency_model(3, n_dead=2)
    path = tmp_path / "tl_state_dict.pt"
    torch.save(model.state_dict(), path)
    ckpt = load_checkpoint(path)
    assert ckpt.source_format == "transformer_lens" and ckpt.model_config.d_mlp == CFG.d_mlp
    tokens = Task("add", P, 0.3, 0).tokens
    with torch.no_grad():
        torch.testing.assert_close(ckpt.build_model()(tokens), model(tokens))
    res = analyze_checkpoint(path, "add", out_dir=tmp_path / "out", dpi=40, interp=to_settings({"analysis": FAST}).analysis.interp)
    interp = res["summary"]["interp"]
    assert interp["key_freqs"] == [3]
    # head 0 carries everything into the MLP; heads 1-3 are zero: ablating them changes nothing
    assert interp["scalars"]["head_mean_z_L0H1_d_loss[=]"] == pytest.approx(0.0, abs=1e-9)
    assert abs(interp["scalars"]["head_mean_z_L0H0_d_loss[=]"]) > 1e-3
    assert interp["scalars"]["dla_completeness_error"] < 1e-4
    # every live neuron is at frequency 3: ablating that cluster leaves the MLP constant
    assert "cluster_ablated_acc[freq 3]" in interp["scalars"]
    for name in ("head_ablation", "dla", "embedding", "spectra", "probes", "neurons", "attention", "failures"):
        assert (tmp_path / "out" / f"interp_{name}.png").is_file(), name
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "## Interpretability" in text and "### Direct logit attribution" in text and "bare TransformerLens" in text


def test_interp_can_be_switched_off(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save(single_frequency_model(2).state_dict(), path)
    res = analyze_checkpoint(path, "add", out_dir=tmp_path / "out", dpi=40,
                             interp=to_settings({"analysis": {"interp": {"enabled": False}}}).analysis.interp)  # fmt: skip
    assert res["summary"]["interp"] is None and not list((tmp_path / "out").glob("interp_*"))


def test_unknown_interp_key_fails_at_compose_time(tmp_path: Path) -> None:
    """analysis.interp.* is part of the schema: a misspelt key is exit 2 before anything runs."""
    path = tmp_path / "c.pt"
    torch.save(single_frequency_model(2).state_dict(), path)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "analyze.py"), f"checkpoint={path}", "checkpoint_task=add",
                           "analysis.interp.probez=false"], capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode != 0 and "probez" in proc.stderr
    assert not (tmp_path / "c_circuits").exists()


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory: pytest.TempPathFactory):
    return collect_runs([make_circuit_sweep(tmp_path_factory.mktemp("interp"), p=P, n_seeds=2)["sweep"]])


@pytest.fixture(scope="module")
def sweep_sections(sweep_runs, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("analysis")
    return out, interp_sections(sweep_runs, out, to_settings({"analysis": FAST}))


def test_runs_interpreted_side_by_side_give_the_numbers_of_one_at_a_time(sweep_runs) -> None:
    """Parallel runs (one torch thread each) change the wall time, never a number or the order."""
    settings = {n: to_settings({"analysis": {**FAST, "interp": {**FAST["interp"], "parallel_runs": n}}}).analysis.interp for n in (1, 3)}
    (serial, skipped_serial), (parallel, skipped_parallel) = (interpret_runs(sweep_runs, settings[n]) for n in (1, 3))
    assert len(serial) > 100 and len(skipped_serial) == 2
    pd.testing.assert_frame_equal(serial, parallel, check_exact=True)
    assert skipped_serial == skipped_parallel
    assert torch.get_num_threads() >= 1 and parallel_workers(3, 8) == 3 and parallel_workers(5, 2) == 2
    assert parallel_workers(0, 100, threads=1) >= 1 and parallel_workers(0, 100, threads=10**6) == 1


def test_sweep_section_per_task_family_with_per_seed_numbers(sweep_sections) -> None:
    out, sections = sweep_sections
    assert [s.title for s in sections] == ["Interpretability: subtract"]
    long = pd.read_csv(out / "interp" / "interp_runs.csv")
    assert sorted(set(zip(long.condition, long.seed))) == [("grokked", 0), ("grokked", 1), ("memorized", 0),
                                                           ("memorized", 1), ("random", 0), ("random", 1)]  # fmt: skip
    agg = pd.read_csv(out / "interp" / "interp_summary.csv")
    # the aggregate is the median / min / max over seeds of the per-run numbers
    m = "head_mean_z_L0H0_d_loss[=]"
    per_seed = long[(long.measure == m) & (long.condition == "memorized")].value
    row = agg[(agg.measure == m) & (agg.condition == "memorized")].iloc[0]
    assert row["median"] == pytest.approx(per_seed.median()) and row["n"] == 2
    assert row["min"] == pytest.approx(per_seed.min()) and row["max"] == pytest.approx(per_seed.max())
    # single-frequency models: heads 1-3 are zero, so ablating them does exactly nothing
    zero = agg[(agg.measure == "head_mean_z_L0H2_d_loss[=]") & (agg.condition == "memorized")].iloc[0]
    assert zero["max"] == pytest.approx(0.0, abs=1e-9)
    titles = " ".join(t.caption for t in sections[0].tables)
    assert "Head ablation" in titles and "Direct logit attribution" in titles and "Ridge probes" in titles
    assert "Runs not analysed" in titles  # the failed run and the run without final.pt
    assert all(f.path.is_file() for f in sections[0].figures) and len(sections[0].figures) == 2
    assert "memorized s0: [2]" in sections[0].text  # key frequencies per run

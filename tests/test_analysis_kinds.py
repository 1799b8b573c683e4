"""The report of three kinds of sweep shows what applies to their runs, and only that.

A quickstart-like modular sweep (the transformer on a−b mod p), a sweep of the S5 example
plugin (the transformer on composition in S4: operands and an answer at '=', no cyclic
Fourier basis) and a sweep of the parity example plugin (a plain MLP on sparse parity: no
operands, no '=', no attention, no Fourier basis). Run directories are made by hand
(``fixtures_rundirs.write_model_run``) with untrained models, so each report takes seconds;
the plugins are loaded from ``examples/`` when they are not installed.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fixtures_rundirs import write_model_run
from groktransfer.analysis import run_analysis
from groktransfer.analysis.curves import load_tables, measure_columns
from groktransfer.analysis.settings import DEFAULT_MEASURES

REPO = Path(__file__).resolve().parents[1]
FAST = {
    "analysis": {
        "bootstrap": {"n_resamples": 50},
        "dpi": 30,
        "interp": {"head_sites": ["z"], "probe_hooks": ["blocks.{L}.hook_resid_post"], "pc_ablation": [1]},
    }
}
CONDITIONS = (("grokked", 100), ("memorized", 250), ("random", 300))


def _plugin(module: str, folder: str):
    """The example plugin's module, imported from ``examples/`` when it is not installed (importing registers it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        sys.path.insert(0, str(REPO / "examples" / folder / "src"))
        return importlib.import_module(module)


def _headings(out: Path) -> list[str]:
    return [line[3:] for line in (out / "report.md").read_text().splitlines() if line.startswith("## ")]


def _sweep(root: Path, task: dict, make_model, measures, start_measures: dict, seeds: int = 2) -> Path:
    sweep = root / "sweep"
    for job, (condition, reached) in enumerate(CONDITIONS):
        for seed in range(seeds):
            write_model_run(
                sweep / f"{job * seeds + seed}_{condition}_s{seed}",
                condition=condition,
                seed=seed,
                model=make_model(seed),
                task=task,
                reached_999=reached + 20 * seed,
                measures=measures(seed),
                start_measures=start_measures if condition != "random" else None,
            )
    return sweep


def _base_measures(seed: int) -> pd.DataFrame:
    epochs = np.arange(0, 401, 100)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": 0.1,
            "test_loss": 0.2,
            "train_acc": 1.0,
            "test_acc": 0.9,
            "weight_norm_total": 900.0 - epochs - seed,
        }
    )


# --------------------------------------------------------------------------- the three sweeps
@pytest.fixture(scope="module")
def modular(tmp_path_factory: pytest.TempPathFactory):
    from groktransfer.model.transformer import HookedGrokTransformer, TransformerConfig

    p = 11
    cfg = TransformerConfig(n_heads=2, d_model=16, d_head=8, d_mlp=24, d_vocab=p + 1, d_vocab_out=p)

    def measures(seed: int) -> pd.DataFrame:
        m = _base_measures(seed)
        return m.assign(
            restricted_loss=np.linspace(2, 0.1, len(m)),
            excluded_loss=np.linspace(0.1, 3, len(m)),
            restricted_acc=0.5,
            n_key_freqs=2,
            key_freqs="3 5",
            gini_W_E=0.3,
            gini_W_L=0.4,
        )

    start = {
        "test_acc": 0.2,
        "restricted_loss": 1.5,
        "restricted_acc": 0.45,
        "excluded_loss": 0.2,
        "n_key_freqs": 2,
        "key_freqs": "3 5",
        "restricted_test_gap": 0.25,
        "weight_norm_total": 800.0,
    }
    task = {"name": "subtract", "p": p, "frac_train": 0.5, "data_seed": None}
    sweep = _sweep(
        tmp_path_factory.mktemp("modular"), task, lambda s: HookedGrokTransformer(cfg, seed=s), measures, start
    )
    return run_analysis(sweep, None, FAST)


@pytest.fixture(scope="module")
def s5(tmp_path_factory: pytest.TempPathFactory):
    _plugin("groktransfer_s5.plugin", "s5_plugin")
    from groktransfer.model.transformer import HookedGrokTransformer, TransformerConfig

    cfg = TransformerConfig(n_heads=2, d_model=16, d_head=8, d_mlp=24, d_vocab=25, d_vocab_out=24)

    def measures(seed: int) -> pd.DataFrame:
        return _base_measures(seed).assign(sign_rep_r2=0.1 + 0.01 * seed, perm_rep_r2=0.3, fourier_status="absent")

    start = {"test_acc": 0.06, "sign_rep_r2": 0.8, "perm_rep_r2": 0.9, "weight_norm_total": 700.0}
    task = {"name": "s4_compose_rev", "frac_train": 0.8, "data_seed": None}
    sweep = _sweep(tmp_path_factory.mktemp("s5"), task, lambda s: HookedGrokTransformer(cfg, seed=s), measures, start)
    return run_analysis(sweep, None, FAST)


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory):
    _plugin("groktransfer_parity.plugin", "parity_plugin")
    from groktransfer_parity.model import ParityMLP, ParityMLPConfig

    cfg = ParityMLPConfig(n_inputs=8, d_hidden=32, d_vocab_out=2)

    def measures(seed: int) -> pd.DataFrame:
        return _base_measures(seed).assign(
            subset_weight_frac=np.linspace(0.3, 0.9, 5), subset_in_top_k=[0, 0, 1, 1, 1], fourier_status="absent"
        )

    start = {"test_acc": 0.5, "subset_weight_frac": 0.7, "subset_in_top_k": 1, "weight_norm_total": 300.0}
    task = {"name": "sparse_parity", "n_bits": 8, "subset": [0, 1, 2], "n_train": 96, "n_test": 96, "data_seed": None}
    sweep = _sweep(tmp_path_factory.mktemp("parity"), task, lambda s: ParityMLP(cfg, seed=s), measures, start)
    return run_analysis(sweep, None, FAST)


def _interp(result) -> pd.DataFrame:
    return pd.read_csv(result.out_dir / "interp" / "interp_runs.csv")


# --------------------------------------------------------------------------- what each report shows
def test_every_report_opens_with_the_answer_and_closes_with_the_sweep(modular, s5, parity) -> None:
    for result in (modular, s5, parity):
        headings = _headings(result.out_dir)
        assert headings[:3] == ["Answer", "Speed-up over random", "Epochs to threshold"], headings
        assert headings[-4:] == ["Failed / incomplete jobs", "Statistical method", "Sweep", "Files"], headings
        assert "Training curves and progress measures" in headings and "Transfer starts" in headings
        assert not any(h.endswith("(failed)") for h in headings), headings
        assert "Damaged or unreadable files" not in headings


def test_the_modular_report_has_the_circuit_and_the_fourier_readings(modular) -> None:
    headings = _headings(modular.out_dir)
    assert "Circuits: what the source and each condition learned" in headings
    assert "Interpretability: subtract" in headings and "Digit measures" not in headings
    long = _interp(modular)
    assert {"a", "b", "answer"} <= set(long.loc[long.quantity == "probe", "target"])
    assert set(long.loc[long.quantity == "head_d_loss", "answer"]) == {"="}
    assert {"embed_fourier_gini", "n_key_freqs", "embed_pc_explained"} <= set(long.quantity)
    starts = pd.read_csv(modular.out_dir / "starts.csv")
    assert {"restricted loss", "key freqs", "restricted−test gap", "circuit forming"} <= set(starts.columns)
    report = (modular.out_dir / "report.md").read_text()
    assert "shows circuit formation under way" in report  # the memorized start's gap is 0.25 > 0


def test_the_s5_report_reads_operands_but_no_fourier_structure(s5) -> None:
    headings = _headings(s5.out_dir)
    assert "Interpretability: s4_compose_rev" in headings
    assert not any(h.startswith("Circuits") for h in headings)
    sweep_text = (s5.out_dir / "report.md").read_text().split("## Sweep", 1)[1]
    assert "- Circuits: no run's task family (symmetric) has the modular Fourier circuit" in sweep_text
    long = _interp(s5)
    assert set(long.loc[long.quantity == "probe", "target"]) == {"a", "b", "answer"}  # [a, b, =]: the pair layout
    assert set(long.loc[long.quantity == "head_d_loss", "answer"]) == {"="}
    assert not {"embed_fourier_gini", "embed_top_freq", "n_key_freqs", "cluster_ablated_acc"} & set(long.quantity)
    assert not list((s5.out_dir / "interp").glob("*fourier*"))
    starts = pd.read_csv(s5.out_dir / "starts.csv")
    assert {"sign_rep_r2", "perm_rep_r2"} <= set(starts.columns)
    assert not {"restricted loss", "excluded loss", "key freqs", "circuit forming"} & set(starts.columns)
    assert "circuit formation" not in (s5.out_dir / "report.md").read_text()


def test_the_parity_report_shows_only_what_a_plain_mlp_on_bits_offers(parity) -> None:
    headings = _headings(parity.out_dir)
    assert "Interpretability: sparse_parity" in headings
    assert not any(h.startswith("Circuits") for h in headings)
    long = _interp(parity)
    measured = set(long.quantity.dropna())
    assert measured == {"clean_acc", "clean_loss", "eff_rank_ratio", "probe"}, measured
    assert set(long.loc[long.quantity == "probe", "target"]) == {"answer"}  # no operand probes
    assert set(long.loc[long.quantity == "clean_acc", "answer"]) == {"last"}  # no '=' rows
    assert set(long.loc[long.quantity == "eff_rank_ratio", "weight"]) == {"hidden.W", "readout.W"}
    assert long.measure.str.len().min() > 0 and not long.measure.str.contains(r"\[=\]").any()
    section = (
        (parity.out_dir / "report.md")
        .read_text()
        .split("## Interpretability: sparse_parity", 1)[1]
        .split("\n## ", 1)[0]
    )
    for absent in ("Head ablation", "Direct logit attribution", "fourier", "embed_"):
        assert absent not in section, absent
    starts = pd.read_csv(parity.out_dir / "starts.csv")
    assert {"subset_weight_frac", "subset_in_top_k", "weight_norm_total"} <= set(starts.columns)
    assert not {"restricted loss", "excluded loss", "key freqs", "circuit forming"} & set(starts.columns)
    assert "circuit formation" not in (parity.out_dir / "report.md").read_text()


def test_a_plugins_measures_are_drawn_in_the_default_progress_figure(s5, parity) -> None:
    for result, own in ((s5, {"sign_rep_r2", "perm_rep_r2"}), (parity, {"subset_weight_frac"})):
        tables = load_tables(result.runs, "measures.csv", ["completed"])
        drawn, left = measure_columns(tables, None, DEFAULT_MEASURES)
        assert drawn[0] == "weight_norm_total" and own <= set(drawn) and not left, drawn
        assert result.files["progress_measures"].is_file()


def test_the_command_line_writes_the_same_sections(parity, tmp_path: Path) -> None:
    """scripts/analyze.py and run_analysis() share the schema's sections: the same headings."""
    import subprocess
    from importlib.metadata import entry_points

    from conftest import PYTHON, script_env

    if "groktransfer_parity.plugin" not in {ep.value for ep in entry_points(group="groktransfer.plugins")}:
        pytest.skip("the parity plugin is not installed (pip install -e examples/parity_plugin; .ci/run installs it)")
    out = tmp_path / "cli"
    sweep = parity.sweep_dirs[0]
    proc = subprocess.run(
        [
            PYTHON,
            str(REPO / "scripts" / "analyze.py"),
            f"sweep_dir={sweep}",
            f"analysis.out_dir={out}",
            "analysis.bootstrap.n_resamples=50",
            "analysis.dpi=30",
            "analysis.interp.head_sites=[z]",
            "analysis.interp.pc_ablation=[1]",
        ],  # probe_hooks: no hook points in a plain MLP
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=script_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert _headings(out) == _headings(parity.out_dir)

"""Circuit analysis: known answers for the pure functions, a built model, and the report provider.

Nothing is trained: models get hand-built or random weights, run directories are
fabricated after docs/architecture.md (as in ``fixtures_rundirs``), so the known
answers are exact and the whole file runs in seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pandas as pd
import pytest
import torch

from fixtures_rundirs import write_status
from groktransfer.model.checkpoint import save_checkpoint
from groktransfer.model.transformer import TransformerConfig
from groktransfer.model.transformer import HookedGrokTransformer

P = 11
CFG = TransformerConfig(n_heads=4, d_model=32, d_head=8, d_mlp=48, d_vocab=P + 1, d_vocab_out=P)


# --------------------------------------------------------------------------- builders
def single_frequency_model(w: int, p: int = P, seed: int = 0, n_dead: int = 0, cfg: TransformerConfig = CFG) -> HookedGrokTransformer:
    """A model whose every live MLP neuron is an affine function of cos/sin(w·a) and
    cos/sin(w·b): all of its variance sits at frequency w.

    Embeddings carry (cos wt, sin wt) in dims 0-1 ('=' is zero); W_Q = W_K = 0 makes
    the last query attend 1/3 to each of a, b, =; head 0 copies dims 0-1 into dims 2-3;
    W_in reads only dims 2-3; a large b_in keeps every ReLU in its linear regime, so
    each neuron is cos(w a + φ) + cos(w b + φ) up to scale and offset. The first
    ``n_dead`` neurons get zero input weights and a negative bias: constant 0, dead.
    """
    model = HookedGrokTransformer(replace(cfg, d_vocab=p + 1, d_vocab_out=p), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(p, dtype=torch.float64)
    with torch.no_grad():
        for prm in model.parameters():
            prm.zero_()
        W_E = torch.zeros(p + 1, cfg.d_model)
        W_E[:p, 0] = torch.cos(2 * math.pi * w * t / p).float()
        W_E[:p, 1] = torch.sin(2 * math.pi * w * t / p).float()
        model.embed.W_E.copy_(W_E)
        attn = model.blocks[0].attn
        attn.W_V[0, 0, 0] = attn.W_V[0, 1, 1] = 1.0
        attn.W_O[0, 0, 2] = attn.W_O[0, 1, 3] = 1.0
        mlp = model.blocks[0].mlp
        phase = torch.rand(cfg.d_mlp, generator=gen) * 2 * math.pi
        mlp.W_in[2] = torch.cos(phase)
        mlp.W_in[3] = torch.sin(phase)
        mlp.b_in.fill_(3.0)
        mlp.W_in[:, :n_dead] = 0.0
        mlp.b_in[:n_dead] = -1.0
        mlp.W_out.copy_(torch.randn(cfg.d_mlp, cfg.d_model, generator=gen) / cfg.d_mlp)
        model.unembed.W_U.copy_(torch.randn(cfg.d_model, p, generator=gen))
    return model


def perturbed(model: HookedGrokTransformer, scale: float, seed: int) -> HookedGrokTransformer:
    """A copy of ``model`` with small Gaussian noise on every weight (a 'trained a bit' stand-in)."""
    out = HookedGrokTransformer(model.config, seed=0)
    out.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in out.parameters():
            prm.add_(scale * torch.randn(prm.shape, generator=gen))
    return out


def _config_yaml(condition: str, seed: int, p: int, task: str = "subtract") -> str:
    return (
        f"experiment_name: circ\nseed: {seed}\n"
        f"task:\n  name: {task}\n  p: {p}\n  frac_train: 0.5\n  data_seed: null\n"
        f"model:\n  model_seed: null\n"
        f"transfer:\n  name: {condition}\n  source:\n    task: add\n    p: null\n    frac_train: 0.3\n    source_seed: 0\n"
        f"measures:\n  key_freq_threshold: 0.85\n"
        f"train:\n  max_epochs: 300\n"
    )


def write_run(sweep: Path, job: int, condition: str, seed: int, model: Optional[HookedGrokTransformer],
              p: int, source: Optional[Dict] = None, status: str = "completed") -> Path:
    """A fabricated run dir: status.json, config.yaml, source.json, checkpoints/final.pt."""
    run_dir = sweep / f"{job}_subtract_{condition}_s{seed}"
    write_status(run_dir, condition=condition, seed=seed, status=status, epoch=300, max_epochs=300,
                 thresholds={0.9: 200 if status == "completed" else None},
                 reason=None if status == "completed" else "RuntimeError: loss became NaN")  # fmt: skip
    (run_dir / "config.yaml").write_text(_config_yaml(condition, seed, p))
    st = json.loads((run_dir / "status.json").read_text())
    st.update(p=p, data_seed=seed, model_seed=seed, source_seed=0 if source else None)
    (run_dir / "status.json").write_text(json.dumps(st))
    if source is not None:
        (run_dir / "source.json").write_text(json.dumps(source))
    if model is not None:
        save_checkpoint(run_dir / "checkpoints" / "final.pt", model, epoch=300, metrics={})
    return run_dir


def make_circuit_sweep(root: Path, p: int = P, n_seeds: int = 2, cfg: TransformerConfig = CFG) -> Dict[str, object]:
    """Source run (a+b) with a memorised and a grokked checkpoint, and a−b targets:

    * grokked: s0 = exact copy of the grokked checkpoint, s1 = that copy slightly perturbed
      (both keep the source's frequency 3 and neuron lineage);
    * memorized: single-frequency models at w=2 (a different circuit, same lineage);
    * random: s0 at w=4 (independent), s1 random weights;
    * one failed run and one completed run without final.pt (both must be skipped).
    """
    src_dir = root / ".sources" / f"add_p{p}_s0_0123456789abcdef"
    shape = replace(cfg, d_vocab=p + 1, d_vocab_out=p)
    grokked = single_frequency_model(3, p, seed=0, n_dead=4, cfg=cfg)
    memorised = HookedGrokTransformer(shape, seed=0)
    ck_mem = save_checkpoint(src_dir / "checkpoints" / "epoch_000100.pt", memorised, epoch=100, metrics={})
    ck_grok = save_checkpoint(src_dir / "checkpoints" / "epoch_000300.pt", grokked, epoch=300, metrics={})
    save_checkpoint(src_dir / "checkpoints" / "final.pt", grokked, epoch=400, metrics={})
    spec = {"task": {"name": "add", "p": p, "frac_train": 0.3, "data_seed": 0}, "model_seed": 0}
    copied = [k for k in grokked.state_dict()]

    def source_json(cond: str, ck: Path, epoch: int) -> Dict:
        return {"condition": cond, "source_hash": "0123456789abcdef", "source_run_dir": str(src_dir), "spec": spec,
                "chosen": {"condition": cond, "epoch": epoch, "train_acc": 1.0, "test_acc": 1.0 if cond == "grokked" else 0.1,
                           "checkpoint": str(ck), "criteria": {}},
                "components": {c: "copy" for c in ("embed", "pos_embed", "attn", "mlp", "unembed")},
                "plan": {"copied": copied, "frozen": [], "reinitialised": [], "notes": []}}  # fmt: skip

    sweep = root / "sweep"
    job = 0
    for s in range(n_seeds):
        model = grokked if s == 0 else perturbed(grokked, 0.01, s)
        write_run(sweep, job, "grokked", s, model, p, source_json("grokked", ck_grok, 300)); job += 1  # noqa: E702
    for s in range(n_seeds):
        write_run(sweep, job, "memorized", s, single_frequency_model(2, p, seed=10 + s, cfg=cfg), p,
                  source_json("memorized", ck_mem, 100)); job += 1  # noqa: E702
    for s in range(n_seeds):
        model = single_frequency_model(4, p, seed=20 + s, cfg=cfg) if s == 0 else HookedGrokTransformer(shape, seed=s)
        write_run(sweep, job, "random", s, model, p); job += 1  # noqa: E702
    write_run(sweep, job, "random", n_seeds, None, p, status="failed"); job += 1  # noqa: E702
    write_run(sweep, job, "grokked", n_seeds, None, p, source_json("grokked", ck_grok, 300))
    return {"sweep": sweep, "source_dir": src_dir, "grokked": grokked, "ck_grok": ck_grok, "ck_mem": ck_mem}


def paper_format_file(model: HookedGrokTransformer, path: Path, fn_name: str = "add") -> Path:
    """Save ``model`` in the original paper's layout (W_E [d, v], W_O [d, h*e], W_in [m, d], ...,
    and p+1 outputs: a zero column for '=')."""
    sd = model.state_dict()
    h, d, e = sd["blocks.0.attn.W_Q"].shape
    p = model.config.d_vocab - 1
    W_U = torch.cat([sd["unembed.W_U"], torch.zeros(d, 1)], dim=1) if model.config.d_vocab_out == p else sd["unembed.W_U"]
    paper = {
        "embed.W_E": sd["embed.W_E"].T.contiguous(),
        "pos_embed.W_pos": sd["pos_embed.W_pos"],
        **{f"blocks.0.attn.{w}": sd[f"blocks.0.attn.{w}"].transpose(1, 2).contiguous() for w in ("W_Q", "W_K", "W_V")},
        "blocks.0.attn.W_O": sd["blocks.0.attn.W_O"].reshape(h * e, d).T.contiguous(),
        "blocks.0.attn.mask": torch.tril(torch.ones(3, 3)),
        "blocks.0.mlp.W_in": sd["blocks.0.mlp.W_in"].T.contiguous(),
        "blocks.0.mlp.b_in": sd["blocks.0.mlp.b_in"],
        "blocks.0.mlp.W_out": sd["blocks.0.mlp.W_out"].T.contiguous(),
        "blocks.0.mlp.b_out": sd["blocks.0.mlp.b_out"],
        "unembed.W_U": W_U,
    }  # fmt: skip
    config = {"p": p, "d_model": d, "num_heads": h, "d_head": e, "d_mlp": model.config.d_mlp, "n_ctx": 3,
              "num_layers": 1, "act_type": "ReLU", "fn_name": fn_name, "frac_train": 0.3, "seed": 0, "use_ln": False}
    torch.save({"model": paper, "config": config, "epoch": 1000}, path)
    return path


# --------------------------------------------------------------------------- imports under test
from groktransfer.analysis.settings import InterpSettings  # noqa: E402
from groktransfer.analysis.circuits import analyze_checkpoint, circuit_sections, compare_profiles  # noqa: E402
from groktransfer.interp.circuit.attention import mean_last_query_attention  # noqa: E402
from groktransfer.interp.circuit.fourier_logits import logit_spectrum  # noqa: E402
from groktransfer.interp.circuit.profile import profile_model  # noqa: E402
from groktransfer.interp.circuit.retention import accuracy_from_logits, last_logits  # noqa: E402
from groktransfer.interp.circuit.similarity import (  # noqa: E402
    histogram_intersection,
    jaccard,
    neurons_keeping_frequency,
    rank_correlation,
)
from groktransfer.analysis.collect import collect_runs  # noqa: E402
from groktransfer.analysis.settings import to_settings  # noqa: E402
from groktransfer.model.checkpoint import load_checkpoint  # noqa: E402
from groktransfer.measures.modular import compute_progress_measures  # noqa: E402
from groktransfer.tasks.modular import Task  # noqa: E402


# --------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("task_name", ["add", "subtract"])
def test_single_frequency_model_puts_every_live_neuron_at_that_frequency(task_name: str) -> None:
    """Built to be frequency 3: key freqs {3}, every live neuron at 3 with share ~1, the
    dead ones reported dead -- and the same reading for a+b and a−b (same neuron basis)."""
    prof = profile_model(single_frequency_model(3, n_dead=5), Task(task_name, P, 0.3, 0), "built")
    n = prof.neurons
    assert n is not None and prof.key_freqs == [3]
    assert n.n_dead == 5 and (n.freq[:5] == -1).all() and (n.frac[:5] == 0).all()
    assert (n.freq[5:] == 3).all() and n.frac[5:].min() > 0.999
    assert n.n_over(0.85) == n.n_over(0.5) == CFG.d_mlp - 5
    assert n.histogram().tolist() == [0, 0, CFG.d_mlp - 5, 0, 0]
    assert n.mass[2] == pytest.approx(1.0, abs=1e-6) and n.mass.sum() == pytest.approx(1.0, abs=1e-6)
    assert prof.summary()["neurons_dead"] == 5


def test_logit_spectrum_uses_the_target_tasks_own_directions() -> None:
    """Logits = 2.5 cos(w(a−b−c) + 0.4) are all frequency w in a−b directions, and nothing
    in a+b directions: the notebook's bug (a+b directions on a−b models) would see no circuit."""
    w, amp = 4, 2.5
    a, b = torch.arange(P).repeat_interleave(P), torch.arange(P).repeat(P)
    c = torch.arange(P)
    logits = amp * torch.cos(2 * math.pi * w * ((a - b)[:, None] - c[None, :]) / P + 0.4)
    model = single_frequency_model(w)
    params = model.state_dict()
    acts = torch.randn(P * P, CFG.d_mlp, generator=torch.Generator().manual_seed(0))
    own = logit_spectrum(compute_progress_measures(Task("subtract", P, 0.5, 0), logits, acts, params).fourier)
    assert own.frac[w - 1] == pytest.approx(1.0, abs=1e-9) and own.amplitude[w - 1] == pytest.approx(amp, rel=1e-6)
    assert own.residual_frac == pytest.approx(0.0, abs=1e-9) and own.top(1) == [w]
    assert "a−b" in own.directions
    wrong = logit_spectrum(compute_progress_measures(Task("add", P, 0.5, 0), logits, acts, params).fourier)
    assert wrong.frac.max() < 1e-9


def test_attention_means_sum_to_one_over_a_b_eq() -> None:
    pattern = torch.softmax(torch.randn(50, 4, 3, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    assert torch.allclose(mean_last_query_attention(pattern).sum(-1), torch.ones(4, dtype=torch.float64))
    random_model = HookedGrokTransformer(CFG, seed=3)
    prof = profile_model(random_model, Task("subtract", P, 0.3, 0), "random")
    assert prof.attention.shape == (1, 4, 3)
    np.testing.assert_allclose(prof.attention.sum(-1), 1.0, atol=1e-6)
    built = profile_model(single_frequency_model(2), Task("add", P, 0.3, 0), "built")  # W_Q = W_K = 0
    np.testing.assert_allclose(built.attention, 1 / 3, atol=1e-6)
    s = prof.summary()
    assert s["attn_to_a"] + s["attn_to_b"] + s["attn_to_="] == pytest.approx(1.0, abs=1e-6)
    from groktransfer.interp.circuit.attention import attention_asymmetry

    heads = np.array([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.1, 0.7, 0.2], [0.0, 0.0, 1.0]]])
    assert attention_asymmetry(heads) == pytest.approx((1.0 + 0.0 + 0.6 + 0.0) / 4)
    assert built.summary()["attn_ab_asymmetry"] == pytest.approx(0.0, abs=1e-6)


def test_similarity_functions_known_values() -> None:
    assert jaccard([1, 2], [2, 3]) == pytest.approx(1 / 3)
    assert jaccard([5], [5]) == 1.0 and jaccard([1], []) == 0.0 and math.isnan(jaccard([], []))
    assert histogram_intersection(np.array([2, 2, 0]), np.array([0, 1, 1])) == pytest.approx(0.5)
    assert histogram_intersection(np.array([3, 1]), np.array([6, 2])) == pytest.approx(1.0)
    assert math.isnan(histogram_intersection(np.zeros(3), np.ones(3)))
    ref_f, ref_frac = np.array([1, 2, 3, -1, 4]), np.array([0.9, 0.8, 0.3, 0.0, 0.6])
    other = np.array([1, 5, 3, 2, -1])  # keeps 1, loses 2, (3 not specialised), 4 died
    assert neurons_keeping_frequency(ref_f, ref_frac, other) == pytest.approx(1 / 3)
    x = np.array([0.1, 0.5, 0.3, 0.9])
    assert rank_correlation(x, x ** 2) == pytest.approx(1.0) and rank_correlation(x, -x) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation(x, np.ones(4)))


def test_a_copied_model_has_similarity_one_with_its_source(tmp_path: Path) -> None:
    source = HookedGrokTransformer(CFG, seed=5)
    with torch.no_grad():  # give it structure: half the neurons exactly at one frequency
        source.load_state_dict({**source.state_dict(), **{k: v for k, v in single_frequency_model(2).state_dict().items()
                                                          if k.startswith("embed") or k.startswith("blocks.0.attn")}})  # fmt: skip
    path = save_checkpoint(tmp_path / "copy.pt", source, epoch=1, metrics={})
    copy = load_checkpoint(path).build_model()
    task = Task("add", P, 0.3, 0)
    a = profile_model(source, task, "source", lineage=("seed", 5))
    b = profile_model(copy, Task("subtract", P, 0.3, 0), "copy", lineage=("seed", 5))
    sim = compare_profiles(a, b)
    assert a.key_freqs and sim.shared_lineage
    assert sim.jaccard == sim.hist_intersection == 1.0
    assert sim.mass_similarity == pytest.approx(1.0) and sim.neurons_kept == 1.0 and sim.frac_spearman == pytest.approx(1.0)
    independent = compare_profiles(a, profile_model(copy, task, "copy", lineage=("seed", 6)))
    assert independent.jaccard == 1.0 and not independent.shared_lineage
    assert math.isnan(independent.neurons_kept) and math.isnan(independent.frac_spearman)


def test_retention_of_the_source_on_its_own_task_equals_its_accuracy(tmp_path: Path) -> None:
    model = HookedGrokTransformer(CFG, seed=7)
    task = Task("add", P, 0.3, 0)
    prof = profile_model(model, task, "source")
    assert accuracy_from_logits(last_logits(model, task), task) == pytest.approx(prof.accuracy)
    with torch.no_grad():
        expected = float((model(task.tokens)[:, -1].argmax(-1) == task.labels).double().mean())
    assert prof.accuracy == pytest.approx(expected)
    paper = load_checkpoint(paper_format_file(model, tmp_path / "paper.pth")).build_model()  # p+1 outputs
    assert paper.config.d_vocab_out == P + 1
    assert accuracy_from_logits(last_logits(paper, task), task) == pytest.approx(prof.accuracy)


# --------------------------------------------------------------------------- the sweep provider
CIRCUIT_FILES = [
    "circuits_runs.csv", "circuits_sources.csv", "circuits_freqs.csv", "circuits_similarity.csv", "circuits_pairs.csv",
    "circuits_logit_spectrum.png", "circuits_neuron_freqs.png", "circuits_attention.png", "circuits_fingerprint.png",
    "circuits_similarity.png", "circuits_transfer.png",
]  # fmt: skip


@pytest.fixture(scope="module")
def circuit_sweep(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    return make_circuit_sweep(tmp_path_factory.mktemp("circ"), p=P, n_seeds=2)


@pytest.fixture(scope="module")
def provided(circuit_sweep: Dict[str, object], tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("analysis")
    runs = collect_runs([circuit_sweep["sweep"]])  # type: ignore[list-item]
    return out, circuit_sections(runs, out, to_settings({"analysis": {"dpi": 50}}))


def test_provider_writes_every_file_and_lists_skipped_runs(provided) -> None:
    out, sections = provided
    for name in CIRCUIT_FILES:
        path = out / "circuits" / name
        assert path.is_file() and path.stat().st_size > 0, name
    df = pd.read_csv(out / "circuits" / "circuits_runs.csv")
    assert len(df) == 8 and df.analysed.sum() == 6
    skipped = df[~df.analysed]
    assert set(skipped.skip_reason.str.contains("final.pt")) == {True, False}
    assert skipped.skip_reason.str.contains("failed").any()
    method = sections[-1]
    assert method.tables and len(method.tables[0].frame) == 2


def test_provider_known_answers_per_run(provided) -> None:
    out, _ = provided
    df = pd.read_csv(out / "circuits" / "circuits_runs.csv", dtype={"key_freqs": str}).query("analysed")
    runs = {(r.condition, int(r.seed)): r for r in df.itertuples()}
    src = pd.read_csv(out / "circuits" / "circuits_sources.csv", dtype={"key_freqs": str})
    ref = src[src.role == "reference"].iloc[0]
    assert "grokked ckpt" in ref.model and str(ref.key_freqs) == "3"
    g0 = runs[("grokked", 0)]  # exact copy of the grokked source checkpoint
    assert g0.lineage == "copied from source" and str(g0.key_freqs) == "3"
    assert g0.jaccard_to_source == g0.hist_intersection_to_source == g0.neurons_kept_from_source == 1.0
    assert g0.mass_similarity_to_source == pytest.approx(1.0) and g0.frac_spearman_to_source == pytest.approx(1.0)
    assert g0.retention_acc == pytest.approx(ref.accuracy_all_pairs)  # same weights, same task
    assert g0.retention_ceiling == pytest.approx(1 / P)  # a+b and a−b agree only where b = 0
    assert runs[("grokked", 1)].jaccard_to_source == 1.0 and runs[("grokked", 1)].neurons_kept_from_source == 1.0
    for s in (0, 1):
        m = runs[("memorized", s)]
        assert str(m.key_freqs) == "2" and m.jaccard_to_source == 0.0 and m.neurons_kept_from_source == 0.0
    assert runs[("random", 0)].lineage == "same init as source"  # model_seed 0 == source seed 0
    r1 = runs[("random", 1)]
    assert r1.lineage == "independent" and math.isnan(r1.neurons_kept_from_source) and math.isnan(r1.frac_spearman_to_source)
    assert 0.0 <= r1.retention_acc <= 1.0
    attn = df[["attn_to_a", "attn_to_b", "attn_to_="]].sum(axis=1)
    np.testing.assert_allclose(attn, 1.0, atol=1e-5)


def test_provider_similarity_matrix_cells(provided) -> None:
    out, _ = provided
    sim = pd.read_csv(out / "circuits" / "circuits_similarity.csv").set_index(["metric", "ref", "other"])
    assert sim.loc[("jaccard", "source", "grokked"), "mean"] == 1.0
    assert sim.loc[("jaccard", "grokked", "grokked"), "n"] == 2  # the two ordered pairs of different seeds
    assert sim.loc[("jaccard", "grokked", "memorized"), "mean"] == 0.0
    assert sim.loc[("neurons_kept", "random", "random"), "n"] == 0  # independent seeds: not defined


def test_provider_text_answers_the_four_questions_with_numbers(provided) -> None:
    _, sections = provided
    text = "\n".join(s.text for s in sections)
    for q in ("(1) What circuit the source learned", "(2) What each condition learned", "(3) How they differ",
              "(4) Does the grokked algorithm transfer?"):  # fmt: skip
        assert q in text
    assert "key frequencies **{3}**" in text
    for cond in ("grokked", "memorized", "random"):
        assert f"**{cond}** (2 seed(s)" in text
    assert "Jaccard grokked 1.00; memorized 0.00; random 0.00" in text
    assert "Verdict: the grokked algorithm's frequencies are reused" in text
    assert "only between models whose MLP started from the same weights" in text
    assert "a−b = a+(−b)" in text  # the add/subtract frequency correspondence is stated
    assert sum(len(s.figures) for s in sections) == 6


def test_provider_through_run_analysis_on_a_sweep_without_source(tmp_path: Path) -> None:
    """The spec string the lead puts in analysis.extra_sections works through the real job,
    and a sweep with no source (only random runs, one failed) is reported, not raised."""
    from groktransfer.analysis import run_analysis

    sweep = tmp_path / "sweep"
    write_run(sweep, 0, "random", 0, None, P, status="failed")
    write_run(sweep, 1, "random", 1, HookedGrokTransformer(CFG, seed=1), P)
    cfg = {"analysis": {"bootstrap": {"n_resamples": 50}, "dpi": 40,
                        "extra_sections": ["groktransfer.analysis.circuits:circuit_sections"]}}  # fmt: skip
    result = run_analysis([sweep], tmp_path / "a", cfg)
    report = (tmp_path / "a" / "report.md").read_text()
    assert "## Circuits: what the source and each condition learned" in report and "(failed)" not in report
    assert "No source model found" in report and "not answerable" in report
    assert "](circuits/circuits_attention.png)" in report and result.files["report_html"].is_file()
    df = pd.read_csv(tmp_path / "a" / "circuits" / "circuits_runs.csv")
    assert df.analysed.tolist() == [True, False]


# --------------------------------------------------------------------------- one checkpoint
def test_analyze_checkpoint_reads_our_format(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt", single_frequency_model(3, n_dead=2),
                           epoch=42, metrics={})  # fmt: skip
    res = analyze_checkpoint(path, "subtract", out_dir=tmp_path / "out", interp=InterpSettings(enabled=False))  # interp: test_interp_report
    s = res["summary"]
    assert s["key_freqs"] == [3] and s["neurons_dead"] == 2 and s["epoch"] == 42 and s["format"] == "groktransfer"
    assert len(s["per_frequency"]) == P // 2 and sum(r["neurons"] for r in s["per_frequency"]) == CFG.d_mlp - 2
    for name in ("logit_spectrum.png", "neuron_freqs.png", "attention.png", "summary.md", "summary.json"):
        assert (tmp_path / "out" / name).is_file(), name
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["key_freqs"] == [3]
    assert "key frequencies **{3}**" in res["text"]
    with pytest.raises(ValueError, match="p=11"):
        analyze_checkpoint(path, "subtract", p=13, out_dir=tmp_path / "bad")


def test_analyze_checkpoint_reads_the_papers_format(tmp_path: Path) -> None:
    """A synthetic file in the original paper's layout (p+1 outputs) gives the same circuit
    as the model it was written from."""
    model = single_frequency_model(5, n_dead=3)
    path = paper_format_file(model, tmp_path / "paper_run.pth")
    res = analyze_checkpoint(path, "add")  # default out_dir next to the file
    s = res["summary"]
    assert s["format"] == "nanda2023" and s["key_freqs"] == [5] and s["neurons_dead"] == 3 and s["p"] == P
    direct = profile_model(model, Task("add", P, 0.3, 0), "direct")
    assert s["accuracy_all_pairs"] == pytest.approx(direct.accuracy)
    assert res["out_dir"] == tmp_path / "paper_run_circuits" and (res["out_dir"] / "summary.md").is_file()


@pytest.mark.parametrize("layers", [1, 2])
def test_all_inputs_pass_matches_a_full_forward(layers: int) -> None:
    """The analysis pass truncates the residual to the last position after the last
    attention: logits, last-position MLP activations and patterns must be unchanged."""
    from groktransfer.interp.forward import run_all_inputs

    cfg = replace(CFG, n_layers=layers, normalization="LN" if layers == 2 else None)
    model = HookedGrokTransformer(cfg, seed=11)
    tokens = Task("add", P, 0.3, 0).tokens
    out = run_all_inputs(model, tokens, chunk=37)
    logits, cache = model.run_with_cache(tokens)
    last = layers - 1
    torch.testing.assert_close(out.logits, logits[:, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.neuron_acts, cache[f"blocks.{last}.mlp.hook_post"][:, -1], atol=1e-5, rtol=1e-5)
    expected = torch.stack([cache[f"blocks.{i}.attn.hook_pattern"][:, :, -1].mean(0) for i in range(layers)])
    torch.testing.assert_close(out.attention, expected, atol=1e-6, rtol=1e-5)
    assert out.mlp_block == last


def test_sources_are_found_after_a_move_and_from_an_explicit_paper_file(tmp_path: Path) -> None:
    """A sweep copied elsewhere (recorded absolute paths gone) still finds its source in the
    ``.sources`` cache beside it; a run started from an explicit (paper-format) file uses
    that file as its source."""
    from groktransfer.analysis.circuits.discover import COPIED, plan_sweep
    from groktransfer.analysis.circuits.sweep import analyse_sweep

    info = make_circuit_sweep(tmp_path, p=P, n_seeds=1)
    sweep: Path = info["sweep"]  # type: ignore[assignment]
    for sj_path in sweep.glob("*/source.json"):
        sj = json.loads(sj_path.read_text())
        old = str(info["source_dir"])
        sj["source_run_dir"] = sj["source_run_dir"].replace(old, "/elsewhere/.sources/add_p11_s0_0123456789abcdef")
        sj["chosen"]["checkpoint"] = sj["chosen"]["checkpoint"].replace(old, "/elsewhere/.sources/add_p11_s0_0123456789abcdef")
        sj_path.write_text(json.dumps(sj))
    plan = plan_sweep(collect_runs([sweep]))
    (group,) = plan.sources.values()
    assert group.reference is not None and group.reference.path == info["ck_grok"]
    assert {Path(r.path) for r in group.starts.values()} == {info["ck_grok"], info["ck_mem"]}

    paper = paper_format_file(single_frequency_model(3, seed=0, n_dead=4), tmp_path / "paper.pth")
    other = tmp_path / "other"
    write_run(other, 0, "grokked", 0, single_frequency_model(3, seed=0, n_dead=4), P,
              {"condition": "grokked", "source_path": str(paper), "source_format": "nanda2023", "epoch": 1000,
               "components": {"mlp": "copy"}, "plan": {"copied": ["blocks.0.mlp.W_in"]}})  # fmt: skip
    sc = analyse_sweep(collect_runs([other]))
    (run,) = sc.runs
    assert run.target.lineage_kind == COPIED and run.target.source_key == str(paper)
    assert run.to_source.jaccard == 1.0 and run.to_source.neurons_kept == 1.0
    assert run.retention == pytest.approx(sc.sources[str(paper)].reference.accuracy)  # type: ignore[union-attr]

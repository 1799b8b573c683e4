"""The analysis half's three protocols on known answers: the run-directory reader (damaged
files are named, never counted silently), report sections (by name, unknown names refused
before anything is written) and readings (what applies is answered from capabilities; every
quantity's flat name parses back to it; a finding that reads an undeclared quantity fails)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures_rundirs import make_sweep
from groktransfer.analysis import SECTIONS, Section, SweepInputError, run_analysis
from groktransfer.interp.findings import FAMILY_FINDINGS, Finding
from groktransfer.interp.measurements import INT_LABELS, QUANTITIES, Measurements, parse_flat
from groktransfer.interp.reading import READINGS
from groktransfer.runs.reader import read_run

FAST = {"analysis": {"bootstrap": {"n_resamples": 50}, "dpi": 30}}


# --------------------------------------------------------------------------- the reader
def test_the_reader_types_what_it_reads_and_names_what_it_cannot(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep", n_seeds=1, max_epochs=1500, failed=False)
    run = sorted(sweep.glob("0_*"))[0]
    good = read_run(run)
    assert good.problems == [] and good.config.task_name == "subtract" and good.config.max_epochs == 1500
    assert good.status is not None and good.status.condition == "grokked" and good.source is None
    assert good.metrics is not None and list(good.metrics.epoch) == sorted(good.metrics.epoch)

    (run / "source.json").write_text("{not json")
    (run / "measures.csv").write_text("epoch,gini_W_E\n0,0.1\n100,0.2,extra,fields\n200,0.3\n")
    status = json.loads((run / "status.json").read_text())
    bad = sorted(sweep.glob("1_*"))[0]
    (bad / "status.json").write_text(json.dumps({**status, "seed": "three"}))
    damaged = read_run(run)
    assert len(damaged.measures) == 2  # the malformed line is skipped ...
    problems = {p.path.name: p.problem for p in damaged.problems}
    assert set(problems) == {"source.json", "measures.csv"}  # ... and named
    assert "1 malformed line(s) skipped" in problems["measures.csv"]
    assert "seed='three' is not an integer" in read_run(bad).problems[0].problem

    result = run_analysis(sweep, tmp_path / "out", FAST)
    report = (tmp_path / "out" / "report.md").read_text()
    damaged_section = report.split("## Damaged or unreadable files", 1)[1].split("\n## ", 1)[0]
    for name in ("source.json", "measures.csv", "status.json", "malformed line", "is not an integer"):
        assert name in damaged_section, name
    unreadable = [r for r in result.runs if r.status == "unreadable"]
    assert len(unreadable) == 1 and not unreadable[0].completed  # a damaged status record: listed, not counted


# --------------------------------------------------------------------------- sections
def test_an_unknown_section_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep", n_seeds=1, max_epochs=1500, failed=False)
    with pytest.raises(
        SweepInputError, match=r"unknown report section analysis.sections='circuit'; registered: .*circuits"
    ):
        run_analysis(sweep, tmp_path / "out", {"analysis": {"sections": ["answer", "circuit"]}})
    assert not (tmp_path / "out").exists()


def test_a_registered_section_is_placed_before_the_closing_ones(tmp_path: Path) -> None:
    class Count(Section):
        title = "Count"
        writes = ("count.txt",)

        def applies(self, sweep):
            return None if sweep.runs else "no runs"

        def build(self, sweep):
            from groktransfer.analysis import ReportSection

            (sweep.out_dir / "count.txt").write_text(str(len(sweep.runs)))
            return [ReportSection("Count", f"{len(sweep.runs)} runs")]

    SECTIONS.register("test_count", Count())
    try:
        sweep = make_sweep(tmp_path / "sweep", n_seeds=1, max_epochs=1500, failed=False)
        result = run_analysis(
            sweep, tmp_path / "out", {"analysis": {**FAST["analysis"], "extra_sections": ["test_count"]}}
        )
    finally:
        SECTIONS._entries.pop("test_count")
    headings = [line[3:] for line in result.files["report_md"].read_text().splitlines() if line.startswith("## ")]
    assert headings.index("Count") < headings.index("Failed / incomplete jobs")
    assert result.files["count_txt"].read_text() == "3"  # its file, recorded from `writes`, in the Files list
    assert "`count.txt`" in result.files["report_md"].read_text()


# --------------------------------------------------------------------------- readings and their quantities
def test_every_quantity_s_flat_name_parses_back_to_it() -> None:
    fixed = {"kind": "mean", "site": "z", "stat": "min", "ablation": "pc2", "cls": "no carry"}
    for name, q in QUANTITIES.items():
        labels = {k: 3 if k in INT_LABELS else fixed.get(k, "x y") for k in q.labels}
        assert parse_flat(q.format(labels)) == (name, labels), name
    m = Measurements.from_flat({"head_mean_q_L0H2_d_loss[digit 1]": 0.5, "not_a_quantity": 1.0})
    assert m.select("head_d_loss", site="q").to_dict("records") == [
        {"kind": "mean", "site": "q", "layer": 0, "head": 2, "answer": "digit 1", "value": 0.5}
    ]
    with pytest.raises(ValueError, match="labels"):
        m.add("head_d_loss", 1.0, layer=0)


def test_findings_and_readings_name_only_declared_quantities() -> None:
    with pytest.raises(KeyError, match="undeclared quantity 'not_measured'"):
        Finding("claim", "seed", lambda m: None, ("not_measured",))
    produced = {q for r in READINGS.in_order() for q in r.produces} | {"clean_acc", "clean_loss"}
    read = {q for findings in FAMILY_FINDINGS.values() for f in findings for q in f.reads}
    assert read <= produced, read - produced  # every finding reads something a reading measures


def test_what_applies_is_answered_from_capabilities() -> None:
    """A plain MLP on bits offers none of the transformer's readings; the transformer on a task
    that declares nothing (an [a, b, =] layout excepted) gets no operand or Fourier readings."""
    import torch

    from groktransfer.model.transformer import HookedGrokTransformer, TransformerConfig
    from groktransfer.tasks.modular import Task

    readings = {r.name: r for r in READINGS.in_order()}
    model = HookedGrokTransformer(
        TransformerConfig(n_heads=2, d_model=16, d_head=8, d_mlp=24, d_vocab=8, d_vocab_out=7), seed=0
    )
    task = Task("add", 7, 0.5, 0)
    assert all(
        readings[n].applies_to(model, task) is None for n in ("head_ablation", "neuron_clusters", "embedding", "dla")
    )

    class Bits:  # a task that declares nothing, with no [a, b, =] layout
        name, tokens = "bits", torch.randint(0, 2, (16, 5), generator=torch.Generator().manual_seed(0))
        labels, train_mask, d_vocab, d_vocab_out = tokens[:, 0] ^ tokens[:, 1], torch.ones(16, dtype=torch.bool), 2, 2

    assert readings["embedding"].applies_to(model, Bits()) == "needs operands"
    assert readings["neuron_clusters"].applies_to(model, Bits()) == "needs fourier, grid"
    assert readings["head_ablation"].applies_to(model, Bits()) is None  # heads at the last position
    assert readings["qk_mean_query"].applies_to(model, task) == "only for digit"

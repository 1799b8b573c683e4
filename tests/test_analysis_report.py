"""End-to-end tests of the analysis job: fabricated sweep in, every output file out.

Also runs ``scripts/analyze.py`` once as a user would (subprocess), and checks
that a bad sweep dir fails with one line before anything is written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fixtures_rundirs import make_sweep
from groktransfer.analysis import ReportSection, ReportTable, SweepInputError, run_analysis
from groktransfer.render import markdown_table, markdown_to_html as text_to_html
from groktransfer.analysis.wandb_log import log_analysis
from groktransfer.analysis.settings import WandbSettings

REPO = Path(__file__).resolve().parents[1]
FAST = {"analysis": {"bootstrap": {"n_resamples": 200}, "dpi": 50}}
OUTPUTS = [
    "runs.csv", "summary_table.csv", "speedup.csv", "epochs_to_threshold.png",
    "test_accuracy.png", "test_loss.png", "progress_measures.png", "report.md", "report.html",
]  # fmt: skip


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 conditions × 3 seeds; one random seed censored; one failed random job."""
    grok = {"grokked": [500, 560, 620], "memorized": [1200, 1300, 1400], "random": [1800, 2000, 9000]}
    return make_sweep(tmp_path_factory.mktemp("e2e") / "sweep", grok_epochs=grok, max_epochs=4000, failed=True)


@pytest.fixture(scope="module")
def result(small_sweep: Path):
    extra = ReportSection("Circuits", "placeholder text", [ReportTable(pd.DataFrame({"a": [1]}), "t")])
    return run_analysis([small_sweep], None, FAST, extra_sections=[extra])


def test_every_output_exists_and_is_non_empty(result, small_sweep: Path) -> None:
    out = small_sweep / "analysis"
    assert result.out_dir == out
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name


def test_runs_csv_lists_failed_run_with_reason(result) -> None:
    df = pd.read_csv(result.files["runs_csv"])
    assert len(df) == 10
    failed = df[df.status == "failed"]
    assert len(failed) == 1 and "loss became NaN" in failed.iloc[0].reason
    assert not failed.iloc[0].in_stats and pd.isna(failed.iloc[0]["epochs_to_0.999"])
    censored = df[(df.condition == "random") & df.in_stats & (df["censored_0.9"] == True)]  # noqa: E712
    assert len(censored) == 1 and censored.iloc[0]["epochs_to_0.9"] == 4000


def test_summary_and_speedup_csvs(result) -> None:
    s = pd.read_csv(result.files["summary_table_csv"])
    r = s[(s.condition == "random") & (s.threshold == 0.999)].iloc[0]
    assert (r.n_runs, r.n_censored, r.n_excluded) == (3, 1, 1)
    sp = pd.read_csv(result.files["speedup_csv"])
    assert set(sp.columns) >= {"condition", "threshold", "ratio", "ci_low", "ci_high", "n"}
    g = sp[(sp.condition == "grokked") & (sp.threshold == 0.999)].iloc[0]
    assert g.ratio > 2 and g.ci_low <= g.ratio <= g.ci_high


def test_reports_embed_figures_and_sections(result) -> None:
    html = result.files["report_html"].read_text()
    assert html.count("data:image/png;base64,") == 4
    for heading in ("Failed / incomplete jobs", "Statistical method", "Speed-up over random", "Circuits"):
        assert heading in html
    assert "loss became NaN" in html and "censored" in html
    md = result.files["report_md"].read_text()
    assert "](epochs_to_threshold.png)" in md and "](progress_measures.png)" in md
    assert md.index("## Circuits") < md.index("## Files")  # the hook sits before the file list
    assert "percentile bootstrap with 200 resamples" in md


def test_summary_text(result) -> None:
    text = result.summary_text()
    assert "0.999" in text and "(baseline)" in text and "1 failed" in text


def test_merged_sweeps_glob_and_out_dir(small_sweep: Path, tmp_path: Path) -> None:
    second = make_sweep(tmp_path / "multi" / "b", n_seeds=1, max_epochs=1500, failed=False)
    out = tmp_path / "merged"
    res = run_analysis([small_sweep, str(tmp_path / "multi" / "*")], out, FAST)
    assert res.out_dir == out and (out / "report.html").exists()
    assert len(res.runs) == 10 + 3 and {r.sweep for r in res.runs} == {small_sweep, second}
    assert not (second / "analysis").exists()


def test_missing_measures_columns_and_unknown_condition(tmp_path: Path) -> None:
    from fixtures_rundirs import write_run_with_curves
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "sw"
    for s in range(2):
        for cond in ("random", "scrambled"):
            write_run_with_curves(
                root / f"{cond}{s}", condition=cond, seed=s, grok_epoch=400 + 100 * s, max_epochs=1200,
                rng=rng, measure_columns=["weight_norm_total", "gini_W_E"],
            )  # fmt: skip
    res = run_analysis(root, None, FAST)
    assert res.files["progress_measures"].exists()
    assert res.conditions == ["random", "scrambled"]
    assert res.speedup.empty  # no compared condition present: visible note, no crash
    assert "No speed-up computed" in res.files["report_md"].read_text()


def test_nothing_written_for_empty_sweep(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepInputError):
        run_analysis([tmp_path / "empty"], None, FAST)
    assert list((tmp_path / "empty").iterdir()) == []


def test_wandb_failure_never_breaks(tmp_path: Path) -> None:
    note = log_analysis(WandbSettings(mode="not-a-mode"), tmp_path, [], {}, [], {})
    assert note is not None and note.startswith("W&B logging skipped")
    assert log_analysis(WandbSettings(mode="disabled"), tmp_path, [], {}, [], {}) is None


def test_markdown_helpers() -> None:
    md = markdown_table(pd.DataFrame({"a|b": ["x|y", None]}))
    assert "a\\|b" in md and "x\\|y" in md and "–" in md
    h = text_to_html("para `code` **b** <x>\n\n- one\n- two")
    assert "<code>code</code>" in h and "<strong>b</strong>" in h and "&lt;x&gt;" in h and h.count("<li>") == 2


def test_hydra_script_end_to_end(small_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "script_out"
    cmd = [
        sys.executable, str(REPO / "scripts" / "analyze.py"), f"sweep_dir={small_sweep}",
        f"analysis.out_dir={out}", "analysis.bootstrap.n_resamples=100", "analysis.dpi=40",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Epochs to test acc >= 0.999" in proc.stdout and "grokked" in proc.stdout
    assert (out / "report.html").exists() and (out / "runs.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["script_out"]  # no outputs/ or .hydra/


def test_hydra_script_bad_sweep_dir_is_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "scripts" / "analyze.py"), f"sweep_dir={tmp_path / 'missing'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_wandb_offline_writes_under_out_dir(tmp_path: Path) -> None:
    png = tmp_path / "fig.png"
    import matplotlib.pyplot as plt

    plt.figure(figsize=(1, 1))
    plt.savefig(png)
    plt.close("all")
    note = log_analysis(WandbSettings(mode="offline"), tmp_path, [], {"t": pd.DataFrame({"a": [1, None]})}, [png], {"x": 1.0})
    assert note is not None and note.startswith("W&B: logged"), note
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_configured_section_providers(small_sweep: Path, tmp_path: Path) -> None:
    cfg = {"analysis": {**FAST["analysis"], "extra_sections": ["fixtures_rundirs:stub_section_provider", "math:sqrt"]}}
    res = run_analysis(small_sweep, tmp_path / "out", cfg)
    md = res.files["report_md"].read_text()
    assert "## Stub provider" in md and "10 runs seen" in md
    assert "## math:sqrt (failed)" in md  # a broken provider is visible, not fatal


# --------------------------------------------------------------------------- the answer first


@pytest.fixture(scope="module")
def answer_result(tmp_path_factory: pytest.TempPathFactory):
    """A sweep whose answer is known: grokked clearly faster, memorized overlapping random."""
    grok = {"grokked": [500, 560, 620], "memorized": [1500, 2000, 2600], "random": [1800, 2000, 2400]}
    sweep = make_sweep(tmp_path_factory.mktemp("answer") / "sweep", grok_epochs=grok, max_epochs=4000, failed=True)
    return run_analysis([sweep], None, FAST)


def test_report_opens_with_the_answer(answer_result) -> None:
    """The first section is the answer: speed-up, CI, n, censored and one sentence per condition;
    the details follow and the sweep's metadata comes last."""
    sp = pd.read_csv(answer_result.files["speedup_csv"])
    g = sp[(sp.condition == "grokked") & (sp.threshold == 0.999)].iloc[0]
    m = sp[(sp.condition == "memorized") & (sp.threshold == 0.999)].iloc[0]
    assert g.ci_low > 1 and m.ci_low <= 1 <= m.ci_high  # the fixture's known answer
    md = answer_result.files["report_md"].read_text()
    headings = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert headings[0] == "Answer", headings
    assert headings.index("Speed-up over random") < headings.index("Epochs to threshold")
    assert headings[-2:] == ["Sweep", "Files"] and headings.index("Statistical method") > headings.index("Epochs to threshold")
    answer = md.split("## Answer", 1)[1].split("\n## ", 1)[0]
    assert f"Grokked starts reach 99.9% test accuracy {g.ratio:.1f}× sooner than random starts [95% CI {g.ci_low:.1f}, {g.ci_high:.1f}]" in answer
    assert "Memorized starts are not distinguishable from random starts with 3 seeds" in answer
    assert "1 job(s) did not complete" in answer  # the failed random job, counted out
    for column in ("speed-up vs random [95% CI]", "| n |", "censored"):
        assert column in answer
    html = answer_result.files["report_html"].read_text()
    first_h2 = html.index("<h2")
    assert html[first_h2:].startswith('<h2 id="answer">Answer</h2>') and '<section class="answer">' in html
    assert html.index("sooner than random starts") < html.index('id="epochs-to-threshold"') < html.index('id="sweep"')
    for anchor in ("answer", "speed-up-over-random", "failed-incomplete-jobs", "statistical-method", "sweep", "files"):
        assert f'href="#{anchor}"' in html and f'id="{anchor}"' in html
    assert "sooner than random starts" in answer_result.summary_text()


def _speedup_row(**kw) -> pd.DataFrame:
    row = {"condition": "grokked", "baseline": "random", "threshold": 0.999, "ratio": 2.0, "ci_low": 1.2,
           "ci_high": 3.0, "bound": "", "n": 3, "n_baseline": 3}  # fmt: skip
    row.update(kw)
    return pd.DataFrame([row])


def _summary(censored: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        [{"condition": c, "threshold": 0.999, "n_censored": censored, "median_display": "1,000"} for c in ("grokked", "random")]
    )


@pytest.mark.parametrize(
    "kw, verdict, words",
    [
        ({}, "faster", "reach 99.9% test accuracy 2.0× sooner than random starts [95% CI 1.2, 3.0]"),
        ({"bound": "lower bound"}, "faster", "at least 2.0× sooner"),
        ({"ratio": 0.5, "ci_low": 0.3, "ci_high": 0.8}, "slower", "later than random starts: speed-up 0.50× [95% CI 0.30, 0.80], i.e. about 2.0× the epochs"),
        ({"ratio": 1.1, "ci_low": 0.6, "ci_high": 2.0, "n": 5, "n_baseline": 4}, "indistinguishable", "not distinguishable from random starts with 4 seeds"),
        ({"ratio": float("inf"), "ci_low": float("inf"), "ci_high": float("inf")}, "at_start", "from the start"),
        ({"bound": "indeterminate"}, "bound", "cannot be ranked"),
        ({"n_baseline": 0, "ratio": float("nan")}, "none", "`random` has no completed run"),
    ],
)  # fmt: skip
def test_answer_sentence_follows_the_interval(kw, verdict, words) -> None:
    """The sentence never claims more than the CI supports; bounds from censoring are said."""
    from groktransfer.analysis.answer import answers

    (a,) = answers(_summary(), _speedup_row(**kw), 0.999, "random")
    assert a.verdict == verdict and words in a.sentence, a.sentence


# --------------------------------------------------------------------------- in a real browser


def test_report_in_headless_chromium(answer_result) -> None:
    """The HTML report in a real headless Chromium: every image renders, no console message or
    page error, every in-page link resolves, the answer fits the first screen; its screenshot
    is saved as a CI artifact ($GROKTRANSFER_ARTIFACTS, default artifacts/)."""
    from browser import find_chromium, inspect_page, screenshot

    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    page = answer_result.files["report_html"]
    seen = inspect_page(browser, page)
    assert len(seen["images"]) == 4, seen["images"]
    for img in seen["images"]:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    assert seen["errors"] == [] and seen["console"] == [], (seen["errors"], seen["console"])
    assert seen["links"] and all(link["resolves"] for link in seen["links"]), seen["links"]
    assert seen["headings"][0]["text"] == "Answer"
    assert seen["answer_bottom"] is not None and seen["answer_bottom"] <= seen["viewport"], "the answer is not on the first screen"
    assert "sooner than random starts" in seen["answer_text"]
    artifacts = Path(os.environ.get("GROKTRANSFER_ARTIFACTS", REPO / "artifacts"))
    shot = screenshot(browser, page, artifacts / "report_screenshot.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

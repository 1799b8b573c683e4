"""benchmarks/reproduce.py: the verdict rule and the phase reading on cases with known answers,
and (the CI variant) every reproduction's cheap run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from repro_lib import DIFFERS, MATCHES, WITHIN, Claim, Measured, phase_boundaries, verdict  # noqa: E402
from reproductions import REPRODUCTIONS  # noqa: E402


def _claim(**kw) -> Claim:
    return Claim("x", "p", "s", lambda s: Measured(), **kw)


def test_verdict_for_a_number() -> None:
    close = Measured(values=[95.0, 100.0, 130.0], censored=[False] * 3)
    assert verdict(_claim(paper_value=100, tolerance=0.1), close)[0] == MATCHES  # median 100
    wide = Measured(values=[50.0, 150.0, 300.0], censored=[False] * 3)
    assert verdict(_claim(paper_value=100, tolerance=0.1), wide)[0] == WITHIN  # 100 in [50, 300], median 150
    far = Measured(values=[400.0, 500.0, 600.0], censored=[False] * 3)
    word, why = verdict(_claim(paper_value=100, tolerance=0.1, differences="other init"), far)
    assert word == DIFFERS and "5×" in why and "other init" in why


def test_verdict_with_censored_runs_never_claims_more_than_it_knows() -> None:
    # every run stopped at 3,000 without reaching the threshold: the paper's 40,000 is not excluded
    stopped = Measured(values=[3000.0, 3000.0], censored=[True, True])
    assert verdict(_claim(paper_value=40000), stopped)[0] == WITHIN
    # a censored median above the paper's value is not a match, however close
    assert verdict(_claim(paper_value=2900, tolerance=0.1), stopped)[0] != MATCHES


def test_verdict_for_a_range_a_count_and_a_yes_no_claim() -> None:
    inside = Measured(values=[9000.0, 10000.0, 16000.0], censored=[False] * 3)
    assert verdict(_claim(paper_range=(9400, 14000)), inside)[0] == MATCHES
    below = Measured(values=[2000.0, 3000.0], censored=[False] * 2)
    assert verdict(_claim(paper_range=(9400, 14000)), below)[0] == DIFFERS
    count = Measured(values=[4.0, 6.0, 6.0], censored=[False] * 3)
    assert verdict(_claim(paper_value=5, tolerance=1, absolute=True), count)[0] == MATCHES
    assert verdict(_claim(paper_bool=True), Measured(booleans=[True, True]))[0] == MATCHES
    assert verdict(_claim(paper_bool=True), Measured(booleans=[True, False]))[0] == WITHIN
    assert verdict(_claim(paper_bool=True), Measured(booleans=[False]))[0] == DIFFERS


def test_phase_boundaries_of_a_known_curve() -> None:
    """Excluded loss falls to its minimum at epoch 1,400 and rises; log test loss rises to a
    peak at 1,000, then falls from 3 to -7 between 9,000 and 14,000 (linearly in log space), so
    10% of the fall is done at 9,500 and 90% at 13,500."""
    epochs = np.arange(0, 20001, 100)
    excluded = np.where(epochs <= 1400, 5.0 - epochs / 1400 * 4.9, 0.1 + (epochs - 1400) / 10000)
    log_test = np.interp(epochs, [0, 1000, 9000, 14000, 20000], [1.5, 3.0, 3.0, -7.0, -7.0])
    log_test[(epochs > 1000) & (epochs < 9000)] -= 1e-3  # a plateau just below the peak
    phases = phase_boundaries(pd.DataFrame({"epoch": epochs, "test_loss": np.exp(log_test), "excluded_loss": excluded}))
    assert phases.memorisation_end == 1400
    assert phases.circuit_formation_end == 9500
    assert phases.cleanup_end == 13500


def test_phase_boundaries_of_a_run_that_never_groks() -> None:
    epochs = np.arange(0, 3001, 100)
    phases = phase_boundaries(pd.DataFrame({"epoch": epochs, "test_loss": 1.0 + epochs / 1000.0, "excluded_loss": 1.0}))
    assert phases.circuit_formation_end is None and phases.cleanup_end is None


def test_every_reproduction_names_presets_that_exist() -> None:
    for repro in REPRODUCTIONS.values():
        for sweep in repro.sweeps:
            assert (REPO / "conf" / "experiment" / f"{sweep.preset}.yaml").is_file(), (repro.name, sweep.preset)


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_cheap_reproduction_runs_end_to_end_and_records_every_claim(tmp_path: Path, name: str) -> None:
    """The CI variant: debug-sized runs through the real command, every reader, the result file."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "reproduce.py"), name, "--cheap", "--root", str(tmp_path / "runs"),
           "--out", str(tmp_path / "results")]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    (entry,) = data["machines"].values()
    assert entry["mode"] == "cheap" and entry["rows"]
    for row in entry["rows"]:
        assert row["verdict"] in (MATCHES, WITHIN, DIFFERS) and row["paper"] and row["source"] and row["why"], row
    assert all(s["runs"] >= 1 for s in entry["sweeps"]), entry["sweeps"]


def test_reproductions_page_shows_every_recorded_claim_with_its_verdict(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "docs" / "gen"))
    from repro_ref import reproductions_page

    page = reproductions_page()
    for path in sorted((REPO / "benchmarks" / "results" / "reproductions").glob("*.json")):
        for machine, entry in json.loads(path.read_text())["machines"].items():
            assert machine.replace("|", "\\|") in page, path
            for row in entry["rows"]:
                assert row["claim"].replace("|", "\\|") in page and f"**{row['verdict']}**" in page, row["claim"]
    assert "No reproduction recorded yet" in reproductions_page(tmp_path)


def test_a_censored_median_never_matches_a_range() -> None:
    stopped = Measured(values=[60.0], censored=[True])
    assert verdict(_claim(paper_range=(0, 80000)), stopped)[0] == WITHIN
    beyond = Measured(values=[90000.0, 90000.0], censored=[True, True])
    assert verdict(_claim(paper_range=(0, 80000)), beyond)[0] == DIFFERS

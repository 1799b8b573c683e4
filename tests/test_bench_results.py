"""benchmarks/results.py: figures from several machines sit side by side in one file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import results  # noqa: E402


def test_machines_accumulate_and_a_rerun_replaces_its_own_entry(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    results.record("bench", "cpu A | avx512", {"s_per_epoch": 0.04}, path)
    results.record("bench", "cpu B | avx2", {"s_per_epoch": 0.13}, path)
    results.record("bench", "cpu A | avx512", {"s_per_epoch": 0.05}, path)
    data = json.loads(path.read_text())
    assert data["format_version"] == results.FORMAT_VERSION and data["benchmark"] == "bench"
    assert set(data["machines"]) == {"cpu A | avx512", "cpu B | avx2"}
    assert data["machines"]["cpu A | avx512"]["s_per_epoch"] == 0.05
    assert data["machines"]["cpu B | avx2"]["s_per_epoch"] == 0.13
    assert {"measured_at", "load_before", "command"} <= set(data["machines"]["cpu B | avx2"])


def test_an_unreadable_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text("{not json")
    results.record("bench", "m", {"x": 1}, path)
    machines = json.loads(path.read_text())["machines"]
    assert list(machines) == ["m"] and machines["m"]["x"] == 1

"""benchmarks/results.py: figures from several machines sit side by side in one file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow  # two fresh processes, ~10 s
def test_bench_ensemble_records_its_table_per_machine(tmp_path: Path) -> None:
    """What gpu_check.sh runs on a GPU writes a result file too (here the CPU path, tiny)."""
    import subprocess

    out = tmp_path / "bench_ensemble.json"
    script = Path(results.__file__).with_name("bench_ensemble.py")
    proc = subprocess.run([sys.executable, str(script), "--ks", "2", "--epochs", "2", "--p", "7", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[3].startswith("run ")  # the header gpu_check.sh's summary starts from
    (machine, entry), = json.loads(out.read_text())["machines"].items()
    from groktransfer.model.gemm import machine_key

    assert machine == machine_key(threads=1)  # the benchmark's own thread count (--threads 1)
    assert [r["run"] for r in entry["rows"]] == ["separate job (Trainer.fit)", "ensemble K=2"]
    assert entry["rows"][0]["speedup_member"] == 1.0 and all(r["s_per_epoch"] > 0 for r in entry["rows"])


@pytest.mark.slow  # one fresh process, ~30 s
def test_bench_decoder_records_both_loops_side_by_side(tmp_path: Path) -> None:
    """What gpu_check.sh runs on a GPU (here the CPU path, tiny): the table and its result file."""
    import subprocess

    out = tmp_path / "bench_decoder.json"
    script = Path(results.__file__).with_name("bench_decoder.py")
    proc = subprocess.run([sys.executable, str(script), "--p", "11", "--batch-size", "16", "--epochs", "1", "--rounds", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("loop ") for line in lines) and any(line.startswith("each round") for line in lines)
    (entry,) = json.loads(out.read_text())["machines"].values()
    rows = {r["loop"][:3]: r for r in entry["rows"]}
    assert set(rows) == {"(0)", "(1)", "(2)"} and rows["(0)"]["x_plain"] == 1.0
    assert all(r["s_per_epoch"] > 0 and 0 < r["fraction_of_floor"] for r in rows.values())
    assert rows["(1)"]["gflop_per_epoch"] < rows["(2)"]["gflop_per_epoch"]  # the fast path skips work


def test_the_quickstart_benchmark_reads_the_reports_answer(tmp_path: Path) -> None:
    import bench_quickstart

    report = tmp_path / "report.md"
    report.write_text("# title\n\n## Answer\n\n**Speed-up** ...:\n\n- Grokked starts reach 99.9% 4.8x sooner.\n"
                      "- Memorized starts are not distinguishable.\n\nn = completed runs\n\n## Speed-up over random\n\n- not this\n")
    assert bench_quickstart.answer_lines(report) == ["Grokked starts reach 99.9% 4.8x sooner.", "Memorized starts are not distinguishable."]

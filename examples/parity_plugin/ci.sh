#!/usr/bin/env bash
# CI for the parity plugin: install it, run both of its transfer experiments with all three
# start conditions (one seed; the two share one cached source run), analyse each, and check
# that every condition reached its report with the plugin's own measures.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$repo/scripts/setup_env.sh"
cd "$repo"
"$PYTHON_BIN" -m pip install --quiet --no-deps --no-build-isolation -e examples/parity_plugin
root="$(mktemp -d)"
start=$(date +%s)
for experiment in parity_transfer parity_k_to_k1; do
  OMP_NUM_THREADS=1 "$PYTHON_BIN" scripts/train.py -m experiment=$experiment transfer=random,memorized,grokked seed=0 \
    logger=none paths.root="$root" hydra.sweep.dir="$root/$experiment" train.progress_bar=false \
    hydra/launcher=joblib hydra.launcher.n_jobs=2
  "$PYTHON_BIN" scripts/analyze.py sweep_dir="$root/$experiment"
done
"$PYTHON_BIN" - "$root" <<'PY'
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
assert len(list((root / ".sources").glob("sparse_parity_*/status.json"))) == 1, "the two experiments share one source run"
for experiment, subset in (("parity_transfer", [0, 1, 3]), ("parity_k_to_k1", [0, 1, 2, 3])):
    sweep = root / experiment
    records = [json.loads(p.read_text()) for p in sweep.glob("*/status.json")]
    assert sorted(r["condition"] for r in records) == ["grokked", "memorized", "random"], records
    assert all(r["status"] == "completed" and r["task"] == "sparse_parity" for r in records), records
    report = (sweep / "analysis" / "report.html").read_text()
    assert all(c in report for c in ("grokked", "memorized", "random")), "a condition is missing from the report"
    grokked = next(sweep.glob("*_grokked_*"))
    assert "subset_weight_frac" in (grokked / "measures.csv").read_text(), "the plugin's measures were not recorded"
    start = json.loads((grokked / "source.json").read_text())["chosen"]["measures"]
    # the grokked source reads its secret bits: their share of the first layer's weight is over
    # twice a fresh network's (3 of 20 bits: 0.15); measured 0.37 at the grokked checkpoint
    assert start["subset_weight_frac"] > 0.3, start
    config = (grokked / "config.yaml").read_text()
    assert "architecture: parity_mlp" in config and f"subset:" in config
    print(f"{experiment} ({subset}):", ", ".join(f"{r['condition']} 0.999@{r['thresholds']['0.999']['epoch']}"
                                                for r in sorted(records, key=lambda r: r["condition"])))
PY
# an undeclared task key is refused before anything is written (exit 2, one line naming the family's keys)
set +e
out="$("$PYTHON_BIN" scripts/train.py experiment=parity_transfer +task.subsett=[1] logger=none paths.root="$root/refused" 2>&1)"
code=$?
set -e
[ "$code" = 2 ] && grep -q "unknown config key task.subsett: task (the parity task family) has name, data_seed, n_bits, subset, n_train, n_test" <<<"$out"
[ ! -e "$root/refused" ] || [ -z "$(find "$root/refused" -name status.json)" ]
echo "[ci] parity plugin: two three-condition sweeps and their reports in $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# CI for the example plugin: install it, run its sweep with all three start conditions
# (one seed), analyse it, and check that every condition reached the report.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$repo/scripts/setup_env.sh"
cd "$repo"
"$PYTHON_BIN" -m pip install --quiet --no-deps --no-build-isolation -e examples/s5_plugin
root="$(mktemp -d)"
sweep="$root/s4_transfer"
start=$(date +%s)
OMP_NUM_THREADS=1 "$PYTHON_BIN" scripts/train.py -m experiment=s4_transfer transfer=grokked,memorized,random seed=0 \
  logger=none paths.root="$root" hydra.sweep.dir="$sweep" train.progress_bar=false hydra/launcher=joblib hydra.launcher.n_jobs=2
"$PYTHON_BIN" scripts/analyze.py sweep_dir="$sweep"
"$PYTHON_BIN" - "$sweep" <<'PY'
import json, sys
from pathlib import Path
sweep = Path(sys.argv[1])
records = [json.loads(p.read_text()) for p in sweep.glob("*/status.json")]
assert sorted(r["condition"] for r in records) == ["grokked", "memorized", "random"], records
assert all(r["status"] == "completed" and r["task"] == "s4_compose_rev" for r in records), records
report = (sweep / "analysis" / "report.html").read_text()
assert all(c in report for c in ("grokked", "memorized", "random")), "a condition is missing from the report"
measures = (next(sweep.glob("*_grokked_*")) / "measures.csv").read_text()
assert "perm_rep_r2" in measures and "sign_rep_r2" in measures, "the plugin's measures were not recorded"
print("plugin sweep: 3 conditions completed and analysed;",
      ", ".join(f"{r['condition']} 0.999@{r['thresholds']['0.999']['epoch']}" for r in sorted(records, key=lambda r: r["condition"])))
PY
# one checkpoint of the plugin's family, read by the single-checkpoint command (no Fourier
# circuit: the interpretability write-up on the plugin's own task)
final="$(ls -d "$sweep"/*_grokked_*)/checkpoints/final.pt"
"$PYTHON_BIN" scripts/analyze.py checkpoint="$final" checkpoint_task=s4_compose_rev analysis.out_dir="$root/one" > "$root/one.log"
grep -q "symmetric family, which has no modular Fourier circuit" "$root/one/summary.md"
echo "[ci] example plugin: single-checkpoint analysis of $final read on s4_compose_rev"
echo "[ci] example plugin: sweep and report in $(( $(date +%s) - start )) s"

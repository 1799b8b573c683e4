#!/usr/bin/env bash
# The main job, from a fresh clone: install, run the quickstart 3-way transfer sweep
# (one source run of a+b, then grokked / memorized / random starts on a-b, 3 seeds each,
# two parallel 1-thread jobs) and analyse it. Prints where the report is.
#   bash scripts/quickstart.sh                     # 3 seeds
#   SEEDS=0,1,2,3,4 bash scripts/quickstart.sh     # more seeds; extra args go to the sweep
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup_env.sh"
cd "$repo"
sweep_dir="multirun/quickstart/$(date +%Y-%m-%d_%H-%M-%S)"
start=$(date +%s)
# The first sweep override is the outer loop. Random starts go first: they need no source
# run, so both workers stay busy while the first memorised job trains it (the others wait
# for it on a file lock); the short grokked jobs go last, so the two workers finish together.
"$PYTHON_BIN" scripts/train.py -m experiment=quickstart \
  transfer=random,memorized,grokked seed="${SEEDS:-0,1,2}" \
  hydra/launcher=joblib hydra.launcher.n_jobs=2 \
  hydra.sweep.dir="$sweep_dir" "$@"
"$PYTHON_BIN" scripts/analyze.py sweep_dir="$sweep_dir"
echo "quickstart finished in $(( $(date +%s) - start )) s; report: $sweep_dir/analysis/report.html"

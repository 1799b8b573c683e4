#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install groktransfer into it.
# Sourced by scripts/quickstart.sh and scripts/run_tests.sh; safe to run again: it
# reinstalls only when pyproject.toml or constraints.txt changed.
#
# constraints.txt pins torch==2.13.0 so this machine takes its local CPU wheel and never
# pulls CUDA packages; pyproject.toml itself keeps a range so GPU machines can bring theirs.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GROKTRANSFER_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"
# Extras to install: CI adds TransformerLens with GROKTRANSFER_EXTRAS=test,tl,docs (3.x) and, in a
# second environment, test,tl4 (4.x) (.ci/run).
extras="${GROKTRANSFER_EXTRAS:-test}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
stamp="$venv/.groktransfer-install-stamp"
want="$( (cat "$repo/pyproject.toml" "$repo/constraints.txt"; echo "$extras") | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing groktransfer[$extras] and its dependencies (torch 2.13.0 CPU) into $venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -c "$repo/constraints.txt" -e "$repo[$extras]"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export PYTHON_BIN="$venv/bin/python"

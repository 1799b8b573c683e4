#!/usr/bin/env bash
# Install (if needed) and run the default test suite: fast tests plus the essential
# end-to-end ones. Slow end-to-end tests: scripts/run_tests.sh -m slow
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup_env.sh"
cd "$repo"
exec "$PYTHON_BIN" -m pytest "$@"

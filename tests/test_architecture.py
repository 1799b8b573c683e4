"""The role folders import one way: ``lint-imports`` checks pyproject's layers contract.

CI installs the ``test`` extra (import-linter); elsewhere the test is skipped, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if found is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]'); the layers contract is not checked")
    return found


def test_imports_follow_the_layers_of_the_role_folders() -> None:
    done = subprocess.run(
        [_lint_imports(), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout

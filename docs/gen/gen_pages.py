"""mkdocs-gen-files script: writes the generated reference pages at build time.

Run by ``mkdocs build`` / ``mkdocs serve`` (see ``plugins: gen-files`` in mkdocs.yml).
The pages are never committed: they are regenerated from the code on every build.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import mkdocs_gen_files  # noqa: E402

from config_ref import config_page  # noqa: E402
from perf_ref import performance_page  # noqa: E402
from repro_ref import reproductions_page  # noqa: E402
from rundir_ref import rundir_page  # noqa: E402

PAGES = {
    "reference/config.md": (config_page, "docs/gen/config_ref.py"),
    "reference/rundir.md": (rundir_page, "docs/gen/rundir_ref.py"),
    "performance.md": (performance_page, "docs/gen/perf_ref.py"),
    "reproductions.md": (reproductions_page, "docs/gen/repro_ref.py"),
}

for name, (make, script) in PAGES.items():
    with mkdocs_gen_files.open(name, "w") as f:
        f.write(make())
    mkdocs_gen_files.set_edit_path(name, script)

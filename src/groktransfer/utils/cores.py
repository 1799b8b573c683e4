"""How many CPU cores this process may use: the one answer the launchers and the analysis share."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (a SLURM or container CPU set, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1

"""Where benchmark figures go: ``benchmarks/results/<benchmark>.json``, one entry per machine.

Why a file and not a table in the docs: a figure is only worth quoting with the machine it
was measured on, and retyping tables loses that. Each benchmark calls :func:`record` with
its figures; the entry is keyed by :func:`groktransfer.model.gemm.machine_key` (CPU model,
instruction set and the settings that cap it, threads, torch version) or, on a GPU, by the
device name, so runs on an AVX2 laptop, an AVX-512 server and a GPU sit side by side and a
rerun on the same machine replaces its own entry. The documentation's performance page is
generated from these files.

File format (version 1)::

    {"benchmark": "bench_trainer", "format_version": 1, "title": "...",
     "machines": {"<machine key>": {"measured_at": "...", "load_before": [1, 5, 15 min],
                                     "command": "...", ...the benchmark's own fields}}}
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

RESULTS_DIR = Path(__file__).parent / "results"
FORMAT_VERSION = 1


def machine(device: str = "cpu") -> str:
    """The key a result is filed under: the CPU's :func:`~groktransfer.model.gemm.machine_key`,
    or on a GPU its name, memory and the torch/CUDA versions (a GPU's speed does not depend on
    the host CPU's instruction set)."""
    import torch

    from groktransfer.model.gemm import machine_key

    if not str(device).startswith("cuda"):
        return machine_key()
    props = torch.cuda.get_device_properties(torch.device(device))
    return f"{props.name} | {props.total_memory / 2**30:.0f} GiB | torch {torch.__version__} | CUDA {torch.version.cuda}"


def record(benchmark: str, machine: str, figures: Dict[str, Any], path: Optional[Path] = None,
           title: Optional[str] = None) -> Path:
    """Merge ``figures`` for ``machine`` into the benchmark's results file (atomically).

    ``figures`` holds ``rows`` (a list of objects, one per table row) and optionally
    ``columns`` (row key -> header, in order) and ``notes``, which the performance page shows.
    """
    path = Path(path) if path is not None else RESULTS_DIR / f"{benchmark}.json"
    data: Dict[str, Any] = {"benchmark": benchmark, "format_version": FORMAT_VERSION, "machines": {}}
    if title:
        data["title"] = title
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            if old.get("format_version") == FORMAT_VERSION:
                data["machines"] = dict(old.get("machines", {}))
        except (OSError, ValueError):
            pass  # an unreadable file is replaced, not merged
    entry = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        **figures,
    }
    data["machines"][machine] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path

"""Read a W&B offline run back (tests only): what did the sink really log?

wandb >= 0.2x no longer ships a Python reader of the ``.wandb`` transaction log (the
old ``wandb.sdk.internal.datastore`` is gone; wandb-core, in Go, owns the format); the
supported reader is the ``wandb leet inspect --json`` command of the same binary, which
this module runs and folds into plain Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from groktransfer.runs.rundir import WANDB_DIR


@dataclass
class OfflineRun:
    """What an offline ``.wandb`` transaction log holds, folded into plain Python."""

    path: Path
    run_id: str = ""
    name: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: Optional[int] = None
    record_types: list[str] = field(default_factory=list)


def offline_run_files(run_dir: Path) -> list[Path]:
    """The ``.wandb`` files under ``<run_dir>/wandb``, oldest first (sync order).

    ``latest-run`` is a symlink to one of them and is skipped.
    """
    wandb_dir = Path(run_dir) / WANDB_DIR
    files = [
        p
        for d in sorted(wandb_dir.glob("offline-run-*"))
        if d.is_dir() and not d.is_symlink()
        for p in sorted(d.glob("run-*.wandb"))
    ]
    return files


def _wandb_cli_env() -> dict[str, str]:
    """Env for a wandb CLI subprocess: offline, no error reporting, no prompts."""
    env = dict(os.environ)
    env.update({"WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false", "WANDB_SILENT": "true"})
    return env


def read_offline_records(path: Path, timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Every record of a ``.wandb`` file, as JSON, via ``wandb leet inspect --json``.

    wandb >= 0.2x no longer ships a Python reader of the transaction log (the old
    ``wandb.sdk.internal.datastore`` is gone; wandb-core, in Go, owns the format); the
    supported reader is the ``leet inspect`` command of the same wandb-core binary.
    """
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout_s, env=_wandb_cli_env(), check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def read_offline_run(path: Path) -> OfflineRun:
    """Fold a ``.wandb`` file (or a run directory holding one) into an ``OfflineRun``.

    History rows are the logged dicts in order; summary is the last value of each key
    (``summary`` records are updates, applied in order); config is the run record's
    config plus later config updates (wandb's internal ``_wandb`` key removed).
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("run-*.wandb"))
        if len(found) != 1:
            raise FileNotFoundError(f"expected one run-*.wandb in {path}, found {len(found)}")
        path = found[0]
    out = OfflineRun(path=path)
    for rec in read_offline_records(path):
        kind = rec.get("type", "")
        body = rec.get(kind, {}) or {}
        out.record_types.append(kind)
        if kind == "run":
            out.run_id = body.get("run_id", "")
            out.name = body.get("display_name", "")
            out.project = body.get("project", "")
            out.group = body.get("run_group", "")
            out.job_type = body.get("job_type", "")
            out.tags = list(body.get("tags", []) or [])
            out.config.update((body.get("config") or {}).get("update", {}))
        elif kind == "config":
            out.config.update(body.get("update", {}))
        elif kind == "history":
            out.history.append(dict(body.get("item", {})))
        elif kind == "summary":
            out.summary.update(body.get("update", {}))
            for item in body.get("remove", []) or []:
                out.summary.pop(item.get("key") if isinstance(item, dict) else item, None)
        elif kind == "exit":
            out.exit_code = int(body.get("exit_code", 0))
    out.config.pop("_wandb", None)
    return out

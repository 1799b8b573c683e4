"""The run-directory contract (docs/architecture.md): names of files and the status record.

Everything a later reader trusts -- the analysis job, a resumed job, the source
cache -- goes through this module, so the file names live in one place and every
write is atomic (temp file + rename): a killed job never leaves a half-written
record that is later believed.
"""

from __future__ import annotations

import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

from groktransfer.atomic import write_json

STATUS_FILE = "status.json"
CONFIG_FILE = "config.yaml"
SOURCE_FILE = "source.json"
RESUME_FILE = "resume.pt"
CHECKPOINT_DIR = "checkpoints"
FINAL_CHECKPOINT = "final.pt"

RUNNING, COMPLETED, FAILED, STOPPED = "running", "completed", "failed", "stopped"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def library_versions() -> Dict[str, str]:
    """Versions that can change numbers: recorded with every run."""
    import numpy
    import torch

    import groktransfer

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "groktransfer": groktransfer.__version__,
    }
    try:
        import hydra

        versions["hydra"] = hydra.__version__
    except Exception:  # pragma: no cover - hydra is a dependency
        pass
    return versions


class RunDir:
    """One job's directory and its status record."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    # ---- paths ------------------------------------------------------------
    @property
    def status_path(self) -> Path:
        return self.path / STATUS_FILE

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def source_path(self) -> Path:
        return self.path / SOURCE_FILE

    @property
    def resume_path(self) -> Path:
        return self.path / RESUME_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"epoch_{epoch:06d}.pt"

    def optimizer_state_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"optim_epoch_{epoch:06d}.pt"

    @property
    def final_checkpoint_path(self) -> Path:
        return self.checkpoint_dir / FINAL_CHECKPOINT

    # ---- status -----------------------------------------------------------
    def read_status(self) -> Optional[Dict[str, Any]]:
        """The status record, or None when absent or unreadable (a torn write is not trusted)."""
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def update_status(self, **fields: Any) -> Dict[str, Any]:
        """Merge ``fields`` into the status record and rewrite it atomically."""
        record = self.read_status() or {}
        record.update(fields)
        record["updated_at"] = utc_now()
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.status_path, record)
        return record

    @property
    def is_completed(self) -> bool:
        status = self.read_status()
        return bool(status) and status.get("status") == COMPLETED


class WallClock:
    """Wall time of a job, including time spent before a resume."""

    def __init__(self, already_spent: float = 0.0) -> None:
        self._start = time.monotonic()
        self._before = already_spent

    @property
    def seconds(self) -> float:
        return self._before + (time.monotonic() - self._start)

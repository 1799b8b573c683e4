"""Run identity -> run directory: what makes sweeps idempotent and resumable.

Hydra gives every launch a fresh timestamped directory, so "the same command
again" lands somewhere new. The index (``paths.run_index``, one small JSON file
per run identity) remembers where each identity last ran. A new job looks itself
up and then

* ``reuse``  -- a completed run exists: link its files into the new directory and
  train nothing (one-line message);
* ``resume`` -- an interrupted run exists: bring its files over and continue from
  its last checkpoint;
* ``skip_failed`` -- it failed before: keep the record, don't retry silently
  (``force=true`` retries);
* ``fresh``  -- nothing known (or ``force=true``): train from the start.

A per-identity file lock is held for the whole job, so two identical jobs started
at once never train twice.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from filelock import FileLock

from groktransfer.utils.atomic import write_json
from groktransfer.runs.rundir import HYDRA_DIR, LOG_FILE, WANDB_DIR, RunDir, Status, utc_now

# Files never brought along when a run is reused or resumed elsewhere.
_SKIP_ON_TRANSPLANT = {HYDRA_DIR, LOG_FILE, WANDB_DIR}


@dataclass(frozen=True)
class Decision:
    action: str  # fresh | reuse | resume | skip_failed
    previous: Optional[Path] = None
    reason: str = ""


class RunIndex:
    """Directory of ``<run_id>.json`` pointers plus their locks."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _entry(self, run_id: str) -> Path:
        return self.root / f"{run_id}.json"

    def lock(self, run_id: str) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{run_id}.lock"))

    def lookup(self, run_id: str) -> Optional[Path]:
        try:
            data = json.loads(self._entry(run_id).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        path = Path(data["run_dir"])
        return path if RunDir(path).status_path.exists() else None

    def record(self, run_id: str, run_dir: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self._entry(run_id), {"run_id": run_id, "run_dir": str(run_dir.resolve()), "updated_at": utc_now()})

    def decide(self, run_id: str, current: Path, force: bool) -> Decision:
        """What a job with identity ``run_id`` about to run in ``current`` should do."""
        if force:
            return Decision("fresh", reason="force=true")
        candidates = [current] + [p for p in [self.lookup(run_id)] if p is not None and p.resolve() != current.resolve()]
        for path in candidates:
            run_dir = RunDir(path)
            status = run_dir.read_status()
            if status is None or status.run_id != run_id:
                continue
            resumable = run_dir.resume_path.exists()
            if status.status == Status.COMPLETED:
                return Decision("reuse", path, f"already completed in {path}")
            if status.status == Status.FAILED and not resumable:
                return Decision("skip_failed", path, f"failed before in {path}: {status.reason}")
            if resumable:
                return Decision("resume", path, f"resuming from epoch {status.epoch} in {path}")
            if path.resolve() == current.resolve():
                return Decision("fresh", reason="interrupted before its first checkpoint")
        return Decision("fresh")


def transplant(source: Path, target: Path, link: bool) -> None:
    """Bring a run's files from ``source`` into ``target`` (hard links when ``link``).

    Hard links share the bytes of completed runs (immutable) at no cost; a run to be
    resumed is *copied*, so continuing it never alters the original directory.
    """
    if source.resolve() == target.resolve():
        return
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name in _SKIP_ON_TRANSPLANT:
            continue
        dest = target / item.name
        if item.is_dir():
            shutil.copytree(item, dest, copy_function=_link_or_copy if link else shutil.copy2, dirs_exist_ok=True)
        else:
            (_link_or_copy if link else shutil.copy2)(str(item), str(dest))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        if os.path.exists(dst):
            os.unlink(dst)
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)

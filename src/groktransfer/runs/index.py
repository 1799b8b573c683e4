"""Run identity -> run directory: what makes sweeps idempotent and resumable.

Hydra gives every launch a fresh timestamped directory, so "the same command
again" lands somewhere new. The index (``paths.run_index``, one small JSON file
per run identity) remembers where each identity last ran. A new job looks itself
up and then

* ``reuse``  -- a completed run exists: link its files into the new directory and
  train nothing (one-line message);
* ``resume`` -- an interrupted run, or one that crashed (``failure_kind: crash``: a
  code error, out of memory, a full disk) exists: bring its files over and continue
  from its last checkpoint (one-line message);
* ``skip_failed`` -- it failed deterministically before (a non-finite loss, its time
  budget): it would fail the same way again, so keep the record and say so
  (``force=true`` retrains);
* ``fresh``  -- nothing known (or ``force=true``, or a crash before its first
  checkpoint): train from the start.

The decision reads the status records only; the job then checks the files of the run
it would reuse or resume (``groktransfer.runs.integrity``) and trains from the start,
saying which file was damaged, when they fail.

A per-identity file lock is held for the whole job, so two identical jobs started
at once never train twice.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from groktransfer.runs.integrity import status_damage
from groktransfer.runs.rundir import (
    CHECKPOINT_DIR,
    HYDRA_DIR,
    LOG_FILE,
    LOG_RESERVE_FILE,
    WANDB_DIR,
    FailureKind,
    RunDir,
    Status,
    utc_now,
)
from groktransfer.utils.atomic import is_temporary, write_json

# Files never brought along when a run is reused or resumed elsewhere.
_SKIP_ON_TRANSPLANT = {HYDRA_DIR, LOG_FILE, LOG_RESERVE_FILE, WANDB_DIR}


@dataclass(frozen=True)
class Decision:
    action: str  # fresh | reuse | resume | skip_failed
    previous: Path | None = None
    reason: str = ""
    # resume: the previous run's status.json is torn (its identity is the index's word)
    torn_status: bool = False


class RunIndex:
    """Directory of ``<run_id>.json`` pointers plus their locks."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _entry(self, run_id: str) -> Path:
        return self.root / f"{run_id}.json"

    def lock(self, run_id: str) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{run_id}.lock"))

    def lookup(self, run_id: str) -> Path | None:
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
        known = self.lookup(run_id)
        candidates = [current] + [p for p in [known] if p is not None and p.resolve() != current.resolve()]
        for path in candidates:
            run_dir = RunDir(path)
            resumable = run_dir.resume_path.exists()
            if status_damage(run_dir) is not None:
                # the index says whose run it is; what is left of it decides (the job checks resume.pt)
                if known is None or path.resolve() != known.resolve():
                    continue
                if resumable:
                    return Decision(
                        "resume", path, f"resuming in {path}, whose {run_dir.status_path.name} is damaged", True
                    )
                return Decision(
                    "fresh", path, f"training from the start: {run_dir.status_path.name} in {path} is damaged"
                )
            status = run_dir.read_status()
            if status is None or status.run_id != run_id:
                continue
            if status.status == Status.COMPLETED:
                return Decision("reuse", path, f"already completed in {path}")
            if status.status == Status.FAILED:
                kind = status.failure_kind
                if kind == FailureKind.DETERMINISTIC or (kind is None and not resumable):  # older records: as before
                    return Decision(
                        "skip_failed",
                        path,
                        f"failed before in {path}: {status.reason} (it would fail the same way again; force=true retrains)",
                    )
                crash = f"retrying the crash in {path} ({status.reason})"
                if resumable:
                    return Decision("resume", path, f"{crash}: resuming from epoch {status.epoch}")
                return Decision("fresh", path, f"{crash}: from the start (it left no checkpoint)")
            if resumable:
                return Decision("resume", path, f"resuming from epoch {status.epoch} in {path}")
            if path.resolve() == current.resolve():
                return Decision("fresh", reason="interrupted before its first checkpoint")
        return Decision("fresh")


def transplant(source: Path, target: Path, leave_out: Iterable[str] = ()) -> None:
    """Bring a run's files from ``source`` into ``target`` as hard links (copies across filesystems).

    A completed run is reused this way at no cost, and an unfinished one resumed without
    a second copy of its checkpoints -- which a full disk may not have room for. Linking
    never alters the original directory because no run file is rewritten in place: every
    write replaces the file (``groktransfer.utils.atomic``: a new inode, renamed over the
    name) and a deleted checkpoint only loses its name in ``target``. The profiler's
    ``profile/`` is written in place, so it is copied. ``leave_out``: paths relative to
    ``source`` not to bring (damaged files, files the resumed run writes again).
    """
    if source.resolve() == target.resolve():
        return
    skip = set(leave_out)
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name in _SKIP_ON_TRANSPLANT or item.name in skip or is_temporary(item.name):
            continue
        dest = target / item.name
        if item.name == CHECKPOINT_DIR:
            dest.mkdir(exist_ok=True)
            for file in item.iterdir():
                if f"{CHECKPOINT_DIR}/{file.name}" not in skip and file.is_file() and not is_temporary(file.name):
                    _link_or_copy(str(file), str(dest / file.name))
        elif item.is_dir():
            shutil.copytree(item, dest, dirs_exist_ok=True)
        else:
            _link_or_copy(str(item), str(dest))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        if os.path.exists(dst):
            os.unlink(dst)
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)

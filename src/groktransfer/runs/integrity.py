"""Checksums of a run's files, and what a later job may trust of a run directory.

A run directory outlives the process that wrote it: a rerun reuses it, a crashed or
killed job is resumed from it, a source run is read by every job that transfers from
it, and in between it may be copied, synced or left on a disk that filled up. A file
can then be truncated, torn or altered with nothing in its name to say so, and
``torch.load`` reads a checkpoint whose tensor bytes were changed without complaint
(it does not check the zip records' CRCs). So every run keeps ``manifest.json``, a
sha256 of each file it will be judged by, recorded when the file is written:

* each periodic checkpoint (and a source run's optimizer state) and ``final.pt``;
* ``resume.pt`` at every checkpoint, *after* the file (a job killed in between
  leaves a newer ``resume.pt`` than its entry: one that loads and is newer than the
  status record is that case, not damage);
* the tables (``metrics.csv`` ...) once the run has completed and they are final.

Before a job reuses a completed run (:func:`check_completed`) or resumes an unfinished
one (:func:`check_resumable`) it checks the directory against the manifest, so a
damaged file is named and never carried forward. Directories written before every run
had a manifest are checked by loading each checkpoint instead (a truncated file does not
load). ``manifest.json`` itself is a flat JSON object ``{path relative to the run dir:
sha256 hex}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from groktransfer.runs.rundir import (
    CHECKPOINT_DIR,
    FINAL_CHECKPOINT,
    MANIFEST_FILE,
    RESUME_FILE,
    STATUS_FILE,
    TABLE_FILES,
    RunDir,
    SchemaVersionError,
    StatusRecord,
    read_status_file,
)
from groktransfer.utils.atomic import write_json

_EPOCH = re.compile(r"(?:optim_)?epoch_(\d+)\.pt$")
UNRECORDED = f"is not recorded in {MANIFEST_FILE}"
MISMATCH = f"does not match its checksum in {MANIFEST_FILE}"


def sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Damage:
    """One file of a run directory that cannot be trusted, and why."""

    name: str  # relative to the run directory
    why: str

    def describe(self, run_dir: Path) -> str:
        return f"{self.name} in {run_dir} {self.why}"


class Manifest:
    """``manifest.json`` of one run directory, kept in memory by the job that writes the run.

    ``record`` hashes files that were just written and rewrites the manifest atomically;
    the writer drops the entry of a file it deletes (an older checkpoint) from ``entries``
    before the next ``record``.
    """

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self.entries: dict[str, str] = read_manifest(run_dir) or {}

    def name(self, path: Path) -> str:
        """A file's key: its path relative to the run directory."""
        return Path(path).relative_to(self.run_dir.path).as_posix()

    def record(self, *paths: Path) -> None:
        for path in paths:
            self.entries[self.name(path)] = sha256(path)
        self.write()

    def write(self) -> None:
        write_json(self.run_dir.manifest_path, dict(sorted(self.entries.items())))


def read_manifest(run_dir: RunDir) -> dict[str, str] | None:
    """The recorded checksums; None when there is no manifest or it cannot be read."""
    try:
        data = json.loads(run_dir.manifest_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return None
    return data


def record_all(run_dir: RunDir) -> None:
    """Record every checkpoint, ``resume.pt`` and the tables of an existing run (a run written without a manifest)."""
    manifest = Manifest(run_dir)
    manifest.entries = {}
    files = (
        sorted(run_dir.checkpoint_dir.glob("*.pt")) + [run_dir.path / t for t in TABLE_FILES] + [run_dir.resume_path]
    )
    manifest.record(*(f for f in files if f.is_file()))


def status_damage(run_dir: RunDir) -> Damage | None:
    """Why ``status.json`` cannot be read (None when it is absent or readable)."""
    if not run_dir.status_path.exists():
        return None
    try:
        record = read_status_file(run_dir.status_path)
    except SchemaVersionError:
        raise  # not damage: a newer groktransfer wrote it (the message says to upgrade)
    except (ValueError, TypeError) as exc:
        return Damage(STATUS_FILE, f"is not a valid status record ({exc})")
    except OSError as exc:
        return Damage(STATUS_FILE, f"cannot be read ({exc})")
    if record is None:
        return Damage(STATUS_FILE, "is torn or not JSON")
    return None


def load_problem(path: Path) -> str | None:
    """Why a ``.pt`` file does not load (weights only, as every reader loads it), or None."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the answer
        return _cannot_load(exc)
    return None


def _cannot_load(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return (
        f"cannot be loaded ({type(exc).__name__}: {first[:160]})"
        if first
        else f"cannot be loaded ({type(exc).__name__})"
    )


def _check_recorded(run_dir: RunDir, name: str, digest: str) -> Damage | None:
    path = run_dir.path / name
    if not path.is_file():
        return Damage(name, "is missing")
    if sha256(path) != digest:
        return Damage(name, MISMATCH)
    return None


def checkpoint_epoch(name: str) -> int | None:
    """The epoch in a periodic checkpoint's (or optimizer state's) name; None for final.pt."""
    found = _EPOCH.search(name)
    return int(found.group(1)) if found else None


def check_completed(run_dir: RunDir) -> list[Damage]:
    """What a rerun must not reuse of a completed run: every recorded file checked, ``final.pt`` present.

    A run written without a manifest (older groktransfer) has each checkpoint loaded instead;
    a manifest that cannot be read is damage itself (nothing can be verified against it).
    """
    damaged: list[Damage] = []
    bad = status_damage(run_dir)
    if bad is not None:
        return [bad]
    manifest = read_manifest(run_dir)
    final = f"{CHECKPOINT_DIR}/{FINAL_CHECKPOINT}"
    if manifest is None and run_dir.manifest_path.exists():
        return [Damage(MANIFEST_FILE, "is torn or not a manifest")]
    if manifest is None:
        for path in sorted(run_dir.checkpoint_dir.glob("*.pt")):
            problem = load_problem(path)
            if problem is not None:
                damaged.append(Damage(f"{CHECKPOINT_DIR}/{path.name}", problem))
        if not run_dir.final_checkpoint_path.is_file():
            damaged.append(Damage(final, "is missing"))
        return damaged
    for name, digest in sorted(manifest.items()):
        if name == RESUME_FILE:
            continue  # a completed run has deleted it
        found = _check_recorded(run_dir, name, digest)
        if found is not None:
            damaged.append(found)
    if final not in manifest:
        damaged.append(Damage(final, "is missing" if not run_dir.final_checkpoint_path.is_file() else UNRECORDED))
    return damaged


@dataclass
class ResumeCheck:
    """What of an unfinished run a job can continue from, by :func:`check_resumable`.

    ``state`` is the loaded resume state (None: nothing to continue from, and
    ``damaged`` says which file is at fault). ``leave_out``: files not to carry into
    the resumed run (rewritten by it, or damaged); ``notes``: damage the resume works
    around, one line each (a damaged checkpoint at the resume epoch, which the resumed
    run writes again from its resume state).
    """

    state: dict[str, Any] | None = None
    damaged: list[Damage] = field(default_factory=list)
    leave_out: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    @property
    def epoch(self) -> int | None:
        return None if self.state is None else int(self.state["epoch"])


def load_resume_file(path: Path) -> dict[str, Any]:
    """A resume state (weights only); raises for a file that does not load or is not one."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
        raise ValueError("not a resume state (no epoch or model)")
    return state


def check_resumable(run_dir: RunDir, status: StatusRecord | None) -> ResumeCheck:
    """Check an unfinished run before resuming it: ``resume.pt`` and the checkpoints it keeps.

    ``status`` is its readable status record (None when ``status.json`` is torn: the
    resume state must then match its recorded checksum). ``resume.pt`` is good when it
    matches the manifest, or -- a job killed between writing it and recording it -- when
    it loads and is newer than the status record. Checkpoints up to the resume epoch must
    match their checksums (unrecorded ones, written just before a kill or by a version
    without manifests, must load); a damaged one at the resume epoch is left out and
    written again by the resumed run, one before it cannot be, and the run is retrained.
    Checkpoints after it, and ``final.pt``, are rewritten by the resumed run: left out.
    """
    check = ResumeCheck()
    resume = run_dir.resume_path
    if not resume.is_file():
        check.damaged.append(Damage(RESUME_FILE, "is missing"))
        return check
    manifest = read_manifest(run_dir) or {}
    recorded = manifest.get(RESUME_FILE)
    try:
        state = load_resume_file(resume)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the answer
        check.damaged.append(Damage(RESUME_FILE, _cannot_load(exc)))
        return check
    epoch = int(state["epoch"])
    if recorded is not None and sha256(resume) != recorded:
        if status is None or status.epoch is None or epoch <= int(status.epoch):
            check.damaged.append(Damage(RESUME_FILE, MISMATCH))
            return check
    on_disk = sorted(run_dir.checkpoint_dir.glob("*.pt")) if run_dir.checkpoint_dir.is_dir() else []
    names = {f"{CHECKPOINT_DIR}/{p.name}" for p in on_disk} | {n for n in manifest if checkpoint_epoch(n) is not None}
    for name in sorted(names):
        at = checkpoint_epoch(name)
        if at is None or at > epoch:  # final.pt of a run killed while finishing; written after the resume state
            check.leave_out.add(name)
            continue
        path = run_dir.path / name
        if name in manifest:
            found = _check_recorded(run_dir, name, manifest[name])
        else:
            problem = load_problem(path)
            found = None if problem is None else Damage(name, problem)
        if found is None:
            continue
        check.leave_out.add(name)
        if at == epoch:
            check.notes.append(f"{found.describe(run_dir.path)}: written again from its resume state")
        else:
            check.damaged.append(found)
    if not check.damaged:
        check.state = state
    return check


def damage_line(run_dir: Path, damaged: Iterable[Damage]) -> str:
    """The damaged files of a run, in one line (the first three named)."""
    found = list(damaged)
    text = "; ".join(d.describe(run_dir) for d in found[:3])
    return text + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")

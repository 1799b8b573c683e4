"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every file in a run directory is read while the run is still writing it (the analysis
job, a notebook, ``tail``), and a job may be SIGKILLed at any instant (pre-emption,
OOM killer, ``scancel``). Writing in place would leave a truncated CSV or JSON behind.
Instead each helper writes a temporary file *in the same directory* (so the final
``os.replace`` is a rename within one filesystem, which POSIX makes atomic), fsyncs it
so the rename cannot become visible before the data, renames it over the target and
fsyncs the directory so the rename itself survives a power cut.

A SIGKILL between creating and renaming the temporary file leaves an orphan
``.<name>.<pid>.<random>.tmp`` next to the target; its name starts with a dot and ends
in ``.tmp`` so globs such as ``*.csv`` never pick it up, and ``remove_stale_temps``
clears it on the next start.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePath
from typing import IO, Any, Union

PathLike = Union[str, "os.PathLike[str]"]

_TMP_SUFFIX = ".tmp"


def _temp_name(target: Path) -> Path:
    """A unique sibling of ``target``: same directory, hidden, ``.tmp`` suffix."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")


def _fsync_dir(directory: Path) -> None:
    """Persist a rename; best effort because some filesystems refuse O_RDONLY dirs."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(
    path: PathLike,
    mode: str = "w",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    fsync: bool = True,
) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` only when the block exits cleanly.

    Use it for writers that want a file object (``torch.save(obj, f)``,
    ``csv.writer(f)``). If the block raises, the temporary file is removed and the
    previous ``path`` (if any) is left untouched. The file is created with mode
    0o666 filtered by the umask, like ``open()`` would, not 0o600 like ``mkstemp``,
    so collaborators on a shared cluster can read run directories.
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_open supports write modes 'w', 'wt', 'wb', got {mode!r}")
    target = Path(path)
    tmp = _temp_name(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        if "b" in mode:
            f: IO[Any] = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
    except BaseException:
        os.close(fd)
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_dir(target.parent)


def write(path: PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)


def write_text(path: PathLike, text: str, *, encoding: str = "utf-8", fsync: bool = True) -> None:
    """Atomically replace ``path`` with ``text``; newlines are written as given (no translation)."""
    with atomic_open(path, "w", encoding=encoding, newline="", fsync=fsync) as f:
        f.write(text)


def _json_default(obj: Any) -> Any:
    """Encode the values that show up in this project's records but not in plain JSON.

    numpy scalars/arrays and torch tensors (``tolist`` gives plain Python numbers) and
    paths (as strings). Anything else is a bug in the caller, so it still raises.
    """
    if isinstance(obj, PurePath):
        return str(obj)
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json(
    path: PathLike,
    obj: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    fsync: bool = True,
) -> None:
    """Atomically write ``obj`` as JSON (with a trailing newline).

    NaN/inf are written as ``NaN``/``Infinity`` (Python's default): a diverged loss
    must still be recorded, and Python's and pandas' JSON readers accept them.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=_json_default)
    write_text(path, text + "\n", fsync=fsync)


def is_temporary(name: str) -> bool:
    """Whether a file name is one of these helpers' temporaries (orphaned by a killed writer)."""
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


def remove_stale_temps(directory: PathLike, name: str | None = None) -> list[Path]:
    """Delete temporaries orphaned by a killed writer; returns what was removed.

    ``name`` limits the clean-up to one target file's temporaries (a run's metrics table),
    so a sink only ever deletes its own leftovers. Only call it when no other process
    writes the same files (true for a job's own run directory).
    """
    pattern = f".{name}.*{_TMP_SUFFIX}" if name else f".*{_TMP_SUFFIX}"
    removed: list[Path] = []
    for tmp in Path(directory).glob(pattern):
        with suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed

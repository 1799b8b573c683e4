"""A job's log file, ``train.log``: written only once the job owns its run directory, and
still written when the disk is full.

Hydra opens a job's log file before the job runs, which is wrong for a run directory
twice over. A job refused for bad input must write nothing -- not a line into a fresh
directory, nor into the log of another run whose directory it was pointed at. And a
job that fails because the disk is full must still leave its traceback, which is
exactly when nothing can be written. So ``conf/hydra/job_logging`` names
:class:`JobLogHandler`: it holds the records in memory until the job takes its
directory (:func:`claim_job_log`), then writes them and everything after; a refused
job's records are dropped (:func:`discard_job_log`). On claiming, it sets aside
``LOG_RESERVE_FILE`` next to the log; a write that fails for want of space frees it and
writes again, and the job's end removes it.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from groktransfer.runs.rundir import LOG_RESERVE_FILE

#: bytes set aside for the log of a failing job on a full disk (a traceback is a few KiB)
RESERVE_BYTES = 256 * 1024
#: records held before the job claims its directory (planning logs a handful)
MAX_PENDING = 10_000
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class JobLogHandler(logging.Handler):
    """The job's log: held until claimed, then appended to ``filename`` with unbuffered writes."""

    def __init__(self, filename: str, reserve_bytes: int = RESERVE_BYTES, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.path = Path(filename)
        self.reserve_bytes = int(reserve_bytes)
        self._pending: list[logging.LogRecord] = []
        self._fd: int | None = None
        self._state = "pending"  # pending -> open | discarded

    @property
    def reserve_path(self) -> Path:
        return self.path.parent / LOG_RESERVE_FILE

    @property
    def claimed(self) -> bool:
        return self._state == "open"

    def emit(self, record: logging.LogRecord) -> None:
        if self._state == "pending":
            if len(self._pending) < MAX_PENDING:
                self._pending.append(record)
            return
        if self._state != "open":
            return
        try:
            self._write(self.format(record) + "\n")
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def claim(self) -> None:
        """The job writes into its directory from now on: open the log, write what was held."""
        with self.lock:
            if self._state != "pending":
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            self._set_reserve_aside()
            self._state = "open"
            pending, self._pending = self._pending, []
            for record in pending:
                self.emit(record)

    def discard(self) -> None:
        """The job was refused: what it logged goes to the console only."""
        with self.lock:
            if self._state == "pending":
                self._state = "discarded"
                self._pending = []

    def release_reserve(self) -> bool:
        """Free the space set aside; True if there was some."""
        try:
            self.reserve_path.unlink()
        except OSError:
            return False
        return True

    def _set_reserve_aside(self) -> None:
        try:
            with open(self.reserve_path, "wb") as f:
                f.write(b"\0" * self.reserve_bytes)
        except OSError:  # no room even for that: the log is written as far as the disk allows
            self.release_reserve()

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        while data:
            try:
                written = os.write(self._fd, data)  # type: ignore[arg-type]
            except OSError as exc:
                if exc.errno not in _NO_SPACE or not self.release_reserve():
                    raise
                continue
            data = data[written:]

    def close(self) -> None:
        with self.lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self.release_reserve()
            self._pending = []
        super().close()


def _handlers() -> list[JobLogHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, JobLogHandler)]


def claim_job_log() -> None:
    """Start writing the job's log (what it logged so far first)."""
    for handler in _handlers():
        handler.claim()


def discard_job_log() -> None:
    """Drop what a refused job logged: it writes nothing."""
    for handler in _handlers():
        handler.discard()


def job_log_claimed() -> bool:
    return any(h.claimed for h in _handlers())


def release_log_reserve() -> None:
    """Free the log's reserve before logging a failure (the disk may be full)."""
    for handler in _handlers():
        handler.release_reserve()

"""The job's log (``groktransfer.runs.job_log``): nothing before the job takes its directory,
and a failure's traceback still written on a full disk."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from groktransfer.runs import job_log
from groktransfer.runs.job_log import JobLogHandler
from groktransfer.runs.rundir import LOG_RESERVE_FILE


def _logger(handler: JobLogHandler) -> logging.Logger:
    log = logging.getLogger(f"test_job_log.{id(handler)}")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return log


def test_a_refused_job_writes_no_log_and_a_claimed_one_writes_what_it_held(tmp_path: Path) -> None:
    refused = JobLogHandler(str(tmp_path / "refused" / "train.log"))
    _logger(refused).info("planning")
    refused.discard()
    refused.close()
    assert not (tmp_path / "refused").exists()

    taken = JobLogHandler(str(tmp_path / "taken" / "train.log"))
    log = _logger(taken)
    log.info("before the claim")
    assert not (tmp_path / "taken").exists()
    taken.claim()
    log.info("after the claim")
    assert (tmp_path / "taken" / LOG_RESERVE_FILE).stat().st_size == job_log.RESERVE_BYTES
    taken.close()
    assert (tmp_path / "taken" / "train.log").read_text() == "before the claim\nafter the claim\n"
    assert not (tmp_path / "taken" / LOG_RESERVE_FILE).exists()  # the job's end gives the room back


def test_a_write_that_finds_the_disk_full_frees_the_reserve_and_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = JobLogHandler(str(tmp_path / "train.log"))
    handler.claim()
    log = _logger(handler)
    real_write = job_log.os.write

    def full_disk(fd: int, data: bytes) -> int:
        if (tmp_path / LOG_RESERVE_FILE).exists():  # full until the reserve is freed
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(job_log.os, "write", full_disk)
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        log.exception("job failed")
    handler.close()
    text = (tmp_path / "train.log").read_text()
    assert text.startswith("job failed\nTraceback") and "No space left on device" in text

"""The ``Sink`` protocol and ``SinkGroup``, which fans calls out and contains failures.

The trainer talks to one ``SinkGroup``; it never needs to know whether W&B is on.
Logging is a side effect of training, so a broken sink (W&B init timing out, a full
disk, a bug in a table) must not end a run that may have taken hours: the group logs
one warning per sink and method and carries on. Two exceptions to that rule, both on
purpose:

* ``start`` of a *required* sink (the local files, the analysis' source of truth)
  propagates: it fails before any epoch runs, typically because the run directory
  already holds a run (the caller decides about ``force``/resume).
* a *required* sink is never disabled after a later failure: it keeps its rows in
  memory and retries on the next flush, so a transient error loses nothing. An
  *optional* sink (W&B) is disabled after its first failure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from groktransfer.runs.rundir import Status

log = logging.getLogger(__name__)

#: How a sink can be finished: every final status of a run.
STATUSES = (Status.COMPLETED, Status.FAILED, Status.STOPPED)


@dataclass(frozen=True)
class RunMeta:
    """Who this run is: the fields every sink needs to name, group and resume it.

    ``run_id`` is stable across restarts of the same job (resume uses it to find the
    same W&B run). ``group`` is the sweep name when there is one; sinks fall back to
    ``experiment``. ``resume_epoch`` is the last epoch whose state was saved: rows
    logged after it are replayed by the resumed job, so sinks drop them.
    """

    run_id: str
    experiment: str
    task: str
    condition: str
    seed: int
    group: str | None = None
    resume: bool = False
    resume_epoch: int | None = None


@runtime_checkable
class Sink(Protocol):
    """Where a run's numbers go. Called by the trainer through a ``SinkGroup``."""

    def start(self, run_dir: Path, config: Mapping[str, Any], meta: RunMeta) -> None:
        """Open the sink for one run (``config`` is the resolved, plain config)."""

    def log_metrics(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Every eval: train_loss, test_loss, train_acc, test_acc, lr (+ extras)."""

    def log_measures(self, epoch: int, scalars: Mapping[str, Any], freq_rows: Sequence[Mapping[str, Any]]) -> None:
        """Every checkpoint: scalar progress measures and per-frequency rows."""

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Threshold epochs and final values; at the end and possibly at checkpoints."""

    def log_checkpoint(self, path: Path, epoch: int, final: bool) -> None:
        """A checkpoint file was written (``final`` for the run's final checkpoint)."""

    def finish(self, status: Status) -> None:
        """Close the sink with one of ``STATUSES``. Must be idempotent."""


def _name(index: int, sink: object) -> str:
    return f"{type(sink).__name__}[{index}]"


class SinkGroup:
    """Several sinks behind the ``Sink`` interface, with failure isolation.

    Use as a context manager so the sinks are finished on every path out of the
    training loop: ``__exit__`` finishes with ``Status.FAILED`` when an exception is
    propagating (``Status.STOPPED`` for KeyboardInterrupt, i.e. SIGINT),
    ``Status.COMPLETED`` otherwise, unless ``finish`` was already called.
    """

    def __init__(self, sinks: Sequence[Sink], *, required: Sequence[Sink] = ()) -> None:
        self._sinks: list[Sink] = list(sinks)
        self._required = {id(s) for s in required}
        unknown = self._required - {id(s) for s in self._sinks}
        if unknown:
            raise ValueError("every required sink must also be in `sinks`")
        self._disabled: set[int] = set()
        self._started: set[int] = set()  # indices whose start() was attempted
        self._warned: set[tuple[object, str]] = set()
        self._finished_status: Status | None = None

    # -- introspection -------------------------------------------------------------
    @property
    def sinks(self) -> tuple[Sink, ...]:
        return tuple(self._sinks)

    @property
    def finished(self) -> bool:
        return self._finished_status is not None

    def is_disabled(self, sink: Sink) -> bool:
        """True once an optional sink has failed and is no longer called."""
        return any(s is sink and i in self._disabled for i, s in enumerate(self._sinks))

    # -- failure handling ----------------------------------------------------------
    def _failed(self, index: int, method: str, exc: BaseException) -> None:
        sink = self._sinks[index]
        required = id(sink) in self._required
        key = (index, method)
        if key in self._warned:
            log.debug("%s.%s failed again: %r", _name(index, sink), method, exc)
        else:
            self._warned.add(key)
            consequence = (
                "kept enabled; it retries on its next write" if required else "disabled for the rest of this run"
            )
            log.warning(
                "sink %s.%s failed (%s: %s); the sink is %s, training continues",
                _name(index, sink),
                method,
                type(exc).__name__,
                exc,
                consequence,
                exc_info=exc,
            )
        if not required:
            self._disabled.add(index)

    def _call(self, method: str, *args: Any) -> None:
        if self.finished:
            log.debug("SinkGroup.%s after finish ignored", method)
            return
        if not self._started and ("not started", method) not in self._warned:
            self._warned.add(("not started", method))
            log.warning("SinkGroup.%s called before start(); nothing is logged", method)
        for i, sink in enumerate(self._sinks):
            if i in self._disabled or i not in self._started:
                continue
            try:
                getattr(sink, method)(*args)
            except Exception as exc:  # noqa: BLE001 -- isolation is the point
                self._failed(i, method, exc)

    # -- the Sink interface ----------------------------------------------------------
    def start(self, run_dir: Path, config: Mapping[str, Any], meta: RunMeta) -> None:
        """Start every sink in order; a required sink's failure aborts (see module doc)."""
        for i, sink in enumerate(self._sinks):
            self._started.add(i)
            try:
                sink.start(Path(run_dir), config, meta)
            except Exception as exc:
                if id(sink) in self._required:
                    self._abort_started(exclude=i)
                    raise
                self._failed(i, "start", exc)

    def _abort_started(self, exclude: int) -> None:
        """A required start failed: close what was already opened, as failed."""
        for j in sorted(self._started - {exclude}):
            try:
                self._sinks[j].finish(Status.FAILED)
            except Exception as exc:  # noqa: BLE001
                self._failed(j, "finish", exc)
        self._finished_status = Status.FAILED

    def log_metrics(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self._call("log_metrics", epoch, metrics)

    def log_measures(self, epoch: int, scalars: Mapping[str, Any], freq_rows: Sequence[Mapping[str, Any]]) -> None:
        self._call("log_measures", epoch, scalars, freq_rows)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self._call("log_summary", summary)

    def log_checkpoint(self, path: Path, epoch: int, final: bool) -> None:
        self._call("log_checkpoint", Path(path), epoch, final)

    def finish(self, status: Status) -> None:
        """Finish every started sink once, *including* disabled ones.

        A sink disabled after a logging error may still hold resources (an open W&B
        run that would otherwise be left running or leak into the next job of the
        same process), so finishing is always attempted.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {[str(s) for s in STATUSES]}, got {status!r}")
        status = Status(status)
        if self.finished:
            return
        self._finished_status = status
        for i in sorted(self._started):
            try:
                self._sinks[i].finish(status)
            except Exception as exc:  # noqa: BLE001
                self._failed(i, "finish", exc)

    # -- context manager -------------------------------------------------------------
    def __enter__(self) -> SinkGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.finished:
            return
        if exc_type is None:
            status = Status.COMPLETED
        elif issubclass(exc_type, KeyboardInterrupt):
            status = Status.STOPPED
        else:
            status = Status.FAILED
        self.finish(status)

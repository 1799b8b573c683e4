"""Logging sinks: the run directory's files (always) and W&B (when configured).

Typical use in a job::

    with make_sinks(cfg.logger) as sinks:
        sinks.start(run_dir, plain_config, meta)
        ...  # trainer calls sinks.log_metrics / log_measures / log_summary / log_checkpoint
        sinks.finish(Status.COMPLETED)   # or let __exit__ pick FAILED on an exception

The local sink is *required* (its start errors propagate, it is never disabled); W&B is
optional (a failure disables it with one warning, training continues).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from groktransfer.config.schema import LoggerConfig, LoggerMode, LoggerName, to_typed
from groktransfer.sinks.base import STATUSES, RunMeta, Sink, SinkGroup
from groktransfer.sinks.local import DEFAULT_FLUSH_INTERVAL_S, LocalSink, RunDirExistsError

__all__ = [
    "STATUSES",
    "LocalSink",
    "RunDirExistsError",
    "RunMeta",
    "Sink",
    "SinkGroup",
    "make_sinks",
    "to_logger_config",
]


def to_logger_config(cfg: LoggerConfig | Mapping[str, Any] | Any | None) -> LoggerConfig:
    """The ``logger`` group as a ``LoggerConfig``; ``None`` means local files only."""
    if cfg is None:
        return LoggerConfig(name=LoggerName.none, mode=LoggerMode.disabled)
    return to_typed(LoggerConfig, cfg, label="logger")


def make_sinks(
    logger_cfg: LoggerConfig | Mapping[str, Any] | Any | None,
    *,
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    wandb_init_timeout_s: float | None = None,
) -> SinkGroup:
    """``SinkGroup([LocalSink, WandbSink?])`` from the ``logger`` config group.

    W&B is left out entirely -- not even imported -- for ``name: none`` or
    ``mode: disabled``, so turning it off costs nothing.
    """
    cfg = to_logger_config(logger_cfg)
    local = LocalSink(flush_interval_s=flush_interval_s)
    sinks: list[Sink] = [local]
    if cfg.name == LoggerName.wandb and cfg.mode != LoggerMode.disabled:
        from groktransfer.sinks.wandb_sink import INIT_TIMEOUT_S, WandbSink

        sinks.append(WandbSink(cfg, init_timeout_s=wandb_init_timeout_s or INIT_TIMEOUT_S))
    return SinkGroup(sinks, required=[local])

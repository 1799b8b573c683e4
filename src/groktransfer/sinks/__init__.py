"""Logging sinks: the run directory's files (always) and W&B (when configured).

Typical use in a job::

    with make_sinks(cfg.logger) as sinks:
        sinks.start(run_dir, plain_config, meta)
        ...  # trainer calls sinks.log_metrics / log_measures / log_summary / log_checkpoint
        sinks.finish("completed")   # or let __exit__ pick 'failed' on an exception

The local sink is *required* (its start errors propagate, it is never disabled); W&B is
optional (a failure disables it with one warning, training continues).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, Optional, Union

from groktransfer.config.schema import LoggerConfig
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

LOGGER_NAMES = ("wandb", "none")


def to_logger_config(cfg: Union[LoggerConfig, Mapping[str, Any], Any, None]) -> LoggerConfig:
    """Accept a ``LoggerConfig``, an OmegaConf node (structured or not) or a plain dict.

    ``None`` means "no logger group given": local files only.
    """
    if cfg is None:
        return LoggerConfig(name="none", mode="disabled")
    if isinstance(cfg, LoggerConfig):
        return cfg
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    data = dict(cfg)  # type: ignore[arg-type]
    known = {f.name for f in fields(LoggerConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown logger config keys {unknown}; known: {sorted(known)}")
    return LoggerConfig(**data)


def make_sinks(
    logger_cfg: Union[LoggerConfig, Mapping[str, Any], Any, None],
    *,
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    wandb_init_timeout_s: Optional[float] = None,
) -> SinkGroup:
    """``SinkGroup([LocalSink, WandbSink?])`` from the ``logger`` config group.

    W&B is left out entirely -- not even imported -- for ``name: none`` or
    ``mode: disabled``, so turning it off costs nothing.
    """
    cfg = to_logger_config(logger_cfg)
    if cfg.name not in LOGGER_NAMES:
        raise ValueError(f"logger.name must be one of {LOGGER_NAMES}, got {cfg.name!r}")
    local = LocalSink(flush_interval_s=flush_interval_s)
    sinks: list[Sink] = [local]
    if cfg.name == "wandb" and cfg.mode != "disabled":
        from groktransfer.sinks.wandb_sink import INIT_TIMEOUT_S, WandbSink

        sinks.append(WandbSink(cfg, init_timeout_s=wandb_init_timeout_s or INIT_TIMEOUT_S))
    return SinkGroup(sinks, required=[local])

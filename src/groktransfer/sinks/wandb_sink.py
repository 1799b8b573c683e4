"""The Weights & Biases sink (online | offline | disabled) and a reader for offline runs.

Choices, and why (wandb 0.31):

* ``dir=run_dir``: the run's files land in ``<run_dir>/wandb/offline-run-<time>-<id>/``,
  inside the job's own directory, instead of a shared ``./wandb`` -- parallel jobs never
  collide and deleting a run directory deletes its W&B data. Only the API argument is
  used, never ``WANDB_DIR`` (an env var would leak into the next job of the process).
* ``id = wandb_run_id(meta.run_id)`` (a hash) with ``resume="allow"``: a restarted job
  continues the same W&B run; offline, the restart writes a second ``offline-run-*``
  directory with the same id, and ``wandb sync <run_dir>/wandb`` replays both into one
  run in start-time order.
* ``epoch`` is both in every logged dict (``define_metric("*", step_metric="epoch")``
  makes it every chart's x axis) and the explicit ``step``: wandb's own counter restarts
  at 0 in a resumed offline run and would collide with the steps already synced, while
  ``step=epoch`` is monotonic across restarts. Metrics and measures of one epoch merge
  into one history row.
* ``reinit="finish_previous"``, plus finishing our own previous run: two jobs in one
  process (Hydra's basic launcher, a reused joblib worker) never share a run. A seed
  ensemble (``hydra/launcher=ensemble``) uses ``"create_new"``: its members' runs are
  open at the same time, each logged through its own run object.
* settings that never block: ``init_timeout`` (30 s), ``finish_timeout`` (60 s: online,
  data not uploaded by then stays on disk for ``wandb sync``), ``login_timeout``;
  ``silent``/``quiet`` and ``console="off"`` (no stdout capture -- Hydra already logs
  the job, and wrapping stdout fights tqdm); no system-metrics sampler
  (``x_disable_stats``), no code saving. Offline mode never contacts the server.
* mode ``disabled``: nothing is imported or created (``import wandb`` alone is ~0.5 s).
* key frequencies: one ``wandb.Table`` per run (epoch, key_freqs, n_key_freqs; one row
  per checkpoint) and the last checkpoint's per-frequency rows, logged once at finish,
  rather than a table per checkpoint (each table is a file plus an artifact version).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from groktransfer.config.schema import LoggerConfig, LoggerMode
from groktransfer.runs.rundir import MEASURES_FILE, Status
from groktransfer.sinks.base import RunMeta

log = logging.getLogger(__name__)

MODES = LoggerMode.values()
INIT_TIMEOUT_S = 30.0
FINISH_TIMEOUT_S = 60.0
EXIT_CODES = {Status.COMPLETED: 0, Status.FAILED: 1, Status.STOPPED: 130}  # 130 = killed by SIGINT
KEY_FREQS = "key_freqs"  # the string measure listed in the key-frequency table
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_/]")


def wandb_run_id(run_id: str) -> str:
    """Deterministic W&B run id for a job: the same job (and its resumes) -> the same run.

    A hash rather than the run id itself: W&B ids must be unique within a project,
    may not contain ``/ \\ # ? % :`` and are embedded in directory names, and our run
    ids are free-form.
    """
    return hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:16]


def format_run_name(name_format: str, meta: RunMeta) -> str:
    """Expand ``name_format`` with the run's fields (task, condition, seed, ...)."""
    fields = {
        "run_id": meta.run_id,
        "experiment": meta.experiment,
        "task": meta.task,
        "condition": meta.condition,
        "seed": meta.seed,
        "group": meta.group or meta.experiment,
    }
    try:
        return name_format.format_map(fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"logger.name_format {name_format!r} is invalid ({exc}); available fields: {', '.join(sorted(fields))}"
        ) from None


def wandb_key(*parts: Any) -> str:
    """A W&B-friendly key: '/'-joined sections, other characters -> '_'.

    W&B treats '.' as nesting in its UI and only sorts/filters names made of letters,
    digits and '_' (plus '/' as a section separator), so ``thresholds/0.9/epoch``
    becomes ``thresholds/0_9/epoch``.
    """
    return "/".join(_UNSAFE_KEY.sub("_", str(p)) for p in parts)


def flatten_summary(summary: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """Nested mappings -> flat ``wandb_key`` paths (one runs-table column per value)."""
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        path = prefix + (str(key),)
        if isinstance(value, Mapping):
            flat.update(flatten_summary(value, path))
        else:
            flat[wandb_key(*path)] = _plain_value(value)
    return flat


def _plain_value(value: Any) -> Any:
    """Unwrap numpy/torch scalars so W&B stores numbers, not reprs."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes, list, tuple)):
        try:
            return item()
        except (ValueError, RuntimeError):
            return value
    return value


class WandbSink:
    """Mirrors the run to W&B; see the module docstring for every setting chosen."""

    #: wandb.init's ``reinit``. A seed ensemble holds one open run per member in one
    #: process, so its launcher switches this to ``"create_new"`` while it trains.
    reinit: str = "finish_previous"

    def __init__(
        self,
        cfg: LoggerConfig,
        *,
        init_timeout_s: float = INIT_TIMEOUT_S,
        finish_timeout_s: float = FINISH_TIMEOUT_S,
    ) -> None:
        if cfg.mode not in MODES:
            raise ValueError(f"logger.mode must be one of {MODES}, got {cfg.mode!r}")
        self.cfg = cfg
        self.init_timeout_s = init_timeout_s
        self.finish_timeout_s = finish_timeout_s
        self.run: Any = None
        self._finished = False
        self._last_epoch: int | None = None
        self._key_freq_rows: list[list[Any]] = []
        self._last_freq_rows: Sequence[Mapping[str, Any]] = ()
        self._last_freq_epoch: int | None = None
        self._summary_text: dict[str, str] = {}

    @property
    def active(self) -> bool:
        """A run is open *and* nobody else finished it (``reinit``, wandb's atexit)."""
        return self.run is not None and not self._finished and not getattr(self.run, "_is_finished", False)

    def settings(self) -> dict[str, Any]:
        """The ``wandb.Settings`` fields used for every run (why: module docstring)."""
        return {
            "init_timeout": self.init_timeout_s,
            "finish_timeout": self.finish_timeout_s,
            "login_timeout": self.init_timeout_s,
            "silent": True,
            "quiet": True,
            "console": "off",
            "x_disable_stats": True,
            "save_code": False,
            "disable_code": True,
            "disable_job_creation": True,
        }

    def start(self, run_dir: Path, config: Mapping[str, Any], meta: RunMeta) -> None:
        if self.cfg.mode == LoggerMode.disabled:
            return
        import wandb

        if self.active:  # a previous job's run on this very sink: never share it
            self.finish(Status.FAILED)
        self._finished = False
        self._last_epoch = None
        self._key_freq_rows = []
        self._last_freq_rows, self._last_freq_epoch = (), None
        self._summary_text = {}
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if meta.resume:
            self._seed_key_freqs(run_dir, meta.resume_epoch)
        run = wandb.init(
            mode=str(self.cfg.mode),
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=self.cfg.group or meta.group or meta.experiment,
            job_type=self.cfg.job_type or meta.condition,
            name=format_run_name(self.cfg.name_format, meta),
            tags=[str(t) for t in self.cfg.tags] or None,
            config=dict(config),  # the plain config (groktransfer.config.schema.to_plain)
            dir=str(run_dir),
            id=wandb_run_id(meta.run_id),
            resume="allow",
            reinit=self.reinit,
            allow_val_change=True,  # a resumed run may carry a changed path or flag
            settings=wandb.Settings(**self.settings()),
        )
        self.run = run
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")
        run.summary.update({"run_id": meta.run_id, "run_dir": str(run_dir.resolve())})

    def _seed_key_freqs(self, run_dir: Path, resume_epoch: int | None) -> None:
        """On resume, refill the key-frequency table from the run's measures table.

        The table is logged once at finish, so without this a resumed run's table
        would only show the checkpoints after the restart.
        """
        import csv

        path = run_dir / MEASURES_FILE
        if resume_epoch is None or not path.exists():
            return
        try:
            with open(path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    epoch = int(float(row["epoch"]))
                    if epoch <= resume_epoch and row.get(KEY_FREQS) is not None:
                        self._key_freq_rows.append(_key_freq_row(epoch, row[KEY_FREQS]))
        except (OSError, ValueError, KeyError) as exc:
            log.debug("could not seed key frequencies from %s: %r", path, exc)

    def _log(self, epoch: int, data: dict[str, Any]) -> None:
        data["epoch"] = int(epoch)
        self.run.log(data, step=int(epoch))
        if self._last_epoch is None or epoch > self._last_epoch:
            self._last_epoch = int(epoch)

    def log_metrics(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if not self.active:
            return
        self._log(epoch, {wandb_key(k): _plain_value(v) for k, v in metrics.items() if k != "epoch"})

    def log_measures(self, epoch: int, scalars: Mapping[str, Any], freq_rows: Sequence[Mapping[str, Any]]) -> None:
        """Numbers go to history as ``measures/<name>``; ``key_freqs`` to the table.

        Other strings (``fourier_status``, ``fourier_note``: constant per run) would be
        noise in history, so they go to the summary, and only when they change.
        """
        if not self.active:
            return
        data: dict[str, Any] = {}
        text: dict[str, str] = {}
        for key, value in scalars.items():
            value = _plain_value(value)
            if key == KEY_FREQS:
                self._key_freq_rows.append(_key_freq_row(epoch, value))
            elif isinstance(value, bool):
                data[wandb_key("measures", key)] = int(value)
            elif isinstance(value, (int, float)):
                data[wandb_key("measures", key)] = value
            elif isinstance(value, str) and self._summary_text.get(key) != value:
                text[wandb_key("measures", key)] = self._summary_text[key] = value
        self._last_freq_rows, self._last_freq_epoch = list(freq_rows), int(epoch)
        self._log(epoch, data)
        if text:
            self.run.summary.update(text)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        if not self.active:
            return
        self.run.summary.update(flatten_summary(summary))

    def log_checkpoint(self, path: Path, epoch: int, final: bool) -> None:
        """Upload the final checkpoint as a ``model`` artifact if configured (else no-op)."""
        if not (self.active and final and self.cfg.log_checkpoint_artifact):
            return
        import wandb

        artifact = wandb.Artifact(
            name=f"model-{self.run.id}",
            type="model",
            metadata={"epoch": int(epoch), "format": "groktransfer/1"},
        )
        artifact.add_file(str(path), name=Path(path).name)
        self.run.log_artifact(artifact, aliases=["final", f"epoch-{int(epoch)}"])

    def _log_tables(self) -> None:
        import wandb

        data: dict[str, Any] = {}
        if self._key_freq_rows:
            data["key_freqs_table"] = wandb.Table(
                columns=["epoch", "key_freqs", "n_key_freqs"], data=self._key_freq_rows
            )
        if self._last_freq_rows:
            columns = list(dict.fromkeys(k for row in self._last_freq_rows for k in row))
            rows = [[_plain_value(r.get(c)) for c in columns] for r in self._last_freq_rows]
            data["freqs_last_checkpoint"] = wandb.Table(columns=columns, data=rows)
        if not data:
            return
        epoch = self._last_epoch if self._last_epoch is not None else self._last_freq_epoch
        if epoch is None:
            self.run.log(data)
        else:
            self._log(epoch, data)

    def finish(self, status: Status) -> None:
        """Log the tables, record the status, and always finish the W&B run."""
        if not self.active:  # never started, already finished, or finished by wandb
            run, self.run, self._finished = self.run, None, True
            if run is not None:
                run.finish(exit_code=EXIT_CODES.get(status, 1))  # a no-op if finished
            return
        run = self.run
        try:
            try:
                self._log_tables()
            finally:
                run.summary["status"] = str(status)
        finally:
            self._finished = True
            self.run = None
            run.finish(exit_code=EXIT_CODES.get(status, 1))


def _key_freq_row(epoch: int, value: Any) -> list[Any]:
    text = " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    return [int(epoch), text, len(text.split())]

"""The run-directory contract: every file name, status value, record field and column.

A run directory is the interface between training and everything after it -- resume,
the run index, the source cache, sweeps, the analysis job, other people's scripts --
so it is a public, versioned format, and this module is its one definition. Writers
and readers import names from here; no other module spells a run file's name or a
status string. ``docs/architecture.md`` describes the layout in prose.

Layout of one run directory::

    status.json          StatusRecord (schema_version, status, thresholds, final, ...)
    config.yaml          the job's resolved config
    metrics.csv          METRIC_COLUMNS (+ extra keys), one row per eval
    measures.csv         "epoch" + MEASURE_BASE_COLUMNS (+ MEASURE_FOURIER_COLUMNS)
    measures_freqs.csv   "epoch" + FREQ_ROW_KEYS, one row per (checkpoint, frequency)
    source.json          transfer runs: where the initial weights came from
    resume.pt            last training state; present only while a run can be resumed
    manifest.json        sha256 of the checkpoints, resume.pt and, once completed, the tables
    checkpoints/         epoch_NNNNNN.pt, optim_epoch_NNNNNN.pt (source runs), final.pt
    profile/             debug=profile only: trace.json (torch profiler) and summary.txt
    .hydra/              Hydra's composed config, its own config and the overrides
    train.log            the job's log

A cached source run also holds ``source_spec.json`` (what was trained).

Integrity: ``manifest.json`` records a checksum of every checkpoint file when it is
written, of ``resume.pt`` at every checkpoint and of the tables when the run completes;
``groktransfer.runs.integrity`` checks a directory against it before anything reuses or
resumes it, so a damaged file is named and never carried forward.

Versioning: ``status.json`` carries ``schema_version``. Directories written before the
field existed read as version 0 (same fields). A record with a version newer than
``SCHEMA_VERSION`` is refused with ``SchemaVersionError`` rather than misread.
Every write is atomic (temp file + rename), so a killed job never leaves a torn record,
and no file is ever rewritten in place: a resumed run hard-links its predecessor's files
without altering them (``profile/`` is the one exception: the profiler writes it in place).
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from groktransfer.utils.atomic import write_json
from groktransfer.utils.choices import Choice
from groktransfer.utils.errors import UserError

#: Version of the status record written by this code; bump on an incompatible change.
SCHEMA_VERSION = 1

# --------------------------------------------------------------------------- file names
#: the run's StatusRecord (JSON): what it is, how far it got, threshold epochs, final values
STATUS_FILE = "status.json"
#: the job's resolved config (every key, defaults filled in)
CONFIG_FILE = "config.yaml"
#: one row per evaluation: METRIC_COLUMNS (+ extra keys a caller logs)
METRICS_FILE = "metrics.csv"
#: one row per checkpoint: epoch + the progress measures (see the measures columns below)
MEASURES_FILE = "measures.csv"
#: one row per (checkpoint, frequency): epoch + FREQ_ROW_KEYS
FREQS_FILE = "measures_freqs.csv"
#: transfer runs: the source run or file, the chosen checkpoint, its accuracies and measures, what was copied or frozen
SOURCE_FILE = "source.json"
#: the last training state (model, optimizer, scheduler, RNG); present only while the run can be resumed
RESUME_FILE = "resume.pt"
#: epoch_NNNNNN.pt every train.checkpoint_every epochs, optim_epoch_NNNNNN.pt (source runs), final.pt
CHECKPOINT_DIR = "checkpoints"
#: the model at the end of training (TransformerLens names plus a HookedTransformerConfig dict)
FINAL_CHECKPOINT = "final.pt"
#: the periodic checkpoints inside checkpoints/
CHECKPOINT_GLOB = "epoch_*.pt"
#: cached source runs: what was trained (the spec its content hash is taken of)
SOURCE_SPEC_FILE = "source_spec.json"
#: sha256 of each checkpoint, resume.pt and (at completion) the tables: a damaged file is named, never reused
MANIFEST_FILE = "manifest.json"
#: debug=profile only: the torch profiler's output
PROFILE_DIR = "profile"
#: profile/: the trace (open in Perfetto or chrome://tracing)
PROFILE_TRACE = "trace.json"
#: profile/: operators sorted by total CPU time
PROFILE_SUMMARY = "summary.txt"
#: Files of other tools that may sit in a run directory (Hydra's, the job log, W&B's).
#: Hydra's composed config, overrides and Hydra config (written once the job takes the directory)
HYDRA_DIR = ".hydra"
#: .hydra/: the composed config, as Hydra would write it
HYDRA_CONFIG_FILE = "config.yaml"
#: .hydra/: Hydra's own config of the job (run directory, launcher, overrides, ...)
HYDRA_OWN_FILE = "hydra.yaml"
#: .hydra/: the command-line overrides
HYDRA_OVERRIDES_FILE = "overrides.yaml"
#: the job's log (a failed job's traceback is here)
LOG_FILE = "train.log"
#: space set aside while a job runs, freed so that its traceback reaches train.log on a full disk
LOG_RESERVE_FILE = ".train.log.reserve"
#: W&B's offline run files (`wandb sync <run_dir>/wandb` uploads them)
WANDB_DIR = "wandb"

#: What a run writes (removed by ``force=true`` before a run starts over).
RUN_FILES: tuple[str, ...] = (
    STATUS_FILE,
    METRICS_FILE,
    MEASURES_FILE,
    FREQS_FILE,
    SOURCE_FILE,
    RESUME_FILE,
    MANIFEST_FILE,
)
#: The tables a completed run's manifest records (they are final once the run completes).
TABLE_FILES: tuple[str, ...] = (METRICS_FILE, MEASURES_FILE, FREQS_FILE)
RUN_DIRS: tuple[str, ...] = (CHECKPOINT_DIR, WANDB_DIR, PROFILE_DIR)


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:06d}.pt"


def optimizer_state_name(epoch: int) -> str:
    return f"optim_epoch_{epoch:06d}.pt"


# --------------------------------------------------------------------------- table columns
#: metrics.csv: one row per evaluation (extra keys logged by a caller are appended).
METRIC_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "test_loss", "train_acc", "test_acc", "lr")
#: measures.csv: always present after "epoch". ``weight_norm_*`` are sums of SQUARED
#: weights (the paper's "total sum of squared weights"), not norms.
MEASURE_BASE_COLUMNS: tuple[str, ...] = (
    "train_loss",
    "test_loss",
    "train_acc",
    "test_acc",
    "weight_norm_total",
    "weight_norm_embed",
    "weight_norm_pos_embed",
    "weight_norm_attn",
    "weight_norm_mlp",
    "weight_norm_unembed",
    "weight_norm_ln",
    "weight_norm_other",
    "fourier_status",
    "fourier_note",
)
#: measures.csv: added when the task has a Fourier group (fourier_status == "present").
MEASURE_FOURIER_COLUMNS: tuple[str, ...] = (
    "fourier_group",
    "fourier_modulus",
    "fourier_n_pairs",
    "fourier_excluded_pairs",
    "key_freq_threshold",
    "n_key_freqs",
    "key_freqs",
    "frac_neurons_explained",
    "mean_neuron_frac_explained",
    "n_dead_neurons",
    "restricted_loss",
    "restricted_acc",
    "excluded_loss",
    "excluded_acc",
    "restricted_strict_loss",
    "restricted_strict_acc",
    "excluded_strict_loss",
    "excluded_strict_acc",
    "restricted_ref_loss",
    "excluded_ref_loss",
    "gini_W_E",
    "gini_W_L",
    "logit_residual_frac",
)
#: measures.csv: added instead when only the inputs are read in a Fourier basis
#: (fourier_status == "input_only": int_add, whose output has no group).
MEASURE_INPUT_FOURIER_COLUMNS: tuple[str, ...] = (
    "fourier_modulus",
    "fourier_n_pairs",
    "key_freq_threshold",
    "n_key_freqs",
    "key_freqs",
    "frac_neurons_explained",
    "mean_neuron_frac_explained",
    "n_dead_neurons",
    "gini_W_E",
)
#: measures_freqs.csv: after "epoch", one row per frequency of each checkpoint.
FREQ_ROW_KEYS: tuple[str, ...] = (
    "freq",
    "logit_cos_coef",
    "neuron_count",
    "logit_sin_coef",
    "logit_frac",
    "is_key",
    "embed_norm",
    "wl_norm",
)
#: The measures copied into status.json's ``final`` block at the end of a run.
FINAL_MEASURES: tuple[str, ...] = (
    "restricted_loss",
    "excluded_loss",
    "n_key_freqs",
    "key_freqs",
    "gini_W_E",
    "gini_W_L",
    "weight_norm_total",
)


def threshold_key(threshold: float) -> str:
    """Key of a test-accuracy threshold in status.json and column suffixes: 0.999 -> "0.999"."""
    return f"{float(threshold):g}"


# --------------------------------------------------------------------------- status
class Status(Choice):
    """Where a run stands. Only ``completed`` runs are results; ``stopped`` resumes."""

    RUNNING = "running"  # training, or killed while training (a rerun resumes it)
    COMPLETED = "completed"  # finished: its numbers enter the statistics
    FAILED = "failed"  # non-finite loss, timeout or exception (reason, failed_epoch)
    STOPPED = "stopped"  # interrupted by a signal (SLURM pre-emption): resumes from its last checkpoint


class FailureKind(Choice):
    """Why a ``failed`` run failed, which decides what a rerun of its job does."""

    #: an exception (a code error, out of memory, a full disk): a rerun retries it, from its last checkpoint
    CRASH = "crash"
    #: a property of the run (a non-finite loss, the time budget): it would fail the same way again,
    #: so a rerun skips it; force=true trains it again
    DETERMINISTIC = "deterministic"


class RunKind(Choice):
    TARGET = "target"
    SOURCE = "source"


class SchemaVersionError(UserError, ValueError):
    """A run directory written by a newer groktransfer than this one."""


@dataclass
class StatusRecord:
    """The content of ``status.json``: what a run is and how far it got.

    ``thresholds`` maps ``threshold_key(t)`` to ``{"epoch": first epoch at which test
    accuracy reached t or None, "held": whether it still held at the last eval}``.
    ``final`` is the last eval plus ``FINAL_MEASURES``. Fields the writer did not know
    (a newer minor addition) are kept in ``extra`` and written back unchanged.
    """

    # version of this record's format (SCHEMA_VERSION when written)
    schema_version: int = SCHEMA_VERSION
    # running, completed, failed or stopped
    status: Status | None = None
    # why a run failed or stopped
    reason: str | None = None
    # target (a job of a sweep) or source (a cached source run)
    kind: RunKind = RunKind.TARGET
    # the run identity: hash of the config fields that change the numbers
    run_id: str | None = None
    # experiment_name
    experiment: str | None = None
    # task.name
    task: str | None = None
    # task.p
    p: int | None = None
    # transfer condition
    condition: str | None = None
    # the job's top-level seed
    seed: int | None = None
    # resolved split seed
    data_seed: int | None = None
    # resolved init seed
    model_seed: int | None = None
    # resolved source-run seed
    source_seed: int | None = None
    # train.max_epochs
    max_epochs: int | None = None
    # torch threads used
    threads: int | None = None
    # library versions (python, torch, numpy, groktransfer, ...)
    versions: dict[str, str] = field(default_factory=dict)
    # UTC time the run started
    started_at: str | None = None
    # UTC time of the last resume
    resumed_at: str | None = None
    # UTC time of the last update (a running run older than analysis.stale_after_s is stale)
    updated_at: str | None = None
    # UTC time the run ended
    finished_at: str | None = None
    # last epoch trained
    epoch: int | None = None
    # epoch at which the run failed
    failed_epoch: int | None = None
    # failed runs: crash (a rerun retries it) or deterministic (a rerun skips it); null in older records
    failure_kind: FailureKind | None = None
    # why training ended: max_epochs, or early_stop (the last threshold held train.patience epochs)
    stop_reason: str | None = None
    # threshold_key(t) -> {epoch: first epoch test accuracy reached t or null, held: still held at the last eval}
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the last evaluation's metrics
    last_eval: dict[str, Any] = field(default_factory=dict)
    # the last eval plus FINAL_MEASURES
    final: dict[str, Any] = field(default_factory=dict)
    # wall seconds of the whole job
    wall_time_s: float | None = None
    # seconds in the training loop
    train_seconds: float | None = None
    # train_seconds / epochs trained
    seconds_per_epoch: float | None = None
    source: dict[str, Any] | None = None  # transfer runs: the chosen source checkpoint
    spec: dict[str, Any] | None = None  # source runs: what was trained
    # run directory whose files this one reuses (a rerun that trained nothing)
    reused_from: str | None = None
    # fields this version does not know, kept and written back unchanged
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == Status.COMPLETED

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = STATUS_FILE) -> StatusRecord:
        """Parse a record; version 0 (no ``schema_version``, code before the contract) reads as is."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} is not a JSON object")
        version = int(data.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{where} has schema_version {version}, newer than this groktransfer understands "
                f"({SCHEMA_VERSION}); upgrade groktransfer to read this run directory"
            )
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        values["schema_version"] = version
        values["kind"] = RunKind(values.get("kind") or RunKind.TARGET)
        if values.get("status") is not None:
            values["status"] = Status(values["status"])
        if values.get("failure_kind") is not None:
            values["failure_kind"] = FailureKind(values["failure_kind"])
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})


def read_status_file(path: Path) -> StatusRecord | None:
    """The record at ``path``; None when absent or torn (a half write is never trusted).

    Raises ``SchemaVersionError`` for a newer schema and ``ValueError`` for a file that
    parses but is not a status record.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return StatusRecord.from_dict(data, where=str(path))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    """Versions that can change numbers: recorded with every run."""
    import hydra
    import numpy
    import torch

    import groktransfer

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "groktransfer": groktransfer.__version__,
        "hydra": hydra.__version__,
    }


# --------------------------------------------------------------------------- the directory
class RunDir:
    """One run's directory: its paths and its status record."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    # ---- paths ------------------------------------------------------------
    @property
    def status_path(self) -> Path:
        return self.path / STATUS_FILE

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def measures_path(self) -> Path:
        return self.path / MEASURES_FILE

    @property
    def freqs_path(self) -> Path:
        return self.path / FREQS_FILE

    @property
    def source_path(self) -> Path:
        return self.path / SOURCE_FILE

    @property
    def resume_path(self) -> Path:
        return self.path / RESUME_FILE

    @property
    def source_spec_path(self) -> Path:
        return self.path / SOURCE_SPEC_FILE

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def profile_dir(self) -> Path:
        return self.path / PROFILE_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / checkpoint_name(epoch)

    def optimizer_state_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / optimizer_state_name(epoch)

    @property
    def final_checkpoint_path(self) -> Path:
        return self.checkpoint_dir / FINAL_CHECKPOINT

    def epoch_checkpoints(self) -> list[Path]:
        """The periodic checkpoints, oldest first."""
        return sorted(self.checkpoint_dir.glob(CHECKPOINT_GLOB))

    # ---- status -----------------------------------------------------------
    def read_status(self) -> StatusRecord | None:
        """The status record, or None when absent or torn; a newer schema raises."""
        return read_status_file(self.status_path)

    def update_status(self, **fields: Any) -> StatusRecord:
        """Set ``fields`` of the status record (a typo is a TypeError) and rewrite it atomically."""
        record = self.read_status() or StatusRecord()
        record = dataclasses.replace(record, **fields, schema_version=SCHEMA_VERSION, updated_at=utc_now())
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.status_path, record.as_dict())
        return record

    @property
    def is_completed(self) -> bool:
        record = self.read_status()
        return record is not None and record.completed


def record_lost_job(run_dir: Path, reason: str) -> StatusRecord | None:
    """Mark a run whose process died without finishing it as ``failed``; finished records are left alone.

    Used by the launchers that outlive their jobs (SLURM, the ensemble launcher's workers) so no
    run says ``running`` for ever. Its ``resume.pt`` stays, so the run index resumes it when the
    sweep is run again. Returns the new record, or None when there was nothing to mark (never
    started, or it had finished after all).
    """
    rd = RunDir(run_dir)
    status = rd.read_status()
    if status is None or status.status in (Status.COMPLETED, Status.FAILED):
        return None
    resumable = rd.resume_path.exists()
    return rd.update_status(
        status=Status.FAILED,
        reason=reason + ("; rerun the sweep to resume it from its last checkpoint" if resumable else ""),
        failed_epoch=status.epoch or 0,
        failure_kind=FailureKind.CRASH,  # lost, not failed by its own numbers: a rerun retries it
    )

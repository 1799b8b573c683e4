"""The source-run cache and the choice of grokked / memorized checkpoints.

A transfer sweep runs many target jobs that start from the *same* source run
(e.g. a+b mod 113 trained from source_seed 0). That run is trained once, in a
directory named by a content hash of everything that determines its weights, and
every later job finds it there. A file lock makes "trained once" hold across
processes and launchers: the first job to arrive trains, the others wait.

Grokked and memorized checkpoints both come from that one run, picked by the
criteria in config and *verified* against its per-eval metrics; when no checkpoint
qualifies the job refuses, rather than start from a half-generalised model.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock, Timeout

from groktransfer.config.conditions import CONDITIONS, criteria_of
from groktransfer.config.schema import TrainJobConfig
from groktransfer.runs.identity import digest as identity_digest
from groktransfer.runs.identity import source_parts
from groktransfer.runs.integrity import (
    Damage,
    check_completed,
    check_resumable,
    damage_line,
    read_manifest,
    record_all,
    status_damage,
)
from groktransfer.runs.rundir import RunDir
from groktransfer.training.trainer import Streak
from groktransfer.utils.atomic import write_json
from groktransfer.utils.errors import UserError

log = logging.getLogger(__name__)

# Bump when training semantics change so old cache entries are not reused.
SOURCE_CACHE_VERSION = 1


class SourceSelectionError(UserError, RuntimeError):
    """No checkpoint of the source run satisfies the condition's criteria."""


@dataclass(frozen=True)
class SourceSpec:
    """Everything that determines a source run's weights and checkpoints."""

    task: dict[str, Any]  # name, p, frac_train, data_seed
    model: dict[str, Any]
    optimizer: dict[str, Any]
    train: dict[str, Any]  # max_epochs, eval_every, checkpoint_every, thresholds, patience, fast_path
    model_seed: int
    # the gradient filter, where it is not the default (none): absent from the hash otherwise
    gradfilter: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": SOURCE_CACHE_VERSION,
            "task": self.task,
            "model": self.model,
            "optimizer": self.optimizer,
            "train": self.train,
            "model_seed": self.model_seed,
            **({"gradfilter": self.gradfilter} if self.gradfilter else {}),
        }

    def task_config(self) -> dict[str, Any]:
        """The source task's keys (those at their defaults may be left out: ``tasks.registry.typed_task`` fills them)."""
        return dict(self.task)

    @property
    def content_hash(self) -> str:
        return identity_digest(self.as_dict(), 16)

    @property
    def label(self) -> str:
        t = self.task
        p = f"_p{t['p']}" if "p" in t else ""
        return f"{t['name']}{p}_s{self.model_seed}_{self.content_hash}"


def source_spec_from_config(cfg: TrainJobConfig, source_seed: int) -> SourceSpec:
    """The source run a target job's config asks for.

    The source shares the target's model shape, optimizer and cadence; its task,
    p, fraction, epochs and any optimizer overrides come from ``transfer.source``. Both its split and its
    init use ``source_seed``. What is hashed, and how, is ``groktransfer.runs.identity``'s
    (:func:`~groktransfer.runs.identity.source_parts`); selection criteria are *not* part of
    it: the grokked and memorized conditions must share one run.
    """
    return SourceSpec(**source_parts(cfg, source_seed), model_seed=int(source_seed))


@dataclass(frozen=True)
class ChosenCheckpoint:
    """The checkpoint a transfer condition starts from, and why it qualified."""

    condition: str
    epoch: int
    train_acc: float
    test_acc: float
    path: Path
    optimizer_path: Path | None
    criteria: dict[str, Any]
    # the source checkpoint's progress measures (see ``checkpoint_measures``): what the start *is*
    measures: dict[str, Any] = field(default_factory=dict)
    requested_epoch: int | None = None  # transfer=checkpoint: the epoch asked for

    def as_record(self) -> dict[str, Any]:
        return {
            "condition": self.condition,
            "epoch": self.epoch,
            "requested_epoch": self.requested_epoch,
            "train_acc": self.train_acc,
            "test_acc": self.test_acc,
            "checkpoint": str(self.path),
            "criteria": self.criteria,
            "measures": self.measures,
        }


# measures.csv columns recorded for a transfer start (absent ones are skipped: tasks without a group)
START_MEASURES = (
    "train_loss",
    "test_loss",
    "train_acc",
    "test_acc",
    "restricted_loss",
    "restricted_acc",
    "excluded_loss",
    "excluded_acc",
    "n_key_freqs",
    "key_freqs",
    "gini_W_E",
    "gini_W_L",
    "weight_norm_total",
)


def checkpoint_measures(run_dir: RunDir, epoch: int) -> dict[str, Any]:
    """The progress measures the source run recorded at ``epoch`` (empty if it recorded none)."""
    path = run_dir.measures_path
    if not path.exists():
        return {}
    table = pd.read_csv(path)
    rows = table.loc[table["epoch"] == epoch]
    if rows.empty:
        return {}
    return start_measures(rows.iloc[-1].to_dict(), epoch)


def start_measures(row: Mapping[str, Any], epoch: int | None) -> dict[str, Any]:
    """The measures of one measures row (a measures.csv row or a family's measure scalars) that
    a transfer start records: the START_MEASURES first, then every other number the family
    measured (a plugin's own measures too). Absent and NaN entries are skipped.

    Adds ``restricted_test_gap`` = restricted_acc - test_acc: positive when the key-frequency
    part of the logits alone already predicts better than the whole model does on held-out
    pairs -- a generalising circuit forming underneath memorisation (Nanda et al.: restricted
    loss falls before test loss). Accuracies, not losses: a memorised model's test loss is far
    above chance (overconfident), so test_loss - restricted_loss is large before any circuit exists.
    """
    out: dict[str, Any] = {"epoch": None if epoch is None else int(epoch)}
    keys = list(START_MEASURES) + [k for k in row if k not in START_MEASURES and k != "epoch"]
    for key in keys:
        value = row.get(key)
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            continue  # a CSV reads an empty key_freqs as NaN: skip both alike
        if key == "key_freqs":
            out[key] = str(value)
        elif key == "n_key_freqs":
            out[key] = int(value)
        elif isinstance(value, numbers.Real):  # numpy's numbers too (a pandas row)
            out[key] = (
                float(value)
                if key in START_MEASURES or isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
                else int(value)
            )
    if "restricted_acc" in out and "test_acc" in out:
        out["restricted_test_gap"] = out["restricted_acc"] - out["test_acc"]
    return out


# criterion key -> (measure it limits, how it is compared)
MEASURE_LIMITS = {
    "max_restricted_test_gap": ("restricted_test_gap", "<="),
    "max_n_key_freqs": ("n_key_freqs", "<="),
}


def measure_failures(measures: dict[str, Any], criteria: dict[str, Any]) -> list[str]:
    """Each measure limit in ``criteria`` that ``measures`` breaks, as readable text (empty = passes).

    A limit on a measure the checkpoint does not have (no measures recorded, or a task
    without Fourier structure) fails too: an unverifiable start is not a qualifying one.
    """
    failed = []
    for key, (measure, _) in MEASURE_LIMITS.items():
        limit = criteria.get(key)
        if limit is None:
            continue
        value = measures.get(measure)
        if value is None:
            failed.append(f"{key}={limit}: the checkpoint has no recorded {measure}")
        elif float(value) > float(limit):
            failed.append(f"{key}={limit}: {measure} is {float(value):.4g}")
    return failed


def accuracy_limits(criteria: dict[str, Any], chance: float) -> dict[str, float]:
    """The criteria's accuracy limits as accuracies: with ``relative_to_chance`` a limit a is
    chance + a (1 - chance), else a itself."""
    keys = ("min_train_acc", "min_test_acc", "max_test_acc")
    if not criteria.get("relative_to_chance"):
        return {k: float(criteria[k]) for k in keys}
    return {k: float(chance) + float(criteria[k]) * (1.0 - float(chance)) for k in keys}


def select_checkpoint(
    run_dir: RunDir, condition: str, criteria: dict[str, Any], chance: float = 0.0
) -> ChosenCheckpoint:
    """Pick the checkpoint of a finished source run that meets ``criteria``.

    A checkpoint at epoch E qualifies when every eval in [E - held_for, E] has
    train_acc >= min_train_acc and min_test_acc <= test_acc <= max_test_acc (as accuracies:
    :func:`accuracy_limits`, ``chance`` being the source task's chance accuracy).
    Accuracies come from the run's own per-eval table, so the choice is verified,
    not assumed.
    """
    limits = accuracy_limits(criteria, chance)
    metrics = pd.read_csv(run_dir.metrics_path).sort_values("epoch")
    ok = (
        (metrics["train_acc"] >= limits["min_train_acc"])
        & (metrics["test_acc"] >= limits["min_test_acc"])
        & (metrics["test_acc"] <= limits["max_test_acc"])
    )
    held_for = int(criteria.get("held_for", 0))
    epochs = metrics["epoch"].to_numpy()
    ok_arr = ok.to_numpy()
    # qualifying[E]: criterion true at every eval in the window [E - held_for, E]
    qualifying: list[int] = []
    refused: list[str] = []  # checkpoints that met the accuracy rule but failed a measure limit
    streak = Streak()
    for epoch, good in zip(epochs.tolist(), ok_arr.tolist()):
        held = streak.update(int(epoch), bool(good))
        if good and held >= held_for and run_dir.checkpoint_path(int(epoch)).exists():
            failed = measure_failures(checkpoint_measures(run_dir, int(epoch)), criteria)
            if failed:
                refused.append(f"epoch {int(epoch)}: " + "; ".join(failed))
            else:
                qualifying.append(int(epoch))
    if not qualifying and refused:
        raise SourceSelectionError(
            f"no checkpoint of source run {run_dir.path} qualifies as '{condition}': {len(refused)} met the "
            f"accuracy criteria but failed a progress-measure limit (first: {refused[0]}; last: {refused[-1]}). "
            "Relax the limit knowingly, or pick another source (task, p, frac_train)."
        )
    if not qualifying:
        best = metrics.loc[metrics["train_acc"] >= limits["min_train_acc"]]
        hint = ""
        if len(best):
            hint = (
                f"; epochs with train_acc >= {limits['min_train_acc']:.4g} have test_acc from "
                f"{best['test_acc'].min():.3f} to {best['test_acc'].max():.3f}"
            )
        scale = f", accuracies relative to chance {chance:.3g}" if criteria.get("relative_to_chance") else ""
        raise SourceSelectionError(
            f"no checkpoint of source run {run_dir.path} qualifies as '{condition}' "
            f"(criteria {criteria}{scale}){hint}. "
            + (
                "This source task has no clean memorised phase (no checkpoint fits its training data while "
                "test accuracy is still near chance): make it harder to generalise from (for the modular tasks, a "
                "larger p or a smaller frac_train), or relax transfer.memorized.max_test_acc knowingly."
                if condition == "memorized"
                else "The source run did not grok within transfer.source.max_epochs: raise it."
            )
        )
    epoch = qualifying[0] if criteria.get("pick", "first") == "first" else qualifying[-1]
    row = metrics.loc[metrics["epoch"] == epoch].iloc[0]
    optim_path = run_dir.optimizer_state_path(epoch)
    return ChosenCheckpoint(
        condition=condition,
        epoch=epoch,
        train_acc=float(row["train_acc"]),
        test_acc=float(row["test_acc"]),
        path=run_dir.checkpoint_path(epoch),
        optimizer_path=optim_path if optim_path.exists() else None,
        criteria=dict(criteria),
        measures=checkpoint_measures(run_dir, epoch),
    )


def source_chance(run_dir: RunDir) -> float:
    """The chance accuracy of a cached source run's task (its family's ``chance_accuracy``), read
    from the run's ``source_spec.json``; 0 when the spec is missing or its task unknown."""
    from groktransfer.tasks.registry import TASKS, typed_task

    try:
        task = json.loads(run_dir.source_spec_path.read_text())["task"]
        family = TASKS.find(str(task.get("name")))
        return 0.0 if family is None else float(family.chance_accuracy(typed_task(task)))
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return 0.0


def choose_source_checkpoint(
    run_dir: RunDir, transfer: dict[str, Any], condition: str, chance: float = 0.0
) -> ChosenCheckpoint:
    """The checkpoint a transfer condition starts from: by epoch (``checkpoint``) or by its criteria
    (``chance``: the source task's chance accuracy, for criteria stated relative to it)."""
    if CONDITIONS.get(condition).by_epoch:
        return select_checkpoint_near_epoch(run_dir, int(transfer["source"]["epoch"]), criteria_of(transfer, condition))
    return select_checkpoint(run_dir, condition, criteria_of(transfer, condition), chance)


def saved_checkpoint_epochs(run_dir: RunDir) -> list[int]:
    """Epochs of the run's periodic checkpoints (``epoch_NNNNNN.pt``), ascending."""
    return sorted(int(p.stem.split("_")[1]) for p in run_dir.epoch_checkpoints())


def epoch_list(epochs: list[int]) -> str:
    """Epochs for a message: ``0, 20, ..., 1500 (every 20)`` when evenly spaced, else the first and last few."""
    if len(epochs) > 4 and len({b - a for a, b in zip(epochs, epochs[1:])}) == 1:
        return f"{epochs[0]}, {epochs[1]}, ..., {epochs[-1]} (every {epochs[1] - epochs[0]})"
    if len(epochs) > 8:
        return ", ".join(map(str, epochs[:4])) + ", ..., " + ", ".join(map(str, epochs[-3:]))
    return ", ".join(map(str, epochs))


def select_checkpoint_near_epoch(run_dir: RunDir, requested: int, criteria: dict[str, Any]) -> ChosenCheckpoint:
    """The saved checkpoint nearest ``requested`` (the earlier one on a tie), for ``transfer=checkpoint``.

    The chosen epoch and the requested one are both recorded; ``criteria`` may carry
    measure limits (e.g. ``max_restricted_test_gap``), and a checkpoint that fails one
    is refused with the measure named.
    """
    epochs = saved_checkpoint_epochs(run_dir)
    if not epochs:
        raise SourceSelectionError(f"source run {run_dir.path} has no saved checkpoints")
    if int(requested) > epochs[-1]:
        raise SourceSelectionError(
            f"transfer.source.epoch={requested} is beyond the source run {run_dir.path}: it ended at epoch "
            f"{epochs[-1]} and saved checkpoints at epochs {epoch_list(epochs)}"
        )
    epoch = min(epochs, key=lambda e: (abs(e - int(requested)), e))
    measures = checkpoint_measures(run_dir, epoch)
    failed = measure_failures(measures, criteria)
    if failed:
        raise SourceSelectionError(
            f"the source checkpoint at epoch {epoch} (nearest to transfer.source.epoch={requested}) of "
            f"{run_dir.path} is refused: " + "; ".join(failed)
        )
    metrics = pd.read_csv(run_dir.metrics_path)
    row = metrics.loc[metrics["epoch"] == epoch]
    optim_path = run_dir.optimizer_state_path(epoch)
    return ChosenCheckpoint(
        condition="checkpoint",
        epoch=epoch,
        train_acc=float(row["train_acc"].iloc[0]) if len(row) else math.nan,
        test_acc=float(row["test_acc"].iloc[0]) if len(row) else math.nan,
        path=run_dir.checkpoint_path(epoch),
        optimizer_path=optim_path if optim_path.exists() else None,
        criteria=dict(criteria),
        measures=measures,
        requested_epoch=int(requested),
    )


class SourceCache:
    """Directory of source runs, one per content hash, each trained exactly once."""

    def __init__(self, root: Path, lock_timeout_s: float = -1) -> None:
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s

    def run_dir(self, spec: SourceSpec) -> RunDir:
        return RunDir(self.root / spec.label)

    def lock(self, spec: SourceSpec) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{spec.label}.lock"), timeout=self.lock_timeout_s)

    def get_or_train(self, spec: SourceSpec, train_fn: Callable[[RunDir, SourceSpec], None]) -> RunDir:
        """Return the finished source run for ``spec``, training it first if needed.

        ``train_fn(run_dir, spec)`` trains into ``run_dir`` (resuming if it holds a
        partial run). It is called at most once per spec across all processes that
        share the cache directory; the others block on the lock and then reuse it.
        """
        run_dir = self.run_dir(spec)
        if self._is_usable(run_dir, repair=False):
            log.info("source run found in cache: %s", run_dir.path)
            return run_dir
        lock = self.lock(spec)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for source run %s (being trained by another job)", spec.label)
            lock.acquire(timeout=self.lock_timeout_s)
        try:
            if self._is_usable(run_dir, repair=True):  # trained by the job we waited for, and intact
                log.info("source run trained by another job: %s", run_dir.path)
                return run_dir
            if run_dir.path.exists():
                self._resumable(run_dir)
            run_dir.path.mkdir(parents=True, exist_ok=True)
            write_json(run_dir.source_spec_path, spec.as_dict())
            log.info("training source run %s into %s", spec.label, run_dir.path)
            train_fn(run_dir, spec)
            if not self._is_usable(run_dir, repair=False):
                raise RuntimeError(f"source run {run_dir.path} did not complete: {run_dir.read_status()}")
            return run_dir
        finally:
            lock.release()

    def _is_usable(self, run_dir: RunDir, repair: bool) -> bool:
        """Completed, and every file matches its recorded checksum (``groktransfer.runs.integrity``).

        With ``repair`` (only under the lock) a damaged entry is reported and moved
        aside -- never deleted, never used -- so the caller rebuilds it; a run written
        without a manifest (older groktransfer) that loads is given one.
        """
        if status_damage(run_dir) is not None:
            if repair:
                self._move_aside(run_dir, [status_damage(run_dir)])
            return False
        if not run_dir.is_completed:
            return False
        had_manifest = read_manifest(run_dir) is not None
        if not repair:  # outside the lock: checksums only (a run without a manifest is checked under it)
            return had_manifest and not check_completed(run_dir)
        damaged = check_completed(run_dir)
        if not damaged:
            if not had_manifest and repair:
                record_all(run_dir)
            return True
        if repair:
            self._move_aside(run_dir, damaged)
        return False

    def _resumable(self, run_dir: RunDir) -> None:
        """A partial source run about to be resumed in place: a damaged one is moved aside (trained again)."""
        if not run_dir.resume_path.exists() and status_damage(run_dir) is None:
            return
        status = None if status_damage(run_dir) is not None else run_dir.read_status()
        check = check_resumable(run_dir, status)
        if check.state is None:
            self._move_aside(run_dir, check.damaged)
            return
        for note in check.notes:
            log.warning("%s", note)
        for name in check.leave_out:  # written again by the resumed run
            (run_dir.path / name).unlink(missing_ok=True)

    @staticmethod
    def _move_aside(run_dir: RunDir, damaged: list[Damage]) -> None:
        aside = run_dir.path.with_name(f"{run_dir.path.name}.corrupt-{int(time.time())}")
        log.error(
            "cached source run is corrupt (%s); moved it to %s and rebuilding it",
            damage_line(run_dir.path, damaged),
            aside,
        )
        run_dir.path.rename(aside)

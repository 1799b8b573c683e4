"""From a sweep's run records to the checkpoints the circuit analysis reads.

Only the run-directory contract is used (``groktransfer.runs.rundir``): the status record,
the config copy, the source record and the final checkpoint. For every completed run
this finds its final checkpoint, its task, the source checkpoint it started from and
the source run behind it; for every source, a *reference* checkpoint standing for
"the algorithm the source learned" (the grokked checkpoint the grokked condition
started from, else the source run's final checkpoint).

It also decides which models share an MLP *lineage* (the same initial MLP weights),
which is what makes neuron-by-neuron comparisons meaningful:

* a source run's MLP starts from its ``model_seed`` (= the source seed);
* a transfer run that copies (or freezes) the MLP inherits its source's lineage;
* a fresh model (random condition, or an MLP re-initialised at transfer) starts from
  its own ``model_seed`` -- which *equals* the source's when a sweep pins
  ``source_seed`` to a value that is also one of its seeds, so that random run starts
  from exactly the source's initial weights. It is then reported as "same init".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groktransfer.runs.reader import RunConfig, RunContents, SourceRecord, read_run
from groktransfer.runs.rundir import CHECKPOINT_DIR, CONFIG_FILE, FINAL_CHECKPOINT, SOURCE_FILE
from groktransfer.tasks.modular import Task

from ..collect import RunRecord

Lineage = tuple[Any, ...]
COPIED, SAME_INIT, INDEPENDENT = "copied from source", "same init as source", "independent"


@dataclass(frozen=True)
class TaskRef:
    """A task as the run directories describe it (enough to rebuild ``Task``)."""

    name: str
    p: int
    frac_train: float = 0.3
    data_seed: int = 0

    def build(self) -> Task:
        return Task(self.name, self.p, self.frac_train, self.data_seed)

    @property
    def pretty(self) -> str:
        op = {"add": "a+b", "subtract": "a−b", "multiply": "a·b", "divide": "a/b"}.get(self.name, self.name)
        return f"{op} mod {self.p}"


@dataclass
class CheckpointRef:
    """One checkpoint file to profile, read on ``task``."""

    path: Path
    task: TaskRef
    label: str
    lineage: Lineage | None
    epoch: int | None = None
    role: str = ""  # "reference", "start:grokked", "final", ...


@dataclass
class SourceGroup:
    """One source run (or source file) and the checkpoints taken from it."""

    key: str
    task: TaskRef
    lineage: Lineage | None
    model_seed: int | None = None
    reference: CheckpointRef | None = None
    starts: dict[str, CheckpointRef] = field(default_factory=dict)  # by resolved path
    problems: list[str] = field(default_factory=list)


@dataclass
class TargetRun:
    """A completed run with its final checkpoint, its source and its lineage status."""

    record: RunRecord
    condition: str
    seed: int | None
    final: CheckpointRef
    source_key: str | None = None
    start: CheckpointRef | None = None
    lineage_kind: str = INDEPENDENT

    @property
    def name(self) -> str:
        seed = "?" if self.seed is None else self.seed
        return f"{self.condition} s{seed}"


@dataclass
class SweepPlan:
    targets: list[TargetRun] = field(default_factory=list)
    sources: dict[str, SourceGroup] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading
def _first_int(*values: Any) -> int | None:
    for v in values:
        if v is not None:
            try:
                return int(v)
            except (TypeError, ValueError):
                continue
    return None


def contents_of(record: RunRecord) -> RunContents:
    """The run's files as read (once) by ``groktransfer.runs.reader``."""
    return record.contents if record.contents is not None else read_run(record.run_dir)


def _locate(recorded: str | None, search_roots: Sequence[Path], tail: Sequence[str]) -> Path | None:
    """A recorded absolute path, or -- for a sweep moved to another machine -- the same
    file found under one of ``search_roots`` by its last path components ``tail``."""
    if recorded:
        p = Path(recorded)
        if p.is_file():
            return p
    for root in search_roots:
        candidate = root.joinpath(*tail)
        if candidate.is_file():
            return candidate
    return None


def _source_search_roots(record: RunRecord, source_run_dir: str | None) -> list[Path]:
    """Where a source run dir may live: as recorded, or in a ``.sources`` cache next to
    the sweep or one of its parents (``paths.source_cache`` defaults to ``<root>/.sources``)."""
    roots: list[Path] = []
    if source_run_dir:
        roots.append(Path(source_run_dir))
        name = Path(source_run_dir).name
        for ancestor in [record.sweep, *list(record.sweep.parents)[:3]]:
            roots.append(ancestor / ".sources" / name)
    return roots


# --------------------------------------------------------------------------- planning
def _target_task(contents: RunContents, record: RunRecord) -> TaskRef | None:
    task = contents.config.task
    status = contents.status
    name = task.get("name") or record.task
    p = _first_int(task.get("p"), status.p if status else None)
    if not name or p is None:
        return None
    frac = task.get("frac_train")
    return TaskRef(str(name), p, float(frac) if frac is not None else 0.3, contents.data_seed())


def _configured_source(config: RunConfig, target: TaskRef) -> tuple[TaskRef | None, int | None]:
    """The source task and seed a run's config asks for (used to pair random runs with
    the source their transfer siblings used)."""
    src = config.source
    if not src.get("task"):
        return None, None
    seed = _first_int(src.get("source_seed"), config.seed)
    p = _first_int(src.get("p"), target.p)
    frac = float(src["frac_train"]) if src.get("frac_train") is not None else target.frac_train
    return TaskRef(str(src["task"]), int(p or target.p), frac, int(seed or 0)), seed


@dataclass
class _SourceFacts:
    """What one run's source record says about its source."""

    key: str
    task: TaskRef | None
    lineage: Lineage
    model_seed: int | None
    roots: list[Path]  # where the source run dir may be (empty for a plain file)
    start_path: Path | None
    start_recorded: str
    start_role: str  # condition that chose the checkpoint, or "file"
    start_epoch: int | None


def _facts_from_source_record(
    record: RunRecord, sj: SourceRecord, config: RunConfig, target: TaskRef
) -> _SourceFacts | None:
    """Read a source record: a cached source run (``source_run_dir`` + ``chosen``) or an
    explicit source file (``source_path``)."""
    chosen = sj.start if sj.source_path is None else None
    configured, seed = _configured_source(config, target)
    if sj.source_run_dir or (chosen is not None and chosen.checkpoint):
        spec_task = sj.spec_task
        task = configured
        if spec_task.get("name") and spec_task.get("p") is not None:
            task = TaskRef(
                str(spec_task["name"]),
                int(spec_task["p"]),
                float(spec_task.get("frac_train", 0.3)),
                int(spec_task.get("data_seed", 0)),
            )
        model_seed = _first_int(sj.spec_model_seed, seed)
        recorded = str((chosen.checkpoint if chosen is not None else None) or "")
        key = str(sj.source_run_dir or Path(recorded).parent.parent)
        roots = _source_search_roots(record, sj.source_run_dir)
        start = _locate(recorded, roots, [CHECKPOINT_DIR, Path(recorded).name]) if recorded else None
        lineage: Lineage = ("seed", model_seed) if model_seed is not None else ("source", key)
        role = str((chosen.condition if chosen is not None else None) or record.condition or "start")
        epoch = chosen.epoch if chosen is not None else None
        return _SourceFacts(key, task, lineage, model_seed, roots, start, recorded, role, epoch)
    if sj.source_path:
        key = str(sj.source_path)
        epoch = sj.start.epoch if sj.start is not None else None
        return _SourceFacts(key, configured, ("file", key), None, [], _locate(key, [], []), key, "file", epoch)
    return None


def _register_source(
    record: RunRecord, facts: _SourceFacts, plan: SweepPlan
) -> tuple[SourceGroup | None, CheckpointRef | None]:
    """Add the source (and the checkpoint this run started from) to ``plan``.

    The reference for "similarity to the source" is the grokked checkpoint (the one the
    grokked condition started from), else the source run's final checkpoint, else an
    explicit source file.
    """
    if facts.task is None:
        plan.notes.append(f"{record.name}: {SOURCE_FILE} does not say which task the source learned")
        return None, None
    group = plan.sources.get(facts.key)
    if group is None:
        group = plan.sources[facts.key] = SourceGroup(facts.key, facts.task, facts.lineage, facts.model_seed)
        final = _locate(None, facts.roots, [CHECKPOINT_DIR, FINAL_CHECKPOINT]) if facts.roots else None
        if final is not None:
            group.reference = CheckpointRef(
                final, facts.task, f"source {facts.task.pretty} (final)", facts.lineage, role="reference:final"
            )
    if facts.start_path is None:
        group.problems.append(f"{record.name}: source checkpoint {facts.start_recorded or '(not recorded)'} not found")
        return group, None
    start_key = str(facts.start_path.resolve())
    start = group.starts.get(start_key)
    if start is None:
        what = "file" if facts.start_role == "file" else f"{facts.start_role} ckpt"
        epoch = f", epoch {facts.start_epoch}" if facts.start_epoch is not None else ""
        start = CheckpointRef(
            facts.start_path,
            facts.task,
            f"source {facts.task.pretty} ({what}{epoch})",
            facts.lineage,
            epoch=facts.start_epoch,
            role=f"start:{facts.start_role}",
        )
        group.starts[start_key] = start
        if facts.start_role in ("grokked", "file"):
            group.reference = start
    return group, start


def plan_sweep(runs: Sequence[RunRecord]) -> SweepPlan:
    """Decide what to analyse: completed runs with a final checkpoint, their sources, and
    the list of runs skipped (with why)."""
    plan = SweepPlan()
    pending: list[tuple[TargetRun, RunConfig, int | None]] = []
    for rec in runs:
        info = {"run": rec.name, "condition": rec.condition, "seed": rec.seed, "status": rec.status_label}
        if not rec.completed:
            plan.skipped.append(
                {**info, "why": f"status {rec.status_label}" + (f": {rec.reason}" if rec.reason else "")}
            )
            continue
        contents = contents_of(rec)
        final = contents.final_checkpoint
        if final is None:
            plan.skipped.append({**info, "why": f"no {CHECKPOINT_DIR}/{FINAL_CHECKPOINT}"})
            continue
        config, status = contents.config, contents.status
        task = _target_task(contents, rec)
        if task is None:
            plan.skipped.append({**info, "why": f"task name / p not recorded in {CONFIG_FILE}"})
            continue
        model_seed = _first_int(
            status.model_seed if status else None, config.model.get("model_seed"), config.seed, rec.seed
        )
        own: Lineage = ("seed", model_seed) if model_seed is not None else ("run", str(rec.run_dir))
        condition = rec.condition or "unknown"
        target = TargetRun(rec, condition, rec.seed, CheckpointRef(final, task, "", own, role="final"))
        sj = contents.source
        facts = _facts_from_source_record(rec, sj, config, task) if sj is not None else None
        group, start = _register_source(rec, facts, plan) if facts else (None, None)
        if group is not None and sj is not None:
            target.source_key, target.start = group.key, start
            if sj.copies_mlp:
                target.final.lineage, target.lineage_kind = group.lineage, COPIED
        pending.append((target, config, model_seed))
    # Fresh-start runs: pair with the source their config names (same task, p and seed).
    for target, cfg, _model_seed in pending:
        if target.source_key is None:
            src_task, seed = _configured_source(cfg, target.final.task)
            matches = [
                g
                for g in plan.sources.values()
                if src_task is not None
                and g.task.name == src_task.name
                and g.task.p == src_task.p
                and (seed is None or g.model_seed in (None, seed))
            ]
            if len(matches) == 1:
                target.source_key = matches[0].key
            elif len(plan.sources) == 1:
                target.source_key = next(iter(plan.sources))
            elif len(matches) > 1:
                plan.notes.append(
                    f"{target.name}: {len(matches)} source runs match its configured source (task, p, seed); "
                    "not paired with any, so its similarity to the source and retention are n/a"
                )
        group = plan.sources.get(target.source_key or "")
        if target.lineage_kind != COPIED and group is not None and target.final.lineage == group.lineage:
            target.lineage_kind = SAME_INIT
        target.final.label = target.name
        plan.targets.append(target)
    for group in plan.sources.values():
        if group.reference is None and group.starts:
            group.problems.append(
                f"no grokked checkpoint or {FINAL_CHECKPOINT} of the source run found; "
                "similarity to the source uses the only checkpoint available"
            )
            group.reference = next(iter(group.starts.values()))
        plan.notes.extend(group.problems)
    return plan

"""Measure every model of a sweep once, then compare them.

Each checkpoint is loaded and run once: its circuit profile on its own task, and --
for transferred and fresh runs -- its accuracy on the source task (retention). All
comparisons afterwards work on the small profiles (see ``similarity``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
import torch

from groktransfer.interp.circuit.profile import DEFAULT_KEY_FREQ_THRESHOLD, CircuitProfile, profile_model
from groktransfer.interp.circuit.retention import evaluation_problem, label_agreement, source_task_readout
from groktransfer.interp.circuit.similarity import METRICS, PairSimilarity, compare_profiles
from groktransfer.model.checkpoint import CheckpointError, load_checkpoint
from groktransfer.render import PREFERRED_ORDER

from ..collect import RunRecord
from ..stats import condition_order
from .discover import CheckpointRef, SweepPlan, TargetRun, TaskRef, plan_sweep

SOURCE = "source"  # entity name of the source models in pair tables and matrices


@dataclass
class RunResult:
    """One analysed run: its profile, retention and similarity to its source / start."""

    target: TargetRun
    profile: CircuitProfile | None = None
    retention: float = float("nan")
    retention_logit_share: float = float("nan")  # logit variance along the source task's directions
    retention_ceiling: float = float("nan")  # max accuracy on the source task for a perfect target solver
    retention_task: str = ""
    to_source: PairSimilarity = field(default_factory=PairSimilarity)
    to_start: PairSimilarity = field(default_factory=PairSimilarity)
    error: str | None = None


@dataclass
class SourceResult:
    """A source run's reference model and the checkpoints transfer runs started from."""

    key: str
    task: TaskRef
    reference: CircuitProfile | None
    starts: dict[str, CircuitProfile]  # resolved checkpoint path -> profile
    problems: list[str]


@dataclass
class SweepCircuits:
    plan: SweepPlan
    conditions: list[str]
    sources: dict[str, SourceResult]
    runs: list[RunResult]
    pairs: pd.DataFrame
    key_freq_threshold: float
    seconds: float = 0.0

    @property
    def analysed(self) -> list[RunResult]:
        return [r for r in self.runs if r.profile is not None]

    def source_of(self, run: RunResult) -> SourceResult | None:
        return self.sources.get(run.target.source_key or "")


def _profile_ref(ref: CheckpointRef, threshold: float, retention_task: TaskRef | None = None):
    """Load ``ref`` once: profile it on its task and, optionally, read it on another
    (accuracy and logit share along that task's directions; NaN if it cannot be read)."""
    ckpt = load_checkpoint(ref.path)
    model = ckpt.build_model()
    prof = profile_model(model, ref.task.build(), ref.label, threshold, ref.lineage, ckpt.epoch, str(ref.path))
    readout = (float("nan"), float("nan"))
    if retention_task is not None:
        task = retention_task.build()
        if evaluation_problem(model.config.d_vocab, model.config.d_vocab_out, task) is None:
            readout = source_task_readout(model, task)
    return prof, readout


def _pair_rows(results: Sequence[RunResult], sources: dict[str, SourceResult]) -> pd.DataFrame:
    """Ordered pairs (reference, other) of distinct models with every similarity metric:
    each run against its own source's reference (both directions), and every run
    against every other run."""
    rows = []

    def add(
        ref_entity: str, ref: CircuitProfile, other_entity: str, other: CircuitProfile, ref_seed, other_seed
    ) -> None:
        sim = compare_profiles(ref, other)
        rows.append(
            {
                "ref": ref_entity,
                "other": other_entity,
                "ref_model": ref.label,
                "other_model": other.label,
                "ref_seed": ref_seed,
                "other_seed": other_seed,
                "shared_lineage": sim.shared_lineage,
                **sim.as_dict(),
            }
        )

    done = [r for r in results if r.profile is not None]
    for r in done:
        src = sources.get(r.target.source_key or "")
        if src is not None and src.reference is not None:
            add(SOURCE, src.reference, r.target.condition, r.profile, None, r.target.seed)  # type: ignore[arg-type]
            add(r.target.condition, r.profile, SOURCE, src.reference, r.target.seed, None)  # type: ignore[arg-type]
    for a in done:
        for b in done:
            if a is not b:
                add(a.target.condition, a.profile, b.target.condition, b.profile, a.target.seed, b.target.seed)  # type: ignore[arg-type]
    refs = [s.reference for s in sources.values() if s.reference is not None]
    for x in refs:
        for y in refs:
            if x is not y:
                add(SOURCE, x, SOURCE, y, None, None)
    columns = ["ref", "other", "ref_model", "other_model", "ref_seed", "other_seed", "shared_lineage", *METRICS]
    return pd.DataFrame(rows, columns=columns)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, restoring the previous setting.

    The analysis is many small tensor operations (p^2 <= 12,769 rows); on a shared or
    busy machine a multi-threaded pool spends far more time synchronising than
    computing -- measured 10x slower with 2 threads than with 1 under load -- and the
    analysis may run next to training jobs that own the other cores.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def analyse_sweep(runs: Sequence[RunRecord], key_freq_threshold: float = DEFAULT_KEY_FREQ_THRESHOLD) -> SweepCircuits:
    """Profile every source and completed run of a sweep and compare them (single-threaded)."""
    with torch_threads(1):
        return _analyse_sweep(runs, key_freq_threshold)


def _analyse_sweep(runs: Sequence[RunRecord], key_freq_threshold: float) -> SweepCircuits:
    t0 = time.perf_counter()
    plan = plan_sweep(runs)
    sources: dict[str, SourceResult] = {}
    for key, group in plan.sources.items():
        starts: dict[str, CircuitProfile] = {}
        reference: CircuitProfile | None = None
        problems = list(group.problems)
        for path_key, ref in group.starts.items():
            try:
                starts[path_key] = _profile_ref(ref, key_freq_threshold)[0]
            except (CheckpointError, ValueError) as exc:
                problems.append(f"{ref.label}: {exc}")
        if group.reference is not None:
            reference = next(
                (starts[k] for k, ref in group.starts.items() if ref is group.reference and k in starts), None
            )
            if reference is None:
                try:
                    reference = _profile_ref(group.reference, key_freq_threshold)[0]
                except (CheckpointError, ValueError) as exc:
                    problems.append(f"{group.reference.label}: {exc}")
        sources[key] = SourceResult(key, group.task, reference, starts, problems)

    results: list[RunResult] = []
    for target in plan.targets:
        res = RunResult(target)
        target_group = plan.sources.get(target.source_key or "")
        try:
            res.profile, (res.retention, res.retention_logit_share) = _profile_ref(
                target.final, key_freq_threshold, target_group.task if target_group else None
            )
            if target_group is not None:
                res.retention_task = group.task.pretty
                res.retention_ceiling = label_agreement(target_group.task.build(), target.final.task.build())
        except (CheckpointError, ValueError) as exc:
            res.error = f"{type(exc).__name__}: {exc}"
            plan.skipped.append(
                {
                    "run": target.record.name,
                    "condition": target.condition,
                    "seed": target.seed,
                    "status": target.record.status_label,
                    "why": res.error,
                }
            )
            continue
        src = sources.get(target.source_key or "")
        if src is not None and src.reference is not None:
            res.to_source = compare_profiles(src.reference, res.profile)
        start = src.starts.get(str(target.start.path.resolve())) if src and target.start else None
        if start is not None:
            res.to_start = compare_profiles(start, res.profile)
        results.append(res)

    conditions = condition_order([r.target.condition for r in results], PREFERRED_ORDER)
    return SweepCircuits(
        plan=plan,
        conditions=conditions,
        sources=sources,
        runs=results,
        pairs=_pair_rows(results, sources),
        key_freq_threshold=key_freq_threshold,
        seconds=time.perf_counter() - t0,
    )

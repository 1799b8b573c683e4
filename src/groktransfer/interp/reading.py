"""The reading protocol: one model reading, what it needs, what it measures, how it is shown.

Every analysis the interpretability toolkit runs on a model -- the generic ones (head
ablations, direct logit attribution, probes, embedding structure, weight spectra, neurons,
attention) and a task family's own (the digit-sum model's QK/OV circuits, the integer-sum
model's PC fits) -- is a :class:`Reading`, registered by name in :data:`READINGS` (a plugin
registers its own there). :func:`interpret` runs, in registration order, every reading that
the settings switch on and that :meth:`Reading.applies_to` the (model, task): a reading
declares what it ``needs`` (``groktransfer.interp.capabilities.Need``: operands, an answer
after '=', attention, an MLP, a Fourier basis, an embedding, ...) and, for a family's own,
the ``families`` it is about; nothing else decides whether it runs.

A reading measures into the typed long table of the :class:`Interpretation`
(``groktransfer.interp.measurements``), may keep tables (for CSVs) and arrays (for figures),
and shows itself in ``markdown`` and ``figures``; the findings (``groktransfer.interp.findings``)
are computed from the measurements.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

from groktransfer.utils.registry import Registry, load_plugins

from .answers import AnswerSet, answer_set, subsample
from .capabilities import Need, capabilities, is_hooked
from .forward import Score, n_layers_heads, reuse_activations, run_cache
from .measurements import Measurements, quantity
from .settings import InterpSettings

#: a figure of an interpretation: ``fn(res, path, dpi) -> path or None``
FigureFn = Callable[["Interpretation", Path, int], Path | None]


def family_key(task_name: str) -> str:
    """The key a family's own readings and findings are registered under: the task's family for
    families whose readings do not depend on the task (``digit``), else the task's own name
    (``int_add``, ``add``, ...: the modular family's readings are per task)."""
    from groktransfer.tasks.registry import TASKS

    family = TASKS.find(str(task_name))
    return family.name if family is not None and family.name != "modular" else str(task_name)


@dataclass
class Interpretation:
    """Everything :func:`interpret` measured: ``measurements`` (the typed long table),
    ``tables`` by name (CSV files), ``arrays`` for figures, ``notes`` (what did not run, and
    why), ``ran`` (the readings that ran, in order)."""

    task: str
    family: str | None = None
    measurements: Measurements = field(default_factory=Measurements)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    arrays: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    @property
    def scalars(self) -> dict[str, float]:
        """The measurements by flat name (``head_mean_z_L0H1_d_loss[=]``): summary.json's spelling."""
        return self.measurements.flat()

    def add(self, name: str, value: Any, **labels: Any) -> None:
        """Record one measurement (a declared quantity with its declared labels)."""
        self.measurements.add(name, value, **labels)


@dataclass
class ReadingContext:
    """What a reading may use: the (processed) model, the task and its answer view, the
    settings, the clean score, the capabilities of the pair, the result to fill, and what
    earlier readings left for later ones (the head ablations' effects, the neuron clusters)."""

    model: Any
    task: Any
    aset: AnswerSet
    settings: Any
    res: Interpretation
    clean: Score
    offers: frozenset[Need]
    effects: dict[tuple[int, int, str], Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return n_layers_heads(self.model)[0]

    @property
    def n_heads(self) -> int:
        return n_layers_heads(self.model)[1]


class Reading(ABC):
    """One model reading (see the module docstring)."""

    #: its name in READINGS (and in notes)
    name: ClassVar[str] = ""
    #: what the (model, task) must offer
    needs: ClassVar[frozenset[Need]] = frozenset()
    #: family keys (``family_key``) it is about; None = every task
    families: ClassVar[frozenset[str] | None] = None
    #: the quantities it measures (``measurements.QUANTITIES``): what findings may read of it
    produces: ClassVar[tuple[str, ...]] = ()
    #: its figures: (file stem after ``interp_``, fn(res, path, dpi))
    figures: ClassVar[tuple[tuple[str, FigureFn], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.produces:
            quantity(name)  # an undeclared quantity fails at import, not as a missing number later

    def enabled(self, settings: Any) -> bool:
        """Whether ``analysis.interp`` switches it on (default: on)."""
        return True

    def applies_to(self, model: Any, task: Any, aset: AnswerSet | None = None) -> str | None:
        """None when it can read ``model`` on ``task``; else why not (what the pair does not offer)."""
        if self.families is not None and family_key(getattr(task, "name", "")) not in self.families:
            return f"only for {', '.join(sorted(self.families))}"
        missing = self.needs - capabilities(model, task, aset)
        if missing:
            return "needs " + ", ".join(sorted(str(n) for n in missing))
        return None

    @abstractmethod
    def run(self, ctx: ReadingContext) -> None:
        """Measure into ``ctx.res``."""

    def markdown(self, res: Interpretation) -> list[str]:
        """Markdown lines of what it found (empty when it did not run)."""
        return []


class ReadingRegistry(Registry[Reading]):
    """READINGS: readings by name; :meth:`in_order` is the order they run and are shown in."""

    def in_order(self) -> Iterator[Reading]:
        load_plugins()
        return iter(list(self._entries.values()))


READINGS = ReadingRegistry("interpretability reading", "analysis.interp")


def register_reading(reading: Reading) -> Reading:
    """Add a reading (an instance of a :class:`Reading` subclass) under its name."""
    return READINGS.register(reading.name, reading)


class FamilyReadings(Mapping[str, tuple[Reading, ...]]):
    """{family key: its own readings}: a view of READINGS (readings with ``families``)."""

    def _table(self) -> dict[str, tuple[Reading, ...]]:
        out: dict[str, list[Reading]] = {}
        for r in READINGS.in_order():
            for key in sorted(r.families or ()):
                out.setdefault(key, []).append(r)
        return {k: tuple(v) for k, v in out.items()}

    def __getitem__(self, key: str) -> tuple[Reading, ...]:
        return self._table()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


FAMILY_READINGS = FamilyReadings()


def readings_for(family: str | None) -> tuple[Reading, ...]:
    """A family's own readings (empty for a family without any)."""
    return FAMILY_READINGS.get(str(family), ())


# --------------------------------------------------------------------------- running them
def _prefetch(model: Any, aset: AnswerSet, settings: Any, hooks: Sequence[str]) -> None:
    """One clean pass caching every activation the switched-on readings read (hooked models)."""
    n_layers, _ = n_layers_heads(model)
    want = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale"]
    for layer in range(n_layers):
        want += [f"blocks.{layer}.attn.hook_{x}" for x in ["z", *map(str, settings.head_sites), "pattern"]]
        want.append(f"blocks.{layer}.mlp.hook_post")
    want += list(hooks)
    run_cache(model, aset, [n for n in dict.fromkeys(want) if n in model.hook_dict])


def expand_hooks(patterns: Sequence[str], model: Any) -> list[str]:
    """Hook names from patterns (``{L}`` = every layer) that the model has."""
    n_layers, _ = n_layers_heads(model)
    out: list[str] = []
    for pat in patterns:
        names = [pat.replace("{L}", str(layer)) for layer in range(n_layers)] if "{L}" in pat else [pat]
        out += [n for n in names if n in model.hook_dict and n not in out]
    return out


@torch.no_grad()
def interpret(model: Any, task: Any, settings: Any = None) -> Interpretation:
    """Run every reading ``settings`` (``analysis.interp``, an ``InterpSettings``) switches on
    that applies to ``model`` on ``task``; the ones that do not apply are noted with why."""
    s = settings if settings is not None else InterpSettings()
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(s.threads)))  # small matmuls: extra threads only contend
    try:
        with reuse_activations():
            aset = answer_set(task)
            if not aset.has_grid and s.max_inputs:
                aset = subsample(aset, int(s.max_inputs))
            hooked = is_hooked(model)
            if hooked and s.process_weights:  # readings of W_U, W_E and the circuits mean most on processed weights
                from .processing import process_weights

                model = process_weights(model)
            if hooked:
                _prefetch(model, aset, s, expand_hooks(list(s.probe_hooks), model) if s.probes else [])
            return _interpret(model, task, aset, s)
    finally:
        torch.set_num_threads(before)


def _interpret(model: Any, task: Any, aset: AnswerSet, s: Any) -> Interpretation:
    from .ablation import clean_score

    model.eval()
    res = Interpretation(task=aset.name, family=family_key(getattr(task, "name", aset.name)))
    clean = clean_score(model, aset)
    for j, name in enumerate(aset.answer_names):
        res.add("clean_acc", float(clean.acc[j]), answer=name)
        res.add("clean_loss", float(clean.loss[j]), answer=name)
    ctx = ReadingContext(model, task, aset, s, res, clean, capabilities(model, task, aset))
    for reading in READINGS.in_order():
        if not reading.enabled(s):
            continue
        if reading.families is not None and not s.readings:
            continue
        why = reading.applies_to(model, task, aset)
        if why is not None:
            if reading.families is None or res.family in reading.families:
                res.notes.append(f"{reading.name}: not applicable ({why})")
            continue
        try:
            reading.run(ctx)
            res.ran.append(reading.name)
        except (AssertionError, ValueError) as exc:  # e.g. an incomplete (a, b) grid
            res.notes.append(f"{reading.name} skipped: {exc}")
    return res

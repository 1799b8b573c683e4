"""What a numeric config value may be, declared beside its field, and the one check that enforces it.

A schema field that holds a number says so where it is defined::

    lr: float = bounded(1e-3, gt=0)              # finite and > 0
    momentum: float = bounded(0.9, ge=0, lt=1)   # in [0, 1)
    thresholds: List[float] = bounded(factory=lambda: [0.9, 0.999], gt=0, le=1)  # each element

:func:`range_problems` walks any config dataclass (nested blocks included) and returns one
readable line per value that breaks its field's range: NaN and infinities are refused unless
a range allows infinity (none does today), integers must fit a signed 64-bit value (what torch
seeds and tensor sizes take) and lie within the bounds. A new field is covered by declaring its
range, not by a new ``if``; ``tests/test_ranges.py`` refuses a numeric field without one and
derives bad values for every field from its declaration.

Cross-field rules (a checkpoint cadence that is a multiple of the eval cadence, thresholds in
increasing order) stay in ``groktransfer.config.validate``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

#: the largest integer a config may hold: torch seeds and sizes are signed 64-bit
INT_MAX = 2**63 - 1


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field (or of each element of a list field); None = unbounded on that side."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: Any, integer: bool) -> str | None:
        """Why ``value`` is out of range (None when it is fine)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"must be a number, got {value!r}"
        if integer and (not float(value).is_integer() if isinstance(value, float) else False):
            return "must be an integer"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be finite"
        if integer and not -INT_MAX - 1 <= int(value) <= INT_MAX:
            return "must fit a signed 64-bit integer (|value| < 2**63)"
        if self.ge is not None and value < self.ge:
            return f"must be >= {_text(self.ge)}"
        if self.gt is not None and value <= self.gt:
            return f"must be > {_text(self.gt)}"
        if self.le is not None and value > self.le:
            return f"must be <= {_text(self.le)}"
        if self.lt is not None and value >= self.lt:
            return f"must be < {_text(self.lt)}"
        return None

    def describe(self) -> str:
        """The range as the reference documents it ("> 0", "in [0, 1)")."""
        low = f"[{_text(self.ge)}" if self.ge is not None else (f"({_text(self.gt)}" if self.gt is not None else None)
        high = f"{_text(self.le)}]" if self.le is not None else (f"{_text(self.lt)})" if self.lt is not None else None)
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return "finite"


def _text(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field whose value (or, for a list, each element) must lie in the given range."""
    meta = {"range": Range(ge=ge, gt=gt, le=le, lt=lt)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def field_range(f: dataclasses.Field) -> Range | None:
    return f.metadata.get("range") if f.metadata else None


def _optional_of(hint: Any) -> Any:
    """``X`` for ``Optional[X]`` / ``X | None``, else the hint itself."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _is_integer_type(hint: Any) -> bool:
    hint = _optional_of(hint)
    if typing.get_origin(hint) in (list, list):
        hint = typing.get_args(hint)[0]
    return hint is int


def numeric_fields(schema: type) -> dict[str, dataclasses.Field]:
    """The fields of ``schema`` (not nested) that hold a number or a list of numbers."""
    hints = typing.get_type_hints(schema)
    out = {}
    for f in dataclasses.fields(schema):
        hint = _optional_of(hints[f.name])
        if typing.get_origin(hint) in (list, list):
            hint = typing.get_args(hint)[0] if typing.get_args(hint) else Any
        if hint in (int, float):
            out[f.name] = f
    return out


def range_problems(cfg: Any, prefix: str = "") -> list[str]:
    """One line per value of ``cfg`` (a config dataclass, nested blocks included) outside its
    field's declared range, named by its dotted key under ``prefix``."""
    if not dataclasses.is_dataclass(cfg):
        return []
    problems: list[str] = []
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            problems += range_problems(value, key + ".")
            continue
        bounds = field_range(f)
        if bounds is None or value is None:
            continue
        integer = _is_integer_type(hints[f.name])
        for i, item in enumerate(value if isinstance(value, (list, tuple)) else [value]):
            why = bounds.problem(item, integer)
            if why:
                where = f"{key}[{i}]" if isinstance(value, (list, tuple)) else key
                problems.append(f"{where}={item!r}: {why}")
                break
    return problems

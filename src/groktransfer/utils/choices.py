"""``Choice``: the base of every enumerated choice (config fields, run statuses).

Why a ``str`` mixin whose member *values* are the plain strings: the choices are
written to YAML, JSON and CSV files and compared with what older files hold, so a
member must print, hash and compare exactly like its string (``Pick.first ==
"first"``, ``f"{Status.completed}" == "completed"``, ``{"first": ...}[Pick.first]``).
Hydra's structured configs match YAML values against member *names*; config choices
therefore use member names equal to their values (``first = "first"``). Choices that
users extend (tasks, transfer conditions, models, optimizers) are registered names
instead (``groktransfer.utils.registry``).
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """An enum member that behaves as its string value everywhere."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    def __hash__(self) -> int:
        return hash(str(self.value))

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(str(m.value) for m in cls)

"""Named registries that installed packages extend.

Everything a researcher adds to groktransfer -- a task family and its tasks, a model, an
optimizer, a gradient filter, a transfer condition, a measure -- is looked up by the name
its config gives, in one of the ``Registry`` objects that the package defines beside the
generic code that uses them (``groktransfer.tasks.registry.TASK_FAMILIES``, ...). Generic
code never asks *which* entry it holds; it calls the entry.

An installed package adds entries through the Python entry-point group
``groktransfer.plugins``: each entry point names a module (or a callable) that registers
its entries when loaded, e.g. in the plugin's ``pyproject.toml``::

    [project.entry-points."groktransfer.plugins"]
    s5 = "groktransfer_s5.plugin"

Plugins load once, on the first lookup of any registry, so importing groktransfer stays
cheap and a plugin can import groktransfer freely. A wrong name is a ``UserError`` (exit
status 2) that lists the registered names: what an Enum gave at compose time.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar, overload

from groktransfer.utils.errors import UserError

log = logging.getLogger(__name__)

PLUGIN_GROUP = "groktransfer.plugins"

#: The modules that register groktransfer's own entries, loaded like plugins (first): a lookup
#: in any registry -- a task family's config schema from the config layer, say -- then finds the
#: built-in entries whichever modules the caller happened to import.
BUILTIN_MODULES = (
    "groktransfer.tasks.registry",
    "groktransfer.model.registry",
    "groktransfer.config.conditions",
    "groktransfer.training.optimizers",
    "groktransfer.training.gradfilters",
    "groktransfer.training.losses",
    "groktransfer.measures.registry",
)

T = TypeVar("T")

_plugins_loaded = False
_plugins_lock = threading.RLock()


class UnknownNameError(UserError, KeyError):
    """A config names an entry no registry holds; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def load_plugins() -> None:
    """Import every ``groktransfer.plugins`` entry point once (they register on import).

    A plugin that fails to import is reported with its name and the error, and the rest
    still load: one broken package must not make the built-in entries unusable.
    """
    global _plugins_loaded
    with _plugins_lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for ep in entry_points(group=PLUGIN_GROUP):
            try:
                loaded = ep.load()
                if callable(loaded) and not isinstance(loaded, type):
                    loaded()
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                log.warning("groktransfer plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)


class Registry(Generic[T]):
    """Entries of one kind by name; ``kind`` names them in errors ("task family", ...)."""

    def __init__(self, kind: str, config_key: str = "") -> None:
        self.kind = kind
        self.config_key = config_key  # e.g. "optimizer.name": where a user spells the name
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name: str, entry: T | None = None):  # type: ignore[no-untyped-def]
        """Add ``entry`` under ``name`` (or decorate it). A second entry under a name is refused."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def get(self, name: str) -> T:
        load_plugins()
        try:
            return self._entries[str(name)]
        except KeyError:
            where = f"{self.config_key}=" if self.config_key else ""
            raise UnknownNameError(
                f"unknown {self.kind} {where}{name!r}; registered: {', '.join(self.names())}"
            ) from None

    def find(self, name: str) -> T | None:
        """The entry under ``name``, or None: for optional hooks a family may leave out."""
        load_plugins()
        return self._entries.get(str(name))

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return str(name) in self._entries

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple]:
        load_plugins()
        return iter(sorted(self._entries.items()))

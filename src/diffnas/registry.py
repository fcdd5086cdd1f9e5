"""Named registries of parts: spaces, relaxations, regularizers, schedules, ...

A part registers itself with a decorator; configs name parts; `get` fails with the
accepted names and a did-you-mean hint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from diffnas.errors import UnknownNameError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to parts of one kind (e.g. every relaxation)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = item
            return item

        return decorator

    def add(self, name: str, item: T) -> T:
        """Register `item` under `name` without a decorator (e.g. a class made at run time)."""
        return self.register(name)(item)

    def get(self, name: str) -> T:
        _load_builtin_parts()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._items)}; "
                f"known {self.kind}s: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        _load_builtin_parts()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        _load_builtin_parts()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


_loaded = False


def _load_builtin_parts() -> None:
    """Import every built-in part module once, so that their decorators have run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil

    import diffnas

    for package in (
        "spaces",
        "relaxations",
        "regularizers",
        "schedules",
        "updaters",
        "derive",
        "data",
        "callbacks",
    ):
        pkg = importlib.import_module(f"diffnas.{package}")
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    del diffnas
    from diffnas.plugins import load_entry_points

    load_entry_points()  # installed packages' `diffnas.plugins` entry points


SPACES: Registry = Registry("space")
RELAXATIONS: Registry = Registry("relaxation")
REGULARIZERS: Registry = Registry("regularizer")
SCHEDULES: Registry = Registry("schedule")
UPDATERS: Registry = Registry("updater")
DERIVATIONS: Registry = Registry("derivation")
DATASETS: Registry = Registry("dataset")

"""A small name → builder registry (timm style): decorator registration, fnmatch listing, close-match errors."""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from typing import Generic, TypeVar
from collections.abc import Callable, Iterable

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """Maps names to builders. ``@reg.register("name")`` adds one; ``reg.get(name)`` looks it up."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            key = name or fn.__name__
            if key in self._items:
                warnings.warn(f"{self.kind} {key!r} registered twice; the later definition wins", stacklevel=2)
            self._items[key] = fn
            return fn

        return deco

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(unknown_name_message(self.kind, name, self._items)) from None


def unknown_name_message(kind: str, name: str, known: Iterable[str], extra: str = "") -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    listing = ", ".join(known[:40]) + (" …" if len(known) > 40 else "")
    return f"Unknown {kind} {name!r}.{hint} Known: {listing}.{extra}"

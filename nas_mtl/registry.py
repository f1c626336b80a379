"""Named builders (timm style): adding a component, gate, space or data set is one function.

Tests parametrize over each registry, so every registered entry is exercised for free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nas_mtl.errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from name to builder with a one-line description per entry."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} '{name}' is registered twice")
            self._entries[name] = obj
            doc = description or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
            self._descriptions[name] = doc
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise ConfigError(
                f"unknown {self.what} '{name}'{did_you_mean(name, self._entries)}; known: {known}"
            ) from None

    def describe(self, name: str) -> str:
        self.get(name)
        return self._descriptions[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

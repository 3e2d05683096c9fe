"""Name-to-constructor registries: one per extension point (activations, losses, ...).

An unknown name raises ValueError listing the valid names; registering a name
twice raises too, so two modules cannot silently shadow each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered thing: its name, the object, and a one-line description."""

    name: str
    value: T
    description: str


class Registry(Generic[T]):
    """An ordered mapping from names to things, with errors that list the choices."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, description: str) -> T:
        """Register `value` under `name`; a second registration of a name raises."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, value, description)
        return value

    def register(self, name: str, description: str) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def wrap(value: T) -> T:
            return self.add(name, value, description)

        return wrap

    def get(self, name: str) -> T:
        """The thing registered as `name`, or ValueError naming the valid names."""
        try:
            return self._entries[name].value
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

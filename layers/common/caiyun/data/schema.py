"""Collections and their indexes, declared next to the module that owns each collection."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pymongo import IndexModel


@dataclass(frozen=True)
class CollectionSpec:
    """A collection's name and every index its queries need."""

    name: str
    indexes: tuple[IndexModel, ...]


_DECLARED: dict[str, CollectionSpec] = {}


def declare(name: str, *indexes: IndexModel) -> str:
    """Declare a collection with its indexes; returns the name for the owner to use."""
    existing = _DECLARED.get(name)
    if existing is not None and existing.indexes != indexes:
        raise RuntimeError(f"collection {name} declared twice with different indexes")
    _DECLARED[name] = CollectionSpec(name, indexes)
    return name


def declared_so_far() -> list[CollectionSpec]:
    """The collections declared by the modules imported so far (``caiyun.catalog`` imports
    every declaring module first)."""
    return sorted(_DECLARED.values(), key=lambda spec: spec.name)


def create_indexes(db: Any, specs: Iterable[CollectionSpec]) -> dict[str, list[str]]:
    """Create these collections' indexes; safe to run again (existing indexes are kept)."""
    created: dict[str, list[str]] = {}
    for spec in specs:
        for model in spec.indexes:
            # One create_index per model with its options spelled out: mongomock's
            # create_indexes drops options such as partialFilterExpression.
            options = {k: v for k, v in model.document.items() if k != "key"}
            name = db[spec.name].create_index(list(model.document["key"].items()), **options)
            created.setdefault(spec.name, []).append(name)
    return created

"""Collections and their indexes, declared next to the domain module that owns each collection."""

from __future__ import annotations

import importlib
import pkgutil
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


def declared_collections() -> list[CollectionSpec]:
    """Every declared collection, after importing every domain and adapter module."""
    import caiyun.adapters
    import caiyun.domain

    for package in (caiyun.domain, caiyun.adapters):
        for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    return sorted(_DECLARED.values(), key=lambda spec: spec.name)


def ensure_indexes(db: Any) -> dict[str, list[str]]:
    """Create every declared index; safe to run again (existing indexes are kept)."""
    created: dict[str, list[str]] = {}
    for spec in declared_collections():
        for model in spec.indexes:
            # One create_index per model with its options spelled out: mongomock's
            # create_indexes drops options such as partialFilterExpression.
            options = {k: v for k, v in model.document.items() if k != "key"}
            name = db[spec.name].create_index(list(model.document["key"].items()), **options)
            created.setdefault(spec.name, []).append(name)
    return created

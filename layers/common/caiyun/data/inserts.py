"""Inserting a record under an id a retry may already have used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pymongo.errors import BulkWriteError, DuplicateKeyError

Doc = TypeVar("Doc", bound=Mapping[str, Any])


def insert_once(collection: Any, doc: Doc) -> Doc:
    """Insert ``doc``, or return the record already stored under its ``_id`` (a retry of the
    same request that took over after the first died: see ``domain.idempotency``)."""
    try:
        collection.insert_one(doc)
        return doc
    except DuplicateKeyError:
        existing = collection.find_one({"_id": doc["_id"]})
        if existing is None:
            raise
        return existing


def insert_new(collection: Any, docs: list[Any]) -> list[int]:
    """Insert ``docs`` unordered; the positions (in ``docs``) of those a unique index refused
    because another writer stored the same key meanwhile. Any other error is raised."""
    if not docs:
        return []
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        return [e["index"] for e in errors]
    return []

"""The pymongo-shaped handles over the embedded engine: a database, its collections and their
cursors, each call run through :meth:`caiyun.data.embedded.EmbeddedEngine.run` (under the
engine's lock, durable before it returns; a read catches up with other processes without the
data directory's write lock).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import mongomock.helpers
from pymongo.errors import OperationFailure

if TYPE_CHECKING:
    from caiyun.data.embedded import EmbeddedEngine


# Collection calls that never write: they catch up with other processes without taking the
# data directory's write lock. Every other call is a write.
_READS = frozenset(
    {
        "find_one",
        "count_documents",
        "estimated_document_count",
        "distinct",
        "index_information",
        "list_indexes",
        "options",
    }
)
_WRITING_STAGES = frozenset({"$out", "$merge"})


class EmbeddedCollection:
    """A pymongo-style collection whose every call is atomic and durable."""

    def __init__(self, engine: EmbeddedEngine, name: str) -> None:
        self._engine = engine
        self.name = name

    def create_index(self, keys: Any, **options: Any) -> str:
        """Like pymongo's, except that documents already breaking a new unique index do not
        refuse it (MongoDB would): a data directory written before its rules were enforced
        across processes must still open. The clashing documents are logged and listed in
        :attr:`EmbeddedEngine.clashes` instead, and mongomock's check of existing documents,
        which also ignores a partial filter, is not run."""
        index_list = mongomock.helpers.create_index_list(keys)
        name = options.pop("name", None) or mongomock.helpers.gen_index_name(index_list)
        spec: dict[str, Any] = {"key": index_list}
        for flag in ("sparse", "unique"):
            if options.pop(flag, False):
                spec[flag] = True
        for option in ("expireAfterSeconds", "partialFilterExpression"):
            if options.get(option) is not None:
                spec[option] = options.pop(option)
        options.pop("background", None)
        if options:
            raise OperationFailure(f"the embedded engine has no index option {sorted(options)}")

        def register() -> str:
            store = self._engine.store(self.name)
            existing = store.indexes.get(name)
            if existing is not None and existing != spec:
                raise OperationFailure(
                    f"Index with name: {name} already exists with different options"
                )
            if existing is None:
                store.create_index(name, spec)
                if spec.get("unique"):
                    self._engine.note_clashes(self.name, name)
            return name

        return self._engine.run(register, writes=False)

    def find(self, *args: Any, **kwargs: Any) -> LockedCursor:
        """Like pymongo's ``find``; the documents are read under the engine lock when the cursor
        is first iterated (mongomock reads lazily, which would race other threads' writes)."""
        cursor = self._engine.run(
            lambda: self._engine.mongomock_collection(self.name).find(*args, **kwargs),
            writes=False,
        )
        return LockedCursor(self._engine, cursor)

    def aggregate(self, pipeline: Any, *args: Any, **kwargs: Any) -> Any:
        """Like pymongo's; a read unless a stage writes (``$out``, ``$merge``)."""
        stages = pipeline if isinstance(pipeline, list) else []
        writes = any(isinstance(s, dict) and _WRITING_STAGES & s.keys() for s in stages)
        return self._engine.run(
            lambda: self._engine.mongomock_collection(self.name).aggregate(
                pipeline, *args, **kwargs
            ),
            writes=writes,
        )

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._engine.mongomock_collection(self.name), attr)
        if not callable(target):
            return target

        def locked(*args: Any, **kwargs: Any) -> Any:
            # Looked up again inside the lock: a reload may have replaced the collection.
            def call() -> Any:
                return getattr(self._engine.mongomock_collection(self.name), attr)(*args, **kwargs)

            return self._engine.run(call, writes=attr not in _READS)

        return locked


class LockedCursor:
    """A cursor whose chained options apply at once and whose reading happens under the lock."""

    def __init__(self, engine: EmbeddedEngine, cursor: Any) -> None:
        self._engine = engine
        self._cursor = cursor
        self._rows: Iterator[dict[str, Any]] | None = None

    def _chain(self, name: str, *args: Any, **kwargs: Any) -> LockedCursor:
        getattr(self._cursor, name)(*args, **kwargs)
        return self

    def sort(self, *args: Any, **kwargs: Any) -> LockedCursor:
        """Order the results (as pymongo's ``Cursor.sort``)."""
        return self._chain("sort", *args, **kwargs)

    def skip(self, count: int) -> LockedCursor:
        """Skip results (as pymongo's ``Cursor.skip``)."""
        return self._chain("skip", count)

    def limit(self, count: int) -> LockedCursor:
        """Cap the results (as pymongo's ``Cursor.limit``)."""
        return self._chain("limit", count)

    def batch_size(self, size: int) -> LockedCursor:
        """Accepted for pymongo compatibility; the embedded engine reads in one go."""
        return self

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._rows is None:
            self._rows = iter(self._engine.run(lambda: list(self._cursor), writes=False))
        return next(self._rows)


class EmbeddedDatabase:
    """A pymongo-style database over an :class:`EmbeddedEngine`."""

    def __init__(self, engine: EmbeddedEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> EmbeddedEngine:
        """The engine behind this database."""
        return self._engine

    def __getitem__(self, name: str) -> EmbeddedCollection:
        return EmbeddedCollection(self._engine, name)

    def get_collection(self, name: str) -> EmbeddedCollection:
        """The named collection."""
        return self[name]

    def list_collection_names(self) -> list[str]:
        """Names of the collections that hold data or indexes."""
        return self._engine.run(
            lambda: self._engine.mongomock_collection("_").database.list_collection_names(),
            writes=False,
        )

"""The embedded database engine: mongomock's query engine made durable and thread-safe.

Why this engine: mongomock covers the pymongo API the domain uses (conditional
``find_one_and_update``, upserts, unique and multikey indexes, aggregation) far more completely
than montydb or mongita, but it is memory-only and not safe for concurrent writers. This module
adds the two missing pieces:

* durability: every document a call writes is written through to SQLite (one row per document,
  BSON-encoded) and committed before the call returns, so `caiyun dev` keeps its data across
  restarts; the store journals what it is given and what mongomock changes in place
  (``caiyun.data.indexes`` sees both, to keep its hash indexes);
* atomicity: every collection call runs under one engine-wide lock, so a conditional update is
  atomic against other threads, as a single-document write is on a MongoDB server.

Other processes (``caiyun admin`` while the sandbox runs) write to the same SQLite file; SQLite's
``data_version`` tells us when that happened and the engine reloads before the next call.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bson
import mongomock
import mongomock.helpers
from mongomock.collection import BulkOperationBuilder
from mongomock.store import CollectionStore, DatabaseStore, ServerStore
from pymongo.errors import OperationFailure

from caiyun.data.indexes import IndexedStore

if TYPE_CHECKING:
    from caiyun.clock import Clock

# What a store asks for the naive UTC time TTL expiry is measured against (None: mongomock's).
_Now = Callable[[], datetime] | None


def _without_sort(add: Callable[..., Any]) -> Callable[..., Any]:
    # pymongo 4.11+ hands bulk builders a ``sort`` (for UpdateOne/ReplaceOne(sort=...)), which
    # mongomock 4.3 predates; without one the operation means the same, so drop it.
    def added(self: BulkOperationBuilder, *args: Any, sort: Any = None, **kwargs: Any) -> Any:
        if sort is not None:
            raise ValueError("the embedded engine has no sort in bulk_write operations")
        return add(self, *args, **kwargs)

    return added


BulkOperationBuilder.add_update = _without_sort(BulkOperationBuilder.add_update)

BulkOperationBuilder.add_replace = _without_sort(BulkOperationBuilder.add_replace)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    key BLOB NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (collection, key)
)
"""


def _encode_key(key: Any) -> bytes:
    return bson.encode({"k": key})


def _decode_key(raw: bytes) -> Any:
    return bson.decode(raw)["k"]


class _Journal:
    """Remembers which documents changed since the last flush (of a durable engine only: an
    in-memory one has nothing to write through)."""

    def __init__(self, durable: bool) -> None:
        self.durable = durable
        self.dirty: set[tuple[str, Any]] = set()

    def touch(self, collection: str, key: Any) -> None:
        if self.durable:
            self.dirty.add((collection, key))


class _JournaledCollectionStore(IndexedStore):
    def __init__(self, name: str, journal: _Journal, now: _Now) -> None:
        super().__init__(name, now)
        self._journal = journal

    def __setitem__(self, key: Any, val: Any) -> None:
        super().__setitem__(key, val)
        self._journal.touch(self.name, key)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._journal.touch(self.name, key)

    def updated(self, key: Any) -> None:
        """Journal a document mongomock changed in place (the store sees no write for it)."""
        self._journal.touch(self.name, key)

    def drop(self) -> None:
        for key in list(self._documents):
            self._journal.touch(self.name, key)
        super().drop()


class _JournaledDatabaseStore(DatabaseStore):
    def __init__(self, journal: _Journal, now: _Now) -> None:
        super().__init__()
        self._journal = journal
        self._now = now

    def __getitem__(self, col_name: str) -> CollectionStore:
        if col_name not in self._collections:
            self._collections[col_name] = _JournaledCollectionStore(
                col_name, self._journal, self._now
            )
        return self._collections[col_name]


class _JournaledServerStore(ServerStore):
    def __init__(self, journal: _Journal, now: _Now) -> None:
        super().__init__()
        self._journal = journal
        self._now = now

    def __getitem__(self, db_name: str) -> DatabaseStore:
        if db_name not in self._databases:
            self._databases[db_name] = _JournaledDatabaseStore(self._journal, self._now)
        return self._databases[db_name]


class EmbeddedEngine:
    """One embedded database, in memory or persisted to ``<data_dir>/caiyun.sqlite3``."""

    def __init__(
        self, data_dir: str | Path | None, db_name: str = "caiyun", *, clock: Clock | None = None
    ) -> None:
        self._lock = threading.RLock()
        # TTL documents expire by the services' clock when there is one, so the sandbox's
        # `/dev/clock` and a test clock started at a fixed moment move expiry with every other
        # time rule.
        self._ttl_now: _Now = None
        if clock is not None:
            self._ttl_now = lambda: clock.now().astimezone(timezone.utc).replace(tzinfo=None)
        self._journal = _Journal(durable=bool(data_dir))
        self._db_name = db_name
        self._sqlite: sqlite3.Connection | None = None
        self._data_version: int | None = None
        self._server = self._new_server()
        if data_dir:
            path = Path(data_dir)
            path.mkdir(parents=True, exist_ok=True)
            self._sqlite = sqlite3.connect(
                path / "caiyun.sqlite3", check_same_thread=False, timeout=30, isolation_level=None
            )
            self._sqlite.execute("PRAGMA journal_mode=WAL")
            self._sqlite.execute("PRAGMA synchronous=NORMAL")
            self._sqlite.execute(_SCHEMA)
            self._reload()

    def _new_server(self) -> tuple[mongomock.MongoClient, _JournaledServerStore]:
        store = _JournaledServerStore(self._journal, self._ttl_now)
        self._collections: dict[str, Any] = {}
        return mongomock.MongoClient(tz_aware=True, _store=store), store

    @property
    def database(self) -> EmbeddedDatabase:
        """The pymongo-compatible database object."""
        return EmbeddedDatabase(self)

    def mongomock_collection(self, name: str) -> Any:
        """The underlying mongomock collection (used by the locked proxy only)."""
        collection = self._collections.get(name)
        if collection is None:
            client, _ = self._server
            collection = self._collections[name] = client[self._db_name][name]
        return collection

    def run(self, call: Callable[[], Any]) -> Any:
        """Run one collection call atomically and make its writes durable."""
        with self._lock:
            self._sync_from_other_processes()
            try:
                return call()
            finally:
                self._flush()

    def _sync_from_other_processes(self) -> None:
        if self._sqlite is None:
            return
        version = self._sqlite.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._reload()

    def _reload(self) -> None:
        assert self._sqlite is not None
        # Noted before reading: a commit landing while we read moves it again, and the next
        # call reloads once more instead of missing that commit.
        self._data_version = self._sqlite.execute("PRAGMA data_version").fetchone()[0]
        _, old_store = self._server
        indexes = {
            name: dict(coll.indexes) for name, coll in old_store[self._db_name]._collections.items()
        }
        self._server = self._new_server()
        _, store = self._server
        db_store = store[self._db_name]
        for name, index_map in indexes.items():
            for index_name, spec in index_map.items():
                db_store[name].create_index(index_name, spec)
        for collection, key, body in self._sqlite.execute(
            "SELECT collection, key, body FROM documents ORDER BY rowid"
        ):
            db_store[collection][_decode_key(key)] = bson.decode(body)
        self._journal.dirty.clear()

    def _flush(self) -> None:
        dirty = self._journal.dirty
        if not dirty:
            return
        self._journal.dirty = set()
        if self._sqlite is None:
            return
        _, store = self._server
        db_store = store[self._db_name]
        upserts, deletes = [], []
        for collection, key in dirty:
            doc = db_store[collection]._documents.get(key)
            if doc is None:
                deletes.append((collection, _encode_key(key)))
            else:
                upserts.append((collection, _encode_key(key), bson.encode(doc)))
        with self._sqlite:
            self._sqlite.execute("BEGIN IMMEDIATE")
            self._sqlite.executemany(
                "DELETE FROM documents WHERE collection = ? AND key = ?", deletes
            )
            self._sqlite.executemany(
                "INSERT INTO documents (collection, key, body) VALUES (?, ?, ?) "
                "ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body",
                upserts,
            )
        # data_version is left alone: it moves only for other connections' commits, and one
        # that landed during this call must still trigger a reload on the next.

    def close(self) -> None:
        """Release the SQLite file."""
        with self._lock:
            if self._sqlite is not None:
                self._sqlite.close()
                self._sqlite = None


class EmbeddedCollection:
    """A pymongo-style collection whose every call is atomic and durable."""

    def __init__(self, engine: EmbeddedEngine, name: str) -> None:
        self._engine = engine
        self.name = name

    def create_index(self, keys: Any, **options: Any) -> str:
        """Like pymongo's; a partial unique index is registered without mongomock's check of
        existing documents, which ignores the partial filter and would refuse valid data."""
        if "partialFilterExpression" not in options:
            return self._engine.run(
                lambda: self._engine.mongomock_collection(self.name).create_index(keys, **options)
            )
        index_list = mongomock.helpers.create_index_list(keys)
        name = options.pop("name", None) or mongomock.helpers.gen_index_name(index_list)
        spec = {"key": index_list, **options}

        def register() -> str:
            store = self._engine.mongomock_collection(self.name)._store
            if store.indexes.get(name, spec) != spec:
                raise OperationFailure(
                    f"Index with name: {name} already exists with different options"
                )
            store.create_index(name, spec)
            return name

        return self._engine.run(register)

    def find(self, *args: Any, **kwargs: Any) -> LockedCursor:
        """Like pymongo's ``find``; the documents are read under the engine lock when the cursor
        is first iterated (mongomock reads lazily, which would race other threads' writes)."""
        cursor = self._engine.run(
            lambda: self._engine.mongomock_collection(self.name).find(*args, **kwargs)
        )
        return LockedCursor(self._engine, cursor)

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._engine.mongomock_collection(self.name), attr)
        if not callable(target):
            return target

        def locked(*args: Any, **kwargs: Any) -> Any:
            # Looked up again inside the lock: a reload may have replaced the collection.
            return self._engine.run(
                lambda: getattr(self._engine.mongomock_collection(self.name), attr)(*args, **kwargs)
            )

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
            self._rows = iter(self._engine.run(lambda: list(self._cursor)))
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
            lambda: self._engine.mongomock_collection("_").database.list_collection_names()
        )

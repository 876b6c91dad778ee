"""The embedded database engine: mongomock's query engine made durable and thread-safe.

Why this engine: mongomock covers the pymongo API the domain uses (conditional
``find_one_and_update``, upserts, unique and multikey indexes, aggregation) far more completely
than montydb or mongita, but it is memory-only and not safe for concurrent writers. This module
adds the two missing pieces:

* durability: every document a call writes is written through to SQLite (one row per document,
  BSON-encoded) and committed before the call returns, so `caiyun dev` keeps its data across
  restarts; the store journals what it is given and what mongomock changes in place
  (``caiyun.data.embedded_indexes`` sees both, to keep its hash indexes, and
  ``caiyun.data.embedded_patches`` answers through them);
* atomicity: every collection call runs under one engine-wide lock, so a conditional update is
  atomic against other threads, as a single-document write is on a MongoDB server.

The database, collections and cursors the domain holds (``caiyun.data.embedded_handles``) run
every call through the engine (:meth:`EmbeddedEngine.run`).

Other processes (``caiyun admin`` or ``caiyun import`` while the sandbox runs) write to the same
SQLite file. Every write call holds SQLite's write lock (``BEGIN IMMEDIATE``) for its whole
read-check-write: it first applies what other processes committed (the ``changes`` log names
every document a commit wrote, so catching up reads those documents only), then runs the call
against that current state, then commits. Two processes can therefore never both win a unique
rule or a conditional update. A read catches up the same way without taking the lock. A
writer waits for the lock at most ``busy_timeout_s`` and then answers UNAVAILABLE
(:class:`DatabaseBusy`); the write-ahead log is checkpointed once it passes ``wal_limit_bytes``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bson
import mongomock
import mongomock.helpers
from mongomock.collection import BulkOperationBuilder
from mongomock.store import CollectionStore, DatabaseStore, ServerStore

# Imported for what it does: mongomock's collections answer through the indexes from then on.
import caiyun.data.embedded_patches  # noqa: F401
from caiyun.data.embedded_handles import EmbeddedDatabase
from caiyun.data.embedded_indexes import Clash, IndexedStore, unique_clashes
from caiyun.errors import AppError

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


BulkOperationBuilder.add_update = _without_sort(  # type: ignore[method-assign]
    BulkOperationBuilder.add_update
)
BulkOperationBuilder.add_replace = _without_sort(  # type: ignore[method-assign]
    BulkOperationBuilder.add_replace
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    key BLOB NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    key BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_log = logging.getLogger("caiyun.data")

# How long a write waits for another process's write lock by default (the setting
# CAIYUN_DB_BUSY_TIMEOUT_S), and the write-ahead log size past which a commit checkpoints it.
DEFAULT_BUSY_TIMEOUT_S = 10.0
DEFAULT_WAL_LIMIT_BYTES = 64 * 1024 * 1024
# The changes log keeps this many entries; a process further behind than that reloads whole.
_CHANGES_KEPT = 20_000

_BUSY_MESSAGE = "数据库正忙（另一进程正在写入），请稍后再试"


class DatabaseBusy(AppError):
    """Another process held the data directory's write lock for longer than the timeout."""

    def __init__(self, waited_s: float) -> None:
        super().__init__("UNAVAILABLE", _BUSY_MESSAGE, details={"retryable": True})
        self.waited_s = waited_s

    def __str__(self) -> str:
        return (
            f"{_BUSY_MESSAGE} / the data directory stayed locked by another writer for "
            f"{self.waited_s:.0f} s (CAIYUN_DB_BUSY_TIMEOUT_S)"
        )


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
        self,
        data_dir: str | Path | None,
        db_name: str = "caiyun",
        *,
        clock: Clock | None = None,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        wal_limit_bytes: int = DEFAULT_WAL_LIMIT_BYTES,
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
        self._busy_timeout_s = busy_timeout_s
        self._wal_limit_bytes = wal_limit_bytes
        self._sqlite: sqlite3.Connection | None = None
        self._data_version: int | None = None
        self._seen = 0  # the last entry of the changes log this process has applied
        self._in_write = False
        self._clashes: dict[tuple[str, str], list[Clash]] = {}
        self._server = self._new_server()
        if data_dir:
            path = Path(data_dir)
            path.mkdir(parents=True, exist_ok=True)
            self._path = path / "caiyun.sqlite3"
            self._sqlite = sqlite3.connect(
                self._path,
                check_same_thread=False,
                timeout=busy_timeout_s,
                isolation_level=None,
            )
            self._sqlite.execute("PRAGMA journal_mode=WAL")
            self._sqlite.execute("PRAGMA synchronous=NORMAL")
            # A checkpoint that resets the log also cuts the file back to this size.
            self._sqlite.execute(f"PRAGMA journal_size_limit={int(wal_limit_bytes)}")
            self._sqlite.executescript(_SCHEMA)
            self._reload()

    def _new_server(self) -> tuple[mongomock.MongoClient, _JournaledServerStore]:
        store = _JournaledServerStore(self._journal, self._ttl_now)
        self._collections: dict[str, Any] = {}
        return mongomock.MongoClient(tz_aware=True, _store=store), store

    @property
    def database(self) -> EmbeddedDatabase:
        """The pymongo-compatible database object."""
        return EmbeddedDatabase(self)

    @property
    def clashes(self) -> list[Clash]:
        """Documents that break a unique index, found when the index was created on data this
        engine loaded (another engine, or an older version, wrote them): such a directory opens,
        and these say what to fix (:func:`describe_clash`)."""
        return [clash for found in self._clashes.values() for clash in found]

    def mongomock_collection(self, name: str) -> Any:
        """The underlying mongomock collection (used by the locked proxy only)."""
        collection = self._collections.get(name)
        if collection is None:
            client, _ = self._server
            collection = self._collections[name] = client[self._db_name][name]
        return collection

    def store(self, name: str) -> IndexedStore:
        """The indexed store holding collection ``name``'s documents."""
        _, server = self._server
        store: IndexedStore = server[self._db_name][name]
        return store

    def run(self, call: Callable[[], Any], *, writes: bool = True) -> Any:
        """Run one collection call atomically and make its writes durable.

        A call that ``writes`` holds the data directory's write lock from before it reads
        until its writes are committed, so no other process commits in between.
        """
        if not self._lock.acquire(timeout=self._busy_timeout_s):
            raise DatabaseBusy(self._busy_timeout_s)
        try:
            if self._sqlite is None or self._in_write:
                return call()
            if writes:
                return self._write(call)
            if self._behind():
                self._read_transaction(self._catch_up)
            try:
                return call()
            finally:
                if self._journal.dirty:
                    self._flush_expired()
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ SQLite

    def _begin_immediate(self) -> None:
        assert self._sqlite is not None
        started = time.monotonic()
        try:
            self._sqlite.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            waited = time.monotonic() - started
            _log.warning("embedded database busy: no write lock after %.1f s", waited)
            raise DatabaseBusy(waited) from None

    def _write(self, call: Callable[[], Any]) -> Any:
        assert self._sqlite is not None
        self._begin_immediate()
        self._in_write = True
        committed = False
        try:
            own = self._journal.dirty
            self._journal.dirty = set()
            changed = self._catch_up()
            self._journal.dirty = own - changed
            try:
                return call()
            finally:
                self._flush()
                self._sqlite.execute("COMMIT")
                committed = True
        finally:
            self._in_write = False
            if not committed:
                self._sqlite.execute("ROLLBACK")
                self._reload()  # memory may hold what the disk refused: read the disk again
            else:
                self._checkpoint_if_large()

    def _flush_expired(self) -> None:
        # A read expired TTL documents: remove them from disk too (a document another process
        # rewrote meanwhile keeps that process's version). If the lock is busy they stay in the
        # journal and go with this process's next write, instead of making a read wait.
        assert self._sqlite is not None
        self._sqlite.execute("PRAGMA busy_timeout=0")
        try:
            self._write(lambda: None)
        except DatabaseBusy:
            pass
        finally:
            self._sqlite.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")

    def _behind(self) -> bool:
        assert self._sqlite is not None
        return self._sqlite.execute("PRAGMA data_version").fetchone()[0] != self._data_version

    def _read_transaction(self, read: Callable[[], Any]) -> Any:
        assert self._sqlite is not None
        self._sqlite.execute("BEGIN")
        try:
            return read()
        finally:
            self._sqlite.execute("COMMIT")

    def _meta(self, name: str) -> int:
        assert self._sqlite is not None
        row = self._sqlite.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _catch_up(self) -> set[tuple[str, Any]]:
        """Apply what other processes committed since this one last looked; returns the
        documents it replaced. Runs inside a transaction (one snapshot)."""
        assert self._sqlite is not None
        version = self._sqlite.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return set()
        self._data_version = version
        if self._meta("pruned_through") > self._seen:
            self._load_everything()  # this process fell behind the kept log
            return set()
        changed: dict[tuple[str, Any], bytes | None] = {}
        for seq, collection, key, body in self._sqlite.execute(
            "SELECT c.seq, c.collection, c.key, d.body FROM changes c "
            "LEFT JOIN documents d ON d.collection = c.collection AND d.key = c.key "
            "WHERE c.seq > ? ORDER BY c.seq",
            (self._seen,),
        ):
            changed[(collection, _decode_key(key))] = body
            self._seen = seq
        for (collection, key), body in changed.items():
            store = self.store(collection)
            if body is None:
                if key in store._documents:
                    del store[key]
            else:
                store[key] = bson.decode(body)
        self._journal.dirty.clear()
        return set(changed)

    def _reload(self) -> None:
        self._read_transaction(self._load_everything)

    def _load_everything(self) -> None:
        assert self._sqlite is not None
        self._data_version = self._sqlite.execute("PRAGMA data_version").fetchone()[0]
        self._seen = self._sqlite.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
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
        for name, index_map in indexes.items():
            for index_name, spec in index_map.items():
                if spec.get("unique"):
                    self.note_clashes(name, index_name)

    def _flush(self) -> None:
        """Write the changed documents and log them (inside the write transaction)."""
        dirty = self._journal.dirty
        if not dirty:
            return
        self._journal.dirty = set()
        assert self._sqlite is not None
        _, store = self._server
        db_store = store[self._db_name]
        upserts, deletes, logged = [], [], []
        for collection, key in dirty:
            doc = db_store[collection]._documents.get(key)
            encoded = _encode_key(key)
            logged.append((collection, encoded))
            if doc is None:
                deletes.append((collection, encoded))
            else:
                upserts.append((collection, encoded, bson.encode(doc)))
        sql = self._sqlite
        sql.executemany("DELETE FROM documents WHERE collection = ? AND key = ?", deletes)
        sql.executemany(
            "INSERT INTO documents (collection, key, body) VALUES (?, ?, ?) "
            "ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body",
            upserts,
        )
        sql.executemany("INSERT INTO changes (collection, key) VALUES (?, ?)", logged)
        # This process already holds what it logged: it need not read it back.
        self._seen = sql.execute("SELECT MAX(seq) FROM changes").fetchone()[0]
        if self._seen - self._meta("pruned_through") > 2 * _CHANGES_KEPT:
            horizon = self._seen - _CHANGES_KEPT
            sql.execute("DELETE FROM changes WHERE seq <= ?", (horizon,))
            sql.execute(
                "INSERT INTO meta (name, value) VALUES ('pruned_through', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (horizon,),
            )
        # data_version is left alone: it moves only for other connections' commits.

    def _checkpoint_if_large(self) -> None:
        # SQLite's automatic checkpoints are passive: while other processes keep reading they
        # never reset the log, which then only grows. Past the limit, wait (the busy timeout)
        # for readers to move on, copy the log into the database and truncate it.
        assert self._sqlite is not None
        try:
            size = os.path.getsize(f"{self._path}-wal")
        except OSError:
            return
        if size > self._wal_limit_bytes:
            busy, _, _ = self._sqlite.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                _log.warning("write-ahead log at %d bytes: a reader kept it from being reset", size)

    # ------------------------------------------------------------------ unique rules

    def note_clashes(self, collection: str, index_name: str) -> None:
        """Look for documents breaking the unique index ``index_name``; log any found."""
        found = unique_clashes(self.store(collection), index_name)
        known = self._clashes.pop((collection, index_name), [])
        if found:
            self._clashes[(collection, index_name)] = found
            for clash in found:
                if clash not in known:
                    _log.warning("%s", describe_clash(clash))

    def close(self) -> None:
        """Release the SQLite file."""
        with self._lock:
            if self._sqlite is not None:
                self._sqlite.close()
                self._sqlite = None


def clash_report(db: Any) -> list[str]:
    """One line per unique-rule violation the embedded database ``db`` holds (none on MongoDB,
    whose unique indexes cannot hold any)."""
    if not isinstance(db, EmbeddedDatabase):
        return []
    return [describe_clash(clash) for clash in db.engine.clashes]


def describe_clash(clash: Clash) -> str:
    """What an operator reads about a unique-rule violation, and how to fix it."""
    ids = ", ".join(repr(key) for key in clash.ids)
    values = ", ".join(f"{field}={value!r}" for field, value in clash.values.items())
    return (
        f"{clash.collection} 中 {len(clash.ids)} 条记录违反唯一索引 {clash.index}（{values}）："
        f"{ids}。请保留一条，用 `caiyun db remove-duplicate --collection {clash.collection} "
        f"--id <多余记录的 id> --data-dir <目录>` 删除其余的 / {len(clash.ids)} documents of "
        f"{clash.collection} break the unique index {clash.index} ({values}): {ids}; keep one "
        f"and remove the others with `caiyun db remove-duplicate`"
    )

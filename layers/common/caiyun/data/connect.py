"""Opening the database a container uses: pymongo when MONGODB_URI is set, else embedded."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from caiyun.data.schema import CollectionSpec, create_indexes

if TYPE_CHECKING:
    from caiyun.clock import Clock
    from caiyun.settings import Settings


def open_database(
    settings: Settings,
    clock: Clock | None = None,
    *,
    declared: Callable[[], Iterable[CollectionSpec]],
) -> Any:
    """A pymongo ``Database`` (or the embedded engine's equivalent) for these settings.

    The embedded engine gets the indexes of the collections ``declared`` lists at once; on
    MongoDB they are created by ``caiyun db ensure-indexes`` at deploy time, not on every cold
    start. ``clock`` is the time the embedded engine expires TTL documents by (the sandbox's
    and the tests' clock, so a moved clock moves expiry too; MongoDB's own TTL monitor follows
    the server's time).
    """
    if settings.mongodb_uri is not None and settings.mongodb_uri.get_secret_value():
        from pymongo import MongoClient

        client: MongoClient[Any] = MongoClient(
            settings.mongodb_uri.get_secret_value(),
            tz_aware=True,
            serverSelectionTimeoutMS=5000,
            appname="caiyun",
        )
        return client[settings.db_name]
    # Late: the embedded engine loads mongomock, which a function on MongoDB never needs.
    from caiyun.data.embedded import EmbeddedEngine

    engine = EmbeddedEngine(
        settings.data_dir or None,
        settings.db_name,
        clock=clock,
        busy_timeout_s=settings.db_busy_timeout_s,
    )
    db = engine.database
    create_indexes(db, declared())
    return db

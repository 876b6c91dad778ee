"""Counters and leases that limit how often something may happen, safe across containers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import IndexModel, ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from caiyun.data.schema import declare
from caiyun.errors import AppError

# MongoDB's TTL monitor removes a record once its window is over; nothing reads it after that.
RATE_LIMITS = declare("rate_limits", IndexModel("expires_at", expireAfterSeconds=0))


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, int((moment - now).total_seconds() + 0.999))


def count_hit(db: Any, key: str, limit: int, window_end: datetime, now: datetime) -> int:
    """Count one more hit in the window ending at ``window_end``; RATE_LIMITED past ``limit``.

    ``key`` must name the window (e.g. include the minute or the date) so a new window starts
    a new counter. Returns the count including this hit.
    """
    for _ in range(2):
        try:
            doc = db[RATE_LIMITS].find_one_and_update(
                {"_id": key},
                {"$inc": {"count": 1}, "$setOnInsert": {"expires_at": window_end}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            break
        except DuplicateKeyError:
            # Two first hits raced on the upsert; the second try finds the document.
            continue
    else:
        raise AppError("RATE_LIMITED", details={"retry_after_s": 1})
    if doc["count"] > limit:
        raise AppError("RATE_LIMITED", details={"retry_after_s": _seconds_until(window_end, now)})
    return int(doc["count"])


def limit_per_window(db: Any, key: str, limit: int, window_s: int, now: datetime) -> int:
    """Allow ``limit`` hits of ``key`` per fixed window of ``window_s`` seconds."""
    hits = per_window(key, limit, window_s, now)
    return count_hit(db, hits.key, limit, hits.window_end, now)


def per_window(key: str, limit: int, window_s: int, now: datetime) -> Hits:
    """The counter :func:`limit_per_window` keeps for ``key`` in the window holding ``now``, for
    :func:`take_all`."""
    window = int(now.timestamp() // window_s)
    window_end = datetime.fromtimestamp((window + 1) * window_s, tz=now.tzinfo)
    return Hits(f"{key}:{window}", limit, window_end)


def undo_hit(db: Any, key: str) -> None:
    """Give back a hit whose action did not happen (the SMS provider failed)."""
    db[RATE_LIMITS].update_one({"_id": key, "count": {"$gt": 0}}, {"$inc": {"count": -1}})


def undo_hits(db: Any, hits: Sequence[Hits]) -> None:
    """Give back one hit on each counter, in one command (the attempt they counted turned out
    not to be one the limit is about)."""
    db[RATE_LIMITS].bulk_write(
        [UpdateOne({"_id": h.key, "count": {"$gt": 0}}, {"$inc": {"count": -1}}) for h in hits],
        ordered=False,
    )


def take_lease(db: Any, key: str, seconds: float, now: datetime) -> None:
    """Hold ``key`` for ``seconds``; RATE_LIMITED with ``retry_after_s`` while someone holds it.

    The conditional upsert makes two racing callers collide on the unique ``_id``: one wins.
    """
    take_all(db, [Lease(key, seconds)], now)


def _lease_held(db: Any, key: str, until: datetime, now: datetime) -> AppError:
    held = db[RATE_LIMITS].find_one({"_id": key}) or {}
    return AppError(
        "RATE_LIMITED", details={"retry_after_s": _seconds_until(held.get("until", until), now)}
    )


@dataclass(frozen=True)
class Lease:
    """A lease on ``key`` for ``seconds``, as :func:`take_lease` takes it."""

    key: str
    seconds: float


@dataclass(frozen=True)
class Hits:
    """At most ``limit`` hits of ``key`` in the window ending at ``window_end``."""

    key: str
    limit: int
    window_end: datetime


def take_all(db: Any, limits: Sequence[Lease | Hits], now: datetime) -> None:
    """Take each lease and count a hit on each counter, in order, in one database command.

    RATE_LIMITED (with ``retry_after_s``) at the first one refused; those before it stay taken
    and those after it are left alone, as separate calls in that order would. Each write is a
    conditional upsert, so a refusal is a duplicate ``_id`` and two racing callers cannot both
    pass: a counter past its limit is not counted further.
    """
    requests = [_request(limit, now) for limit in limits]
    start, retried = 0, -1
    while start < len(requests):
        try:
            db[RATE_LIMITS].bulk_write(requests[start:], ordered=True)
            return
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or errors[0].get("code") != 11000:
                raise
            failed = start + errors[0]["index"]
        refused = limits[failed]
        if isinstance(refused, Lease):
            raise _lease_held(db, refused.key, now + timedelta(seconds=refused.seconds), now)
        if retried == failed:
            raise AppError(
                "RATE_LIMITED", details={"retry_after_s": _seconds_until(refused.window_end, now)}
            )
        # A full counter and two first hits racing on the upsert look alike: one more try
        # tells them apart (the racer's document now exists and the filter finds it).
        start, retried = failed, failed


def _request(limit: Lease | Hits, now: datetime) -> UpdateOne:
    if isinstance(limit, Lease):
        until = now + timedelta(seconds=limit.seconds)
        return UpdateOne(
            {"_id": limit.key, "until": {"$lte": now}},
            {"$set": {"until": until, "expires_at": until}},
            upsert=True,
        )
    return UpdateOne(
        {"_id": limit.key, "count": {"$lt": limit.limit}},
        {"$inc": {"count": 1}, "$setOnInsert": {"expires_at": limit.window_end}},
        upsert=True,
    )


def release_lease(db: Any, key: str) -> None:
    """Let the next caller take ``key`` at once."""
    db[RATE_LIMITS].delete_one({"_id": key})

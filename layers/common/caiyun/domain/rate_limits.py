"""Counters and leases that limit how often something may happen, safe across containers."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

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
    window = int(now.timestamp() // window_s)
    window_end = datetime.fromtimestamp((window + 1) * window_s, tz=now.tzinfo)
    return count_hit(db, f"{key}:{window}", limit, window_end, now)


def undo_hit(db: Any, key: str) -> None:
    """Give back a hit whose action did not happen (the SMS provider failed)."""
    db[RATE_LIMITS].update_one({"_id": key, "count": {"$gt": 0}}, {"$inc": {"count": -1}})


def take_lease(db: Any, key: str, seconds: float, now: datetime) -> None:
    """Hold ``key`` for ``seconds``; RATE_LIMITED with ``retry_after_s`` while someone holds it.

    The conditional upsert makes two racing callers collide on the unique ``_id``: one wins.
    """
    until = now + timedelta(seconds=seconds)
    try:
        db[RATE_LIMITS].find_one_and_update(
            {"_id": key, "until": {"$lte": now}},
            {"$set": {"until": until, "expires_at": until}},
            upsert=True,
        )
    except DuplicateKeyError:
        held = db[RATE_LIMITS].find_one({"_id": key}) or {}
        held_until = held.get("until", until)
        raise AppError(
            "RATE_LIMITED", details={"retry_after_s": _seconds_until(held_until, now)}
        ) from None


def release_lease(db: Any, key: str) -> None:
    """Let the next caller take ``key`` at once."""
    db[RATE_LIMITS].delete_one({"_id": key})

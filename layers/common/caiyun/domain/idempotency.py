"""Making create actions safe to retry: the same caller and ``request_id`` get the first result.

The first call claims the key with an insert on a unique ``_id`` and is handed the id its new
record must have. A retry that arrives while the first is still running is told to wait
(CONFLICT, retryable); one that arrives after gets the stored result, or the result rebuilt from
the record for a create that can do that. A first call refused by a rule releases the key at
once. One that died with its outcome unknown (the database went away) keeps it for a short
lease; then a retry takes over with the same record id, and ``data.inserts.insert_once`` makes
sure the record is not created twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo import IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from caiyun.data.schema import declare
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.services import Services

IDEMPOTENCY = declare("idempotency_keys", IndexModel("expires_at", expireAfterSeconds=0))

_KEEP = timedelta(days=1)
_LEASE = timedelta(seconds=30)


@dataclass(frozen=True)
class Key:
    """What makes two calls the same request: the action's scope (declared once, in the
    action's row: ``Action(..., once="repair.create")``), the caller, and the ``request_id``
    the app sent. The dispatcher hands it to the action; no ``request_id``, no key."""

    scope: str
    caller_id: str
    request_id: str

    def __str__(self) -> str:
        return f"{self.scope}:{self.caller_id}:{self.request_id}"


def _busy() -> AppError:
    return AppError("CONFLICT", "请求正在处理，请稍后刷新", {"retryable": True})


Existing = Callable[[str], dict[str, Any] | None]


def _claim(services: Services, key: str, existing: Existing | None) -> tuple[dict[str, Any], bool]:
    """The claim this call holds on ``key`` (and whether this call made it), or the finished
    first call's document."""
    db, now = services.db, services.clock.now()
    claim = {
        "_id": key,
        "state": "running",
        "record_id": new_id(),
        "lease_until": now + _LEASE,
        "created_at": now,
        "expires_at": now + _KEEP,
    }
    for _ in range(3):
        try:
            db[IDEMPOTENCY].insert_one(claim)
            return claim, True
        except DuplicateKeyError:
            pass
        first = db[IDEMPOTENCY].find_one({"_id": key})
        if first is not None:
            break
        # The first call was refused and let the key go between our insert and our read.
    else:
        raise _busy()
    if first.get("state") == "done":
        return first, False
    if existing is not None and (found := existing(first["record_id"])) is not None:
        return {"state": "done", "result": found}, False
    if first.get("lease_until", now) > now:
        raise _busy() from None
    taken = db[IDEMPOTENCY].find_one_and_update(
        {"_id": key, "state": "running", "lease_until": first["lease_until"]},
        {"$set": {"lease_until": now + _LEASE}},
        return_document=ReturnDocument.AFTER,
    )
    if taken is None:
        raise _busy()
    return taken, False


def once(
    services: Services,
    key: Key | None,
    create: Callable[[str], dict[str, Any]],
    existing: Existing | None = None,
    limit: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run ``create(record_id)`` once per ``key``; without a key, just run it. ``create``
    should store its record under ``record_id`` with ``data.inserts.insert_once``.

    ``existing(record_id)`` (the first call's result rebuilt from the record stored under that
    id, or None) saves a write: the outcome is not written on the key, a retry answers from the
    record, and one arriving while the first call runs gets it as soon as it is stored.

    ``limit()`` takes the caller's unit of a rate limit (raising RATE_LIMITED past it) once per
    request: before ``create`` on the call that claims the key, never on a retry (answered from
    the first result, or taking over a first call that died after taking its unit).
    """
    if key is None:
        if limit is not None:
            limit()
        return create(new_id())
    db = services.db
    claim, claimed_here = _claim(services, str(key), existing)
    if claim.get("state") == "done":
        return claim["result"]
    try:
        if claimed_here and limit is not None:
            limit()
        result = create(claim["record_id"])
    except AppError:
        # Refused by a rule: nothing was created, so the same request may be sent again now.
        with contextlib.suppress(PyMongoError):
            db[IDEMPOTENCY].delete_one({"_id": str(key), "state": "running"})
        raise
    if existing is not None:
        return result
    # Best effort: if this write is lost, a retry after the lease finds the record by its id.
    with contextlib.suppress(PyMongoError):
        db[IDEMPOTENCY].update_one({"_id": str(key)}, {"$set": {"state": "done", "result": result}})
    return result

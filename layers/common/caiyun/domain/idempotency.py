"""Making create actions safe to retry: the same caller and ``request_id`` get the first result.

The first call claims the key with an insert on a unique ``_id``; a retry that arrives while the
first is still running is told to wait (CONFLICT), and one that arrives after gets the stored
result. A failed first call releases the key so the retry can do the work.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pymongo import IndexModel
from pymongo.errors import DuplicateKeyError

from caiyun.data.schema import declare
from caiyun.errors import AppError
from caiyun.services import Services

IDEMPOTENCY = declare("idempotency_keys", IndexModel("expires_at", expireAfterSeconds=0))

_KEEP = timedelta(days=1)


def once(
    services: Services,
    scope: str,
    caller_id: str,
    request_id: str | None,
    create: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``create`` once per (scope, caller, request_id); without a request_id, just run it."""
    if request_id is None:
        return create()
    key = f"{scope}:{caller_id}:{request_id}"
    db, now = services.db, services.clock.now()
    try:
        db[IDEMPOTENCY].insert_one(
            {"_id": key, "state": "running", "created_at": now, "expires_at": now + _KEEP}
        )
    except DuplicateKeyError:
        first = db[IDEMPOTENCY].find_one({"_id": key}) or {}
        if first.get("state") == "done":
            return first["result"]
        raise AppError("CONFLICT", "请求正在处理，请稍后刷新", {"retryable": True}) from None
    try:
        result = create()
    except BaseException:
        db[IDEMPOTENCY].delete_one({"_id": key, "state": "running"})
        raise
    db[IDEMPOTENCY].update_one({"_id": key}, {"$set": {"state": "done", "result": result}})
    return result

"""The visitors collection (访客登记): the registration record, its indexes, its queries and the
guarded entry at the gate.

Admitting a party is one conditional update on the pass still being unused and in its day, so
of two guards scanning one pass at once exactly one records the entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict, cast

from pymongo import DESCENDING, IndexModel, ReturnDocument

from caiyun.data import paging
from caiyun.data.inserts import insert_once
from caiyun.data.schema import declare
from caiyun.stores.places import Place

VISITORS = declare(
    "visitors",
    IndexModel([("host_id", 1), ("_id", DESCENDING)]),
    # Every visit to the houses an owner owns.
    IndexModel([("house_id", 1), ("_id", DESCENDING)]),
)


class Entry(TypedDict):
    """Who let the party in, and when."""

    at: datetime
    by: str
    by_name: str | None


class Visit(Place):
    """A registered visit. ``valid_until`` is the end of ``visit_date`` (Asia/Shanghai)."""

    _id: str
    host_id: str
    name: str
    phone: str
    count: int
    plate: str | None
    visit_date: str
    valid_until: datetime
    status: str
    entry: Entry | None
    created_at: datetime


def get(db: Any, visitor_id: str) -> Visit | None:
    """The registration with this id."""
    return db[VISITORS].find_one({"_id": visitor_id})


def insert(db: Any, visit: Visit) -> Visit:
    """Store a new registration, or return the one a first try of the same request stored
    under its id."""
    return insert_once(db[VISITORS], visit)


def admit(
    db: Any, visitor_id: str, *, expects: Mapping[str, Any], to: str, entry: Entry
) -> Visit | None:
    """Record ``entry`` and move the registration to ``to`` if it still matches ``expects``
    and its day has not ended at the entry's moment; the registration after, or None (nothing
    changed)."""
    return db[VISITORS].find_one_and_update(
        {"_id": visitor_id, **expects, "valid_until": {"$gt": entry["at"]}},
        {"$set": {"status": to, "entry": entry}},
        return_document=ReturnDocument.AFTER,
    )


def page(db: Any, scope: Mapping[str, Any], page: int, page_size: int) -> tuple[list[Visit], int]:
    """(visits, total): page ``page`` of the registrations in ``scope``, newest first."""
    docs, total, _ = paging.page(db[VISITORS], dict(scope), [("_id", DESCENDING)], page, page_size)
    return cast(list[Visit], docs), total

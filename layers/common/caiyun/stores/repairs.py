"""The repairs collection (报修单): the record, its indexes, its queries and its guarded moves.

Every move is one conditional update: the filter holds what the caller expects (the state the
repair lifecycle requires, who may move it), and the same update sets the new state and appends
the timeline entry. Two callers racing (a resident rating while the timer closes the repair, two
admins dispatching) cannot both win; the loser gets None and nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, TypedDict, cast

from pymongo import DESCENDING, IndexModel, ReturnDocument
from typing_extensions import NotRequired

from caiyun import labels
from caiyun.data import paging
from caiyun.data.inserts import insert_once
from caiyun.data.schema import declare
from caiyun.stores.places import Place

ActorRole = Literal["resident", "admin", "repairman", "system"]

# Lists page newest first by _id (ids are time-ordered), so every list query has an index
# that both filters and sorts; the last one also serves the auto-close scan.
REPAIRS = declare(
    "repairs",
    IndexModel([("reporter_id", 1), ("_id", DESCENDING)]),
    IndexModel([("reporter_id", 1), ("status", 1), ("_id", DESCENDING)]),
    # Every repair of the houses an owner owns.
    IndexModel([("house_id", 1), ("_id", DESCENDING)]),
    IndexModel([("community_id", 1), ("_id", DESCENDING)]),
    IndexModel([("community_id", 1), ("status", 1), ("_id", DESCENDING)]),
    IndexModel([("repairman_id", 1), ("_id", DESCENDING)]),
    IndexModel([("repairman_id", 1), ("status", 1), ("_id", DESCENDING)]),
    IndexModel([("status", 1), ("_id", 1), ("awaiting_since", 1)]),
)


class TimelineEntry(TypedDict):
    """One step of a repair's history: what happened, the state it left, who, when."""

    event: str
    status: str
    actor_id: str | None
    actor_role: ActorRole
    at: datetime
    note: str | None


class Step(TypedDict):
    """A move as its timeline entry tells it: the event, who made it and when, a note."""

    event: str
    actor_id: str | None
    actor_role: ActorRole
    at: datetime
    note: NotRequired[str | None]


class Completion(TypedDict):
    """The repairman's report of the work done."""

    photos: list[str]
    note: str
    at: datetime


class Rating(TypedDict):
    """The reporter's rating of the finished work."""

    stars: int
    comment: str
    at: datetime


class Repair(Place):
    """A repair as stored. The fields below ``timeline`` appear as the repair moves."""

    _id: str
    reporter_id: str
    category: str
    category_name: str
    description: str
    contact_phone: str
    images: list[str]
    status: str
    repairman_id: str | None
    created_at: datetime
    updated_at: datetime
    # Always stored; lists read repairs without it.
    timeline: NotRequired[list[TimelineEntry]]
    repairman_name: NotRequired[str]
    repairman_phone: NotRequired[str | None]
    dispatched_at: NotRequired[datetime]
    dispatched_by: NotRequired[str]
    cancelled_at: NotRequired[datetime]
    awaiting_since: NotRequired[datetime]
    completion: NotRequired[Completion]
    rating: NotRequired[Rating]
    auto_closed: NotRequired[bool]
    auto_close_run: NotRequired[str]
    closed_at: NotRequired[datetime]


# What a repair holds as filed, before any move: a retried create's reply is rebuilt from these.
_AS_FILED = (
    "community_id",
    "community_name",
    "house_id",
    "house_label",
    "reporter_id",
    "category",
    "category_name",
    "description",
    "contact_phone",
    "images",
    "created_at",
)

Page = tuple[list[Repair], int, dict[str, int]]


def entry_of(
    event: str,
    status: str,
    *,
    actor_id: str | None,
    actor_role: ActorRole,
    at: datetime,
    note: str | None = None,
) -> TimelineEntry:
    """A timeline entry: what happened, the state it left, who, when."""
    return {
        "event": event,
        "status": status,
        "actor_id": actor_id,
        "actor_role": actor_role,
        "at": at,
        "note": note,
    }


def get(db: Any, repair_id: str) -> Repair | None:
    """The repair with this id."""
    return db[REPAIRS].find_one({"_id": repair_id})


def parties(db: Any, repair_id: str) -> tuple[str, str] | None:
    """(reporter's account id, house id) of a repair: what deciding who may see it needs."""
    doc = db[REPAIRS].find_one({"_id": repair_id}, {"reporter_id": 1, "house_id": 1})
    return None if doc is None else (doc["reporter_id"], doc["house_id"])


def insert(db: Any, repair: Repair) -> Repair:
    """Store a new repair, or return the one a first try of the same request stored under its
    id."""
    return insert_once(db[REPAIRS], repair)


def as_filed(db: Any, repair_id: str) -> Repair | None:
    """The repair as it was when filed (pending, nobody sent, one timeline entry), whatever
    happened to it since: a retried create answers with this."""
    projection = {**dict.fromkeys(_AS_FILED, 1), "timeline": {"$slice": 1}}
    doc = db[REPAIRS].find_one({"_id": repair_id}, projection)
    if doc is None:
        return None
    first = {**doc, "status": "pending", "repairman_id": None, "updated_at": doc["created_at"]}
    return cast(Repair, first)


def move(
    db: Any,
    repair_id: str,
    *,
    expects: Mapping[str, Any],
    to: str,
    step: Step,
    fields: Mapping[str, Any] | None = None,
) -> Repair | None:
    """Move one repair to ``to`` if it still matches ``expects``, setting ``fields`` and
    appending the timeline entry of ``step`` (its moment is the update's); the repair after, or
    None when it did not match (nothing changed)."""
    return db[REPAIRS].find_one_and_update(
        {"_id": repair_id, **expects},
        _moving(to, step, fields),
        return_document=ReturnDocument.AFTER,
    )


def move_many(
    db: Any,
    repair_ids: list[str],
    *,
    expects: Mapping[str, Any],
    to: str,
    step: Step,
    fields: Mapping[str, Any] | None = None,
) -> None:
    """:func:`move` for many repairs in one command; each repair is still updated atomically
    under ``expects``, so one that moved meanwhile is left as it is."""
    db[REPAIRS].update_many({"_id": {"$in": repair_ids}, **expects}, _moving(to, step, fields))


def _moving(to: str, step: Step, fields: Mapping[str, Any] | None) -> dict[str, Any]:
    # The entry records the state the move left, so it is the move's target by construction.
    entry = entry_of(
        step["event"],
        to,
        actor_id=step["actor_id"],
        actor_role=step["actor_role"],
        at=step["at"],
        note=step.get("note"),
    )
    return {
        "$set": {"status": to, **(fields or {}), "updated_at": step["at"]},
        "$push": {"timeline": entry},
    }


def ids_after(db: Any, after: str, *, matching: Mapping[str, Any], limit: int) -> list[str]:
    """The ids of at most ``limit`` repairs matching ``matching`` with ids past ``after``, in
    id order: a batch job pages through what it has to do with this."""
    found = db[REPAIRS].find({**matching, "_id": {"$gt": after}}, {"_id": 1})
    return [d["_id"] for d in found.sort("_id", 1).limit(limit)]


def among(db: Any, repair_ids: list[str], *, matching: Mapping[str, Any]) -> list[Repair]:
    """Those of these repairs that match ``matching``, without their timelines."""
    return list(db[REPAIRS].find({"_id": {"$in": repair_ids}, **matching}, {"timeline": 0}))


def page(db: Any, scope: Mapping[str, Any], status: str | None, page: int, page_size: int) -> Page:
    """(repairs, total, counts): page ``page`` of the repairs in ``scope`` whose status is
    ``status`` (any when None), newest first, without timelines; and how many repairs
    ``scope`` holds in each status (every status, 0 for none). One command."""
    docs, total, counts = paging.tabbed(
        db[REPAIRS],
        dict(scope),
        "status",
        status,
        [("_id", DESCENDING)],
        page,
        page_size,
        {"timeline": 0},
        tabs=labels.LABELS["repair_status"],
    )
    return cast(list[Repair], docs), total, counts


def count_by_repairman(db: Any, repairman_ids: list[str], status: str) -> dict[str, int]:
    """How many repairs each of these repairmen holds in ``status`` (absent: none)."""
    if not repairman_ids:
        return {}
    rows = db[REPAIRS].aggregate(
        [
            {"$match": {"repairman_id": {"$in": repairman_ids}, "status": status}},
            {"$group": {"_id": "$repairman_id", "n": {"$sum": 1}}},
        ]
    )
    return {row["_id"]: row["n"] for row in rows}

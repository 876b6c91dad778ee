"""The complaints collection (投诉建议): the record, its indexes, its queries and its guarded
answer.

An answer is one conditional update: it expects the state the complaint lifecycle requires (and
the admin's scope), and appends the reply in the same write, so a reply racing the one that
resolves the complaint finds nothing to update instead of reopening it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict, cast

from pymongo import DESCENDING, IndexModel, ReturnDocument

from caiyun import labels
from caiyun.data import paging
from caiyun.data.inserts import insert_once
from caiyun.data.schema import declare
from caiyun.stores.places import Place

# Lists are newest first by ``_id`` (time-ordered and unique, so pages never overlap).
COMPLAINTS = declare(
    "complaints",
    IndexModel([("account_id", 1), ("_id", DESCENDING)]),
    IndexModel([("account_id", 1), ("status", 1), ("_id", DESCENDING)]),
    # Every complaint of the houses an owner owns.
    IndexModel([("house_id", 1), ("_id", DESCENDING)]),
    IndexModel([("community_id", 1), ("_id", DESCENDING)]),
    IndexModel([("community_id", 1), ("status", 1), ("_id", DESCENDING)]),
    # A company-wide admin's list across every community.
    IndexModel([("status", 1), ("_id", DESCENDING)]),
)

# Bounds the document: a complaint answered this often is better closed and filed anew.
MAX_REPLIES = 50


class Reply(TypedDict):
    """One answer of the property, with the state it moved the complaint to."""

    reply_id: str
    staff_id: str
    staff_name: str
    text: str
    status: str
    at: datetime


class Complaint(Place):
    """A complaint or suggestion as stored. Complaints filed before ``community_name`` and
    ``type_name`` were kept lack them; readers fall back to looking them up."""

    _id: str
    account_id: str
    kind: str
    type: str
    type_name: str
    contact_phone: str
    content: str
    images: list[str]
    status: str
    replies: list[Reply]
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None


Page = tuple[list[Complaint], int, dict[str, int]]


def get(db: Any, complaint_id: str) -> Complaint | None:
    """The complaint with this id."""
    return db[COMPLAINTS].find_one({"_id": complaint_id})


def exists(db: Any, complaint_id: str) -> bool:
    """Whether a complaint is stored under this id."""
    return db[COMPLAINTS].find_one({"_id": complaint_id}, {"_id": 1}) is not None


def where_and_state(db: Any, complaint_id: str) -> tuple[str, str] | None:
    """(community id, status) of a complaint: what explaining a refused answer needs."""
    doc = db[COMPLAINTS].find_one({"_id": complaint_id}, {"community_id": 1, "status": 1})
    return None if doc is None else (doc["community_id"], doc["status"])


def insert(db: Any, complaint: Complaint) -> Complaint:
    """Store a new complaint, or return the one a first try of the same request stored under
    its id."""
    return insert_once(db[COMPLAINTS], complaint)


def answer(
    db: Any,
    complaint_id: str,
    *,
    expects: Mapping[str, Any],
    to: str,
    reply: Reply,
) -> Complaint | None:
    """Append ``reply`` and move the complaint to ``to`` if it still matches ``expects`` and
    holds fewer than ``MAX_REPLIES`` replies; resolving stamps ``resolved_at``. The complaint
    after, or None (nothing changed)."""
    changes: dict[str, Any] = {"status": to, "updated_at": reply["at"]}
    if to == "resolved":
        changes["resolved_at"] = reply["at"]
    return db[COMPLAINTS].find_one_and_update(
        {
            "_id": complaint_id,
            **expects,
            f"replies.{MAX_REPLIES - 1}": {"$exists": False},
        },
        {"$set": changes, "$push": {"replies": reply}},
        return_document=ReturnDocument.AFTER,
    )


def page(db: Any, scope: Mapping[str, Any], status: str | None, page: int, page_size: int) -> Page:
    """(complaints, total, counts): page ``page`` of the complaints in ``scope`` whose status
    is ``status`` (any when None), newest first; and how many complaints ``scope`` holds in
    each status (every status, 0 for none). One command."""
    docs, total, counts = paging.tabbed(
        db[COMPLAINTS],
        dict(scope),
        "status",
        status,
        [("_id", DESCENDING)],
        page,
        page_size,
        tabs=labels.LABELS["complaint_status"],
    )
    return cast(list[Complaint], docs), total, counts

"""The notices collection (小区公告) and who has read which: the records, their indexes, the
claimed inbox delivery and the community-grouped reading list.

A notice's inbox delivery is claimed on the notice itself (``inbox: sending`` and when), so one
sender works at a time and a delivery whose sender died is taken over once the claim is stale;
how far a delivery got is kept on the notice too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

from pymongo import DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError
from typing_extensions import NotRequired

from caiyun.data.inserts import insert_once
from caiyun.data.schema import declare

NOTICES = declare(
    "notices",
    IndexModel([("community_id", 1), ("_id", DESCENDING)]),
    IndexModel([("inbox", 1), ("sending_since", 1)]),
)
# Who has read which notice: one record per (notice, account), found by (account, community).
READS = declare("notice_reads", IndexModel("reader"))

# "pending" is how notices were stored before they were born claimed by their publisher.
InboxState = Literal["pending", "sending", "sent"]


class Notice(TypedDict):
    """A published notice, with the state of its delivery to the community's inboxes. Notices
    published before names were kept lack ``community_name``; readers look it up."""

    _id: str
    community_id: str
    community_name: str
    title: str
    content: str
    author_id: str
    published_at: datetime
    inbox: InboxState
    sending_since: datetime
    # How many accounts were told, and the last account told when a delivery was cut short.
    inbox_count: int
    delivered_after: NotRequired[str]


def get(db: Any, notice_id: str, *, matching: Mapping[str, Any] | None = None) -> Notice | None:
    """The notice with this id, if it also matches ``matching`` (a staff member's scope)."""
    return db[NOTICES].find_one({"_id": notice_id, **(matching or {})})


def insert(db: Any, notice: Notice) -> Notice:
    """Store a new notice, or return the one a first try of the same request stored under its
    id (not the object given: the caller tells them apart by identity)."""
    return insert_once(db[NOTICES], notice)


def claim_delivery(db: Any, notice_id: str, *, now: datetime, lease: timedelta) -> Notice | None:
    """Take the notice's delivery if nobody holds it (or the holder's claim is older than
    ``lease``); the notice, or None when another sender holds it or it is done."""
    return db[NOTICES].find_one_and_update(
        {
            "_id": notice_id,
            "$or": [
                {"inbox": "pending"},
                {"inbox": "sending", "sending_since": {"$lte": now - lease}},
            ],
        },
        {"$set": {"inbox": "sending", "sending_since": now}},
        return_document=ReturnDocument.AFTER,
    )


def pause_delivery(db: Any, notice_id: str, *, after: str, told: int, stale: datetime) -> None:
    """Record how far a cut-short delivery got, and date its claim ``stale`` so the next run
    takes it over at once."""
    got_to = {"delivered_after": after, "inbox_count": told, "sending_since": stale}
    db[NOTICES].update_one({"_id": notice_id}, {"$set": got_to})


def finish_delivery(db: Any, notice_id: str, *, told: int) -> None:
    """Mark the notice's delivery done, having told ``told`` accounts."""
    db[NOTICES].update_one({"_id": notice_id}, {"$set": {"inbox": "sent", "inbox_count": told}})


def stale_deliveries(db: Any, *, since: datetime, limit: int) -> list[str]:
    """Ids of at most ``limit`` notices whose delivery was claimed at or before ``since``."""
    found = db[NOTICES].find({"inbox": "sending", "sending_since": {"$lte": since}}, {"_id": 1})
    return [doc["_id"] for doc in found.limit(limit)]


def mark_read(db: Any, notice: Notice, account_id: str, now: datetime) -> None:
    """Record that the account read the notice; reading again, or twice at once, keeps one
    record and the first moment (one upsert keyed by notice and account)."""
    try:
        db[READS].update_one(
            {"_id": f"{notice['_id']}:{account_id}"},
            {
                "$setOnInsert": {
                    "notice_id": notice["_id"],
                    "account_id": account_id,
                    "community_id": notice["community_id"],
                    "reader": f"{account_id}:{notice['community_id']}",
                    "read_at": now,
                }
            },
            upsert=True,
        )
    except DuplicateKeyError:
        # Two first reads raced on the upsert: the other one recorded it.
        return


def for_member(db: Any, notice_id: str, account_id: str, *, members: str) -> Notice | None:
    """The notice if the account is bound in its community (``members``: the memberships
    collection, joined on the community), in one command."""
    # MongoDB folds an $unwind and a $match on the joined field into the $lookup before them,
    # so the join fetches the caller's membership alone (an index lookup), not the
    # community's every membership.
    rows = db[NOTICES].aggregate(
        [
            {"$match": {"_id": notice_id}},
            {
                "$lookup": {
                    "from": members,
                    "localField": "community_id",
                    "foreignField": "community_id",
                    "as": "_member",
                }
            },
            {"$unwind": "$_member"},
            {"$match": {"_member.account_id": account_id}},
            {"$limit": 1},
            {"$project": {"_member": 0}},
        ]
    )
    return next(iter(rows), None)


def community_page_stages(account_id: str, skip: int, limit: int) -> list[dict[str, Any]]:
    """Stages that turn rows of ``{_id: community id, since, community: [{name}]}`` into one
    group each: the community's notices counted, a page of them (newest first), and this
    account's reads there (to tell each item's read state and the unread count)."""
    return [
        {
            "$lookup": {
                "from": NOTICES,
                "localField": "_id",
                "foreignField": "community_id",
                "as": "notice",
            }
        },
        # Right after the $lookup, MongoDB unwinds inside the join (no array of every notice is
        # built); a community without notices stays, as one row without one.
        {"$unwind": {"path": "$notice", "preserveNullAndEmptyArrays": True}},
        # The sort holds every notice of the communities: without their contents it stays far
        # inside the server's 100 MB in-memory sort limit.
        {
            "$project": {
                "since": 1,
                "community.name": 1,
                "notice._id": 1,
                "notice.title": 1,
                "notice.published_at": 1,
            }
        },
        {"$sort": {"since": 1, "notice._id": DESCENDING}},
        {
            "$group": {
                "_id": "$_id",
                "since": {"$first": "$since"},
                "community": {"$first": "$community"},
                "total": {"$sum": {"$cond": [{"$ifNull": ["$notice._id", False]}, 1, 0]}},
                "items": {
                    "$push": {
                        "notice_id": "$notice._id",
                        "title": "$notice.title",
                        "published_at": "$notice.published_at",
                    }
                },
            }
        },
        {"$sort": {"since": 1}},
        {
            "$project": {
                "community.name": 1,
                "total": 1,
                "items": {"$slice": ["$items", skip, limit]},
            }
        },
        # The account's reads in each community: one indexed join on their (account, community)
        # key, as many as the notices it has read there.
        {"$set": {"_reader": {"$concat": [{"$literal": account_id}, ":", "$_id"]}}},
        {
            "$lookup": {
                "from": READS,
                "localField": "_reader",
                "foreignField": "reader",
                "as": "_reads",
            }
        },
        {"$project": {"community.name": 1, "total": 1, "items": 1, "_reads.notice_id": 1}},
    ]

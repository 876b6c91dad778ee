"""Community notices (小区公告): published by an admin, read by the community's residents.

A notice belongs to one community. Residents read the notices of the communities where they
hold a house; staff read those of the communities they cover. Anyone else is told the notice
does not exist (NOT_FOUND), so notice ids of other communities cannot be probed. Every notice of
a community can be reached by paging it, and each carries whether the caller has read it
(reading its detail marks it read).

Publishing also drops a message in the inbox of every account bound to a house of the
community, streamed in bounded batches. The notice list stays the record: if that delivery is
cut short, the notice is still published and a retry does not deliver it twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from pymongo import DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from caiyun.clock import iso
from caiyun.data.inserts import insert_once
from caiyun.data.schema import declare
from caiyun.domain import communities, create_limits, idempotency, memberships, messaging, staff
from caiyun.errors import AppError
from caiyun.services import Services

NOTICES = declare(
    "notices",
    IndexModel([("community_id", 1), ("_id", DESCENDING)]),
    IndexModel([("inbox", 1), ("sending_since", 1)]),
)
# Who has read which notice: one record per (notice, account), found by (account, community).
READS = declare("notice_reads", IndexModel("reader"))
# How long a delivery may run before another sender may take it over.
_DELIVERY_LEASE = timedelta(minutes=5)

# Notices per community on a page of the notice list, unless the caller asks for another size.
GROUP_LIMIT = 20
# Accounts whose inbox messages are written together, per batch.
DELIVERY_BATCH = 500
_SUMMARY_CHARS = 60


def publish(
    services: Services,
    admin: dict[str, Any],
    community_id: str,
    title: str,
    content: str,
    request_id: str | None,
) -> dict[str, Any]:
    """Publish a notice to a community the admin covers and tell its residents' inboxes."""
    staff.require_scope(admin, community_id)
    db = services.db
    community = communities.get(db, community_id)
    if community is None:
        raise AppError("NOT_FOUND", "小区不存在")
    born: list[dict[str, Any]] = []

    def make(record_id: str) -> dict[str, Any]:
        now = services.clock.now()
        doc = {
            "_id": record_id,
            "community_id": community_id,
            "community_name": community["name"],
            "title": title,
            "content": content,
            "author_id": admin["_id"],
            "published_at": now,
            # Born claimed by this call, so delivering needs no claim of its own; if the call
            # dies, the timer takes the delivery over once the claim is stale.
            "inbox": "sending",
            "sending_since": now,
            "inbox_count": 0,
        }
        stored = insert_once(db[NOTICES], doc)
        if stored is doc:
            born.append(doc)
        return {"notice_id": stored["_id"]}

    def limit() -> None:
        create_limits.take_daily(services, "notices", admin["_id"])

    created = idempotency.once(
        services, "notice.publish", admin["_id"], request_id, make, limit=limit
    )
    notice = born[0] if born else _claim(services, created["notice_id"])
    if notice is None:
        # A repeated request whose delivery is done or under way elsewhere.
        notice = db[NOTICES].find_one({"_id": created["notice_id"]})
    else:
        _deliver(services, notice)
    return _detail(db, notice)


def _claim(services: Services, notice_id: str) -> dict[str, Any] | None:
    # One sender at a time; a delivery cut short is taken over once its claim is stale (by a
    # retried publish or the timer), and the fixed message ids make the second pass skip
    # everyone the first pass reached. "pending" is how notices were stored before they were
    # born claimed.
    now = services.clock.now()
    return services.db[NOTICES].find_one_and_update(
        {
            "_id": notice_id,
            "$or": [
                {"inbox": "pending"},
                {"inbox": "sending", "sending_since": {"$lte": now - _DELIVERY_LEASE}},
            ],
        },
        {"$set": {"inbox": "sending", "sending_since": now}},
        return_document=ReturnDocument.AFTER,
    )


def _batches(links: Iterator[dict[str, Any]], size: int) -> Iterator[list[str]]:
    # The links come sorted by account, so an account bound to several houses of the
    # community is seen once, without holding every account seen so far.
    batch: list[str] = []
    last = None
    for link in links:
        if link["account_id"] == last:
            continue
        last = link["account_id"]
        batch.append(last)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _deliver(
    services: Services,
    notice: dict[str, Any],
    until: datetime | None = None,
    size: int = DELIVERY_BATCH,
) -> bool:
    """Tell every account bound in the notice's community, for a notice this call claimed,
    from where a delivery cut short got to. When the clock passes ``until`` it stops after a
    batch, records how far it got and lets the claim go, so the next run carries on at once;
    returns whether the delivery is complete."""
    db = services.db
    notice_id, community_id = notice["_id"], notice["community_id"]
    after = notice.get("delivered_after", "")
    bound = {"community_id": community_id, "account_id": {"$gt": after}}
    links = (
        db[memberships.MEMBERSHIPS].find(bound, {"account_id": 1, "_id": 0}).sort("account_id", 1)
    )
    told = notice.get("inbox_count", 0)
    for batch in _batches(links, size):
        messaging.deliver(
            services,
            batch,
            "notice",
            notice["title"],
            notice["content"][:_SUMMARY_CHARS],
            f"/pages/notice/detail?id={notice_id}",
            community_id=community_id,
            message_key=f"notice-{notice_id}",
        )
        told += len(batch)
        if until is not None and services.clock.now() >= until:
            stale = services.clock.now() - _DELIVERY_LEASE
            got_to = {"delivered_after": batch[-1], "inbox_count": told, "sending_since": stale}
            db[NOTICES].update_one({"_id": notice_id}, {"$set": got_to})
            return False
    db[NOTICES].update_one({"_id": notice_id}, {"$set": {"inbox": "sent", "inbox_count": told}})
    return True


def resume_deliveries(services: Services, until: datetime | None = None) -> dict[str, int]:
    """The timer's part: finish every notice delivery that was cut short, within the budget
    (``unfinished`` in the counts when the clock passed ``until`` first)."""
    stale = services.clock.now() - _DELIVERY_LEASE
    resumed = 0
    for doc in (
        services.db[NOTICES]
        .find({"inbox": "sending", "sending_since": {"$lte": stale}}, {"_id": 1})
        .limit(100)
    ):
        notice = _claim(services, doc["_id"])
        if notice is None:
            continue
        resumed += 1
        if not _deliver(services, notice, until, services.settings.scheduler_batch_size):
            return {"notices_resumed": resumed, "unfinished": 1}
    return {"notices_resumed": resumed}


def _detail(db: Any, doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "notice_id": doc["_id"],
        "community_id": doc["community_id"],
        "community_name": communities.name_on(db, doc),
        "title": doc["title"],
        "content": doc["content"],
        "published_at": iso(doc["published_at"]),
    }


def _community_page(account_id: str, skip: int, limit: int) -> list[dict[str, Any]]:
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


def _groups(rows: Any, page: int, page_size: int) -> list[dict[str, Any]]:
    groups = []
    for row in rows:
        read = {r["notice_id"] for r in row["_reads"]}
        groups.append(
            {
                "community_id": row["_id"],
                "community_name": (row["community"] or [{}])[0].get("name", ""),
                "total": row["total"],
                # Reads are only ever of the community's notices, which are never deleted.
                "unread": max(0, row["total"] - len(read)),
                "page": page,
                "page_size": page_size,
                "items": [
                    {
                        "notice_id": n["notice_id"],
                        "title": n["title"],
                        "published_at": iso(n["published_at"]),
                        "read": n["notice_id"] in read,
                    }
                    # The one row of a community without notices pushes an empty item.
                    for n in row["items"]
                    if "notice_id" in n
                ],
            }
        )
    return groups


def for_resident(
    services: Services,
    account: dict[str, Any],
    community_id: str | None = None,
    page: int = 1,
    page_size: int = GROUP_LIMIT,
) -> list[dict[str, Any]]:
    """The caller's notices, grouped by community: with no ``community_id``, one group per
    community where the caller holds a house (in the order the caller joined them); with one,
    that community's group alone (for a resident of it, or staff covering it; FORBIDDEN for
    anyone else). Each group holds page ``page`` of its notices, newest first (title, publish
    time, whether the caller has read it), its ``total`` and its ``unread`` count. One command.
    """
    db, me = services.db, account["_id"]
    window = _community_page(me, (page - 1) * page_size, page_size)
    record = staff.of_account(db, account)
    if community_id is not None and staff.covers(record, community_id):
        # Staff read the notices of the communities they cover, house or no house.
        rows = db[communities.COMMUNITIES].aggregate(
            [
                {"$match": {"_id": community_id}},
                {"$project": {"_id": 1, "since": "$_id"}},
                {
                    "$lookup": {
                        "from": communities.COMMUNITIES,
                        "localField": "_id",
                        "foreignField": "_id",
                        "as": "community",
                    }
                },
                *window,
            ]
        )
        return _groups(rows, page, page_size)
    mine: dict[str, Any] = {"account_id": me}
    if community_id is not None:
        mine["community_id"] = community_id
    # From the caller's memberships: each community with its name, its notices and the
    # caller's reads joined in.
    rows = db[memberships.MEMBERSHIPS].aggregate(
        [
            {"$match": mine},
            # In the order the caller first joined each community.
            {"$group": {"_id": "$community_id", "since": {"$min": "$_id"}}},
            {
                "$lookup": {
                    "from": communities.COMMUNITIES,
                    "localField": "_id",
                    "foreignField": "_id",
                    "as": "community",
                }
            },
            *window,
        ]
    )
    groups = _groups(rows, page, page_size)
    if community_id is not None and not groups:
        raise AppError("FORBIDDEN", "您在该小区没有房屋")
    return groups


def _mark_read(db: Any, account_id: str, doc: dict[str, Any], now: datetime) -> None:
    # One upsert keyed by (notice, account): reading again, or twice at once, keeps one record
    # and the first moment.
    try:
        db[READS].update_one(
            {"_id": f"{doc['_id']}:{account_id}"},
            {
                "$setOnInsert": {
                    "notice_id": doc["_id"],
                    "account_id": account_id,
                    "community_id": doc["community_id"],
                    "reader": f"{account_id}:{doc['community_id']}",
                    "read_at": now,
                }
            },
            upsert=True,
        )
    except DuplicateKeyError:
        # Two first reads raced on the upsert: the other one recorded it.
        return


def detail(services: Services, account: dict[str, Any], notice_id: str) -> dict[str, Any]:
    """A notice of a community where the caller holds a house, or which the caller staffs;
    reading it marks it read for the caller."""
    db = services.db
    doc = _readable(db, account, notice_id)
    _mark_read(db, account["_id"], doc, services.clock.now())
    return _detail(db, doc)


def _readable(db: Any, account: dict[str, Any], notice_id: str) -> dict[str, Any]:
    record = staff.of_account(db, account)
    if record is not None:
        doc = db[NOTICES].find_one({"_id": notice_id, **staff.scope_query(record)})
        if doc is not None:
            return doc
    # A resident's read: the notice with the caller's membership of its community joined in.
    # MongoDB folds an $unwind and a $match on the joined field into the $lookup before them,
    # so the join fetches the caller's membership alone (an index lookup), not the
    # community's every membership.
    rows = db[NOTICES].aggregate(
        [
            {"$match": {"_id": notice_id}},
            {
                "$lookup": {
                    "from": memberships.MEMBERSHIPS,
                    "localField": "community_id",
                    "foreignField": "community_id",
                    "as": "_member",
                }
            },
            {"$unwind": "$_member"},
            {"$match": {"_member.account_id": account["_id"]}},
            {"$limit": 1},
            {"$project": {"_member": 0}},
        ]
    )
    doc = next(iter(rows), None)
    if doc is None:
        raise AppError("NOT_FOUND", "公告不存在")
    return doc

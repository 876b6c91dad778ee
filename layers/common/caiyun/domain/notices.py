"""Community notices (小区公告): published by an admin, read by the community's residents.

A notice belongs to one community. Residents read the notices of the communities where they
hold a house; staff read those of the communities they cover. Anyone else is told the notice
does not exist (NOT_FOUND), so notice ids of other communities cannot be probed.

Publishing also drops a message in the inbox of every account bound to a house of the
community, streamed in bounded batches. The notice list stays the record: if that delivery is
cut short, the notice is still published and a retry does not deliver it twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from pymongo import DESCENDING, IndexModel, ReturnDocument

from caiyun.clock import iso
from caiyun.data import paging
from caiyun.data.schema import declare
from caiyun.domain import communities, houses, idempotency, memberships, messaging, staff
from caiyun.errors import AppError
from caiyun.services import Services

NOTICES = declare(
    "notices",
    IndexModel([("community_id", 1), ("_id", DESCENDING)]),
    IndexModel([("inbox", 1), ("sending_since", 1)]),
)
# How long a delivery may run before another sender may take it over.
_DELIVERY_LEASE = timedelta(minutes=5)

# Newest notices shown per community on the resident's notice page.
GROUP_LIMIT = 20
# Houses whose accounts are looked up, and inbox messages written, per batch.
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
    if communities.get(db, community_id) is None:
        raise AppError("NOT_FOUND", "小区不存在")

    def make(record_id: str) -> dict[str, Any]:
        doc = {
            "_id": record_id,
            "community_id": community_id,
            "title": title,
            "content": content,
            "author_id": admin["_id"],
            "published_at": services.clock.now(),
            "inbox": "pending",
            "inbox_count": 0,
        }
        stored = idempotency.insert_once(db[NOTICES], doc)
        return {"notice_id": stored["_id"]}

    created = idempotency.once(services, "notice.publish", admin["_id"], request_id, make)
    _deliver(services, created["notice_id"])
    return _detail(services, db[NOTICES].find_one({"_id": created["notice_id"]}))


def _batches(cursor: Iterator[dict[str, Any]], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in cursor:
        batch.append(doc["_id"])
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _deliver(services: Services, notice_id: str) -> None:
    db, now = services.db, services.clock.now()
    # Claimed by one sender at a time; a delivery cut short is taken over once its claim is
    # stale (by a retried publish or the timer), and the fixed message ids make the second
    # pass skip everyone the first pass reached.
    notice = db[NOTICES].find_one_and_update(
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
    if notice is None:
        return
    community_id = notice["community_id"]
    summary = notice["content"][:_SUMMARY_CHARS]
    page = f"/pages/notice/detail?id={notice_id}"
    told: set[str] = set()
    house_ids = db[houses.HOUSES].find({"community_id": community_id}, {"_id": 1})
    for batch in _batches(house_ids, DELIVERY_BATCH):
        links = db[memberships.MEMBERSHIPS].find({"house_id": {"$in": batch}}, {"account_id": 1})
        # One message per account, however many houses it holds in the community.
        fresh = sorted({m["account_id"] for m in links} - told)
        told.update(fresh)
        messaging.notify(
            services,
            fresh,
            "notice",
            notice["title"],
            summary,
            page,
            community_id=community_id,
            message_key=f"notice-{notice_id}",
        )
    db[NOTICES].update_one(
        {"_id": notice_id}, {"$set": {"inbox": "sent", "inbox_count": len(told)}}
    )


def resume_deliveries(services: Services) -> dict[str, int]:
    """The timer's part: finish every notice delivery that was cut short."""
    stale = services.clock.now() - _DELIVERY_LEASE
    resumed = 0
    for doc in (
        services.db[NOTICES]
        .find({"inbox": "sending", "sending_since": {"$lte": stale}}, {"_id": 1})
        .limit(100)
    ):
        _deliver(services, doc["_id"])
        resumed += 1
    return {"notices_resumed": resumed}


def _detail(services: Services, doc: dict[str, Any]) -> dict[str, Any]:
    names = communities.names(services.db, [doc["community_id"]])
    return {
        "notice_id": doc["_id"],
        "community_id": doc["community_id"],
        "community_name": names.get(doc["community_id"], ""),
        "title": doc["title"],
        "content": doc["content"],
        "published_at": iso(doc["published_at"]),
    }


def for_resident(services: Services, account: dict[str, Any]) -> list[dict[str, Any]]:
    """One group per community where the caller holds a house: its newest notices (title and
    publish time, at most ``GROUP_LIMIT``) and how many it has in all."""
    db = services.db
    community_ids = list(
        dict.fromkeys(m["community_id"] for m in memberships.of_account(db, account["_id"]))
    )
    names = communities.names(db, community_ids)
    groups = []
    for community_id in community_ids:
        latest, total, _ = paging.page(
            db[NOTICES],
            {"community_id": community_id},
            [("_id", DESCENDING)],
            1,
            GROUP_LIMIT,
            {"title": 1, "published_at": 1},
        )
        groups.append(
            {
                "community_id": community_id,
                "community_name": names.get(community_id, ""),
                "total": total,
                "items": [
                    {
                        "notice_id": n["_id"],
                        "title": n["title"],
                        "published_at": iso(n["published_at"]),
                    }
                    for n in latest
                ],
            }
        )
    return groups


def detail(services: Services, account: dict[str, Any], notice_id: str) -> dict[str, Any]:
    """A notice of a community where the caller holds a house, or which the caller staffs."""
    db = services.db
    doc = db[NOTICES].find_one({"_id": notice_id})
    if doc is None:
        raise AppError("NOT_FOUND", "公告不存在")
    community_id = doc["community_id"]
    resident = db[memberships.MEMBERSHIPS].find_one(
        {"account_id": account["_id"], "community_id": community_id}, {"_id": 1}
    )
    if resident is None and not staff.covers(staff.of_account(db, account), community_id):
        raise AppError("NOT_FOUND", "公告不存在")
    return _detail(services, doc)

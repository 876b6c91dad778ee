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

from caiyun.clock import iso
from caiyun.domain import communities, create_limits, idempotency, messaging, staff
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores import communities as community_store
from caiyun.stores import memberships as membership_store
from caiyun.stores import notices as store
from caiyun.stores.accounts import Account
from caiyun.stores.notices import Notice
from caiyun.stores.staff import StaffRecord

# How long a delivery may run before another sender may take it over.
_DELIVERY_LEASE = timedelta(minutes=5)

# Notices per community on a page of the notice list, unless the caller asks for another size.
GROUP_LIMIT = 20
# Accounts whose inbox messages are written together, per batch.
DELIVERY_BATCH = 500
_SUMMARY_CHARS = 60


def publish(
    services: Services,
    admin: StaffRecord,
    *,
    community_id: str,
    title: str,
    content: str,
    once: idempotency.Key | None = None,
) -> dict[str, Any]:
    """Publish a notice to a community the admin covers and tell its residents' inboxes."""
    staff.require_scope(admin, community_id)
    db = services.db
    community = community_store.get(db, community_id)
    if community is None:
        raise AppError("NOT_FOUND", "小区不存在")
    born: list[Notice] = []

    def make(record_id: str) -> dict[str, Any]:
        now = services.clock.now()
        doc: Notice = {
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
        stored = store.insert(db, doc)
        if stored is doc:
            born.append(doc)
        return {"notice_id": stored["_id"]}

    def limit() -> None:
        create_limits.take_daily(services, "notices", admin["_id"])

    created = idempotency.once(services, once, make, limit=limit)
    notice = born[0] if born else _claim(services, created["notice_id"])
    if notice is None:
        # A repeated request whose delivery is done or under way elsewhere.
        notice = store.get(db, created["notice_id"])
        assert notice is not None, "a published notice is never deleted"
    else:
        _deliver(services, notice)
    return _detail(db, notice)


def _claim(services: Services, notice_id: str) -> Notice | None:
    # One sender at a time; a delivery cut short is taken over once its claim is stale (by a
    # retried publish or the timer), and the fixed message ids make the second pass skip
    # everyone the first pass reached.
    now = services.clock.now()
    return store.claim_delivery(services.db, notice_id, now=now, lease=_DELIVERY_LEASE)


def _batches(account_ids: Iterator[str], size: int) -> Iterator[list[str]]:
    # The ids come sorted, so an account bound to several houses of the community is seen
    # once, without holding every account seen so far.
    batch: list[str] = []
    last = None
    for account_id in account_ids:
        if account_id == last:
            continue
        last = account_id
        batch.append(last)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _deliver(
    services: Services,
    notice: Notice,
    until: datetime | None = None,
    size: int = DELIVERY_BATCH,
) -> bool:
    """Tell every account bound in the notice's community, for a notice this call claimed,
    from where a delivery cut short got to. When the clock passes ``until`` it stops after a
    batch, records how far it got and lets the claim go, so the next run carries on at once;
    returns whether the delivery is complete."""
    db = services.db
    notice_id, community_id = notice["_id"], notice["community_id"]
    bound = membership_store.bound_in(db, community_id, notice.get("delivered_after", ""))
    told = notice.get("inbox_count", 0)
    for batch in _batches(bound, size):
        messaging.deliver(
            services,
            batch,
            "notice",
            title=notice["title"],
            body=notice["content"][:_SUMMARY_CHARS],
            page=f"/pages/notice/detail?id={notice_id}",
            community_id=community_id,
            message_key=f"notice-{notice_id}",
        )
        told += len(batch)
        if until is not None and services.clock.now() >= until:
            stale = services.clock.now() - _DELIVERY_LEASE
            store.pause_delivery(db, notice_id, after=batch[-1], told=told, stale=stale)
            return False
    store.finish_delivery(db, notice_id, told=told)
    return True


def resume_deliveries(services: Services, until: datetime | None = None) -> dict[str, int]:
    """The timer's part: finish every notice delivery that was cut short, within the budget
    (``unfinished`` in the counts when the clock passed ``until`` first)."""
    stale = services.clock.now() - _DELIVERY_LEASE
    resumed = 0
    for notice_id in store.stale_deliveries(services.db, since=stale, limit=100):
        notice = _claim(services, notice_id)
        if notice is None:
            continue
        resumed += 1
        if not _deliver(services, notice, until, services.settings.scheduler_batch_size):
            return {"notices_resumed": resumed, "unfinished": 1}
    return {"notices_resumed": resumed}


def _detail(db: Any, doc: Notice) -> dict[str, Any]:
    return {
        "notice_id": doc["_id"],
        "community_id": doc["community_id"],
        "community_name": communities.name_on(db, doc),
        "title": doc["title"],
        "content": doc["content"],
        "published_at": iso(doc["published_at"]),
    }


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
    account: Account,
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
    window = store.community_page_stages(me, (page - 1) * page_size, page_size)
    record = staff.of_account(db, account)
    if community_id is not None and staff.covers(record, community_id):
        # Staff read the notices of the communities they cover, house or no house.
        rows = community_store.as_group_row(db, community_id, window)
        return _groups(rows, page, page_size)
    # From the caller's memberships: each community with its name, its notices and the
    # caller's reads joined in.
    rows = membership_store.communities_of(db, me, community_id, window)
    groups = _groups(rows, page, page_size)
    if community_id is not None and not groups:
        raise AppError("FORBIDDEN", "您在该小区没有房屋")
    return groups


def detail(services: Services, account: Account, notice_id: str) -> dict[str, Any]:
    """A notice of a community where the caller holds a house, or which the caller staffs;
    reading it marks it read for the caller."""
    db = services.db
    doc = _readable(db, account, notice_id)
    store.mark_read(db, doc, account["_id"], services.clock.now())
    return _detail(db, doc)


def _readable(db: Any, account: Account, notice_id: str) -> Notice:
    record = staff.of_account(db, account)
    if record is not None:
        doc = store.get(db, notice_id, matching=staff.scope_query(record))
        if doc is not None:
            return doc
    doc = store.for_member(db, notice_id, account["_id"], members=membership_store.MEMBERSHIPS)
    if doc is None:
        raise AppError("NOT_FOUND", "公告不存在")
    return doc

"""Payment reminders (催交通知): each house, and each account, at most once per window."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from itertools import islice
from typing import Any

from pymongo import IndexModel
from pymongo.errors import BulkWriteError

from caiyun.clock import SHANGHAI, business_date
from caiyun.data.schema import declare
from caiyun.domain import bills, memberships, messaging, rate_limits, staff
from caiyun.errors import AppError
from caiyun.money import yuan
from caiyun.services import Services

REMINDERS = declare("payment_reminders", IndexModel("expires_at", expireAfterSeconds=0))

BATCH = 500
_NO_REMINDERS = {
    "houses_unpaid": 0,
    "houses_reminded": 0,
    "houses_skipped": 0,
    "accounts_notified": 0,
}


def _claim(services: Services, keys: list[str]) -> set[str]:
    """Claim reminder slots for this window; returns the keys this caller won."""
    now = services.clock.now()
    expires = now + timedelta(seconds=services.settings.reminder_window_s)
    docs = [{"_id": key, "created_at": now, "expires_at": expires} for key in keys]
    if not docs:
        return set()
    try:
        services.db[REMINDERS].insert_many(docs, ordered=False)
        return set(keys)
    except BulkWriteError as exc:
        taken = {docs[e["index"]]["_id"] for e in exc.details.get("writeErrors", [])}
        return set(keys) - taken


def _window(services: Services) -> int:
    return int(services.clock.now().timestamp() // services.settings.reminder_window_s)


def _unpaid_houses(services: Services, match: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Houses with unpaid bills matching ``match``, with their count and sum, in batches.

    The aggregate's cursor is consumed batch by batch, so memory stays bounded however many
    houses owe.
    """
    cursor = services.db[bills.BILLS].aggregate(
        [
            {"$match": {**match, "status": {"$in": ["unpaid", "locked"]}}},
            {
                "$group": {
                    "_id": "$house_id",
                    "community_id": {"$first": "$community_id"},
                    "total": {"$sum": "$amount_fen"},
                    "count": {"$sum": 1},
                }
            },
            {"$sort": {"_id": 1}},
        ],
        batchSize=BATCH,
    )
    iterator = iter(cursor)
    while batch := list(islice(iterator, BATCH)):
        yield batch


def _owed_by_account(services: Services, houses: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What each account bound to these houses owes, summed over the houses."""
    by_house = {h["_id"]: h for h in houses}
    owed: dict[str, dict[str, Any]] = {}
    for link in services.db[memberships.MEMBERSHIPS].find(
        {"house_id": {"$in": list(by_house)}}, {"house_id": 1, "account_id": 1}
    ):
        house = by_house[link["house_id"]]
        entry = owed.setdefault(
            link["account_id"], {"count": 0, "total": 0, "community_id": house["community_id"]}
        )
        entry["count"] += house["count"]
        entry["total"] += house["total"]
    return owed


def _reminder(account_id: str, owed: dict[str, Any]) -> messaging.Note:
    amount = yuan(owed["total"])
    return messaging.Note(
        account_id=account_id,
        kind="reminder",
        title="缴费提醒",
        body=f"您有 {owed['count']} 笔物业费待缴，共 {amount} 元，请及时缴纳。",
        page="/pages/bills/index",
        push=messaging.Push("reminder", {"amount1": f"{amount}元", "thing2": "物业费待缴"}),
        community_id=owed["community_id"],
    )


def remind(services: Services, match: dict[str, Any]) -> dict[str, int]:
    """Remind every account bound to each house with unpaid bills matching ``match``: each
    house and each account at most once per reminder window, in batches."""
    window = _window(services)
    counts = dict(_NO_REMINDERS)
    for batch in _unpaid_houses(services, match):
        counts["houses_unpaid"] += len(batch)
        won = _claim(services, [f"house:{h['_id']}:{window}" for h in batch])
        fresh = [h for h in batch if f"house:{h['_id']}:{window}" in won]
        counts["houses_reminded"] += len(fresh)
        counts["houses_skipped"] += len(batch) - len(fresh)
        owed = _owed_by_account(services, fresh)
        accounts_won = _claim(services, [f"account:{a}:{window}" for a in owed])
        notes = [
            _reminder(account_id, entry)
            for account_id, entry in owed.items()
            if f"account:{account_id}:{window}" in accounts_won
        ]
        messaging.notify_many(services, notes)
        counts["accounts_notified"] += len(notes)
    return counts


def remind_community(
    services: Services, admin: dict[str, Any], community_id: str, house_ids: list[str] | None
) -> dict[str, int]:
    """An admin's 催交: unpaid houses of a community they cover (or the listed ones)."""
    staff.require_scope(admin, community_id)
    match: dict[str, Any] = {"community_id": community_id}
    if house_ids:
        match["house_id"] = {"$in": house_ids}
    return remind(services, match)


def remind_overdue(services: Services) -> dict[str, int]:
    """The timer's run: every house with a bill due today or earlier, in daytime only.

    The timer fires around the clock; a reminder at 3 a.m. would wake people, so outside the
    configured hours (Asia/Shanghai) nothing is sent and the next daytime run does it.
    """
    now = services.clock.now()
    settings = services.settings
    if (
        not settings.reminder_start_hour
        <= now.astimezone(SHANGHAI).hour
        < settings.reminder_end_hour
    ):
        return dict(_NO_REMINDERS)
    # Once per reminder window: every house and account is claimed per window anyway, so a
    # second run in the window would only regroup every overdue bill to send nothing.
    try:
        rate_limits.take_lease(
            services.db, f"job:reminders:{_window(services)}", settings.reminder_window_s, now
        )
    except AppError:
        return dict(_NO_REMINDERS)
    return remind(services, {"due_date": {"$lte": business_date(now).isoformat()}})

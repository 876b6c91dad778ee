"""Payment reminders (催交通知): each house, and each account, at most once per window."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pymongo import IndexModel
from pymongo.errors import BulkWriteError

from caiyun.clock import SHANGHAI, business_date
from caiyun.data.schema import declare
from caiyun.domain import bills, memberships, messaging
from caiyun.services import Services

REMINDERS = declare("payment_reminders", IndexModel("expires_at", expireAfterSeconds=0))

BATCH = 500


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


def _unpaid_houses(services: Services, match: dict[str, Any]) -> list[dict[str, Any]]:
    return list(
        services.db[bills.BILLS].aggregate(
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
            ]
        )
    )


def remind(services: Services, match: dict[str, Any]) -> dict[str, int]:
    """Remind every account bound to each house with unpaid bills matching ``match``."""
    window = _window(services)
    counts = {"houses_unpaid": 0, "houses_reminded": 0, "houses_skipped": 0, "accounts_notified": 0}
    due = _unpaid_houses(services, match)
    counts["houses_unpaid"] = len(due)
    for start in range(0, len(due), BATCH):
        batch = due[start : start + BATCH]
        won = _claim(services, [f"house:{h['_id']}:{window}" for h in batch])
        fresh = [h for h in batch if f"house:{h['_id']}:{window}" in won]
        counts["houses_reminded"] += len(fresh)
        counts["houses_skipped"] += len(batch) - len(fresh)
        links = services.db[memberships.MEMBERSHIPS].find(
            {"house_id": {"$in": [h["_id"] for h in fresh]}}, {"house_id": 1, "account_id": 1}
        )
        # One reminder per account, summing every house of this batch it belongs to.
        by_account: dict[str, dict[str, Any]] = {}
        houses_by_id = {h["_id"]: h for h in fresh}
        for link in links:
            house = houses_by_id[link["house_id"]]
            due = by_account.setdefault(
                link["account_id"], {"count": 0, "total": 0, "community_id": house["community_id"]}
            )
            due["count"] += house["count"]
            due["total"] += house["total"]
        accounts_won = _claim(services, [f"account:{a}:{window}" for a in by_account])
        for account_id, due in by_account.items():
            if f"account:{account_id}:{window}" not in accounts_won:
                continue
            amount = f"{due['total'] / 100:.2f}"
            messaging.notify(
                services,
                [account_id],
                "reminder",
                "缴费提醒",
                f"您有 {due['count']} 笔物业费待缴，共 {amount} 元，请及时缴纳。",
                "/pages/bills/index",
                messaging.Push("reminder", {"amount1": f"{amount}元", "thing2": "物业费待缴"}),
                community_id=due["community_id"],
            )
            counts["accounts_notified"] += 1
    return counts


def remind_community(
    services: Services, community_id: str, house_ids: list[str] | None
) -> dict[str, int]:
    """An admin's 催交: unpaid houses of one community (or the listed ones)."""
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
        return {
            "houses_unpaid": 0,
            "houses_reminded": 0,
            "houses_skipped": 0,
            "accounts_notified": 0,
        }
    return remind(services, {"due_date": {"$lte": business_date(now).isoformat()}})

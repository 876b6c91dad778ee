"""Payment reminders (催交通知): each house reaches each of its payers once per window.

A reminder goes to everyone who may pay a house's bills: its owner and family, and its tenants
unless ``reminder_include_tenants`` is off. The once-per-window rule holds per (house, account):
being reminded about one house never silences another house of the same account, so an owner
of two houses hears about both. Each account gets one message per run listing each house and
what it owes there.

A run works in two passes, each in bounded batches. The first walks the owing houses (by house)
and claims a (house, account) slot for each payer, recording in the claim what the message
needs; a slot another run already holds is not claimed again, so two runs at once never tell
anyone about a house twice. The second streams this run's claims by account and sends one
message per account.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import groupby, islice
from typing import Any

from pymongo import IndexModel
from pymongo.errors import BulkWriteError

from caiyun.clock import SHANGHAI, business_date
from caiyun.data.schema import declare
from caiyun.domain import houses, job_runs, messaging, staff
from caiyun.ids import new_id
from caiyun.money import yuan
from caiyun.services import Services
from caiyun.stores import bills as bill_store
from caiyun.stores import communities as community_store
from caiyun.stores import houses as house_store
from caiyun.stores import memberships as membership_store
from caiyun.stores.staff import StaffRecord

REMINDERS = declare(
    "payment_reminders",
    IndexModel("expires_at", expireAfterSeconds=0),
    # A run's claims, account after account (the second pass).
    IndexModel([("run", 1), ("account_id", 1)], partialFilterExpression={"run": {"$exists": True}}),
)

BATCH = 500
_NO_REMINDERS = {
    "houses_unpaid": 0,
    "houses_reminded": 0,
    "houses_skipped": 0,
    "houses_unbound": 0,
    "accounts_notified": 0,
}


def _window(services: Services) -> int:
    return int(services.clock.now().timestamp() // services.settings.reminder_window_s)


def _unpaid_houses(
    services: Services, match: dict[str, Any], size: int = BATCH
) -> Iterator[list[dict[str, Any]]]:
    """Houses with unpaid bills matching ``match``, with their count and sum, in batches.

    The aggregate's cursor is consumed batch by batch, so memory stays bounded however many
    houses owe.
    """
    iterator = bill_store.owing_by_house(services.db, match, batch_size=size)
    while batch := list(islice(iterator, size)):
        yield batch


def _unpaid_houses_after(
    services: Services, match: dict[str, Any], after: str, size: int
) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """Like :func:`_unpaid_houses`, for a run that stops and resumes: the houses are walked in
    pages by ``_id`` from ``after`` and each page's unpaid bills grouped on their own (by the
    bills' house index), so a resumed run starts at once instead of grouping every remaining
    bill first. Yields each page's owing houses with the page's last house id (the cursor)."""
    db = services.db
    while True:
        page = house_store.ids_after(db, after, size)
        if not page:
            return
        owing = bill_store.owing_by_house(db, {**match, "house_id": {"$in": page}})
        after = page[-1]
        yield list(owing), after


def _payer_roles(services: Services) -> list[str]:
    if services.settings.reminder_include_tenants:
        return ["owner", "family", "tenant"]
    return ["owner", "family"]


def _houses_with_payers(
    services: Services, house_ids: list[str], names: dict[str, str]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """The batch's houses (address and community) and the accounts that may pay each, in two
    indexed reads; ``names`` caches community names across the run's batches (a community's
    name is read the first time one of its houses owes)."""
    db = services.db
    found = {h["_id"]: h for h in house_store.addresses_by_id(db, house_ids)}
    payers = membership_store.accounts_holding(db, house_ids, _payer_roles(services))
    unnamed = sorted({h["community_id"] for h in found.values()} - names.keys())
    if unnamed:
        names.update(community_store.names(db, unnamed))
    return found, payers


def _claim(services: Services, claims: list[dict[str, Any]]) -> set[str]:
    """Insert the claims; returns the ids of those this run won (not held by another)."""
    if not claims:
        return set()
    try:
        services.db[REMINDERS].insert_many(claims, ordered=False)
        return {c["_id"] for c in claims}
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        taken = {claims[e["index"]]["_id"] for e in errors}
        return {c["_id"] for c in claims} - taken


def _claim_batch(
    services: Services,
    run: str,
    batch: list[dict[str, Any]],
    names: dict[str, str],
    counts: dict[str, int],
) -> None:
    """The first pass over one batch of owing houses: claim a slot per (house, payer)."""
    now = services.clock.now()
    expires = now + timedelta(seconds=services.settings.reminder_window_s)
    window = _window(services)
    found, payers = _houses_with_payers(services, [h["_id"] for h in batch], names)
    claims: list[dict[str, Any]] = []
    for owing in batch:
        house, accounts = found.get(owing["_id"]), payers.get(owing["_id"], [])
        if house is None or not accounts:
            counts["houses_unbound"] += 1
            payers.pop(owing["_id"], None)
            continue
        where = {
            "house_id": owing["_id"],
            "community_id": house["community_id"],
            "community_name": names.get(house["community_id"], ""),
            "house_label": houses.label(house),
            "total": owing["total"],
            "count": owing["count"],
        }
        claims += [
            {
                "_id": f"pair:{owing['_id']}:{account_id}:{window}",
                "run": run,
                "account_id": account_id,
                **where,
                "created_at": now,
                "expires_at": expires,
            }
            for account_id in accounts
        ]
    won = _claim(services, claims)
    for house_id, accounts in payers.items():
        told = any(f"pair:{house_id}:{a}:{window}" in won for a in accounts)
        counts["houses_reminded" if told else "houses_skipped"] += 1


def _reminder(account_id: str, owed: list[dict[str, Any]], run: str) -> messaging.Note:
    """One account's message: each house it is told about, with what that house owes; keyed
    by the run, so a run resumed after a crash never sends it twice."""
    owed = sorted(owed, key=lambda o: (o["community_name"], o["house_label"]))
    total = yuan(sum(o["total"] for o in owed))
    lines = "；".join(
        f"{o['community_name']} {o['house_label']}：{o['count']} 笔，共 {yuan(o['total'])} 元"
        for o in owed
    )
    first = owed[0]["house_label"]
    what = f"{first}待缴" if len(owed) == 1 else f"{first}等{len(owed)}套待缴"
    places = {o["community_id"] for o in owed}
    return messaging.Note(
        account_id=account_id,
        kind="reminder",
        title="缴费提醒",
        body=f"以下房屋有待缴费用，合计 {total} 元：{lines}。请及时缴纳。",
        page="/pages/bills/index",
        push=messaging.Push("reminder", {"amount1": f"{total}元", "thing2": what}),
        community_id=places.pop() if len(places) == 1 else None,
        key=f"reminder-{run}",
    )


def _send_batches(
    services: Services, run: str, after: str = "", size: int = BATCH
) -> Iterator[tuple[list[messaging.Note], str]]:
    """The second pass, a batch at a time: one note per account this run claimed slots for
    (accounts after ``after``), with the last account of the batch."""
    claims = (
        services.db[REMINDERS]
        .find(
            {"run": run, "account_id": {"$gt": after}},
            {
                "account_id": 1,
                "community_id": 1,
                "community_name": 1,
                "house_label": 1,
                "total": 1,
                "count": 1,
            },
        )
        .sort("account_id", 1)
        .batch_size(size)
    )
    grouped = groupby(claims, key=lambda c: c["account_id"])
    while notes := [_reminder(a, list(owed), run) for a, owed in islice(grouped, size)]:
        yield notes, notes[-1].account_id


def remind(services: Services, match: dict[str, Any]) -> dict[str, int]:
    """Remind every payer of each house with unpaid bills matching ``match``, each (house,
    account) at most once per reminder window, one message per account. Returns true counts:
    houses owing, houses that reached at least one payer now, houses all of whose payers were
    already told in this window, houses with nobody to tell, and accounts told."""
    run = new_id()
    counts = dict(_NO_REMINDERS)
    names: dict[str, str] = {}
    for batch in _unpaid_houses(services, match):
        counts["houses_unpaid"] += len(batch)
        _claim_batch(services, run, batch, names, counts)
    for notes, _ in _send_batches(services, run):
        messaging.deliver_many(services, notes)
        counts["accounts_notified"] += len(notes)
    return counts


def remind_community(
    services: Services, admin: StaffRecord, community_id: str, house_ids: list[str] | None
) -> dict[str, int]:
    """An admin's 催交: unpaid houses of a community they cover (or the listed ones)."""
    staff.require_scope(admin, community_id)
    match: dict[str, Any] = {"community_id": community_id}
    if house_ids:
        match["house_id"] = {"$in": house_ids}
    return remind(services, match)


def remind_overdue(services: Services, until: datetime | None = None) -> dict[str, int]:
    """The timer's run: every house with a bill due today or earlier, in daytime only, once
    per reminder window; when the clock passes ``until`` it stops after a batch (counts say
    ``unfinished``) and the next invocation resumes where it stopped.

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
    job = job_runs.begin(services, f"reminders:{_window(services)}", settings.reminder_window_s)
    if job is None:
        return dict(_NO_REMINDERS)
    state = {"run": new_id(), "phase": "claim", "after": "", **job.state}
    counts = dict(_NO_REMINDERS)
    size = settings.scheduler_batch_size

    def out_of_time() -> bool:
        return until is not None and services.clock.now() >= until

    if state["phase"] == "claim":
        match = {"due_date": {"$lte": business_date(now).isoformat()}}
        names: dict[str, str] = {}
        for batch, last in _unpaid_houses_after(services, match, state["after"], size):
            counts["houses_unpaid"] += len(batch)
            if batch:
                _claim_batch(services, state["run"], batch, names, counts)
            state["after"] = last
            if out_of_time():
                job_runs.pause(services, job, state)
                return {**counts, "unfinished": 1}
            job_runs.save(services, job, state)
        state = {**state, "phase": "send", "after": ""}
        job_runs.save(services, job, state)
    for notes, last in _send_batches(services, state["run"], state["after"], size):
        messaging.deliver_many(services, notes)
        counts["accounts_notified"] += len(notes)
        state["after"] = last
        if out_of_time():
            job_runs.pause(services, job, state)
            return {**counts, "unfinished": 1}
        job_runs.save(services, job, state)
    job_runs.finish(services, job)
    return counts

"""The bills collection (账单): the record, its indexes, and its guarded moves between
``unpaid``, ``locked`` (into one live payment order) and ``paid``.

Locking and settling are conditional updates over the bills they name, so a bill is in one live
order at a time and is settled once, however many payers and notifies race.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal, TypedDict

from pymongo import IndexModel, UpdateOne
from typing_extensions import NotRequired

from caiyun.data.inserts import insert_new
from caiyun.data.schema import declare

BillStatus = Literal["unpaid", "locked", "paid"]

BILLS = declare(
    "bills",
    IndexModel([("house_id", 1), ("period", 1), ("item", 1)], unique=True),
    IndexModel([("house_id", 1), ("status", 1), ("due_date", 1)]),
    IndexModel([("community_id", 1), ("status", 1), ("building", 1)]),
    IndexModel([("community_id", 1), ("period", 1), ("status", 1)]),
    IndexModel([("status", 1), ("due_date", 1)]),
    IndexModel("order_no"),
)


class Bill(TypedDict):
    """One fee of one house for one period, in integer fen, as imported; the fields below
    ``status`` appear as it is paid or charged."""

    _id: str
    community_id: str
    house_id: str
    building: str
    period: str
    item: str
    amount_fen: int
    due_date: str
    status: BillStatus
    created_at: datetime
    updated_at: datetime
    order_no: NotRequired[str]
    paid_at: NotRequired[datetime]
    # The business day an auto-debit last tried it: tried once a day at most.
    autodebit_tried: NotRequired[str]


# A bill's identity, as the unique index holds it: house id, period, item.
BillKey = tuple[str, str, str]
# What an import may change of an unpaid bill.
TERMS = ("amount_fen", "due_date")


def insert_all(db: Any, new: list[Bill]) -> list[int]:
    """Insert these bills unordered; the positions (in ``new``) of those whose key another
    import stored meanwhile (the unique house+period+item index refused them)."""
    return insert_new(db[BILLS], new)


def terms_of(db: Any, keys: set[BillKey]) -> dict[BillKey, dict[str, Any]]:
    """The stored terms and status of the bills with these keys, in one command (by house,
    period and item)."""
    if not keys:
        return {}
    found = db[BILLS].find(
        {
            "house_id": {"$in": sorted({k[0] for k in keys})},
            "period": {"$in": sorted({k[1] for k in keys})},
            "item": {"$in": sorted({k[2] for k in keys})},
        },
        {"house_id": 1, "period": 1, "item": 1, "status": 1, **{term: 1 for term in TERMS}},
    )
    stored = {(b["house_id"], b["period"], b["item"]): b for b in found}
    return {k: b for k, b in stored.items() if k in keys}


def set_terms_while_unpaid(
    db: Any, changes: list[tuple[BillKey, dict[str, Any]]], now: datetime
) -> int:
    """Set each bill's terms (``changes``: key and terms) if it is still unpaid: a bill
    locked for payment meanwhile keeps what it is being paid for. How many changed; one
    command."""
    if not changes:
        return 0
    writes = [
        UpdateOne(
            {"house_id": house_id, "period": period, "item": item, "status": "unpaid"},
            {"$set": {**terms, "updated_at": now}},
        )
        for (house_id, period, item), terms in changes
    ]
    return int(db[BILLS].bulk_write(writes).modified_count)


def owing_by_house(
    db: Any, match: dict[str, Any], *, batch_size: int | None = None
) -> Iterator[Any]:
    """The houses whose bills matching ``match`` are still owed (unpaid or locked for an
    open order), by house id, each ``{_id, total, count}``: the sum and count it owes. One
    aggregate, read ``batch_size`` houses at a time when given."""
    stages = [
        {"$match": {**match, "status": {"$in": ["unpaid", "locked"]}}},
        {"$group": {"_id": "$house_id", "total": {"$sum": "$amount_fen"}, "count": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ]
    options = {} if batch_size is None else {"batchSize": batch_size}
    return iter(db[BILLS].aggregate(stages, **options))


def with_members(db: Any, bill_ids: list[str], *, members: str) -> list[dict[str, Any]]:
    """These bills, each with ``_members``: the memberships of its house (``members``: the
    memberships collection), so who may pay them is known in the same command."""
    return list(
        db[BILLS].aggregate(
            [
                {"$match": {"_id": {"$in": bill_ids}}},
                {
                    "$lookup": {
                        "from": members,
                        "localField": "house_id",
                        "foreignField": "house_id",
                        "as": "_members",
                    }
                },
            ]
        )
    )


def due_for_autodebit(db: Any, house_ids: list[str], *, today: str) -> list[Bill]:
    """The unpaid bills of these houses due by ``today`` that no auto-debit tried today."""
    return list(
        db[BILLS].find(
            {
                "house_id": {"$in": house_ids},
                "status": "unpaid",
                "due_date": {"$lte": today},
                "autodebit_tried": {"$ne": today},
            }
        )
    )


def stamp_autodebit_tried(db: Any, bill_ids: list[str], *, today: str) -> None:
    """Mark these bills tried by today's auto-debit, before it charges them: a run resumed
    after a crash never charges one twice."""
    db[BILLS].update_many({"_id": {"$in": bill_ids}}, {"$set": {"autodebit_tried": today}})


def lock_for_order(db: Any, found: list[Bill], order_no: str) -> bool:
    """Lock every bill into the order, or none of them (False if any was taken or changed).

    Each bill is locked only at the amount the order was priced from: a re-import that changed
    an unpaid bill meanwhile makes the lock fail instead of undercharging.
    """
    result = db[BILLS].update_many(
        {
            "$or": [{"_id": b["_id"], "amount_fen": b["amount_fen"]} for b in found],
            "status": "unpaid",
        },
        {"$set": {"status": "locked", "order_no": order_no}},
    )
    if result.modified_count == len(found):
        return True
    release(db, order_no)
    return False


def release(db: Any, order_no: str) -> int:
    """Give the bills of an order that will not be paid back to ``unpaid``."""
    result = db[BILLS].update_many(
        {"order_no": order_no, "status": "locked"},
        {"$set": {"status": "unpaid"}, "$unset": {"order_no": ""}},
    )
    return result.modified_count


def settle(db: Any, bill_ids: list[str], order_no: str, paid_at: datetime) -> int:
    """Mark the order's bills paid; safe to repeat with the order's ``paid_at``. Returns how
    many of them it could not settle (paid by, or locked in, another order meanwhile), so the
    order can be refunded.

    A bill released by an expired order and still unpaid is settled too (the money arrived
    late).
    """
    result = db[BILLS].update_many(
        {
            "_id": {"$in": bill_ids},
            # Bills this order already paid match too (and are left as they are), so the
            # update's own match count says how many the order now holds, with no second read.
            "$or": [
                {"status": "locked", "order_no": order_no},
                {"status": "unpaid"},
                {"status": "paid", "order_no": order_no},
            ],
        },
        {"$set": {"status": "paid", "order_no": order_no, "paid_at": paid_at}},
    )
    return len(bill_ids) - result.matched_count

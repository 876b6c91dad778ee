"""The payment orders collection (支付订单): the record, its indexes, its queries and its guarded
moves.

An order is the ledger of the charge that paid it: the settling transaction is set on it by the
one conditional update that wins ``pending`` → ``paid``, so however many notifies race, one
settles it. Ending an order unpaid is the same kind of update, expecting it still pending.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

from pymongo import DESCENDING, IndexModel, ReturnDocument
from typing_extensions import NotRequired

from caiyun.data import paging
from caiyun.data.schema import declare
from caiyun.stores.bills import BILLS

PayMethod = Literal["wechat", "wallet", "card", "autodebit"]
OrderStatus = Literal["pending", "paid", "failed", "closed"]

ORDERS = declare(
    "payment_orders",
    IndexModel([("status", 1), ("_id", 1)]),
    IndexModel([("account_id", 1), ("created_at", DESCENDING)]),
)


class Order(TypedDict):
    """A payment order: the bills it holds, how it is paid, and as it ends, how."""

    _id: str
    account_id: str
    community_id: str
    house_ids: list[str]
    bill_ids: list[str]
    amount_fen: int
    method: PayMethod
    status: OrderStatus
    created_at: datetime
    expires_at: datetime
    # ICBC's side: how the app pays (``pay_with``), ICBC's order id and WeChat's parameters.
    icbc: NotRequired[dict[str, Any]]
    # The auto-debit agreement an auto-debit order relied on.
    consent: NotRequired[dict[str, Any]]
    paid_at: NotRequired[datetime]
    transaction_id: NotRequired[str | None]
    settled_by_notify: NotRequired[str | None]
    ended_at: NotRequired[datetime]
    queried_at: NotRequired[datetime]
    # For a person: money to give back, or a bank amount that does not match.
    needs_refund: NotRequired[bool]
    needs_review: NotRequired[bool]
    bank_amount_fen: NotRequired[int]
    bank_status: NotRequired[str]


def insert(db: Any, order: Order) -> None:
    """Store a new order (its number is new: nothing to collide with)."""
    db[ORDERS].insert_one(order)


def get(db: Any, order_no: str, *, payer: str | None = None) -> Order | None:
    """The order with this number (only if ``payer``'s, when given)."""
    query = {"_id": order_no} if payer is None else {"_id": order_no, "account_id": payer}
    return db[ORDERS].find_one(query)


def end(
    db: Any,
    order_no: str,
    *,
    expects: Mapping[str, Any],
    to: str,
    at: datetime,
    amount_fen: int | None = None,
) -> Order | None:
    """End the order as ``to`` if it still matches ``expects`` (and, when given, is of
    ``amount_fen``); the order before, or None (nothing changed)."""
    query: dict[str, Any] = {"_id": order_no, **expects}
    if amount_fen is not None:
        query["amount_fen"] = amount_fen
    return db[ORDERS].find_one_and_update(query, {"$set": {"status": to, "ended_at": at}})


def settle(
    db: Any,
    order_no: str,
    *,
    expects: Mapping[str, Any],
    to: str,
    amount_fen: int,
    paid_at: datetime,
    transaction_id: str | None,
    notify_id: str | None,
) -> Order | None:
    """Record the transaction that paid the order, if it still matches ``expects`` and is of
    ``amount_fen``; the order after, or None (nothing changed)."""
    return db[ORDERS].find_one_and_update(
        {"_id": order_no, **expects, "amount_fen": amount_fen},
        {
            "$set": {
                "status": to,
                "paid_at": paid_at,
                "transaction_id": transaction_id,
                "settled_by_notify": notify_id,
            }
        },
        return_document=ReturnDocument.AFTER,
    )


def note(db: Any, order_no: str, fields: Mapping[str, Any]) -> None:
    """Set facts for a person on the order (``needs_refund``, ``needs_review``,
    ``bank_amount_fen``, ``bank_status``); its state is left as it is."""
    db[ORDERS].update_one({"_id": order_no}, {"$set": dict(fields)})


def claim_query(db: Any, order_no: str, *, now: datetime, every: timedelta) -> bool:
    """Whether this caller may ask ICBC about the pending order now: at most once per
    ``every``, however many callers race (the claim is the update that stamps ``queried_at``)."""
    due = db[ORDERS].find_one_and_update(
        {
            "_id": order_no,
            "status": "pending",
            "$or": [
                {"queried_at": {"$exists": False}},
                {"queried_at": {"$lte": now - every}},
            ],
        },
        {"$set": {"queried_at": now}},
    )
    return due is not None


def expired_pending(db: Any, *, now: datetime, after: str, limit: int) -> list[Order]:
    """At most ``limit`` pending orders past their expiry with numbers past ``after``, in
    number order."""
    found = db[ORDERS].find(
        {"status": "pending", "expires_at": {"$lte": now}, "_id": {"$gt": after}}
    )
    return list(found.sort("_id", 1).limit(limit))


def count_ended(db: Any, order_nos: list[str]) -> int:
    """How many of these orders are no longer pending."""
    return db[ORDERS].count_documents({"_id": {"$in": order_nos}, "status": {"$ne": "pending"}})


def open_page(
    db: Any, account_id: str, page: int, page_size: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of the account's pending orders, newest first, each with ``_bills``: the bills
    naming it (those still locked are the ones it holds)."""
    found, total, _ = paging.page(
        db[ORDERS],
        {"account_id": account_id, "status": "pending"},
        [("created_at", -1)],
        page,
        page_size,
        item_stages=[
            {
                "$lookup": {
                    "from": BILLS,
                    "localField": "_id",
                    "foreignField": "order_no",
                    "as": "_bills",
                }
            }
        ],
    )
    return found, total

"""Payment orders through ICBC: lock bills into an order, settle it exactly once.

The order is written to the database before ICBC is called, so a late or repeated notify always
finds it. An order is settled by ICBC's notify or, when none arrives, by querying ICBC; both go
through :func:`apply_result`, whose first step is one conditional update that only one caller
can win however many notifies race.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pymongo import DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from caiyun import labels
from caiyun.clock import SHANGHAI, business_date, iso
from caiyun.data.schema import declare
from caiyun.domain import bills, memberships, messaging, rate_limits
from caiyun.errors import AppError
from caiyun.money import yuan
from caiyun.services import Services

PayMethod = Literal["card", "wallet", "autodebit"]
OrderStatus = Literal["pending", "paid", "failed", "closed"]

ORDERS = declare(
    "payment_orders",
    IndexModel([("status", 1), ("_id", 1)]),
    IndexModel([("account_id", 1), ("created_at", DESCENDING)]),
)
TRANSACTIONS = declare("payment_transactions", IndexModel("order_no"))

MAX_BILLS_PER_ORDER = 50


@dataclass(frozen=True)
class BankResult:
    """What ICBC says happened to an order, from a notify or a query."""

    order_no: str
    status: OrderStatus
    amount_fen: int
    transaction_id: str | None
    paid_at: datetime | None


def _new_order_no(now: datetime) -> str:
    return "CY" + now.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S") + secrets.token_hex(4).upper()


def _bank_unavailable() -> AppError:
    return AppError("UNAVAILABLE", "银行服务暂时不可用，请稍后重试", {"retryable": True})


def view(order: dict[str, Any]) -> dict[str, Any]:
    """An order as the payer sees it."""
    return {
        "order_no": order["_id"],
        "status": order["status"],
        "status_name": labels.name("order_status", order["status"]),
        "amount_fen": order["amount_fen"],
        "method": order["method"],
        "bill_ids": order["bill_ids"],
        "created_at": iso(order["created_at"]),
        "expires_at": iso(order["expires_at"]),
        "paid_at": iso(order.get("paid_at")),
        "icbc": order.get("icbc") or {},
    }


def _payable_bills(
    services: Services, account: dict[str, Any], bill_ids: list[str]
) -> list[dict[str, Any]]:
    # The bills with their houses' members joined in: who may pay them, in the same command.
    found = list(
        services.db[bills.BILLS].aggregate(
            [
                {"$match": {"_id": {"$in": bill_ids}}},
                {
                    "$lookup": {
                        "from": memberships.MEMBERSHIPS,
                        "localField": "house_id",
                        "foreignField": "house_id",
                        "as": "_members",
                    }
                },
            ]
        )
    )
    if len(found) != len(bill_ids):
        raise AppError("NOT_FOUND", "账单不存在")
    payers = [{m["account_id"] for m in b.pop("_members")} for b in found]
    if any(account["_id"] not in allowed for allowed in payers):
        raise AppError("FORBIDDEN", "只能支付自己房屋的账单")
    if any(b["status"] != "unpaid" for b in found):
        raise AppError("BILL_NOT_PAYABLE", "账单已支付或正在支付中")
    if len({b["community_id"] for b in found}) != 1:
        raise AppError(
            "INVALID_ARGUMENT", "一次只能支付同一小区的账单", {"fields": {"bill_ids": "跨小区"}}
        )
    return found


def _place_order(
    services: Services, account: dict[str, Any], found: list[dict[str, Any]], method: PayMethod
) -> dict[str, Any]:
    """Write the order, then lock its bills into it (all or none)."""
    db, now = services.db, services.clock.now()
    order = {
        "_id": _new_order_no(now),
        "account_id": account["_id"],
        "community_id": found[0]["community_id"],
        "house_ids": sorted({b["house_id"] for b in found}),
        "bill_ids": [b["_id"] for b in found],
        "amount_fen": sum(b["amount_fen"] for b in found),
        "method": method,
        "status": "pending",
        "created_at": now,
        "expires_at": now + timedelta(seconds=services.settings.order_ttl_s),
    }
    db[ORDERS].insert_one(order)
    if not bills.lock_for_order(db, found, order["_id"]):
        db[ORDERS].update_one({"_id": order["_id"]}, {"$set": {"status": "closed"}})
        raise AppError("BILL_NOT_PAYABLE", "账单正在被其他人支付")
    return order


def open_order(
    services: Services,
    account: dict[str, Any],
    bill_ids: list[str],
    method: Literal["card", "wallet"],
) -> dict[str, Any]:
    """Lock the bills into a new order and ask ICBC to take the payment."""
    from caiyun.adapters.icbc import IcbcError

    if not account.get("realname_verified"):
        raise AppError("REALNAME_REQUIRED")
    found = _payable_bills(services, account, list(dict.fromkeys(bill_ids)))
    order = _place_order(services, account, found, method)
    subject = f"物业费 {len(found)} 笔"
    try:
        params = services.icbc.create_payment(
            order["_id"],
            order["amount_fen"],
            subject,
            account.get("wx", {}).get("resident"),
            method,
            order["expires_at"],
        )
    except IcbcError:
        close(services, order["_id"], "failed")
        raise _bank_unavailable() from None
    services.db[ORDERS].update_one({"_id": order["_id"]}, {"$set": {"icbc": params}})
    order["icbc"] = params
    return order


def charge_autodebit(
    services: Services, account: dict[str, Any], found: list[dict[str, Any]]
) -> str:
    """Charge due bills through the account's auto-debit agreement; returns the order status.

    Bills that could not be charged are stamped for today so the daily run tries them once.
    """
    from caiyun.adapters.icbc import IcbcError

    today = business_date(services.clock.now()).isoformat()
    services.db[bills.BILLS].update_many(
        {"_id": {"$in": [b["_id"] for b in found]}}, {"$set": {"autodebit_tried": today}}
    )
    try:
        order = _place_order(services, account, found, "autodebit")
    except AppError:
        return "skipped"
    try:
        status = services.icbc.autodebit_charge(
            account["autodebit"]["agreement_no"],
            order["_id"],
            order["amount_fen"],
            f"物业费自动扣缴 {len(found)} 笔",
        )
    except IcbcError as exc:
        if not exc.retryable:
            close(services, order["_id"], "failed")
            return "failed"
        return "pending"  # the expiry run asks ICBC what happened
    if status.status == "paid":
        apply_result(
            services,
            BankResult(
                order["_id"], "paid", status.amount_fen, status.transaction_id, status.paid_at
            ),
        )
    elif status.status in ("failed", "closed"):
        close(services, order["_id"], "failed")
    return status.status


def run_autodebit(services: Services, batch_size: int = 200) -> dict[str, int]:
    """Charge every consenting account's due bills, one order per account and community."""
    from caiyun.domain import accounts

    db = services.db
    now = services.clock.now()
    today = business_date(now).isoformat()
    counts = {"autodebit_accounts": 0, "autodebit_paid": 0, "autodebit_failed": 0}
    # Once per business day: the timer fires every few minutes, and every run after the first
    # would only re-read every consenting account to find nothing to charge.
    try:
        rate_limits.take_lease(db, f"job:autodebit:{today}", 24 * 3600, now)
    except AppError:
        return counts
    last_id = ""
    while True:
        batch = list(
            db[accounts.ACCOUNTS]
            .find({"autodebit.enabled": True, "_id": {"$gt": last_id}})
            .sort("_id", 1)
            .limit(batch_size)
        )
        for account in batch:
            house_ids = [m["house_id"] for m in memberships.of_account(db, account["_id"])]
            due = list(
                db[bills.BILLS].find(
                    {
                        "house_id": {"$in": house_ids},
                        "status": "unpaid",
                        "due_date": {"$lte": today},
                        "autodebit_tried": {"$ne": today},
                    }
                )
            )
            by_community: dict[str, list[dict[str, Any]]] = {}
            for bill in due:
                by_community.setdefault(bill["community_id"], []).append(bill)
            for group in by_community.values():
                counts["autodebit_accounts"] += 1
                outcome = charge_autodebit(services, account, group)
                if outcome == "paid":
                    counts["autodebit_paid"] += 1
                elif outcome == "failed":
                    counts["autodebit_failed"] += 1
        if len(batch) < batch_size:
            return counts
        last_id = batch[-1]["_id"]


def close(
    services: Services,
    order_no: str,
    status: Literal["failed", "closed"],
    amount_fen: int | None = None,
) -> bool:
    """End a pending order without payment and release its bills; False if not pending (or,
    with ``amount_fen``, not of that amount)."""
    query: dict[str, Any] = {"_id": order_no, "status": "pending"}
    if amount_fen is not None:
        query["amount_fen"] = amount_fen
    ended = services.db[ORDERS].find_one_and_update(
        query, {"$set": {"status": status, "ended_at": services.clock.now()}}
    )
    if ended is None:
        return False
    bills.release(services.db, order_no)
    return True


Applied = Literal["applied", "duplicate", "unknown_order", "amount_mismatch"]


def _not_applied(db: Any, result: BankResult) -> tuple[Applied, dict[str, Any] | None]:
    """Why ICBC's word changed nothing: no such order, another amount, or already applied."""
    order = db[ORDERS].find_one({"_id": result.order_no})
    if order is None:
        return "unknown_order", None
    if order["amount_fen"] != result.amount_fen:
        return "amount_mismatch", order
    return "duplicate", order


def apply_result(services: Services, result: BankResult) -> Applied:
    """Apply ICBC's word on an order exactly once; repeating it changes nothing more.

    Only on an order of the amount ICBC reports: ``unknown_order`` and ``amount_mismatch``
    change nothing. A success is recorded even on an order that had expired: the money
    arrived, so its bills are settled (or the order is flagged for refund when they were paid
    by another order meanwhile).
    """
    db = services.db
    if result.status != "paid":
        if close(services, result.order_no, "failed", amount_fen=result.amount_fen):
            return "applied"
        return _not_applied(db, result)[0]
    # One conditional update both finds the order and wins the transition; only when it
    # changes nothing is the order read, to tell a repeat from an unknown order or amount.
    won = db[ORDERS].find_one_and_update(
        {"_id": result.order_no, "status": {"$ne": "paid"}, "amount_fen": result.amount_fen},
        {
            "$set": {
                "status": "paid",
                "paid_at": result.paid_at or services.clock.now(),
                "transaction_id": result.transaction_id,
            }
        },
        return_document=ReturnDocument.AFTER,
    )
    outcome: Applied = "applied"
    order = won
    if won is None:
        outcome, order = _not_applied(db, result)
        if order is None or outcome != "duplicate":
            return outcome
    # Repeated on every success so a crash between the two writes is mended by the next notify;
    # with the order's own paid_at, a repeat leaves the bills it already paid as they are.
    elsewhere = bills.settle(db, order["bill_ids"], order["_id"], order["paid_at"])
    if elsewhere:
        db[ORDERS].update_one({"_id": order["_id"]}, {"$set": {"needs_refund": True}})
    with contextlib.suppress(DuplicateKeyError):
        db[TRANSACTIONS].insert_one(
            {
                "_id": f"icbc:{result.transaction_id or order['_id']}",
                "order_no": order["_id"],
                "account_id": order["account_id"],
                "community_id": order["community_id"],
                "amount_fen": result.amount_fen,
                "paid_at": order["paid_at"],
            }
        )
    # Sent on every success, duplicates included: the message has a fixed id, so the payer is
    # told once even when the first notify died between marking the order and telling them.
    messaging.notify(
        services,
        [order["account_id"]],
        "payment",
        "缴费成功",
        f"您已成功缴纳物业费 {yuan(order['amount_fen'])} 元。",
        f"/pages/bills/order?order_no={order['_id']}",
        messaging.Push(
            "payment",
            {
                "character_string1": order["_id"],
                "amount2": f"{yuan(order['amount_fen'])}元",
                "thing3": "物业费缴纳成功",
            },
        ),
        community_id=order["community_id"],
        message_key=f"pay-{order['_id']}",
    )
    return outcome


def payer_order(services: Services, account: dict[str, Any], order_no: str) -> dict[str, Any]:
    """The caller's own order, reconciled with ICBC when its notify is overdue."""
    db = services.db
    order = db[ORDERS].find_one({"_id": order_no, "account_id": account["_id"]})
    if order is None:
        raise AppError("NOT_FOUND", "订单不存在")
    now, after = services.clock.now(), services.settings.order_query_after_s
    if order["status"] != "pending" or (now - order["created_at"]).total_seconds() < after:
        return order
    # An app polling every second asks ICBC at most once per interval, however many polls race.
    due = db[ORDERS].find_one_and_update(
        {
            "_id": order_no,
            "status": "pending",
            "$or": [
                {"queried_at": {"$exists": False}},
                {"queried_at": {"$lte": now - timedelta(seconds=after)}},
            ],
        },
        {"$set": {"queried_at": now}},
    )
    if due is None:
        return order
    reconcile(services, order)
    return db[ORDERS].find_one({"_id": order_no})


def reconcile(services: Services, order: dict[str, Any]) -> None:
    """Ask ICBC about a pending order and apply what it says; an expired unpaid one closes."""
    from caiyun.adapters.icbc import IcbcError

    try:
        status = services.icbc.query_payment(order["_id"])
    except IcbcError as exc:
        # ICBC never saw this order (the request to open or charge it was lost): once expired
        # it can only end unpaid, and its bills go back to the resident.
        if exc.code == "ORDER_NOT_FOUND" and order["expires_at"] <= services.clock.now():
            close(services, order["_id"], "closed")
        return
    if status.status == "paid" and status.amount_fen != order["amount_fen"]:
        # ICBC holds money that does not match the order: never settle, never close quietly.
        services.db[ORDERS].update_one(
            {"_id": order["_id"]},
            {"$set": {"needs_review": True, "bank_amount_fen": status.amount_fen}},
        )
    elif status.status == "paid":
        apply_result(
            services,
            BankResult(
                order["_id"], "paid", status.amount_fen, status.transaction_id, status.paid_at
            ),
        )
    elif status.status in ("failed", "closed"):
        close(services, order["_id"], "failed" if status.status == "failed" else "closed")
    elif order["expires_at"] <= services.clock.now():
        close(services, order["_id"], "closed")


def expire_orders(services: Services, batch_size: int = 200) -> int:
    """Reconcile every pending order past its expiry, in batches; returns how many ended.

    Pages by ``_id`` so an order ICBC could not be asked about stays pending for the next run
    without stopping this one.
    """
    db, ended, last_id = services.db, 0, ""
    now = services.clock.now()
    while True:
        due = list(
            db[ORDERS]
            .find({"status": "pending", "expires_at": {"$lte": now}, "_id": {"$gt": last_id}})
            .sort("_id", 1)
            .limit(batch_size)
        )
        for order in due:
            reconcile(services, order)
        if due:
            ids = [o["_id"] for o in due]
            ended += db[ORDERS].count_documents({"_id": {"$in": ids}, "status": {"$ne": "pending"}})
            last_id = ids[-1]
        if len(due) < batch_size:
            return ended

"""Payments that need a person: money to give back, and what ICBC says happened at its end.

An issue is flagged once however often the bank repeats itself (its id is derived from what it
is about), shown to the community's admins (:func:`listing`) and counted in the staff summary
(:func:`counts`):

* ``extra_settlement``: a second successful payment (another bank transaction) for an order
  already settled; the bills are never settled twice, the money is due back to the payer.
* ``bills_paid_elsewhere``: a payment that arrived after its bills were paid by another order.
* ``bank_refund``: ICBC's order query reports a revocation or refund (statuses 3–7) that did
  not go through us.
* ``amount_mismatch``: ICBC holds a payment of another amount than the order's.

The payer is told of the money due back (:data:`REFUND_DUE`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pymongo import DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from caiyun import labels
from caiyun.clock import iso
from caiyun.data import paging
from caiyun.data.schema import declare
from caiyun.domain import messaging, staff
from caiyun.money import yuan
from caiyun.services import Services
from caiyun.stores.staff import StaffRecord

IssueKind = Literal["extra_settlement", "bills_paid_elsewhere", "bank_refund", "amount_mismatch"]

ISSUES = declare(
    "payment_issues",
    IndexModel([("community_id", 1), ("created_at", DESCENDING)]),
    IndexModel("order_no"),
)

# The kinds that mean money is due back to the payer.
REFUND_DUE: tuple[IssueKind, ...] = ("extra_settlement", "bills_paid_elsewhere")


def flag(
    services: Services,
    kind: IssueKind,
    key: str,
    order: Mapping[str, Any],
    amount_fen: int,
    **details: Any,
) -> bool:
    """Record an issue about ``order`` once (``key`` tells repeats apart); True when it is
    new. A refund due is told to the payer."""
    issue = {
        "_id": f"{kind}:{order['_id']}:{key}",
        "kind": kind,
        "order_no": order["_id"],
        "account_id": order["account_id"],
        "community_id": order["community_id"],
        "amount_fen": amount_fen,
        "status": "open",
        "created_at": services.clock.now(),
        **details,
    }
    try:
        services.db[ISSUES].insert_one(issue)
    except DuplicateKeyError:
        return False
    if kind in REFUND_DUE:
        messaging.deliver(
            services,
            [order["account_id"]],
            "payment",
            title="多付款项将退还",
            body=(
                f"订单 {order['_id']} 收到一笔多余的付款 {yuan(amount_fen)} 元，"
                "物业将为您办理退款。"
            ),
            page=f"/pages/bills/order?order_no={order['_id']}",
            community_id=order["community_id"],
            message_key=f"refund-{issue['_id']}",
        )
    return True


def view(issue: dict[str, Any]) -> dict[str, Any]:
    """An issue as the staff app shows it."""
    return {
        "issue_id": issue["_id"],
        "kind": issue["kind"],
        "kind_name": labels.name("payment_issue", issue["kind"]),
        "order_no": issue["order_no"],
        "account_id": issue["account_id"],
        "amount_fen": issue["amount_fen"],
        "transaction_id": issue.get("transaction_id"),
        "bank_status": issue.get("bank_status"),
        "status": issue["status"],
        "created_at": iso(issue["created_at"]),
    }


def listing(
    services: Services, admin: StaffRecord, community_id: str, page: int, page_size: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of a community's payment issues, newest first, for an admin who covers it."""
    staff.require_scope(admin, community_id)
    found, total, _ = paging.page(
        services.db[ISSUES],
        {"community_id": community_id},
        [("created_at", -1), ("_id", -1)],
        page,
        page_size,
    )
    return [view(issue) for issue in found], total


def counts(services: Services, community_id: str) -> dict[str, int]:
    """The open issues of a community: refunds due (count and fen) and bank-side refunds."""
    rows = services.db[ISSUES].aggregate(
        [
            {"$match": {"community_id": community_id, "status": "open"}},
            {"$group": {"_id": "$kind", "n": {"$sum": 1}, "fen": {"$sum": "$amount_fen"}}},
        ]
    )
    totals = {"refund_due_count": 0, "refund_due_fen": 0, "bank_refund_count": 0}
    for row in rows:
        if row["_id"] in REFUND_DUE:
            totals["refund_due_count"] += row["n"]
            totals["refund_due_fen"] += row["fen"]
        elif row["_id"] == "bank_refund":
            totals["bank_refund_count"] += row["n"]
    return totals

"""Bills (账单) as residents see them: what a status filter means, a bill's view, and the
bills of a resident's houses with what each owes. The record and its locking and settling
are :mod:`caiyun.stores.bills`'s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caiyun import labels
from caiyun.clock import iso
from caiyun.data import paging
from caiyun.domain import houses
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores import memberships as membership_store
from caiyun.stores.accounts import Account
from caiyun.stores.bills import BILLS
from caiyun.stores.communities import COMMUNITIES
from caiyun.stores.houses import HOUSES

# Bills a resident still owes: not yet paid, or in a payment not yet finished.
UNPAID = ["unpaid", "locked"]
# In an aggregate where each row has joined one ``bill``: whether that bill is still owed.
OWING = {"$in": ["$bill.status", UNPAID]}
# What each status filter of the API matches: ``unpaid`` (待缴/未交) is every bill not yet
# paid, ``paying`` only those locked in a payment, ``paid`` the paid ones.
STATUS_FILTERS: dict[str, Any] = {
    "unpaid": {"$in": UNPAID},
    "paying": "locked",
    "paid": "paid",
}


def view(
    bill: Mapping[str, Any], house: dict[str, Any] | None = None, community_name: str = ""
) -> dict[str, Any]:
    """A bill as the apps show it; ``locked`` shows as ``paying`` (支付中)."""
    status = "paying" if bill["status"] == "locked" else bill["status"]
    shown = {
        "bill_id": bill["_id"],
        "house_id": bill["house_id"],
        "community_id": bill["community_id"],
        "community_name": community_name,
        "period": bill["period"],
        "item": bill["item"],
        "amount_fen": bill["amount_fen"],
        "due_date": bill["due_date"],
        "status": status,
        "status_name": labels.name("bill_status", status),
        "paid_at": iso(bill.get("paid_at")),
    }
    if house is not None:
        shown["house_label"] = houses.label(house)
    return shown


def resident_bills(
    services: Services,
    account: Account,
    house_id: str | None,
    status: str | None,
    page: int,
    page_size: int,
) -> tuple[list[dict[str, Any]], int, int, list[dict[str, Any]]]:
    """A page of the bills of the caller's houses (or one of them), newest period first.

    ``status`` filters as :data:`STATUS_FILTERS` says. Returns (items, total, unpaid_total_fen,
    houses): the unpaid sum covers every bill not yet paid of those houses whatever ``status``
    filters the page, and ``houses`` gives each house's own (with its label and community).
    """
    mine: dict[str, Any] = {} if house_id is None else {"house_id": house_id}
    shown: dict[str, Any] = dict(mine)
    if status is not None:
        shown["bill.status"] = STATUS_FILTERS[status]
    else:
        shown["bill"] = {"$exists": True}
    owing = OWING
    # One command from the caller's memberships: each joins its house (for the label), its
    # community (for the name) and its bills (by the bills' house_id index), one row per bill;
    # the facets then give the houses held with what each owes (to tell HOUSE_NOT_BOUND from
    # FORBIDDEN, and for the per-house totals), the page and its total. The sort runs in
    # memory over one resident's bills (tens to hundreds), not the collection.
    pipeline = [
        {"$match": {"account_id": account["_id"]}},
        {"$project": {"house_id": 1, "community_id": 1}},
        {
            "$lookup": {
                "from": HOUSES,
                "localField": "house_id",
                "foreignField": "_id",
                "as": "house",
            }
        },
        {
            "$lookup": {
                "from": COMMUNITIES,
                "localField": "community_id",
                "foreignField": "_id",
                "as": "community",
            }
        },
        {
            "$lookup": {
                "from": BILLS,
                "localField": "house_id",
                "foreignField": "house_id",
                "as": "bill",
            }
        },
        {"$unwind": {"path": "$bill", "preserveNullAndEmptyArrays": True}},
        {
            "$facet": {
                "houses": [
                    {
                        "$group": {
                            "_id": "$house_id",
                            "house": {"$first": "$house"},
                            "community": {"$first": "$community"},
                            "community_id": {"$first": "$community_id"},
                            "count": {"$sum": {"$cond": [owing, 1, 0]}},
                            "fen": {"$sum": {"$cond": [owing, "$bill.amount_fen", 0]}},
                        }
                    },
                    {"$sort": {"_id": 1}},
                ],
                "items": [
                    {"$match": shown},
                    {"$sort": {"bill.period": -1, "bill.item": 1, "bill._id": 1}},
                    *paging.window(page, page_size),
                ],
                "total": [{"$match": shown}, {"$count": "n"}],
            }
        },
    ]
    found: dict[str, Any] = next(
        iter(services.db[membership_store.MEMBERSHIPS].aggregate(pipeline)), {}
    )
    held = found.get("houses", [])
    if not held:
        raise AppError("HOUSE_NOT_BOUND")
    if house_id is not None and house_id not in {h["_id"] for h in held}:
        raise AppError("FORBIDDEN", "只能查看自己房屋的账单")
    items = [
        view(row["bill"], (row["house"] or [None])[0], _name_of(row["community"]))
        for row in found["items"]
    ]
    total = (found["total"] or [{"n": 0}])[0]["n"]
    owed = [
        {
            "house_id": h["_id"],
            "house_label": houses.label(h["house"][0]) if h["house"] else "",
            "community_id": h["community_id"],
            "community_name": _name_of(h["community"]),
            "unpaid_count": h["count"],
            "unpaid_fen": h["fen"],
        }
        for h in held
        if house_id is None or h["_id"] == house_id
    ]
    return items, total, sum(h["unpaid_fen"] for h in owed), owed


def _name_of(joined: list[dict[str, Any]]) -> str:
    return joined[0]["name"] if joined else ""

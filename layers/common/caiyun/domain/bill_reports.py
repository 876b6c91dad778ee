"""What property staff see of bills: 已交/未交 counts and sums by building, and the lists."""

from __future__ import annotations

import re
from typing import Any

from caiyun import labels
from caiyun.data import paging
from caiyun.domain import bills, houses, payment_issues, staff
from caiyun.services import Services
from caiyun.stores.bills import BILLS
from caiyun.stores.communities import COMMUNITIES
from caiyun.stores.houses import HOUSES
from caiyun.stores.staff import StaffRecord


def summary(
    services: Services, admin: StaffRecord, community_id: str, period: str | None
) -> dict[str, Any]:
    """Paid and unpaid counts and sums for a community the admin covers, by building, with
    its open payment issues (refunds due, refunds ICBC reports)."""
    staff.require_scope(admin, community_id)
    match: dict[str, Any] = {"community_id": community_id}
    if period:
        match["period"] = period
    rows = services.db[BILLS].aggregate(
        [
            {"$match": match},
            {
                "$group": {
                    "_id": {"building": "$building", "status": "$status"},
                    "count": {"$sum": 1},
                    "amount": {"$sum": "$amount_fen"},
                }
            },
        ]
    )
    empty = {"paid_count": 0, "paid_fen": 0, "unpaid_count": 0, "unpaid_fen": 0}
    total = dict(empty)
    buildings: dict[str, dict[str, int]] = {}
    for row in rows:
        side = "paid" if row["_id"]["status"] == "paid" else "unpaid"
        per = buildings.setdefault(row["_id"]["building"], dict(empty))
        for target in (per, total):
            target[f"{side}_count"] += row["count"]
            target[f"{side}_fen"] += row["amount"]
    return {
        "community_id": community_id,
        "period": period,
        **total,
        "by_building": [{"building": b, **v} for b, v in sorted(buildings.items())],
        # The payments to reconcile by hand, whatever the period: money due back, and refunds
        # ICBC reports.
        **payment_issues.counts(services, community_id),
    }


def listing(
    services: Services,
    admin: StaffRecord,
    community_id: str,
    narrow: dict[str, Any],
    page: int,
    page_size: int,
) -> tuple[list[dict[str, Any]], int]:
    """A page of the bills of a community the admin covers, with house label and owner.

    ``narrow`` holds ``status`` (as :data:`bills.STATUS_FILTERS` reads it) and may hold
    ``building``, ``house_id`` and ``period``. The owner's phone is shown in full: the contract
    lets an admin see the phones of owners in their communities, to call about unpaid fees.
    """
    staff.require_scope(admin, community_id)
    db = services.db
    query: dict[str, Any] = {
        "community_id": community_id,
        "status": bills.STATUS_FILTERS[narrow["status"]],
    }
    for field in ("building", "house_id", "period"):
        if narrow.get(field):
            query[field] = narrow[field]
    # Each bill of the page joins its house (label, owner) and community (name) in the same
    # command.
    found, total, _ = paging.page(
        db[BILLS],
        query,
        [("building", 1), ("house_id", 1), ("period", -1)],
        page,
        page_size,
        item_stages=[
            {
                "$lookup": {
                    "from": HOUSES,
                    "localField": "house_id",
                    "foreignField": "_id",
                    "as": "_house",
                }
            },
            {
                "$lookup": {
                    "from": COMMUNITIES,
                    "localField": "community_id",
                    "foreignField": "_id",
                    "as": "_community",
                }
            },
        ],
    )
    items = []
    for bill in found:
        house = (bill.pop("_house") or [{}])[0]
        community = (bill.pop("_community") or [{}])[0]
        items.append(
            {
                **bills.view(bill, house or None, community.get("name", "")),
                "owner_name": house.get("owner_name"),
                "owner_phone": house.get("owner_phone"),
            }
        )
    return items, total


def houses_page(
    services: Services,
    admin: StaffRecord,
    community_id: str,
    narrow: dict[str, Any],
    page: int,
    page_size: int,
) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    """已交/未交 by house: a page of the houses of a community the admin covers that have
    bills (of ``period``, if given), by building, unit and room, each with what it owes and
    has paid and its owner (phone in full, as in :func:`listing`), and how many houses each tab
    holds.

    ``narrow`` may hold ``status`` (the tab: ``unpaid`` while any bill is not yet paid, else
    ``paid``), ``building``, ``unit``, ``room`` (exact), ``owner_name`` (any part of it),
    ``owner_phone`` (exact) and ``period``. One command: the houses matched (by the address
    index), their bills joined by the bills' house index and summed, then the page and the tab
    counts.
    """
    staff.require_scope(admin, community_id)
    query: dict[str, Any] = {"community_id": community_id}
    for field in ("building", "unit", "room", "owner_phone"):
        if narrow.get(field):
            query[field] = narrow[field]
    if narrow.get("owner_name"):
        query["owner_name"] = {"$regex": re.escape(narrow["owner_name"])}
    owing = bills.OWING
    shaping: list[dict[str, Any]] = [
        {"$project": {"building": 1, "unit": 1, "room": 1, "owner_name": 1, "owner_phone": 1}},
        {
            "$lookup": {
                "from": BILLS,
                "localField": "_id",
                "foreignField": "house_id",
                "as": "bill",
            }
        },
        {"$unwind": "$bill"},
        *([{"$match": {"bill.period": narrow["period"]}}] if narrow.get("period") else []),
        {
            "$group": {
                "_id": "$_id",
                **{f: {"$first": f"${f}"} for f in ("building", "unit", "room")},
                "owner_name": {"$first": "$owner_name"},
                "owner_phone": {"$first": "$owner_phone"},
                "unpaid_count": {"$sum": {"$cond": [owing, 1, 0]}},
                "unpaid_fen": {"$sum": {"$cond": [owing, "$bill.amount_fen", 0]}},
                "paid_count": {"$sum": {"$cond": [owing, 0, 1]}},
                "paid_fen": {"$sum": {"$cond": [owing, 0, "$bill.amount_fen"]}},
            }
        },
        {"$set": {"status": {"$cond": [{"$gt": ["$unpaid_count", 0]}, "unpaid", "paid"]}}},
    ]
    found, total, counts = paging.tabbed(
        services.db[HOUSES],
        query,
        "status",
        narrow.get("status"),
        [("building", 1), ("unit", 1), ("room", 1)],
        page,
        page_size,
        shaping=shaping,
        tabs=labels.LABELS["house_dues"],
    )
    items = [
        {
            "house_id": h["_id"],
            "house_label": houses.label(h),
            "building": h["building"],
            "unit": h["unit"],
            "room": h["room"],
            "owner_name": h.get("owner_name"),
            "owner_phone": h.get("owner_phone"),
            "status": h["status"],
            "status_name": labels.name("house_dues", h["status"]),
            **{k: h[k] for k in ("unpaid_count", "unpaid_fen", "paid_count", "paid_fen")},
        }
        for h in found
    ]
    return items, total, counts

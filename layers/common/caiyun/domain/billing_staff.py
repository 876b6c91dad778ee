"""What property staff see of bills: 已交/未交 counts and sums by building, and the lists."""

from __future__ import annotations

from typing import Any, Literal

from caiyun.crypto import mask_phone
from caiyun.data import paging
from caiyun.domain import bills, houses, payment_issues, staff
from caiyun.services import Services

_UNPAID = ["unpaid", "locked"]


def summary(
    services: Services, admin: dict[str, Any], community_id: str, period: str | None
) -> dict[str, Any]:
    """Paid and unpaid counts and sums for a community the admin covers, by building, with
    its open payment issues (refunds due, refunds ICBC reports)."""
    staff.require_scope(admin, community_id)
    match: dict[str, Any] = {"community_id": community_id}
    if period:
        match["period"] = period
    rows = services.db[bills.BILLS].aggregate(
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
    admin: dict[str, Any],
    community_id: str,
    status: Literal["paid", "unpaid"],
    building: str | None,
    period: str | None,
    page: int,
    page_size: int,
) -> tuple[list[dict[str, Any]], int]:
    """A page of the paid or unpaid bills of a community the admin covers, with house label
    and owner."""
    staff.require_scope(admin, community_id)
    db = services.db
    query: dict[str, Any] = {
        "community_id": community_id,
        "status": "paid" if status == "paid" else {"$in": _UNPAID},
    }
    if building:
        query["building"] = building
    if period:
        query["period"] = period
    # Each bill of the page joins its house (label, owner) in the same command.
    found, total, _ = paging.page(
        db[bills.BILLS],
        query,
        [("building", 1), ("house_id", 1), ("period", -1)],
        page,
        page_size,
        item_stages=[
            {
                "$lookup": {
                    "from": houses.HOUSES,
                    "localField": "house_id",
                    "foreignField": "_id",
                    "as": "_house",
                }
            }
        ],
    )
    items = []
    for bill in found:
        house = (bill.pop("_house") or [{}])[0]
        items.append(
            {
                **bills.view(bill, house or None),
                "owner_name": house.get("owner_name"),
                "owner_phone": mask_phone(house.get("owner_phone")),
            }
        )
    return items, total

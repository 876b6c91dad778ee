"""Importing bills: one per house, period and fee item; re-import never duplicates, never
touches a paid bill, and each new bill is pushed to the accounts bound to its house."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from typing import Annotated, Any

from pydantic import (
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pymongo.errors import DuplicateKeyError

from caiyun.domain import bills, communities, houses, memberships, messaging, staff
from caiyun.domain.owner_import import AddressRow, RowResult, row_error
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.services import Services


class BillRow(AddressRow):
    """One bill, as a row of the bill template."""

    period: Annotated[
        str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")
    ]
    item: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
    amount_fen: Annotated[int, Field(ge=1, le=100_000_000, strict=False)]
    due_date: date

    @field_validator("amount_fen", mode="before")
    @classmethod
    def _whole_fen(cls, value: Any) -> Any:
        # Money is integer fen: 12.5 fen in a spreadsheet is a mistake, not something to round,
        # and a TRUE cell is not 1 fen.
        if isinstance(value, bool):
            raise ValueError("金额须为整数（分）")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError("金额须为整数（分）")
            return int(value)
        if isinstance(value, str) and not re.fullmatch(r"[0-9]+", value.strip()):
            raise ValueError("金额须为整数（分）")
        return value


def _apply(
    services: Services, community_id: str, row: BillRow, number: int, fresh: dict[str, list[str]]
) -> RowResult:
    db, now = services.db, services.clock.now()
    house = houses.by_address(db, community_id, row.building, row.unit, row.room)
    if house is None:
        return RowResult(number, "error", reason="房屋不存在")
    label = houses.label(house)
    key = {"house_id": house["_id"], "period": row.period, "item": row.item}
    terms = {"amount_fen": row.amount_fen, "due_date": row.due_date.isoformat()}
    try:
        bill_id = new_id()
        db[bills.BILLS].insert_one(
            {
                "_id": bill_id,
                **key,
                **terms,
                "community_id": community_id,
                "building": house["building"],
                "status": "unpaid",
                "created_at": now,
                "updated_at": now,
            }
        )
        fresh[house["_id"]].append(f"{row.period} {row.item}")
        return RowResult(number, "created", house["_id"], label)
    except DuplicateKeyError:
        pass
    current = db[bills.BILLS].find_one(key) or {}
    if all(current.get(k) == v for k, v in terms.items()):
        return RowResult(number, "unchanged", house["_id"], label)
    changed = db[bills.BILLS].update_one(
        {**key, "status": "unpaid"}, {"$set": {**terms, "updated_at": now}}
    )
    if changed.modified_count:
        return RowResult(number, "updated", house["_id"], label)
    return RowResult(number, "error", house["_id"], label, reason="账单已缴费或正在支付，不能修改")


def _announce(services: Services, community_id: str, fresh: dict[str, list[str]]) -> None:
    for house_id, items in fresh.items():
        members = [m["account_id"] for m in memberships.of_house(services.db, house_id)]
        summary = "、".join(items[:3]) + (" 等" if len(items) > 3 else "")
        messaging.notify(
            services,
            members,
            "bill",
            "新账单",
            f"您有新的物业账单：{summary}，请及时缴纳。",
            "/pages/bills/index",
            messaging.Push("bill", {"thing1": summary, "thing2": "请及时缴纳"}),
            community_id=community_id,
        )


def import_bills(
    services: Services,
    community_id: str,
    rows: Iterable[Any],
    importer: dict[str, Any] | None = None,
) -> list[RowResult]:
    """Create or update bills row by row; each new bill is announced to its house's accounts.

    ``importer`` is the admin's staff record (scope-checked) or None for the operator CLI.
    """
    # Scope first, so an admin cannot tell which other communities exist.
    if importer is not None:
        staff.require_scope(importer, community_id)
    if communities.get(services.db, community_id) is None:
        raise AppError("NOT_FOUND", "小区不存在")
    results: list[RowResult] = []
    fresh: dict[str, list[str]] = defaultdict(list)
    for number, raw in enumerate(rows, start=1):
        if not isinstance(raw, dict):
            results.append(RowResult(number, "error", reason="行格式无效"))
            continue
        try:
            row = BillRow.model_validate(raw)
        except ValidationError as exc:
            results.append(row_error(number, exc))
            continue
        results.append(_apply(services, community_id, row, number, fresh))
    _announce(services, community_id, fresh)
    return results

"""Importing a community's houses and owners from the property company's spreadsheet.

Every row gets a result and a bad row never stops the good ones. Re-importing the same rows
changes nothing; a corrected row updates its house (a new owner replaces the old one's binding).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator
from pymongo.errors import DuplicateKeyError

from caiyun import labels
from caiyun.contract.common import PHONE_PATTERN
from caiyun.domain import accounts, communities, houses, memberships, staff
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.runtime.validation import invalid_argument
from caiyun.services import Services

RowStatus = Literal["created", "updated", "unchanged", "error"]

_Part = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)]
_Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
_Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=PHONE_PATTERN)]
_Region = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


class CommunityRecord(BaseModel):
    """The community a file describes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    province: _Region
    city: _Region
    district: _Region
    name: _Region
    address: Annotated[str, StringConstraints(strip_whitespace=True, max_length=128)] = ""


def with_suffix(value: str, suffix: str) -> str:
    """``3`` → ``3栋``: a bare number in an address column gets its unit word."""
    # Spreadsheets often hold bare numbers ("3", 3.0); the product always shows "3栋".
    return f"{value}{suffix}" if re.fullmatch(r"[0-9]+", value) else value


def whole_number_text(value: Any) -> Any:
    """Excel hands ``3.0`` for a typed 3; an address part wants ``"3"``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


class AddressRow(BaseModel):
    """A spreadsheet row naming a house by building, unit and room."""

    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)

    building: _Part
    unit: _Part
    room: _Part

    _numbers = field_validator("building", "unit", "room", mode="before")(whole_number_text)

    @field_validator("building")
    @classmethod
    def _building_suffix(cls, value: str) -> str:
        return with_suffix(value, "栋")

    @field_validator("unit")
    @classmethod
    def _unit_suffix(cls, value: str) -> str:
        return with_suffix(value, "单元")


class OwnerRow(AddressRow):
    """One house with its owner, as a row of the owner template."""

    owner_name: _Name
    owner_phone: _Phone


@dataclass(frozen=True)
class RowResult:
    """What happened to one row (``row`` counts from 1)."""

    row: int
    status: RowStatus
    house_id: str | None = None
    label: str | None = None
    reason: str | None = None


@dataclass
class ImportReport:
    """The outcome of an import: the community and one result per row."""

    community_id: str
    community_created: bool
    rows: list[RowResult] = field(default_factory=list)


# How the template's columns are named to the people who fill it in.
COLUMN_LABELS = {
    "building": "楼栋",
    "unit": "单元",
    "room": "房号",
    "owner_name": "业主姓名",
    "owner_phone": "业主手机号",
    "period": "账期",
    "item": "收费项目",
    "amount_fen": "金额（分）",
    "due_date": "缴费截止日",
}


def row_error(number: int, exc: ValidationError) -> RowResult:
    """An error result naming the row's bad fields."""
    fields = invalid_argument(exc).details["fields"]
    reason = "；".join(f"{COLUMN_LABELS.get(name, name)}{why}" for name, why in fields.items())
    return RowResult(row=number, status="error", reason=reason)


def _apply_row(services: Services, community_id: str, row: OwnerRow, number: int) -> RowResult:
    db, now = services.db, services.clock.now()
    owner, _ = accounts.ensure_account(db, row.owner_phone, now, row.owner_name)
    if owner.get("name") != row.owner_name:
        # The company's record is the authority on an owner's name.
        db[accounts.ACCOUNTS].update_one({"_id": owner["_id"]}, {"$set": {"name": row.owner_name}})
    address = {
        "community_id": community_id,
        "building": row.building,
        "unit": row.unit,
        "room": row.room,
    }
    current = houses.by_address(db, community_id, row.building, row.unit, row.room)
    if current is None:
        doc: dict[str, Any] = {
            "_id": new_id(),
            **address,
            "owner_name": row.owner_name,
            "owner_phone": row.owner_phone,
            "created_at": now,
            "updated_at": now,
        }
        try:
            db[houses.HOUSES].insert_one(doc)
            return RowResult(number, "created", doc["_id"], houses.label(doc))
        except DuplicateKeyError:
            # The same house in a concurrent import or earlier in this file: update instead.
            current = houses.by_address(db, community_id, row.building, row.unit, row.room)
            assert current is not None
    if current["owner_name"] == row.owner_name and current["owner_phone"] == row.owner_phone:
        return RowResult(number, "unchanged", current["_id"], houses.label(current))
    db[houses.HOUSES].update_one(
        {"_id": current["_id"]},
        {"$set": {"owner_name": row.owner_name, "owner_phone": row.owner_phone, "updated_at": now}},
    )
    if current["owner_phone"] != row.owner_phone:
        # A new owner: the previous owner's household no longer lives there.
        memberships.remove_all_except(db, current["_id"], owner["_id"])
    return RowResult(number, "updated", current["_id"], houses.label(current))


def _check_importer(services: Services, importer: dict[str, Any], record: CommunityRecord) -> None:
    if importer.get("all_communities"):
        return
    key = record.model_dump(include={"province", "city", "district", "name"})
    existing = services.db[communities.COMMUNITIES].find_one(key, {"_id": 1})
    if existing is None:
        raise AppError("FORBIDDEN", "只有总部管理员可以导入新小区")
    staff.require_scope(importer, existing["_id"])


def import_owners(
    services: Services,
    community: dict[str, Any],
    rows: Iterable[dict[str, Any]],
    importer: dict[str, Any] | None = None,
) -> ImportReport:
    """Create or update the community, its houses and owner accounts, row by row.

    ``rows`` is consumed lazily, so a file reader can stream a large spreadsheet through it.
    ``importer`` is the admin's staff record when an admin imports through the API (None for
    the operator's command line): only a company-wide admin creates communities.
    Raises INVALID_ARGUMENT only when the community itself is invalid.
    """
    try:
        record = CommunityRecord.model_validate(community)
    except ValidationError as exc:
        raise invalid_argument(exc) from None
    if importer is not None:
        _check_importer(services, importer, record)
    doc, created = communities.upsert(services.db, record.model_dump(), services.clock.now())
    report = ImportReport(community_id=doc["_id"], community_created=created)
    for number, raw in enumerate(rows, start=1):
        report.rows.append(_import_one(services, doc["_id"], number, raw))
    return report


def _import_one(services: Services, community_id: str, number: int, raw: Any) -> RowResult:
    if not isinstance(raw, dict):
        return RowResult(row=number, status="error", reason="行格式无效")
    try:
        row = OwnerRow.model_validate(raw)
    except ValidationError as exc:
        return row_error(number, exc)
    return _apply_row(services, community_id, row, number)


def count_statuses(results: list[RowResult]) -> dict[str, int]:
    """How many rows ended in each status."""
    totals = {"created": 0, "updated": 0, "unchanged": 0, "error": 0}
    for result in results:
        totals[result.status] += 1
    return totals


def result_dict(result: RowResult) -> dict[str, Any]:
    """A row result as a plain dict for a reply or a printed report (empty fields left out)."""
    shown = {k: v for k, v in asdict(result).items() if v is not None}
    return {**shown, "status_name": labels.name("import_row_status", result.status)}

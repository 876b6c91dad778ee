"""Importing a community's houses and owners from the property company's spreadsheet.

Every row gets a result and a bad row never stops the good ones. Re-importing the same rows
changes nothing; a corrected row updates its house (a new owner replaces the old one's binding).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator

from caiyun import labels
from caiyun.contract.common import PHONE_PATTERN
from caiyun.domain import houses, staff
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import communities as community_store
from caiyun.stores import houses as house_store
from caiyun.stores import memberships as membership_store
from caiyun.stores.houses import Address, House
from caiyun.stores.staff import StaffRecord
from caiyun.validation import invalid_argument

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


# Rows are written this many at a time: per batch one read and one insert_many of its owners'
# accounts and of its houses, plus one bulk write for houses whose owner changed. The file
# itself is streamed.
BATCH = 500


def _address(row: AddressRow) -> Address:
    return (row.building, row.unit, row.room)


def _stored_houses(db: Any, community_id: str, wanted: Iterable[Address]) -> dict[Address, Any]:
    """These addresses' houses, by address, in one command."""
    return {_address_of(h): h for h in house_store.at_addresses(db, community_id, wanted)}


def _address_of(house: Mapping[str, Any]) -> Address:
    return (house["building"], house["unit"], house["room"])


@dataclass
class _Plan:
    """A batch's rows applied in order to the houses as stored (as if written one by one),
    and the writes that leave the houses in the resulting state."""

    community_id: str
    now: Any
    houses: dict[Address, House]
    inserts: dict[Address, House] = field(default_factory=dict)
    updates: set[Address] = field(default_factory=set)
    new_owner: set[Address] = field(default_factory=set)

    def apply(self, number: int, row: OwnerRow) -> RowResult:
        address = _address(row)
        house = self.houses.get(address)
        if house is None:
            new: House = {
                "_id": new_id(),
                **house_store.at_address(self.community_id, *address),
                "owner_name": row.owner_name,
                "owner_phone": row.owner_phone,
                "created_at": self.now,
                "updated_at": self.now,
            }
            self.houses[address] = self.inserts[address] = new
            return RowResult(number, "created", new["_id"], houses.label(new))
        if house["owner_name"] == row.owner_name and house["owner_phone"] == row.owner_phone:
            return RowResult(number, "unchanged", house["_id"], houses.label(house))
        if address not in self.inserts:
            self.updates.add(address)
            if house["owner_phone"] != row.owner_phone:
                # A new owner: the previous owner's household no longer lives there.
                self.new_owner.add(address)
        house["owner_name"], house["owner_phone"] = row.owner_name, row.owner_phone
        return RowResult(number, "updated", house["_id"], houses.label(house))


def _insert_houses(db: Any, docs: dict[Address, House]) -> set[Address]:
    """Insert new houses; returns the addresses another import took meanwhile."""
    addresses = list(docs)
    return {addresses[i] for i in house_store.insert_all(db, list(docs.values()))}


def _write_batch(
    services: Services,
    community_id: str,
    batch: list[tuple[int, OwnerRow]],
    results: list[RowResult | None],
    first_row: int,
) -> None:
    """Write one batch of valid rows and fill in their results."""
    db, now = services.db, services.clock.now()
    # The last row naming a phone names its owner, as if the rows were written one by one.
    owners = account_store.ensure_named_accounts(
        db, {row.owner_phone: row.owner_name for _, row in batch}, now
    )
    plan = _Plan(
        community_id, now, _stored_houses(db, community_id, {_address(r) for _, r in batch})
    )
    for number, row in batch:
        results[number - first_row] = plan.apply(number, row)
    taken = _insert_houses(db, plan.inserts)
    if taken:
        # The same houses in a concurrent import: this batch's rows for them update instead.
        retry = _Plan(community_id, now, _stored_houses(db, community_id, taken))
        for number, row in batch:
            if _address(row) in taken:
                results[number - first_row] = retry.apply(number, row)
        plan.updates |= retry.updates
        plan.new_owner |= retry.new_owner
        plan.houses.update(retry.houses)
    house_store.set_owners(db, [plan.houses[a] for a in sorted(plan.updates)], now)
    moved = [plan.houses[a] for a in sorted(plan.new_owner)]
    if moved:
        membership_store.remove_all_except_owners(
            db, {h["_id"]: owners[h["owner_phone"]] for h in moved}
        )


def _check_importer(services: Services, importer: StaffRecord, record: CommunityRecord) -> None:
    if importer.get("all_communities"):
        return
    existing = community_store.id_at(
        services.db,
        province=record.province,
        city=record.city,
        district=record.district,
        name=record.name,
    )
    if existing is None:
        raise AppError("FORBIDDEN", "只有总部管理员可以导入新小区")
    staff.require_scope(importer, existing)


def import_owners(
    services: Services,
    community: dict[str, Any],
    rows: Iterable[dict[str, Any]],
    importer: StaffRecord | None = None,
    *,
    first_row: int = 1,
) -> ImportReport:
    """Create or update the community, its houses and owner accounts, a batch of rows at a
    time; one result per row, in row order, as if the rows were written one by one.

    ``rows`` is consumed lazily, so a file reader can stream a large spreadsheet through it;
    a caller importing a file in chunks calls this once per chunk, with ``first_row`` the
    number of the chunk's first row in the file (results are numbered from it).
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
    doc, created = community_store.upsert(services.db, record.model_dump(), services.clock.now())
    report = ImportReport(community_id=doc["_id"], community_created=created)
    results: list[RowResult | None] = []
    batch: list[tuple[int, OwnerRow]] = []
    for number, raw in enumerate(rows, start=first_row):
        checked = _validate(number, raw)
        results.append(checked if isinstance(checked, RowResult) else None)
        if isinstance(checked, OwnerRow):
            batch.append((number, checked))
        if len(batch) >= BATCH:
            _write_batch(services, doc["_id"], batch, results, first_row)
            batch = []
    if batch:
        _write_batch(services, doc["_id"], batch, results, first_row)
    report.rows = [result for result in results if result is not None]
    return report


def _validate(number: int, raw: Any) -> OwnerRow | RowResult:
    if not isinstance(raw, dict):
        return RowResult(row=number, status="error", reason="行格式无效")
    try:
        return OwnerRow.model_validate(raw)
    except ValidationError as exc:
        return row_error(number, exc)


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

"""Importing bills: one per house, period and fee item; re-import never duplicates, never
touches a paid bill, and each new bill is pushed to the accounts bound to its house."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any

from pydantic import (
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from caiyun.domain import houses, messaging, staff
from caiyun.domain.owner_import import AddressRow, RowResult, RowStatus, row_error
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.services import Services
from caiyun.stores import bills as bill_store
from caiyun.stores import communities as community_store
from caiyun.stores import memberships as membership_store
from caiyun.stores.bills import Bill, BillKey
from caiyun.stores.houses import HOUSES
from caiyun.stores.staff import StaffRecord


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


# Rows are written this many at a time: one read of their houses, one insert_many, and for
# rows already imported one read and one bulk write. The file itself is streamed.
BATCH = 500
HOUSES_KEPT = 5_000

_PAID_OR_PAYING = "账单已缴费或正在支付，不能修改"


@dataclass
class _Fresh:
    """New bills of one house, for its announcement: up to four, and who to tell."""

    members: list[str]
    items: list[str] = field(default_factory=list)

    def add(self, item: str) -> None:
        # The message names three; a fourth only says there are more.
        if len(self.items) < 4:
            self.items.append(item)


@dataclass
class _Batch:
    """One batch of an import and what the import keeps between batches."""

    services: Services
    community_id: str
    results: list[RowResult | None]
    fresh: dict[str, _Fresh]
    rows: list[tuple[int, BillRow]] = field(default_factory=list)
    community_seen: bool = False
    first_row: int = 1
    # Houses already read, with their members, most recent last: a bill file names each house
    # once per period and item, usually in several batches (at most HOUSES_KEPT are kept).
    known: OrderedDict[tuple[str, str, str], dict[str, Any]] = field(default_factory=OrderedDict)

    def record(self, result: RowResult) -> None:
        """Put a row's result in its place."""
        self.results[result.row - self.first_row] = result


def _houses(batch: _Batch) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The batch's houses by address, each with the accounts bound to it: those not read by an
    earlier batch in one command.

    One ``$or`` branch per address, each an exact match on the houses' unique address index
    (community included):
    a batch reads the houses it names and no others (``$in`` on building, unit and room alone
    would read their cross product, the whole community for a one-month file).
    """
    wanted = sorted({(r.building, r.unit, r.room) for _, r in batch.rows})
    known = batch.known
    missing = [address for address in wanted if address not in known]
    if missing:
        for house in _read_houses(batch, missing):
            known[(house["building"], house["unit"], house["room"])] = house
        while len(known) > HOUSES_KEPT:
            known.popitem(last=False)
    for address in wanted:
        if address in known:
            known.move_to_end(address)
    return {address: known[address] for address in wanted if address in known}


def _read_houses(batch: _Batch, wanted: list[tuple[str, str, str]]) -> Any:
    return batch.services.db[HOUSES].aggregate(
        [
            {
                "$match": {
                    "$or": [
                        {"community_id": batch.community_id, "building": b, "unit": u, "room": r}
                        for b, u, r in wanted
                    ]
                }
            },
            {
                "$lookup": {
                    "from": membership_store.MEMBERSHIPS,
                    "localField": "_id",
                    "foreignField": "house_id",
                    "as": "members",
                }
            },
            {"$project": {"building": 1, "unit": 1, "room": 1, "members.account_id": 1}},
        ]
    )


def _flush(batch: _Batch) -> None:
    """Write one batch of valid rows and fill in their results, in row order."""
    if not batch.rows:
        return
    db, now = batch.services.db, batch.services.clock.now()
    by_address = _houses(batch)
    if by_address:
        batch.community_seen = True
    elif not batch.community_seen:
        _require_community(batch)
    planned: list[tuple[int, BillRow, dict[str, Any], BillKey]] = []
    new: dict[BillKey, Bill] = {}
    for number, row in batch.rows:
        house = by_address.get((row.building, row.unit, row.room))
        if house is None:
            batch.record(RowResult(number, "error", reason="房屋不存在"))
            continue
        key = (house["_id"], row.period, row.item)
        planned.append((number, row, house, key))
        # Only a key's first row is inserted; a repeat in the same file then updates it, as
        # if the rows had been written one by one.
        if key not in new:
            new[key] = {
                "_id": new_id(),
                "house_id": key[0],
                "period": key[1],
                "item": key[2],
                "amount_fen": row.amount_fen,
                "due_date": row.due_date.isoformat(),
                "community_id": batch.community_id,
                "building": house["building"],
                "status": "unpaid",
                "created_at": now,
                "updated_at": now,
            }
    keys = list(new)
    existing = {keys[i] for i in bill_store.insert_all(db, list(new.values()))}
    current = bill_store.terms_of(db, existing)
    labels = {h["_id"]: houses.label(h) for h in by_address.values()}
    created: set[BillKey] = set()
    updates: list[tuple[BillKey, dict[str, Any]]] = []
    updated: list[tuple[RowResult, BillKey, dict[str, Any]]] = []
    for number, row, house, key in planned:
        terms = {"amount_fen": row.amount_fen, "due_date": row.due_date.isoformat()}
        label = labels[house["_id"]]
        if key not in existing and key not in created:
            created.add(key)
            current[key] = {**terms, "status": "unpaid"}
            members = [m["account_id"] for m in house["members"]]
            batch.fresh.setdefault(house["_id"], _Fresh(members)).add(f"{row.period} {row.item}")
            batch.record(RowResult(number, "created", house["_id"], label))
            continue
        bill = current.get(key, {})
        if all(bill.get(k) == v for k, v in terms.items()):
            status: RowStatus = "unchanged"
        elif bill.get("status") != "unpaid":
            batch.record(RowResult(number, "error", house["_id"], label, reason=_PAID_OR_PAYING))
            continue
        else:
            status = "updated"
            bill.update(terms)
            # Only while unpaid: a bill locked for payment meanwhile is left as it is.
            updates.append((key, terms))
        result = RowResult(number, status, house["_id"], label)
        batch.record(result)
        if status == "updated":
            updated.append((result, key, terms))
    if bill_store.set_terms_while_unpaid(db, updates, now) < len(updates):
        _recheck(batch, updated)
    batch.rows.clear()


def _recheck(batch: _Batch, updated: list[tuple[RowResult, BillKey, dict[str, Any]]]) -> None:
    """Some updates found their bill no longer unpaid (a payment locked it after the batch was
    read): a row whose amount and date the bill does not now hold is reported as an error.

    A key's earlier rows in the file were overwritten by its last one, as if written one by
    one: they are errors only when the last one is (and the bill does not hold them either).
    """
    now_stored = bill_store.terms_of(batch.services.db, {key for _, key, _ in updated})
    last_failed: dict[BillKey, bool] = {}
    for done, key, terms in reversed(updated):
        bill = now_stored.get(key, {})
        holds = all(bill.get(k) == v for k, v in terms.items())
        if key not in last_failed:
            last_failed[key] = not holds
        if not holds and last_failed[key]:
            batch.record(
                RowResult(done.row, "error", done.house_id, done.label, reason=_PAID_OR_PAYING)
            )


def _require_community(batch: _Batch) -> None:
    if community_store.get(batch.services.db, batch.community_id) is None:
        raise AppError("NOT_FOUND", "小区不存在")
    batch.community_seen = True


def _announce(services: Services, community_id: str, fresh: dict[str, _Fresh]) -> None:
    """Tell each house's accounts about its new bills: one message per house and account."""
    notes: list[messaging.Note] = []
    for entry in fresh.values():
        summary = "、".join(entry.items[:3]) + (" 等" if len(entry.items) > 3 else "")
        notes.extend(
            messaging.Note(
                account_id,
                "bill",
                "新账单",
                f"您有新的物业账单：{summary}，请及时缴纳。",
                "/pages/bills/index",
                messaging.Push("bill", {"thing1": summary, "thing2": "请及时缴纳"}),
                community_id=community_id,
            )
            for account_id in dict.fromkeys(entry.members)
        )
        if len(notes) >= BATCH:
            messaging.deliver_many(services, notes)
            notes = []
    messaging.deliver_many(services, notes)


def import_bills(
    services: Services,
    community_id: str,
    rows: Iterable[Any],
    importer: StaffRecord | None = None,
    *,
    first_row: int = 1,
) -> list[RowResult]:
    """Create or update bills, a batch of rows at a time; one result per row, in row order.

    A caller importing a file in chunks calls this once per chunk, with ``first_row`` the
    number of the chunk's first row in the file (results are numbered from it); re-importing
    a chunk changes nothing.

    Each house with new bills is announced once, to every account bound to it, at the end.
    ``importer`` is the admin's staff record (scope-checked) or None for the operator CLI.
    NOT_FOUND for a community that does not exist (nothing is written then).
    """
    # Scope first, so an admin cannot tell which other communities exist.
    if importer is not None:
        staff.require_scope(importer, community_id)
    batch = _Batch(services, community_id, results=[], fresh={}, first_row=first_row)
    for number, raw in enumerate(rows, start=first_row):
        if not isinstance(raw, dict):
            batch.results.append(RowResult(number, "error", reason="行格式无效"))
            continue
        try:
            row = BillRow.model_validate(raw)
        except ValidationError as exc:
            batch.results.append(row_error(number, exc))
            continue
        batch.results.append(None)
        batch.rows.append((number, row))
        if len(batch.rows) >= BATCH:
            _flush(batch)
    _flush(batch)
    if not batch.community_seen:
        _require_community(batch)
    _announce(services, community_id, batch.fresh)
    return [r for r in batch.results if r is not None]

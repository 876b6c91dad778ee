"""The admin function: owner and bill imports, and staff management."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictStr

from caiyun.contract.bind_house import PersonName
from caiyun.contract.common import ObjectKey, PageRequest, Phone, Reply, Request

StaffRoleName = Literal["admin", "repairman", "guard"]

# One call carries at most this many rows; the CLI streams larger files in chunks of it.
MAX_IMPORT_ROWS = 2000


class ImportOwners(Request):
    """Houses and owners of one community. Each row is checked on its own: see the report."""

    community: dict[StrictStr, Any]
    rows: Annotated[list[Any], Field(max_length=MAX_IMPORT_ROWS)]


class RowReport(Reply):
    row: int
    status: Literal["created", "updated", "unchanged", "error"]
    house_id: str | None = None
    label: str | None = None
    reason: str | None = None


class ImportOwnersReply(Reply):
    community_id: str
    community_created: bool
    counts: dict[str, int]
    rows: list[RowReport]


class AddStaff(Request):
    phone: Phone
    name: PersonName
    role: StaffRoleName
    community_ids: Annotated[list[ObjectKey], Field(min_length=1, max_length=200)]


class StaffMember(Reply):
    account_id: str
    name: str
    phone: str | None
    role: StaffRoleName
    community_ids: list[str]
    all_communities: bool


class ListStaff(PageRequest):
    role: StaffRoleName | None = None


class StaffPage(Reply):
    items: list[StaffMember]
    total: int
    page: int
    page_size: int


class RemoveStaff(Request):
    account_id: ObjectKey


class RemoveStaffReply(Reply):
    removed: bool


class ImportBills(Request):
    """Bills per house: ``building``, ``unit``, ``room``, ``period`` (``2026-11``), ``item``,
    ``amount_fen``, ``due_date`` (``2026-11-30``). Each row is checked on its own."""

    community_id: ObjectKey
    rows: Annotated[list[Any], Field(max_length=MAX_IMPORT_ROWS)]


class ImportBillsReply(Reply):
    community_id: str
    counts: dict[str, int]
    rows: list[RowReport]

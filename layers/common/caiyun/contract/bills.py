"""The bills function: residents see and pay their bills; admins see who has paid."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictStr, StringConstraints

from caiyun.contract.common import ObjectKey, PageRequest, Reply, Request

Period = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
OrderNo = Annotated[StrictStr, StringConstraints(pattern=r"^CY[0-9A-F]{22}$")]


BillStatus = Literal["unpaid", "paying", "paid"]


class ListBills(PageRequest):
    """A page of the caller's bills (all houses, or ``house_id``), newest period first.
    As a filter, ``unpaid`` (待缴) is every bill not yet paid, including those in a payment not
    finished yet; ``paying`` is only those; ``paid`` the paid ones. ``unpaid_total_fen`` and
    each house's ``unpaid_fen`` in ``houses`` sum the ``unpaid`` bills of those houses, whatever
    ``status`` filters the page."""

    house_id: ObjectKey | None = None
    status: BillStatus | None = None


class Bill(Reply):
    """One bill of one house: a fee ``item`` (物业费...) for a ``period`` (``2026-11``), due on
    ``due_date``; ``paid_at`` once paid."""

    bill_id: str
    house_id: str
    community_id: str
    community_name: str
    house_label: str | None = None
    period: str
    item: str
    amount_fen: int
    due_date: str
    status: BillStatus
    status_name: str
    paid_at: str | None


class HouseOwed(Reply):
    """What one of the caller's houses still owes (its ``unpaid`` bills, ``paying`` included)."""

    house_id: str
    house_label: str
    community_id: str
    community_name: str
    unpaid_count: int
    unpaid_fen: int


class BillsReply(Reply):
    items: list[Bill]
    total: int
    page: int
    page_size: int
    unpaid_total_fen: int
    houses: list[HouseOwed]


class Pay(Request):
    """Pay these bills in one ICBC order: bank card, or the ICBC e-wallet."""

    bill_ids: Annotated[list[ObjectKey], Field(min_length=1, max_length=50)]
    method: Literal["card", "wallet"]
    request_id: ObjectKey | None = None


class Order(Reply):
    order_no: str
    status: Literal["pending", "paid", "failed", "closed"]
    status_name: str
    amount_fen: int
    method: str
    bill_ids: list[str]
    created_at: str
    expires_at: str
    paid_at: str | None
    icbc: dict[str, Any]


class GetOrder(Request):
    order_no: OrderNo


class StaffSummary(Request):
    community_id: ObjectKey
    period: Period | None = None


class BuildingTotals(Reply):
    """Paid and unpaid bills of one building: how many, and their sums."""

    building: str
    paid_count: int
    paid_fen: int
    unpaid_count: int
    unpaid_fen: int


class SummaryReply(Reply):
    community_id: str
    period: str | None
    paid_count: int
    paid_fen: int
    unpaid_count: int
    unpaid_fen: int
    by_building: list[BuildingTotals]


AddressFilter = Annotated[StrictStr, StringConstraints(strip_whitespace=True, max_length=16)]


class StaffList(PageRequest):
    """A page of the bills of a community the admin covers (or of one of its houses), by
    building, house and newest period, with each house's owner. As a filter, ``unpaid`` (未交)
    is every bill not yet paid, including those in a payment not finished yet; ``paying`` is
    only those; ``paid`` the paid ones."""

    community_id: ObjectKey
    status: BillStatus
    building: AddressFilter | None = None
    house_id: ObjectKey | None = None
    period: Period | None = None


class StaffBill(Bill):
    """A bill with its house's owner on record; the admin sees the owner's phone in full (to
    call about unpaid fees)."""

    owner_name: str | None
    owner_phone: str | None


class StaffListReply(Reply):
    items: list[StaffBill]
    total: int
    page: int
    page_size: int


HouseDuesStatus = Literal["unpaid", "paid"]


class StaffHouses(PageRequest):
    """已交/未交 per house: the houses of a community the admin covers that have bills (of
    ``period``, if given), by building, unit and room. A house is ``unpaid`` (未交) while any of
    those bills is not yet paid (``paying`` included), else ``paid`` (已交). ``counts`` has
    both tabs under the same filters; ``status`` picks the page's tab. ``owner_name`` matches
    any part of the owner's name on record."""

    community_id: ObjectKey
    status: HouseDuesStatus | None = None
    building: AddressFilter | None = None
    unit: AddressFilter | None = None
    room: AddressFilter | None = None
    owner_name: (
        Annotated[StrictStr, StringConstraints(strip_whitespace=True, max_length=32)] | None
    ) = None
    period: Period | None = None


class HouseDues(Reply):
    """One house in 已交/未交, with its owner on record (phone in full, for the admin)."""

    house_id: str
    house_label: str
    building: str
    unit: str
    room: str
    owner_name: str | None
    owner_phone: str | None
    status: HouseDuesStatus
    status_name: str
    unpaid_count: int
    unpaid_fen: int
    paid_count: int
    paid_fen: int


class StaffHousesReply(Reply):
    items: list[HouseDues]
    total: int
    page: int
    page_size: int
    counts: dict[HouseDuesStatus, int]

"""The bills function: residents see and pay their bills; admins see who has paid."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictStr, StringConstraints

from caiyun.contract.common import ObjectKey, PageRequest, Reply, Request

Period = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
OrderNo = Annotated[StrictStr, StringConstraints(pattern=r"^CY[0-9A-F]{22}$")]


class ListBills(PageRequest):
    """A page of the caller's bills (all houses, or ``house_id``), newest period first;
    ``unpaid_total_fen`` is everything still owed on those houses."""

    house_id: ObjectKey | None = None
    status: Literal["unpaid", "paid"] | None = None


class Bill(Reply):
    bill_id: str
    house_id: str
    community_id: str
    house_label: str | None = None
    period: str
    item: str
    amount_fen: int
    due_date: str
    status: Literal["unpaid", "paying", "paid"]
    paid_at: str | None


class BillsReply(Reply):
    items: list[Bill]
    total: int
    page: int
    page_size: int
    unpaid_total_fen: int


class Pay(Request):
    """Pay these bills in one ICBC order: bank card, or the ICBC e-wallet."""

    bill_ids: Annotated[list[ObjectKey], Field(min_length=1, max_length=50)]
    method: Literal["card", "wallet"]
    request_id: ObjectKey | None = None


class Order(Reply):
    order_no: str
    status: Literal["pending", "paid", "failed", "closed"]
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


class StaffList(PageRequest):
    community_id: ObjectKey
    status: Literal["paid", "unpaid"]
    building: Annotated[StrictStr, StringConstraints(max_length=16)] | None = None
    period: Period | None = None


class StaffBill(Bill):
    owner_name: str | None
    owner_phone: str | None


class StaffListReply(Reply):
    items: list[StaffBill]
    total: int
    page: int
    page_size: int

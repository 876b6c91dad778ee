"""The bills function: residents see and pay their bills; admins see who has paid."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictStr, StringConstraints

from caiyun.contract.common import ObjectKey, Page, PageRequest, Phone, Reply, Request

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


class BillsReply(Page[Bill]):
    unpaid_total_fen: int
    houses: list[HouseOwed]


class Pay(Request):
    """Pay these bills in one ICBC order. What the app does with the reply depends on
    ``method``. ``wechat`` (WeChat Pay through ICBC): the reply is ``pending`` and its
    ``icbc`` is ``{pay_with: "wechat", order_id, request_payment}``; call
    ``wx.requestPayment({...icbc.request_payment, success, fail})`` (``request_payment`` holds
    ``timeStamp``, ``nonceStr``, ``package``, ``signType`` and ``paySign``, named as WeChat
    names them), then poll ``order`` until it leaves ``pending`` (ICBC's notify settles it; a
    payment the resident cancels stays ``pending`` until ``expires_at``, then ``closed``).
    ``wallet`` or ``card`` (the ICBC account verified with: the e-wallet, or the Class I
    card): ICBC debits it at once, the reply is ``paid`` with ``icbc`` ``{pay_with: "account",
    account_kind}``, nothing to open; too small a balance is ``INSUFFICIENT_BALANCE`` and
    nothing is paid; a bank that could not be reached leaves the order ``pending`` (poll
    ``order``). A resident whose bill shows ``paying`` finds its order with ``open_orders``."""

    bill_ids: Annotated[list[ObjectKey], Field(min_length=1, max_length=50)]
    method: Literal["wechat", "wallet", "card"]
    request_id: ObjectKey | None = None


class RequestPayment(Reply):
    """The arguments of ``wx.requestPayment``, named as WeChat names them."""

    timeStamp: str
    nonceStr: str
    package: str
    signType: str
    paySign: str


class OrderPayment(Reply):
    """What the app does next: ``wechat``: ``wx.requestPayment`` with ``request_payment``;
    ``account`` / ``autodebit``: nothing (the bank debited the account)."""

    pay_with: Literal["wechat", "account", "autodebit"]
    pay_with_name: str
    order_id: str | None
    request_payment: RequestPayment | None
    account_kind: Literal["wallet", "card"] | None
    account_kind_name: str | None


class Order(Reply):
    """``icbc``: ``pay_with`` (``wechat``: call ``wx.requestPayment`` with
    ``request_payment``; ``account`` or ``autodebit``: nothing to do, the bank debited the
    account), ``order_id`` (ICBC's), ``request_payment`` and ``account_kind`` (``wallet`` or
    ``card``), null where they do not apply."""

    order_no: str
    status: Literal["pending", "paid", "failed", "closed"]
    status_name: str
    amount_fen: int
    method: str
    bill_ids: list[str]
    created_at: str
    expires_at: str
    paid_at: str | None
    icbc: OrderPayment


class OpenOrders(PageRequest):
    """Your payment orders still ``pending``, newest first, each with the bills it holds: what
    a bill shown as ``paying`` is waiting for. Resume one with ``icbc`` (as from ``pay``), or
    let it expire at ``expires_at``."""


class OpenOrder(Order):
    bills: list[Bill]


class OpenOrdersReply(Page[OpenOrder]):
    pass


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
    """``refund_due_count`` / ``refund_due_fen``: open payments to give back (a second payment
    for a settled order, or one for bills paid meanwhile); ``bank_refund_count``: refunds or
    revocations ICBC reported that did not go through us (see ``payment_issues``)."""

    community_id: str
    period: str | None
    paid_count: int
    paid_fen: int
    unpaid_count: int
    unpaid_fen: int
    by_building: list[BuildingTotals]
    refund_due_count: int
    refund_due_fen: int
    bank_refund_count: int


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


class StaffListReply(Page[StaffBill]):
    pass


class PaymentIssues(PageRequest):
    """Payments that need a person in a community, newest first: ``extra_settlement`` (a
    second payment for a settled order: refund it), ``bills_paid_elsewhere`` (paid after its
    bills were paid another way: refund it), ``bank_refund`` (ICBC reports a refund or
    revocation, ``bank_status``), ``amount_mismatch`` (ICBC holds another amount)."""

    community_id: ObjectKey


class PaymentIssue(Reply):
    issue_id: str
    kind: Literal["extra_settlement", "bills_paid_elsewhere", "bank_refund", "amount_mismatch"]
    kind_name: str
    order_no: str
    account_id: str
    amount_fen: int
    transaction_id: str | None
    bank_status: str | None
    status: str
    created_at: str


class PaymentIssuesReply(Page[PaymentIssue]):
    pass


HouseDuesStatus = Literal["unpaid", "paid"]


class StaffHouses(PageRequest):
    """已交/未交 per house: the houses of a community the admin covers that have bills (of
    ``period``, if given), by building, unit and room. A house is ``unpaid`` (未交) while any of
    those bills is not yet paid (``paying`` included), else ``paid`` (已交). ``counts`` has
    both tabs under the same filters; ``status`` picks the page's tab. ``owner_name`` matches
    any part of the owner's name on record, ``owner_phone`` the owner's phone on record."""

    community_id: ObjectKey
    status: HouseDuesStatus | None = None
    building: AddressFilter | None = None
    unit: AddressFilter | None = None
    room: AddressFilter | None = None
    owner_name: (
        Annotated[StrictStr, StringConstraints(strip_whitespace=True, max_length=32)] | None
    ) = None
    owner_phone: Phone | None = None
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


class StaffHousesReply(Page[HouseDues]):
    counts: dict[HouseDuesStatus, int]

"""bills: residents list and pay their bills through ICBC; admins see who has paid.

``pay`` takes ``method`` ``wechat`` (WeChat Pay through ICBC: the reply's
``icbc.request_payment`` goes to ``wx.requestPayment``, then poll ``order``), ``wallet`` or
``card`` (ICBC debits the account the resident verified with, at once: the reply is ``paid``,
or ``INSUFFICIENT_BALANCE`` with nothing paid). A bill in an unfinished order shows as
``paying``; ``open_orders`` lists those orders with the bills each holds. Admins see
``payment_issues``: money to give back and refunds ICBC reports.

``list`` gives, besides the page, what each of the caller's houses still owes (``houses``).
``staff_summary``, ``staff_list`` (per bill) and ``staff_houses`` (per house, with the 已交/未交
tab counts and filters by building, unit, room and owner name) are the admin's 已交/未交; they
show the owners' phones in full, for calls about unpaid fees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caiyun.domain import bill_reports, bills, payment_issues, payments
from caiyun.runtime import (
    Account,
    Action,
    Call,
    CloudFunction,
    Key,
    StaffRecord,
    admin_only,
    lazy_import,
    page_reply,
    signed_in,
)

# The type checker reads the modules themselves; at run time they load on first use.
if TYPE_CHECKING:
    from caiyun.contract import bills as api
else:
    api = lazy_import("caiyun.contract.bills")


def list_bills(call: Call, req: api.ListBills, account: Account) -> api.BillsReply:
    items, total, unpaid, houses = bills.resident_bills(
        call.services, account, req.house_id, req.status, req.page, req.page_size
    )
    return page_reply(api.BillsReply, req, items, total, unpaid_total_fen=unpaid, houses=houses)


def pay(call: Call, req: api.Pay, account: Account, once: Key | None) -> api.Order:
    order = payments.pay(
        call.services, account, req.bill_ids, req.method, call.invocation.source_ip, once
    )
    return api.Order.model_validate(order)


def order(call: Call, req: api.GetOrder, account: Account) -> api.Order:
    found = payments.payer_order(call.services, account, req.order_no)
    return api.Order.model_validate(payments.view(found))


def open_orders(call: Call, req: api.OpenOrders, account: Account) -> api.OpenOrdersReply:
    items, total = payments.open_orders(call.services, account, req.page, req.page_size)
    return page_reply(api.OpenOrdersReply, req, items, total)


def staff_summary(call: Call, req: api.StaffSummary, staff: StaffRecord) -> api.SummaryReply:
    totals = bill_reports.summary(call.services, staff, req.community_id, req.period)
    return api.SummaryReply.model_validate(totals)


def staff_list(call: Call, req: api.StaffList, staff: StaffRecord) -> api.StaffListReply:
    items, total = bill_reports.listing(
        call.services,
        staff,
        req.community_id,
        req.model_dump(include={"status", "building", "house_id", "period"}),
        req.page,
        req.page_size,
    )
    return page_reply(api.StaffListReply, req, items, total)


def staff_payment_issues(
    call: Call, req: api.PaymentIssues, staff: StaffRecord
) -> api.PaymentIssuesReply:
    items, total = payment_issues.listing(
        call.services, staff, req.community_id, req.page, req.page_size
    )
    return page_reply(api.PaymentIssuesReply, req, items, total)


def staff_houses(call: Call, req: api.StaffHouses, staff: StaffRecord) -> api.StaffHousesReply:
    items, total, counts = bill_reports.houses_page(
        call.services,
        staff,
        req.community_id,
        req.model_dump(
            include={"status", "building", "unit", "room", "owner_name", "owner_phone", "period"}
        ),
        req.page,
        req.page_size,
    )
    return page_reply(api.StaffHousesReply, req, items, total, counts=counts)


def actions() -> dict[str, Action]:
    return {
        "list": Action(signed_in, list_bills, ("HOUSE_NOT_BOUND", "FORBIDDEN")),
        "pay": Action(
            signed_in,
            pay,
            (
                "REALNAME_REQUIRED",
                "BILL_NOT_PAYABLE",
                "INSUFFICIENT_BALANCE",
                "NOT_FOUND",
                "FORBIDDEN",
                "UNAVAILABLE",
            ),
            once="bills.pay",
        ),
        "order": Action(signed_in, order, ("NOT_FOUND",)),
        "open_orders": Action(signed_in, open_orders),
        "staff_summary": Action(admin_only, staff_summary, ("FORBIDDEN",)),
        "staff_list": Action(admin_only, staff_list, ("FORBIDDEN",)),
        "payment_issues": Action(admin_only, staff_payment_issues, ("FORBIDDEN",)),
        "staff_houses": Action(admin_only, staff_houses, ("FORBIDDEN",)),
    }


main_handler = CloudFunction("bills", actions)

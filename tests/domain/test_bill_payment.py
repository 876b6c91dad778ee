"""Residents list and pay their bills through the real ICBC client talking to the ICBC sandbox.

Everything goes through ``main_handler`` with CloudBase events; the bank is a running FakeIcbc on
the same database and clock, with real RSA keys on both sides.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from billing import (
    ADMIN,
    ALICE,
    BOB,
    ERIN,
    NOBODY,
    NOTIFY_URL,
    bill_status,
    card_number,
    charges,
    get_order,
    list_bills,
    messages,
    pay,
    post_notify,
    reply_of,
    status_of,
    verify,
)
from conftest import invoke
from round_trips import counted
from worlds import ok, refused

from caiyun.domain import houses, payments
from caiyun.sandbox.functions import handler
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.services import Services
from caiyun.stores import memberships
from caiyun.stores.orders import ORDERS

# A card of another bank, linked to an e-wallet.
BOB_CARD = card_number("6228480000")


# ------------------------------------------------------------------------------ list


def test_list_shows_only_the_callers_houses_with_the_unpaid_total(world: SimpleNamespace) -> None:
    data = ok(list_bills(ALICE))

    assert {b["bill_id"] for b in data["items"]} == {
        world.oct_fee,
        world.oct_parking,
        world.nov_fee,
    }
    assert data["unpaid_total_fen"] == 12000 + 5000 + 12500
    assert {b["house_label"] for b in data["items"]} == {houses.label(world.h101)}
    assert all(b["status"] == "unpaid" for b in data["items"])
    assert [b["period"] for b in data["items"]] == ["2026-11", "2026-10", "2026-10"]
    bob = ok(list_bills(BOB))
    assert [b["bill_id"] for b in bob["items"]] == [world.bob_fee]
    assert bob["unpaid_total_fen"] == 15000


def test_family_member_sees_the_houses_bills_too(world: SimpleNamespace) -> None:
    assert ok(list_bills(ERIN))["unpaid_total_fen"] == 29500


def test_list_for_one_own_house_and_status_filter(world: SimpleNamespace) -> None:
    assert len(ok(list_bills(ALICE, house_id=world.h101["_id"]))["items"]) == 3
    unpaid = ok(list_bills(ALICE, status="unpaid"))
    paid = ok(list_bills(ALICE, status="paid"))
    assert len(unpaid["items"]) == unpaid["total"] == 3
    assert (paid["items"], paid["total"], paid["page"], paid["page_size"]) == ([], 0, 1, 20)
    # What is owed does not depend on which page of bills is being looked at.
    owed = sum(b["amount_fen"] for b in unpaid["items"])
    assert paid["unpaid_total_fen"] == unpaid["unpaid_total_fen"] == owed


def test_each_house_shows_what_it_owes_with_its_label_and_community(
    svc: Services, world: SimpleNamespace
) -> None:
    memberships.add(svc.db, world.h102, world.ids[ALICE.openid], "tenant", svc.clock.now(), "test")

    data = ok(list_bills(ALICE))
    one = ok(list_bills(ALICE, house_id=world.h102["_id"]))

    assert data["houses"] == [
        {
            "house_id": h["_id"],
            "house_label": houses.label(h),
            "community_id": h["community_id"],
            "community_name": "彩云花园",
            "unpaid_count": count,
            "unpaid_fen": fen,
        }
        for h, count, fen in sorted(
            [(world.h101, 3, 12000 + 5000 + 12500), (world.h102, 1, 15000)],
            key=lambda row: row[0]["_id"],
        )
    ]
    assert data["unpaid_total_fen"] == sum(h["unpaid_fen"] for h in data["houses"])
    assert [h["house_id"] for h in one["houses"]] == [world.h102["_id"]]
    assert one["unpaid_total_fen"] == 15000
    assert {b["community_name"] for b in data["items"]} == {"彩云花园"}
    assert {(b["status"], b["status_name"]) for b in data["items"]} == {("unpaid", "待缴")}


def test_the_status_filter_unpaid_holds_bills_being_paid_and_paying_only_those(
    svc: Services, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    ok(pay(ALICE, world.nov_fee))

    unpaid = ok(list_bills(ALICE, status="unpaid"))
    paying = ok(list_bills(ALICE, status="paying"))
    everything = ok(list_bills(ALICE))

    assert {b["bill_id"] for b in unpaid["items"]} == {
        world.oct_fee,
        world.oct_parking,
        world.nov_fee,
    }
    assert [(b["bill_id"], b["status"], b["status_name"]) for b in paying["items"]] == [
        (world.nov_fee, "paying", "支付中")
    ]
    # Still owed until the bank says paid: the totals sum what the unpaid filter shows.
    owed = sum(b["amount_fen"] for b in unpaid["items"])
    assert everything["unpaid_total_fen"] == paying["unpaid_total_fen"] == owed
    assert everything["houses"][0]["unpaid_count"] == 3


def test_list_without_a_house_is_house_not_bound(world: SimpleNamespace) -> None:
    assert refused(list_bills(NOBODY)) == "HOUSE_NOT_BOUND"


def test_list_of_someone_elses_house_is_forbidden(world: SimpleNamespace) -> None:
    reply = list_bills(ALICE, house_id=world.h102["_id"])

    assert refused(reply) == "FORBIDDEN"
    assert "15000" not in str(reply)


def test_list_pages_through_several_houses_in_period_order(
    svc: Services, world: SimpleNamespace
) -> None:
    memberships.add(svc.db, world.h102, world.ids[ALICE.openid], "tenant", svc.clock.now(), "test")

    first = ok(list_bills(ALICE, page_size=3))
    second = ok(list_bills(ALICE, page=2, page_size=3))

    assert first["total"] == second["total"] == 4
    assert first["unpaid_total_fen"] == 12000 + 5000 + 12500 + 15000
    shown = first["items"] + second["items"]
    assert {b["bill_id"] for b in shown} == {
        world.oct_fee,
        world.oct_parking,
        world.nov_fee,
        world.bob_fee,
    }
    assert [b["period"] for b in shown] == sorted((b["period"] for b in shown), reverse=True)
    labels = {b["bill_id"]: b["house_label"] for b in shown}
    assert labels[world.bob_fee] == houses.label(world.h102)
    assert labels[world.nov_fee] == houses.label(world.h101)


def test_list_is_the_caller_lookup_and_one_query(svc: Services, world: SimpleNamespace) -> None:
    with counted(svc) as sent:
        ok(list_bills(ALICE, status="unpaid"))

    assert sent == ["accounts.aggregate", "memberships.aggregate"]


def test_list_needs_a_known_caller(world: SimpleNamespace) -> None:
    assert refused(invoke("bills", {"action": "list"}, "o-stranger")) == "UNAUTHENTICATED"


# ------------------------------------------------------------------------------ pay


def test_pay_before_real_name_verification_is_refused(
    svc: Services, world: SimpleNamespace
) -> None:
    assert refused(pay(ALICE, world.oct_fee)) == "REALNAME_REQUIRED"
    assert bill_status(svc, world.oct_fee) == "unpaid"
    assert svc.db[ORDERS].count_documents({}) == 0


def test_verified_resident_pays_several_bills_with_wechat_pay_through_icbc(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)

    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))

    assert order["status"] == "pending"
    assert order["amount_fen"] == 17000
    assert order["method"] == "wechat"
    assert sorted(order["bill_ids"]) == sorted([world.oct_fee, world.oct_parking])
    assert order["order_no"].startswith("CY")
    assert order["expires_at"] > order["created_at"]
    # What the app hands wx.requestPayment, read from ICBC's wx_data_package.
    icbc = order["icbc"]
    assert icbc["pay_with"] == "wechat"
    wanted = {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert set(icbc["request_payment"]) == wanted
    at_bank = svc.db["sandbox_icbc_orders"].find_one({"_id": order["order_no"]})
    assert icbc["request_payment"]["package"] == f"prepay_id={at_bank['prepay_id']}"
    assert icbc["order_id"] == at_bank["order_id"]
    assert at_bank["amount_fen"] == 17000 and at_bank["status"] == "pending"
    assert at_bank["open_id"] == ALICE.openid
    assert status_of(ALICE, world.oct_fee) == "paying"
    assert status_of(ALICE, world.oct_parking) == "paying"
    assert status_of(ALICE, world.nov_fee) == "unpaid"
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "pending"


def test_pay_reads_the_bills_and_who_may_pay_them_in_one_query(
    svc: Services, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)

    with counted(svc) as sent:
        ok(pay(ALICE, world.oct_fee, world.oct_parking))

    assert sent == [
        "accounts.aggregate",  # the caller (a resident: no staff record to join)
        "bills.aggregate",  # the bills, their houses' members joined in
        # ICBC opens the WeChat Pay order; nothing is paid until the app pays with its answer
        "payment_orders.insert_one",  # the order, with what ICBC answered
        "bills.update_many",  # the bills locked into it, all or none
    ]


def test_a_resident_finds_the_open_order_behind_a_paying_bill(
    svc: Services, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    verify(svc, ERIN)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    assert status_of(ALICE, world.oct_fee) == "paying"

    listed = ok(invoke("bills", {"action": "open_orders"}, ALICE.openid))

    assert listed["total"] == 1
    found = listed["items"][0]
    assert found["order_no"] == order["order_no"]
    assert found["icbc"] == order["icbc"]  # enough to resume the payment
    assert sorted(b["bill_id"] for b in found["bills"]) == sorted(order["bill_ids"])
    assert {b["status"] for b in found["bills"]} == {"paying"}
    # Only the payer's own orders: another member of the house sees none.
    assert ok(invoke("bills", {"action": "open_orders"}, ERIN.openid))["total"] == 0
    svc.clock.advance(svc.settings.order_ttl_s + 1)
    payments.expire_orders(svc)
    assert ok(invoke("bills", {"action": "open_orders"}, ALICE.openid))["items"] == []


# ------------------------------------------------------------------------------ from the account


def account_no(svc: Services, who: SimpleNamespace, wallet: dict[str, Any]) -> str:
    """The number the bank debits: the e-wallet's, or the Class I card itself."""
    return wallet["wallet_no"] or who.card


def transactions_of(who: SimpleNamespace) -> list[dict[str, Any]]:
    reply = invoke("account", {"action": "wallet_transactions", "page_size": 100}, who.openid)
    return ok(reply)["items"]


@pytest.mark.parametrize("method", ["wallet", "card"])
def test_paying_from_the_icbc_account_debits_it_at_once(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace, method: str
) -> None:
    wallet = verify(svc, ALICE, method, card_no=ALICE.card if method == "card" else BOB_CARD)
    number = account_no(svc, ALICE, wallet)
    before = bank.balance(number)

    order = ok(pay(ALICE, world.oct_fee, world.oct_parking, method=method))

    assert order["status"] == "paid" and order["paid_at"]
    assert order["icbc"]["pay_with"] == "account"
    assert order["icbc"]["account_kind"] == method
    assert bank.balance(number) == before - 17000
    assert status_of(ALICE, world.oct_fee) == "paid"
    assert status_of(ALICE, world.oct_parking) == "paid"
    # The debit is in ICBC's details of the account, as the resident's wallet page shows them.
    debit = transactions_of(ALICE)[0]
    assert debit["direction"] == "out" and debit["amount_fen"] == 17000
    assert debit["balance_fen"] == before - 17000
    assert ok(invoke("account", {"action": "wallet"}, ALICE.openid))["balance_fen"] == (
        before - 17000
    )
    assert [m["title"] for m in messages(ALICE, "payment")] == ["缴费成功"]


def test_a_balance_too_small_is_a_clear_error_and_nothing_is_paid(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    wallet = verify(svc, ALICE, "wallet", card_no=BOB_CARD)
    bank.set_balance(wallet["wallet_no"], 16999)
    details = len(transactions_of(ALICE))

    reply = pay(ALICE, world.oct_fee, world.oct_parking, method="wallet")

    assert refused(reply) == "INSUFFICIENT_BALANCE"
    assert reply["error"]["message"] == "工行账户余额不足，请充值后再试"
    assert bank.balance(wallet["wallet_no"]) == 16999
    assert len(transactions_of(ALICE)) == details
    assert status_of(ALICE, world.oct_fee) == "unpaid"
    assert status_of(ALICE, world.oct_parking) == "unpaid"
    assert svc.db[ORDERS].find_one({})["status"] == "failed"
    bank.set_balance(wallet["wallet_no"], 17000)
    assert ok(pay(ALICE, world.oct_fee, world.oct_parking, method="wallet"))["status"] == "paid"
    assert bank.balance(wallet["wallet_no"]) == 0


def test_an_account_payment_whose_answer_was_lost_is_settled_by_icbcs_encrypted_notify(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    bank.fail_next("SYSTEM_BUSY", bank.paths["wallet_pay"])  # no answer we can act on

    order = ok(pay(ALICE, world.oct_fee, method="card"))

    assert order["status"] == "pending"
    assert status_of(ALICE, world.oct_fee) == "paying"
    result = {
        "msg_id": "2" * 27,
        "appId": bank.app_id,
        "orderId": order["order_no"],
        "payStatus": "1",
        "trxSerno": "TRX0001",
        "tranAmt": str(order["amount_fen"]),
        "payTime": "20261125100100",
    }
    form = bank.sign_notify(bank.paths["wallet_pay"], result, NOTIFY_URL, encrypted=True)
    answer = reply_of(post_notify(urlencode(form)), bank)

    assert answer["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert status_of(ALICE, world.oct_fee) == "paid"


def test_the_method_must_be_the_account_the_resident_verified_with(
    svc: Services, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)  # an ICBC Class I card: no e-wallet

    reply = pay(ALICE, world.oct_fee, method="wallet")

    assert refused(reply) == "INVALID_ARGUMENT"
    assert reply["error"]["details"]["fields"]["method"] == "须为 card"
    assert bill_status(svc, world.oct_fee) == "unpaid"


def test_an_account_payment_retried_with_its_request_id_debits_once(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    before = bank.balance(ALICE.card)
    event = {
        "action": "pay",
        "bill_ids": [world.nov_fee],
        "method": "card",
        "request_id": "0d9c8b7a-6f5e-4d3c-8b2a-998877665544",
    }

    first = ok(invoke("bills", event, ALICE.openid))
    again = ok(invoke("bills", event, ALICE.openid))

    assert again["order_no"] == first["order_no"] and again["status"] == "paid"
    assert bank.balance(ALICE.card) == before - 12500


def test_bill_already_in_a_live_order_is_not_payable(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)
    verify(svc, ERIN)
    first = ok(pay(ALICE, world.oct_fee))

    assert refused(pay(ALICE, world.oct_fee)) == "BILL_NOT_PAYABLE"
    assert refused(pay(ERIN, world.oct_parking, world.oct_fee)) == "BILL_NOT_PAYABLE"
    # The refused attempt locked nothing: the other bill is still free to pay.
    assert bill_status(svc, world.oct_parking) == "unpaid"
    assert svc.db[ORDERS].count_documents({"status": "pending"}) == 1
    assert svc.db["bills"].find_one({"_id": world.oct_fee})["order_no"] == first["order_no"]


def test_paid_bill_is_not_payable(svc: Services, bank: FakeIcbc, world: SimpleNamespace) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    post_notify(urlencode(form))
    assert status_of(ALICE, world.oct_fee) == "paid"

    assert refused(pay(ALICE, world.oct_fee)) == "BILL_NOT_PAYABLE"
    assert svc.db[ORDERS].count_documents({}) == 1


def test_someone_elses_bill_is_forbidden(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)

    assert refused(pay(ALICE, world.bob_fee)) == "FORBIDDEN"
    assert refused(pay(ALICE, world.oct_fee, world.carol_fee)) == "FORBIDDEN"
    assert refused(pay(ALICE, world.dave_fee)) == "FORBIDDEN"
    assert bill_status(svc, world.bob_fee) == "unpaid"
    assert bill_status(svc, world.oct_fee) == "unpaid"
    assert svc.db[ORDERS].count_documents({}) == 0


def test_unknown_bill_is_not_found(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)

    assert refused(pay(ALICE, world.oct_fee, "no-such-bill")) == "NOT_FOUND"
    assert bill_status(svc, world.oct_fee) == "unpaid"


def test_pay_refuses_bad_arguments(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)

    empty = invoke("bills", {"action": "pay", "bill_ids": [], "method": "wechat"}, ALICE.openid)
    cash = invoke(
        "bills", {"action": "pay", "bill_ids": [world.oct_fee], "method": "cash"}, ALICE.openid
    )
    injected = invoke(
        "bills", {"action": "pay", "bill_ids": [{"$ne": ""}], "method": "wechat"}, ALICE.openid
    )

    assert refused(empty) == "INVALID_ARGUMENT" and "bill_ids" in str(empty["error"]["details"])
    assert refused(cash) == "INVALID_ARGUMENT" and "method" in cash["error"]["details"]["fields"]
    assert refused(injected) == "INVALID_ARGUMENT"
    assert svc.db[ORDERS].count_documents({}) == 0


def test_order_of_another_payer_is_not_found(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))

    assert refused(get_order(ERIN, order["order_no"])) == "NOT_FOUND"
    assert refused(get_order(BOB, order["order_no"])) == "NOT_FOUND"


# ------------------------------------------------------------------------------ expiry


def test_expired_order_is_closed_and_its_bills_can_be_paid_again(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    assert payments.expire_orders(svc) == {"orders_ended": 0}  # not due yet

    svc.clock.advance(svc.settings.order_ttl_s + 1)
    ended = payments.expire_orders(svc)["orders_ended"]

    assert ended == 1
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "closed"
    assert svc.db["sandbox_icbc_orders"].find_one({"_id": order["order_no"]})["status"] == "closed"
    assert status_of(ALICE, world.oct_fee) == "unpaid"
    assert status_of(ALICE, world.oct_parking) == "unpaid"
    assert payments.expire_orders(svc) == {"orders_ended": 0}  # nothing left to do
    again = ok(pay(ALICE, world.oct_fee))
    assert again["order_no"] != order["order_no"]
    assert status_of(ALICE, world.oct_fee) == "paying"


def test_expiry_run_settles_an_order_icbc_reports_paid(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    bank.settle(order["order_no"], "success")  # paid, but the notify never arrived

    svc.clock.advance(svc.settings.order_ttl_s + 1)
    payments.expire_orders(svc)

    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert status_of(ALICE, world.oct_fee) == "paid"


# ------------------------------------------------------------------------------ reconciling


def test_order_without_notify_is_reconciled_by_query_after_30_seconds(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    bank.settle(order["order_no"], "success")  # ICBC took the money; its notify is lost

    early = ok(get_order(ALICE, order["order_no"]))
    svc.clock.advance(svc.settings.order_query_after_s + 1)
    late = ok(get_order(ALICE, order["order_no"]))

    assert early["status"] == "pending"  # within 30 s the app waits for the notify
    assert late["status"] == "paid"
    assert late["paid_at"] is not None
    assert status_of(ALICE, world.oct_fee) == "paid"
    assert status_of(ALICE, world.oct_parking) == "paid"
    assert ok(list_bills(ALICE))["unpaid_total_fen"] == 12500
    assert charges(svc, order["order_no"]) == 1
    assert len(messages(ALICE, "payment")) == 1
    # Asking again changes nothing more.
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert charges(svc) == 1
    assert len(messages(ALICE, "payment")) == 1


def test_order_query_reports_a_failed_payment_and_releases_the_bills(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    bank.settle(order["order_no"], "fail")

    svc.clock.advance(svc.settings.order_query_after_s + 1)

    assert ok(get_order(ALICE, order["order_no"]))["status"] == "failed"
    assert status_of(ALICE, world.oct_fee) == "unpaid"


def test_unpaid_order_stays_pending_when_icbc_says_pending(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))

    svc.clock.advance(svc.settings.order_query_after_s + 1)

    assert ok(get_order(ALICE, order["order_no"]))["status"] == "pending"
    assert status_of(ALICE, world.oct_fee) == "paying"


@pytest.mark.parametrize(
    ("bank_status", "ends"),
    [
        ("revoked", "closed"),
        ("revoking", "pending"),
        ("refunded", "closed"),
        ("partly_refunded", "pending"),
        ("refunding", "pending"),
    ],
)
def test_a_refund_icbc_reports_is_recorded_and_shown_to_staff(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace, bank_status: str, ends: str
) -> None:
    """Order query statuses 3-7: money ICBC took and gave (or is giving) back at its end.
    Nothing throws; the order closes only when all of it went back; staff see it."""
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    bank.set_status(order["order_no"], bank_status)
    svc.clock.advance(svc.settings.order_ttl_s + 1)

    first = payments.expire_orders(svc)["orders_ended"]
    second = payments.expire_orders(svc)["orders_ended"]  # flags nothing new

    assert (first, second) == (1 if ends == "closed" else 0, 0)
    assert ok(get_order(ALICE, order["order_no"]))["status"] == ends
    assert status_of(ALICE, world.oct_fee) == ("unpaid" if ends == "closed" else "paying")
    assert svc.db[ORDERS].find_one({})["bank_status"] == bank_status
    community = world.h101["community_id"]
    summary = ok(
        invoke("bills", {"action": "staff_summary", "community_id": community}, ADMIN, "staff")
    )
    assert summary["bank_refund_count"] == 1 and summary["refund_due_count"] == 0
    listed = ok(
        invoke("bills", {"action": "payment_issues", "community_id": community}, ADMIN, "staff")
    )
    [issue] = listed["items"]
    assert (issue["kind"], issue["bank_status"], issue["order_no"]) == (
        "bank_refund",
        bank_status,
        order["order_no"],
    )


def test_the_same_bill_listed_twice_is_charged_once(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)

    order = ok(pay(ALICE, world.oct_fee, world.oct_fee, world.oct_parking))

    assert order["amount_fen"] == 17000
    assert sorted(order["bill_ids"]) == sorted([world.oct_fee, world.oct_parking])


def test_bills_of_two_communities_cannot_share_an_order(
    svc: Services, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    alice = world.ids[ALICE.openid]
    memberships.add(svc.db, world.m101, alice, "tenant", svc.clock.now(), alice)

    reply = pay(ALICE, world.oct_fee, world.dave_fee)

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "bill_ids" in reply["error"]["details"]["fields"]
    assert bill_status(svc, world.oct_fee) == "unpaid"
    assert ok(pay(ALICE, world.dave_fee))["amount_fen"] == 8800  # one community at a time


def test_bank_unavailable_at_pay_releases_the_bills(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    bank.fail_next("SYSTEM_BUSY", svc.settings.icbc_pay_path)

    reply = pay(ALICE, world.oct_fee)

    assert refused(reply) == "UNAVAILABLE"
    assert reply["error"]["details"]["retryable"] is True
    assert bill_status(svc, world.oct_fee) == "unpaid"
    assert svc.db[ORDERS].find_one({})["status"] == "failed"
    assert ok(pay(ALICE, world.oct_fee))["status"] == "pending"  # the retry works


def test_expiry_waits_for_icbc_when_it_cannot_be_asked(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    svc.clock.advance(svc.settings.order_ttl_s + 1)
    bank.fail_next("SYSTEM_BUSY", svc.settings.icbc_query_path)

    # ICBC busy: maybe paid, so the bills stay locked
    assert payments.expire_orders(svc) == {"orders_ended": 0}
    assert status_of(ALICE, world.oct_fee) == "paying"
    assert payments.expire_orders(svc) == {"orders_ended": 1}  # the next run gets an answer
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "closed"
    assert status_of(ALICE, world.oct_fee) == "unpaid"


def test_timer_releases_expired_orders(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    svc.clock.advance(svc.settings.order_ttl_s + 1)

    timer = {"Type": "Timer", "TriggerName": "every-5-min", "Time": "2026-11-25T02:00:00Z"}
    reply = handler("scheduler")(timer, {})

    assert reply["ok"] is True and reply["data"]["failed_jobs"] == []
    assert reply["data"]["orders_ended"] == 1
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "closed"
    assert status_of(ALICE, world.oct_fee) == "unpaid"


def test_pay_retried_with_the_same_request_id_returns_the_first_order(
    svc: Services, world: SimpleNamespace
) -> None:
    """CONTRACT §1: actions that create something accept an optional request_id; the same
    caller sending it again gets the first result back and nothing is created twice."""
    verify(svc, ALICE)
    event = {
        "action": "pay",
        "bill_ids": [world.oct_fee],
        "method": "wechat",
        "request_id": "7f1c2d3e-0a1b-4c5d-9e8f-001122334455",
    }

    first = invoke("bills", event, ALICE.openid)
    retry = invoke("bills", event, ALICE.openid)

    assert ok(first)["status"] == "pending"
    assert ok(retry)["order_no"] == first["data"]["order_no"]
    assert svc.db[ORDERS].count_documents({}) == 1

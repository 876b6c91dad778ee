"""The payment journey in `caiyun dev`: import → list → real-name → pay → ICBC settles → paid."""

from __future__ import annotations

from typing import Any

import requests
from billing import card_number, with_id_check
from sandbox_client import (
    TIMEOUT_S,
    Running,
    appid_header,
    invoke,
    latest_code,
    login_by_invoke,
)

from caiyun.sandbox.seed import DEMO_BILLS, DEMO_COMMUNITIES

OWNER = "13800000001"  # 张伟, bound to a house in each demo community
ADMIN = "13900000002"  # 吴刚, admin of 彩云花园


def ok(status_and_body: tuple[int, Any]) -> Any:
    """The data of a successful envelope."""
    status, body = status_and_body
    assert (status, body["ok"]) == (200, True), body
    return body["data"]


def verify_realname(base: str, openid: str) -> None:
    """Card real-name verification with the code the local ICBC texts to the bank phone."""
    ticket = ok(
        invoke(
            base,
            "account",
            {
                "action": "realname_start",
                "method": "card",
                "name": "张伟",
                "id_number": with_id_check("44030519900101123"),
                "card_no": card_number("6222"),
                "bank_phone": OWNER,
                "occupation": 3,
                "id_valid_until": "long_term",
            },
            openid,
        )
    )["ticket"]
    result = ok(
        invoke(
            base,
            "account",
            {
                "action": "realname_confirm",
                "ticket": ticket,
                "sms_code": latest_code(base, OWNER),
                "agreements": ["wallet_service", "privacy"],
                "autodebit": False,
            },
            openid,
        )
    )
    wallet = result["wallet"]
    assert wallet["account_kind"] == "card" and wallet["wallet_no"] is None
    assert wallet["linked_card"].startswith("6222") and "*" in wallet["linked_card"]


def test_owner_pays_the_demo_bills_and_the_local_icbc_settles_them(sandbox: Running) -> None:
    base, openid = sandbox.url, "o-payer"
    login_by_invoke(base, OWNER, openid)
    bills = ok(invoke(base, "bills", {"action": "list", "status": "unpaid"}, openid))
    houses_of_owner = sum(1 for c in DEMO_COMMUNITIES for h in c.houses if h.owner_phone == OWNER)
    assert len(bills["items"]) == len(DEMO_BILLS) * houses_of_owner
    assert bills["unpaid_total_fen"] == sum(b["amount_fen"] for b in bills["items"])
    one_community = [
        b for b in bills["items"] if b["community_id"] == bills["items"][0]["community_id"]
    ]
    ids = [b["bill_id"] for b in one_community]

    status, refused = invoke(
        base, "bills", {"action": "pay", "bill_ids": ids, "method": "wechat"}, openid
    )
    assert (status, refused["error"]["code"]) == (403, "REALNAME_REQUIRED")

    verify_realname(base, openid)
    pay = {"action": "pay", "bill_ids": ids, "method": "wechat"}
    order = ok(invoke(base, "bills", pay, openid))
    assert order["status"] == "pending"
    assert order["icbc"]["pay_with"] == "wechat"
    assert order["icbc"]["request_payment"]["package"].startswith("prepay_id=")
    assert order["amount_fen"] == sum(b["amount_fen"] for b in one_community)
    paying = ok(invoke(base, "bills", {"action": "list", "status": "unpaid"}, openid))["items"]
    assert {b["status"] for b in paying if b["bill_id"] in ids} == {"paying"}

    settled = requests.post(
        f"{base}/dev/icbc/complete",
        json={"order_no": order["order_no"], "result": "success"},
        timeout=TIMEOUT_S,
    )
    assert settled.status_code == 200, settled.text
    assert settled.json()["data"]["acknowledged"] is True

    done = ok(invoke(base, "bills", {"action": "order", "order_no": order["order_no"]}, openid))
    assert done["status"] == "paid"
    paid = ok(invoke(base, "bills", {"action": "list", "status": "paid"}, openid))["items"]
    assert sorted(b["bill_id"] for b in paid) == sorted(ids)
    inbox = ok(invoke(base, "notify", {"action": "messages"}, openid))["items"]
    assert any(m["title"] == "缴费成功" for m in inbox)


def test_a_failed_bank_payment_releases_the_bills_to_pay_again(sandbox: Running) -> None:
    base, openid = sandbox.url, "o-failed-payer"
    login_by_invoke(base, OWNER, openid)
    verify_realname(base, openid)
    first = ok(invoke(base, "bills", {"action": "list", "status": "unpaid"}, openid))["items"][0]
    order = ok(
        invoke(
            base,
            "bills",
            {"action": "pay", "bill_ids": [first["bill_id"]], "method": "wechat"},
            openid,
        )
    )

    reply = requests.post(
        f"{base}/dev/icbc/complete",
        json={"order_no": order["order_no"], "result": "fail"},
        timeout=TIMEOUT_S,
    )

    assert reply.status_code == 200
    ended = ok(invoke(base, "bills", {"action": "order", "order_no": order["order_no"]}, openid))
    assert ended["status"] == "failed"
    again = ok(
        invoke(
            base,
            "bills",
            {"action": "pay", "bill_ids": [first["bill_id"]], "method": "wechat"},
            openid,
        )
    )
    assert again["status"] == "pending"


def test_paying_from_the_icbc_card_debits_it_in_the_local_bank(sandbox: Running) -> None:
    base, openid = sandbox.url, "o-card-payer"
    login_by_invoke(base, OWNER, openid)
    verify_realname(base, openid)
    before = ok(invoke(base, "account", {"action": "wallet"}, openid))["balance_fen"]
    first = ok(invoke(base, "bills", {"action": "list", "status": "unpaid"}, openid))["items"][0]

    pay = {"action": "pay", "bill_ids": [first["bill_id"]], "method": "card"}
    order = ok(invoke(base, "bills", pay, openid))

    assert order["status"] == "paid" and order["icbc"]["pay_with"] == "account"
    after = ok(invoke(base, "account", {"action": "wallet"}, openid))["balance_fen"]
    assert after == before - first["amount_fen"]
    details = ok(invoke(base, "account", {"action": "wallet_transactions"}, openid))["items"]
    assert (details[0]["direction"], details[0]["amount_fen"]) == ("out", first["amount_fen"])


def test_bills_an_admin_imports_reach_the_owner_list_and_inbox(sandbox: Running) -> None:
    base = sandbox.url
    login_by_invoke(base, ADMIN, "o-admin", app="staff")
    login_by_invoke(base, OWNER, "o-owner")
    garden = ok(invoke(base, "bind_house", {"action": "communities", "city": "深圳市"}, "o-owner"))
    community_id = garden["items"][0]["community_id"]
    house = DEMO_COMMUNITIES[0].houses[0]
    row = {
        "building": house.building,
        "unit": house.unit,
        "room": house.room,
        "period": "2026-12",
        "item": "停车费",
        "amount_fen": 30000,
        "due_date": "2026-12-31",
    }

    report = ok(
        invoke(
            base,
            "admin",
            {"action": "import_bills", "community_id": community_id, "rows": [row]},
            "o-admin",
            **appid_header("staff"),
        )
    )
    again = ok(
        invoke(
            base,
            "admin",
            {"action": "import_bills", "community_id": community_id, "rows": [row]},
            "o-admin",
            **appid_header("staff"),
        )
    )

    assert report["counts"]["created"] == 1 and again["counts"]["unchanged"] == 1
    items = ok(invoke(base, "bills", {"action": "list", "status": "unpaid"}, "o-owner"))["items"]
    assert [b["item"] for b in items if b["period"] == "2026-12"] == ["停车费"]
    inbox = ok(invoke(base, "notify", {"action": "messages"}, "o-owner"))["items"]
    assert any(m["title"] == "新账单" and "停车费" in m["body"] for m in inbox)

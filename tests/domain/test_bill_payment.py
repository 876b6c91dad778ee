"""Residents list and pay their bills through the real ICBC client talking to the ICBC sandbox.

Everything goes through ``main_handler`` with CloudBase events; the bank is a running FakeIcbc on
the same database and clock, with real RSA keys on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import invoke, make_settings

from caiyun.adapters.icbc import generate_private_key_pem
from caiyun.adapters.sms import sandbox_outbox
from caiyun.clock import business_date
from caiyun.domain import accounts, houses, memberships, payments, staff
from caiyun.domain.owner_import import import_owners
from caiyun.sandbox.functions import handler
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.services import Services, build_services, install_services

GARDEN = {"province": "广东省", "city": "深圳市", "district": "南山区", "name": "彩云花园"}
MAPLE = {"province": "广东省", "city": "深圳市", "district": "福田区", "name": "枫林苑"}
NOTIFY_URL = "https://caiyun.example.com/icbc/notify"
ADMIN = "o-staff-admin"


def with_luhn(partial: str) -> str:
    """``partial`` plus the Luhn check digit that makes it a valid card number."""
    total = 0
    for index, digit in enumerate(reversed(partial)):
        n = int(digit)
        if index % 2 == 0:  # doubled once the check digit is appended
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return partial + str((10 - total % 10) % 10)


def with_id_check(first17: str) -> str:
    """A GB 11643 resident ID number: 17 digits and their check character."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


def person(n: int, name: str) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        phone=f"1380000000{n}",
        bank_phone=f"1370000000{n}",
        openid=f"o-resident-{n}",
        id_number=with_id_check(f"44030519900101{n:02d}3"),
        card=with_luhn(f"622202000012345{n:02d}"),
    )


ALICE = person(1, "张伟")  # owner of 1栋-1单元-101
ERIN = person(5, "陈芳")  # family of 1栋-1单元-101
BOB = person(2, "李娜")  # owner of 1栋-1单元-102
CAROL = person(3, "王强")  # owner of 2栋-1单元-201, never bound in the app
DAVE = person(4, "赵敏")  # owner in 枫林苑
NOBODY = person(9, "孙丽")  # an account with no house


def ok(reply: dict[str, Any]) -> Any:
    assert reply["ok"] is True, reply
    return reply["data"]


def refused(reply: dict[str, Any]) -> str:
    assert reply["ok"] is False, reply
    return reply["error"]["code"]


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {"gateway": generate_private_key_pem(), "merchant": generate_private_key_pem()}


@pytest.fixture
def bank(services: Services, keys: dict[str, str]) -> Iterator[FakeIcbc]:
    fake = FakeIcbc(
        services.db,
        services.clock,
        gateway_private_key=keys["gateway"],
        merchant_private_key=keys["merchant"],
    )
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def svc(services: Services, bank: FakeIcbc) -> Services:
    """The test's services, with the real ICBC client pointed at the running sandbox bank."""
    settings = make_settings(
        **bank.settings_overrides(), icbc_notify_url=NOTIFY_URL, icbc_timeout_s=5.0
    )
    wired = build_services(settings, clock=services.clock, db=services.db)
    install_services(wired)
    return wired


@pytest.fixture
def world(svc: Services) -> SimpleNamespace:
    db, now = svc.db, svc.clock.now()
    rows = [
        {
            "building": 1,
            "unit": 1,
            "room": 101,
            "owner_name": ALICE.name,
            "owner_phone": ALICE.phone,
        },
        {"building": 1, "unit": 1, "room": 102, "owner_name": BOB.name, "owner_phone": BOB.phone},
        {
            "building": 2,
            "unit": 1,
            "room": 201,
            "owner_name": CAROL.name,
            "owner_phone": CAROL.phone,
        },
    ]
    garden = import_owners(svc, GARDEN, rows)
    maple = import_owners(
        svc,
        MAPLE,
        [
            {
                "building": 1,
                "unit": 1,
                "room": 101,
                "owner_name": DAVE.name,
                "owner_phone": DAVE.phone,
            }
        ],
    )
    h101, h102, h201 = (houses.get(db, r.house_id) for r in garden.rows)
    m101 = houses.get(db, maple.rows[0].house_id)
    ids = {}
    for who, house, role in (
        (ALICE, h101, "owner"),
        (ERIN, h101, "family"),
        (BOB, h102, "owner"),
        (DAVE, m101, "owner"),
        (NOBODY, None, None),
    ):
        account, _ = accounts.ensure_account(db, who.phone, now, who.name)
        if house is not None:
            memberships.add(db, house, account["_id"], role, now, account["_id"])
        accounts.bind_openid(db, account["_id"], "resident", who.openid)
        ids[who.openid] = account["_id"]
    admin, _ = accounts.ensure_account(db, "13900000001", now)
    staff.upsert(db, admin["_id"], "王经理", "admin", [garden.community_id], now)
    accounts.bind_openid(db, admin["_id"], "staff", ADMIN)
    due = (business_date(now) + timedelta(days=10)).isoformat()
    bill_rows = [
        {"building": 1, "unit": 1, "room": 101, "period": "2026-10", "item": "物业费"},
        {"building": 1, "unit": 1, "room": 101, "period": "2026-10", "item": "停车费"},
        {"building": 1, "unit": 1, "room": 101, "period": "2026-11", "item": "物业费"},
        {"building": 1, "unit": 1, "room": 102, "period": "2026-11", "item": "物业费"},
        {"building": 2, "unit": 1, "room": 201, "period": "2026-11", "item": "物业费"},
    ]
    amounts = [12000, 5000, 12500, 15000, 9000]
    report = ok(
        invoke(
            "admin",
            {
                "action": "import_bills",
                "community_id": garden.community_id,
                "rows": [
                    {**r, "amount_fen": a, "due_date": due}
                    for r, a in zip(bill_rows, amounts, strict=True)
                ],
            },
            ADMIN,
        )
    )
    assert report["counts"]["created"] == 5
    maple_admin, _ = accounts.ensure_account(db, "13900000002", now)
    staff.upsert(db, maple_admin["_id"], "周主管", "admin", [maple.community_id], now)
    accounts.bind_openid(db, maple_admin["_id"], "staff", "o-staff-maple")
    ok(
        invoke(
            "admin",
            {
                "action": "import_bills",
                "community_id": maple.community_id,
                "rows": [
                    {
                        "building": 1,
                        "unit": 1,
                        "room": 101,
                        "period": "2026-11",
                        "item": "物业费",
                        "amount_fen": 8800,
                        "due_date": due,
                    }
                ],
            },
            "o-staff-maple",
        )
    )
    by_key = {(b["house_id"], b["period"], b["item"]): b["_id"] for b in db["bills"].find({})}
    return SimpleNamespace(
        ids=ids,
        h101=h101,
        h102=h102,
        h201=h201,
        m101=m101,
        oct_fee=by_key[(h101["_id"], "2026-10", "物业费")],
        oct_parking=by_key[(h101["_id"], "2026-10", "停车费")],
        nov_fee=by_key[(h101["_id"], "2026-11", "物业费")],
        bob_fee=by_key[(h102["_id"], "2026-11", "物业费")],
        carol_fee=by_key[(h201["_id"], "2026-11", "物业费")],
        dave_fee=by_key[(m101["_id"], "2026-11", "物业费")],
    )


def verify(svc: Services, who: SimpleNamespace, method: str = "card") -> dict[str, Any]:
    """Real-name verification as the app does it, with the code ICBC texted to the bank phone."""
    start = {
        "action": "realname_start",
        "method": method,
        "name": who.name,
        "id_number": who.id_number,
        "card_no": who.card,
        "bank_phone": who.bank_phone,
    }
    ticket = ok(invoke("account", start, who.openid))["ticket"]
    code = sandbox_outbox(svc.db, who.bank_phone)[0]["code"]
    confirm = {
        "action": "realname_confirm",
        "ticket": ticket,
        "sms_code": code,
        "agreements": ["wallet_service", "privacy"],
        "autodebit": False,
    }
    return ok(invoke("account", confirm, who.openid))


def list_bills(who: SimpleNamespace, **filters: Any) -> dict[str, Any]:
    return invoke("bills", {"action": "list", **filters}, who.openid)


def pay(who: SimpleNamespace, *bill_ids: str, method: str = "card") -> dict[str, Any]:
    return invoke(
        "bills", {"action": "pay", "bill_ids": list(bill_ids), "method": method}, who.openid
    )


def get_order(who: SimpleNamespace, order_no: str) -> dict[str, Any]:
    return invoke("bills", {"action": "order", "order_no": order_no}, who.openid)


def post_notify(body: str) -> dict[str, Any]:
    """ICBC's notify as the API Gateway trigger delivers it: ``POST /icbc/notify``, a form."""
    event = {
        "httpMethod": "POST",
        "path": "/icbc/notify",
        "headers": {"content-type": "application/x-www-form-urlencoded; charset=UTF-8"},
        "queryStringParameters": {},
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {"sourceIp": "202.106.0.20", "requestId": "apigw-notify"},
    }
    return handler("icbc_callback")(event, {})


def bill_status(svc: Services, bill_id: str) -> str:
    return svc.db["bills"].find_one({"_id": bill_id})["status"]


def status_of(who: SimpleNamespace, bill_id: str) -> str:
    items = ok(list_bills(who))["items"]
    return next(b["status"] for b in items if b["bill_id"] == bill_id)


def messages(who: SimpleNamespace, kind: str) -> list[dict[str, Any]]:
    items = ok(invoke("notify", {"action": "messages", "page_size": 100}, who.openid))["items"]
    return [m for m in items if m["kind"] == kind]


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
    assert ok(list_bills(ALICE, status="paid")) == {"items": [], "unpaid_total_fen": 0}
    assert len(ok(list_bills(ALICE, status="unpaid"))["items"]) == 3


def test_list_without_a_house_is_house_not_bound(world: SimpleNamespace) -> None:
    assert refused(list_bills(NOBODY)) == "HOUSE_NOT_BOUND"


def test_list_of_someone_elses_house_is_forbidden(world: SimpleNamespace) -> None:
    reply = list_bills(ALICE, house_id=world.h102["_id"])

    assert refused(reply) == "FORBIDDEN"
    assert "15000" not in str(reply)


def test_list_needs_a_known_caller(world: SimpleNamespace) -> None:
    assert refused(invoke("bills", {"action": "list"}, "o-stranger")) == "UNAUTHENTICATED"


# ------------------------------------------------------------------------------ pay


def test_pay_before_real_name_verification_is_refused(
    svc: Services, world: SimpleNamespace
) -> None:
    assert refused(pay(ALICE, world.oct_fee)) == "REALNAME_REQUIRED"
    assert bill_status(svc, world.oct_fee) == "unpaid"
    assert svc.db[payments.ORDERS].count_documents({}) == 0


def test_verified_resident_pays_several_bills_in_one_icbc_order(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)

    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))

    assert order["status"] == "pending"
    assert order["amount_fen"] == 17000
    assert order["method"] == "card"
    assert sorted(order["bill_ids"]) == sorted([world.oct_fee, world.oct_parking])
    assert order["order_no"].startswith("CY")
    assert order["expires_at"] > order["created_at"]
    # The parameters come from ICBC's answer (the sandbox bank holds the same order).
    assert order["icbc"]["out_trade_no"] == order["order_no"]
    assert order["icbc"]["total_amt"] == "17000"
    assert order["icbc"]["pay_token"]
    at_bank = svc.db["sandbox_icbc_orders"].find_one({"_id": order["order_no"]})
    assert at_bank["amount_fen"] == 17000 and at_bank["status"] == "pending"
    assert status_of(ALICE, world.oct_fee) == "paying"
    assert status_of(ALICE, world.oct_parking) == "paying"
    assert status_of(ALICE, world.nov_fee) == "unpaid"
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "pending"


def test_wallet_method_is_passed_to_icbc(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)

    order = ok(pay(ALICE, world.nov_fee, method="wallet"))

    assert order["method"] == "wallet"
    assert svc.db["sandbox_icbc_orders"].find_one({"_id": order["order_no"]})["channel"] == "wallet"


def test_bill_already_in_a_live_order_is_not_payable(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)
    verify(svc, ERIN)
    first = ok(pay(ALICE, world.oct_fee))

    assert refused(pay(ALICE, world.oct_fee)) == "BILL_NOT_PAYABLE"
    assert refused(pay(ERIN, world.oct_parking, world.oct_fee)) == "BILL_NOT_PAYABLE"
    # The refused attempt locked nothing: the other bill is still free to pay.
    assert bill_status(svc, world.oct_parking) == "unpaid"
    assert svc.db[payments.ORDERS].count_documents({"status": "pending"}) == 1
    assert svc.db["bills"].find_one({"_id": world.oct_fee})["order_no"] == first["order_no"]


def test_paid_bill_is_not_payable(svc: Services, bank: FakeIcbc, world: SimpleNamespace) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    post_notify(urlencode(form))
    assert status_of(ALICE, world.oct_fee) == "paid"

    assert refused(pay(ALICE, world.oct_fee)) == "BILL_NOT_PAYABLE"
    assert svc.db[payments.ORDERS].count_documents({}) == 1


def test_someone_elses_bill_is_forbidden(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)

    assert refused(pay(ALICE, world.bob_fee)) == "FORBIDDEN"
    assert refused(pay(ALICE, world.oct_fee, world.carol_fee)) == "FORBIDDEN"
    assert refused(pay(ALICE, world.dave_fee)) == "FORBIDDEN"
    assert bill_status(svc, world.bob_fee) == "unpaid"
    assert bill_status(svc, world.oct_fee) == "unpaid"
    assert svc.db[payments.ORDERS].count_documents({}) == 0


def test_unknown_bill_is_not_found(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)

    assert refused(pay(ALICE, world.oct_fee, "no-such-bill")) == "NOT_FOUND"
    assert bill_status(svc, world.oct_fee) == "unpaid"


def test_pay_refuses_bad_arguments(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)

    empty = invoke("bills", {"action": "pay", "bill_ids": [], "method": "card"}, ALICE.openid)
    cash = invoke(
        "bills", {"action": "pay", "bill_ids": [world.oct_fee], "method": "cash"}, ALICE.openid
    )
    injected = invoke(
        "bills", {"action": "pay", "bill_ids": [{"$ne": ""}], "method": "card"}, ALICE.openid
    )

    assert refused(empty) == "INVALID_ARGUMENT" and "bill_ids" in str(empty["error"]["details"])
    assert refused(cash) == "INVALID_ARGUMENT" and "method" in cash["error"]["details"]["fields"]
    assert refused(injected) == "INVALID_ARGUMENT"
    assert svc.db[payments.ORDERS].count_documents({}) == 0


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
    assert payments.expire_orders(svc) == 0  # not due yet

    svc.clock.advance(svc.settings.order_ttl_s + 1)
    ended = payments.expire_orders(svc)

    assert ended == 1
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "closed"
    assert svc.db["sandbox_icbc_orders"].find_one({"_id": order["order_no"]})["status"] == "closed"
    assert status_of(ALICE, world.oct_fee) == "unpaid"
    assert status_of(ALICE, world.oct_parking) == "unpaid"
    assert payments.expire_orders(svc) == 0  # nothing left to do
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
    assert svc.db[payments.TRANSACTIONS].count_documents({"order_no": order["order_no"]}) == 1
    assert len(messages(ALICE, "payment")) == 1
    # Asking again changes nothing more.
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert svc.db[payments.TRANSACTIONS].count_documents({}) == 1
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
    assert svc.db[payments.ORDERS].find_one({})["status"] == "failed"
    assert ok(pay(ALICE, world.oct_fee))["status"] == "pending"  # the retry works


def test_expiry_waits_for_icbc_when_it_cannot_be_asked(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    svc.clock.advance(svc.settings.order_ttl_s + 1)
    bank.fail_next("SYSTEM_BUSY", svc.settings.icbc_query_path)

    assert payments.expire_orders(svc) == 0  # ICBC busy: maybe paid, so keep the lock
    assert status_of(ALICE, world.oct_fee) == "paying"
    assert payments.expire_orders(svc) == 1  # the next run gets an answer
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
        "method": "card",
        "request_id": "7f1c2d3e-0a1b-4c5d-9e8f-001122334455",
    }

    first = invoke("bills", event, ALICE.openid)
    retry = invoke("bills", event, ALICE.openid)

    assert ok(first)["status"] == "pending"
    assert ok(retry)["order_no"] == first["data"]["order_no"]
    assert svc.db[payments.ORDERS].count_documents({}) == 1

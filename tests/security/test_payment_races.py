"""Races around payment: payers competing for one bill, ICBC resending a notify from many
threads, the notify against the expiry job and the order query. Each must transition once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import invoke, make_settings

from caiyun.adapters.icbc import generate_private_key_pem, rsa_verify
from caiyun.adapters.sms import sandbox_outbox
from caiyun.clock import business_date
from caiyun.domain import accounts, houses, icbc_notifies, memberships, payments, staff
from caiyun.domain.owner_import import import_owners
from caiyun.sandbox.functions import handler
from caiyun.sandbox.icbc import OPENING_BALANCE_FEN, FakeIcbc
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
    return (
        first17 + "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights, strict=True)) % 11]
    )


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
    return {
        "gateway": generate_private_key_pem(),
        "merchant": generate_private_key_pem(),
        "stranger": generate_private_key_pem(),
    }


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


def reply_of(response: dict[str, Any], bank: FakeIcbc) -> dict[str, Any]:
    """The notify answer's business content, after checking it is signed as ICBC expects."""
    assert response["statusCode"] == 200
    text = response["body"]
    assert bank.verify_reply(text), text
    # The same check done by hand with our public key over the documented span.
    cut = text.rfind(',"sign":')
    envelope = json.loads(text)
    assert envelope["sign_type"] == "RSA2"
    assert rsa_verify(text[1:cut], envelope["sign"], bank.merchant_public_key, "SHA256")
    return envelope["response_biz_content"]


def bank_order(svc: Services, order_no: str) -> dict[str, Any]:
    return svc.db["sandbox_icbc_orders"].find_one({"_id": order_no})


def as_paid(svc: Services, order_no: str, **changes: Any) -> dict[str, Any]:
    """ICBC's record of the order as if it had been paid (to sign notifies the fake would not
    send on its own: late, altered or about unknown orders)."""
    doc = bank_order(svc, order_no)
    return {**doc, "status": "paid", "paid_at": svc.clock.now(), **changes}


def snapshot(svc: Services) -> dict[str, Any]:
    db = svc.db
    return {
        "orders": sorted(db[payments.ORDERS].find({}), key=lambda d: d["_id"]),
        "bills": sorted(db["bills"].find({}), key=lambda d: d["_id"]),
        "transactions": db[payments.TRANSACTIONS].count_documents({}),
        "messages": db["messages"].count_documents({"kind": "payment"}),
    }


def notifies(svc: Services) -> list[dict[str, Any]]:
    return list(svc.db[icbc_notifies.NOTIFIES].find({}).sort("received_at", 1))


def race(calls: list[Callable[[], Any]], workers: int) -> list[Any]:
    """Run the calls on ``workers`` threads, all released at the same moment."""
    start = threading.Event()

    def run(call: Callable[[], Any]) -> Any:
        start.wait(5)
        return call()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, call) for call in calls]
        start.set()
        return [future.result() for future in futures]


def test_same_notify_100_times_from_8_threads_transitions_exactly_once(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    body = urlencode(bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL))

    responses = race([lambda: post_notify(body)] * 100, workers=8)

    answers = [reply_of(r, bank) for r in responses]
    assert all(a["return_code"] == 0 for a in answers)
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert svc.db[payments.TRANSACTIONS].count_documents({}) == 1
    assert len(messages(ALICE, "payment")) == 1
    outcomes = [k["outcome"] for k in notifies(svc)]
    assert len(outcomes) == 100
    assert outcomes.count("applied") == 1
    assert outcomes.count("duplicate") == 99
    assert status_of(ALICE, world.oct_fee) == "paid"
    assert status_of(ALICE, world.oct_parking) == "paid"


def test_payers_racing_for_one_bill_make_exactly_one_order(
    svc: Services, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    verify(svc, ERIN)

    replies = race([lambda who=who: pay(who, world.oct_fee) for who in (ALICE, ERIN) * 3], 6)

    won = [r for r in replies if r["ok"]]
    assert len(won) == 1
    assert {r["error"]["code"] for r in replies if not r["ok"]} == {"BILL_NOT_PAYABLE"}
    live = list(svc.db[payments.ORDERS].find({"status": "pending"}))
    assert [o["_id"] for o in live] == [won[0]["data"]["order_no"]]
    bill = svc.db["bills"].find_one({"_id": world.oct_fee})
    assert bill["status"] == "locked"
    assert bill["order_no"] == won[0]["data"]["order_no"]
    assert svc.db["sandbox_icbc_orders"].count_documents({}) == 1  # only the winner asked ICBC


def test_overlapping_payments_never_leave_the_losers_other_bill_locked(
    svc: Services, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    verify(svc, ERIN)

    for _ in range(5):
        replies = race(
            [
                lambda: pay(ALICE, world.oct_fee, world.oct_parking),
                lambda: pay(ERIN, world.oct_parking, world.nov_fee),
            ],
            2,
        )
        won = [r["data"] for r in replies if r["ok"]]
        assert len(won) == 1, replies
        locked = {b["_id"]: b.get("order_no") for b in svc.db["bills"].find({"status": "locked"})}
        assert locked == dict.fromkeys(won[0]["bill_ids"], won[0]["order_no"])
        assert svc.db[payments.ORDERS].count_documents({"status": "pending"}) == 1
        # Let the winner's order lapse so the next round starts from unpaid bills.
        svc.clock.advance(svc.settings.order_ttl_s + 1)
        payments.expire_orders(svc)
        assert svc.db["bills"].count_documents({"status": "locked"}) == 0


def test_double_tap_on_pay_makes_one_order(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)

    replies = race([lambda: pay(ALICE, world.oct_fee, world.nov_fee)] * 4, 4)

    assert sum(r["ok"] for r in replies) == 1
    assert svc.db[payments.ORDERS].count_documents({"status": "pending"}) == 1


def test_notify_racing_the_expiry_job_and_the_order_query_settles_once(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    body = urlencode(bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL))
    svc.clock.advance(svc.settings.order_ttl_s + 1)  # due for the expiry job and the query

    race(
        [lambda: post_notify(body), lambda: payments.expire_orders(svc)] * 3
        + [lambda: get_order(ALICE, order["order_no"])] * 2,
        8,
    )

    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert status_of(ALICE, world.oct_fee) == "paid"
    assert status_of(ALICE, world.oct_parking) == "paid"
    assert svc.db[payments.TRANSACTIONS].count_documents({}) == 1
    assert len(messages(ALICE, "payment")) == 1


def test_expiry_jobs_running_twice_at_once_release_each_order_once(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    verify(svc, BOB)
    alice = ok(pay(ALICE, world.oct_fee))
    bob = ok(pay(BOB, world.bob_fee))
    svc.clock.advance(svc.settings.order_ttl_s + 1)

    race([lambda: payments.expire_orders(svc)] * 4, 4)

    for who, order, bill in ((ALICE, alice, world.oct_fee), (BOB, bob, world.bob_fee)):
        assert ok(get_order(who, order["order_no"]))["status"] == "closed"
        assert status_of(who, bill) == "unpaid"
    assert svc.db[payments.ORDERS].count_documents({"status": "pending"}) == 0


def test_autodebit_runs_at_once_charge_each_bill_once(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    ok(invoke("account", {"action": "set_autodebit", "enabled": True}, ALICE.openid))
    svc.clock.advance(11 * 24 * 3600)  # the world's bills are now due

    race([lambda: payments.run_autodebit(svc)] * 4, 4)

    paid = list(svc.db[payments.ORDERS].find({"status": "paid"}))
    assert len(paid) == 1
    assert paid[0]["amount_fen"] == 12000 + 5000 + 12500
    assert svc.db[payments.ORDERS].count_documents({"status": "pending"}) == 0
    balance = ok(invoke("account", {"action": "wallet"}, ALICE.openid))["balance_fen"]
    assert balance == OPENING_BALANCE_FEN - 29500
    assert svc.db[payments.TRANSACTIONS].count_documents({}) == 1
    assert ok(list_bills(ALICE))["unpaid_total_fen"] == 0


def test_admins_reminding_at_once_reach_each_account_once(
    svc: Services, world: SimpleNamespace
) -> None:
    event = {"action": "remind_unpaid", "community_id": world.h101["community_id"]}

    replies = race([lambda: invoke("notify", event, ADMIN)] * 6, 6)

    counts = [ok(r) for r in replies]
    assert sum(c["accounts_notified"] for c in counts) == 3  # ALICE, ERIN, BOB
    assert sum(c["houses_reminded"] for c in counts) == 3
    for who in (ALICE, ERIN, BOB):
        assert len(messages(who, "reminder")) == 1

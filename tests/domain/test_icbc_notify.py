"""ICBC's payment notify, as the API Gateway trigger ``POST /icbc/notify`` delivers it.

Notifies are produced by the running ICBC sandbox (really signed with its gateway key); forged
ones are signed with another key. The reply is checked the way ICBC checks it.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from conftest import invoke, make_settings

from caiyun.adapters.icbc import generate_private_key_pem, rsa_verify, sign_params
from caiyun.adapters.sms import sandbox_outbox
from caiyun.clock import business_date
from caiyun.domain import accounts, houses, icbc_notifies, memberships, payments, staff
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


# ------------------------------------------------------------------------------ success


def test_valid_success_notify_settles_the_order_once_and_tells_the_payer(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)

    answer = reply_of(post_notify(urlencode(form)), bank)

    biz = json.loads(form["biz_content"])
    assert answer["return_code"] == 0
    assert answer["msg_id"] == biz["msg_id"]
    seen = ok(get_order(ALICE, order["order_no"]))
    assert seen["status"] == "paid"
    assert seen["paid_at"] is not None
    assert status_of(ALICE, world.oct_fee) == "paid"
    assert status_of(ALICE, world.oct_parking) == "paid"
    assert status_of(ALICE, world.nov_fee) == "unpaid"
    assert ok(list_bills(ALICE))["unpaid_total_fen"] == 12500
    transactions = list(svc.db[payments.TRANSACTIONS].find({}))
    assert len(transactions) == 1
    assert transactions[0]["order_no"] == order["order_no"]
    assert transactions[0]["amount_fen"] == 17000
    assert transactions[0]["account_id"] == world.ids[ALICE.openid]
    told = messages(ALICE, "payment")
    assert len(told) == 1
    assert "170.00" in told[0]["body"]
    assert order["order_no"] in told[0]["page"]
    assert messages(ERIN, "payment") == []  # the payer is told, not the whole house
    kept = notifies(svc)
    assert len(kept) == 1
    assert kept[0]["outcome"] == "applied"
    assert kept[0]["order_no"] == order["order_no"]
    assert kept[0]["body"] == urlencode(form)


def test_base64_encoded_notify_body_is_read_like_a_plain_one(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    body = base64.b64encode(urlencode(form).encode("utf-8")).decode("ascii")

    event = {
        "httpMethod": "POST",
        "path": "/icbc/notify",
        "headers": {"content-type": "application/x-www-form-urlencoded"},
        "body": body,
        "isBase64Encoded": True,
        "requestContext": {"sourceIp": "202.106.0.20", "requestId": "apigw-b64"},
    }
    answer = reply_of(handler("icbc_callback")(event, {}), bank)

    assert answer["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"


def test_notify_delivered_by_the_sandbox_bank_over_http_is_acknowledged(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    """The sandbox bank posting the notify itself, through a tiny gateway in front of our
    handler, reads our reply as acknowledged (signature verified, return_code 0)."""
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))

    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode("utf-8")
            reply = post_notify(body)
            payload = reply["body"].encode("utf-8")
            self.send_response(reply["statusCode"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        outcome = bank.complete(f"http://{host}:{port}", order["order_no"], "success")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

    assert outcome["acknowledged"] is True
    assert outcome["reply_verified"] is True
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"


# ------------------------------------------------------------------------------ failure


def test_failed_payment_notify_fails_the_order_and_releases_the_bills(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    form = bank.notify_form(bank.settle(order["order_no"], "fail"), NOTIFY_URL)

    answer = reply_of(post_notify(urlencode(form)), bank)

    assert answer["return_code"] == 0  # understood: ICBC may stop resending
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "failed"
    assert status_of(ALICE, world.oct_fee) == "unpaid"
    assert status_of(ALICE, world.oct_parking) == "unpaid"
    assert svc.db[payments.TRANSACTIONS].count_documents({}) == 0
    assert messages(ALICE, "payment") == []
    assert ok(pay(ALICE, world.oct_fee))["status"] == "pending"  # payable again


def test_failure_notify_after_success_does_not_undo_the_payment(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    paid = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    failed = bank.notify_form(
        {**bank_order(svc, order["order_no"]), "status": "failed"}, NOTIFY_URL
    )
    reply_of(post_notify(urlencode(paid)), bank)

    answer = reply_of(post_notify(urlencode(failed)), bank)

    assert answer["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert status_of(ALICE, world.oct_fee) == "paid"
    assert svc.db[payments.TRANSACTIONS].count_documents({}) == 1


# ------------------------------------------------------------------------------ refused


def _forged(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    form["sign"] = sign_params("/icbc/notify", form, keys["stranger"])
    return urlencode(form)


def _altered(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    biz = json.loads(form["biz_content"])
    form["biz_content"] = json.dumps({**biz, "total_amt": "1"}, separators=(",", ":"))
    return urlencode(form)


def _unsigned(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    del form["sign"]
    return urlencode(form)


def _empty_sign(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    return urlencode({**form, "sign": ""})


def _not_a_form(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    return json.dumps({"out_trade_no": order_no, "return_code": 0, "total_amt": "12000"})


def _repeated_field(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    return urlencode(form) + "&biz_content=" + quote('{"out_trade_no":"x"}')


def _signed_garbage(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    form["biz_content"] = "out_trade_no=" + order_no
    form["sign"] = sign_params("/icbc/notify", form, keys["gateway"])
    return urlencode(form)


def _other_app(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    form["app_id"] = "10000000000000009999"
    form["sign"] = sign_params("/icbc/notify", form, keys["gateway"])
    return urlencode(form)


def _unknown_order(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    other = as_paid(svc, order_no, _id="CY20261125000000DEADBEEF")
    return urlencode(bank.notify_form(other, NOTIFY_URL))


def _amount_mismatch(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    return urlencode(bank.notify_form(as_paid(svc, order_no, amount_fen=1), NOTIFY_URL))


def _oversized(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    return urlencode({**form, "padding": "x" * 70_000})


BAD_NOTIFIES = {
    "forged signature": _forged,
    "altered after signing": _altered,
    "missing sign": _unsigned,
    "empty sign": _empty_sign,
    "json instead of a form": _not_a_form,
    "repeated field": _repeated_field,
    "signed but biz_content not json": _signed_garbage,
    "signed for another app": _other_app,
    "unknown order": _unknown_order,
    "amount mismatch": _amount_mismatch,
    "oversized body": _oversized,
}


@pytest.mark.parametrize("make", BAD_NOTIFIES.values(), ids=BAD_NOTIFIES.keys())
def test_bad_notify_gets_a_failure_reply_changes_nothing_and_is_kept(
    svc: Services, bank: FakeIcbc, keys: dict[str, str], world: SimpleNamespace, make: Any
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    before = snapshot(svc)
    body = make(svc, bank, keys, order["order_no"])

    answer = reply_of(post_notify(body), bank)

    assert answer["return_code"] != 0
    assert snapshot(svc) == before
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "pending"
    assert status_of(ALICE, world.oct_fee) == "paying"
    assert status_of(ALICE, world.oct_parking) == "paying"
    kept = notifies(svc)
    assert len(kept) == 1
    assert kept[0]["outcome"] not in ("applied", "duplicate")
    assert kept[0]["body"] == body[: len(kept[0]["body"])]
    # The genuine notify that follows still settles the order.
    genuine = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    assert reply_of(post_notify(urlencode(genuine)), bank)["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert len(notifies(svc)) == 2


def test_notify_by_get_is_refused_and_changes_nothing(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    event = {
        "httpMethod": "GET",
        "path": "/icbc/notify",
        "headers": {},
        "queryString": form,
        "queryStringParameters": form,
        "body": "",
        "isBase64Encoded": False,
        "requestContext": {"sourceIp": "198.51.100.7", "requestId": "apigw-get"},
    }

    response = handler("icbc_callback")(event, {})

    assert response["statusCode"] == 405
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "pending"


def test_every_notify_good_or_bad_is_kept_for_audit(
    svc: Services, bank: FakeIcbc, keys: dict[str, str], world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    bodies = [make(svc, bank, keys, order["order_no"]) for make in BAD_NOTIFIES.values()]
    genuine = urlencode(bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL))
    bodies += [genuine, genuine]

    for body in bodies:
        post_notify(body)

    kept = notifies(svc)
    assert len(kept) == len(bodies)
    outcomes = [k["outcome"] for k in kept]
    assert outcomes.count("applied") == 1
    assert outcomes.count("duplicate") == 1
    assert {"rejected", "malformed", "unknown_order", "amount_mismatch"} <= set(outcomes)
    assert all(k["received_at"] is not None for k in kept)


# ------------------------------------------------------------------------------ late notifies


def test_late_success_notify_after_expiry_pays_the_still_unpaid_bills(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    svc.clock.advance(svc.settings.order_ttl_s + 1)
    assert payments.expire_orders(svc) == 1
    assert status_of(ALICE, world.oct_fee) == "unpaid"

    late = bank.notify_form(as_paid(svc, order["order_no"]), NOTIFY_URL)
    answer = reply_of(post_notify(urlencode(late)), bank)

    assert answer["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert status_of(ALICE, world.oct_fee) == "paid"
    assert status_of(ALICE, world.oct_parking) == "paid"
    assert svc.db[payments.TRANSACTIONS].count_documents({"order_no": order["order_no"]}) == 1
    assert len(messages(ALICE, "payment")) == 1


def test_late_success_for_bills_paid_meanwhile_never_settles_them_twice(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    verify(svc, ERIN)
    first = ok(pay(ALICE, world.oct_fee))
    svc.clock.advance(svc.settings.order_ttl_s + 1)
    payments.expire_orders(svc)
    second = ok(pay(ERIN, world.oct_fee))
    paid = bank.notify_form(bank.settle(second["order_no"], "success"), NOTIFY_URL)
    reply_of(post_notify(urlencode(paid)), bank)
    settled = svc.db["bills"].find_one({"_id": world.oct_fee})

    late = bank.notify_form(as_paid(svc, first["order_no"]), NOTIFY_URL)
    answer = reply_of(post_notify(urlencode(late)), bank)

    assert answer["return_code"] == 0  # the money arrived: stop resending
    bill = svc.db["bills"].find_one({"_id": world.oct_fee})
    assert bill["status"] == "paid"
    assert bill["order_no"] == second["order_no"]
    assert bill["paid_at"] == settled["paid_at"]
    first_order = svc.db[payments.ORDERS].find_one({"_id": first["order_no"]})
    assert first_order["status"] == "paid"
    assert first_order["needs_refund"] is True
    assert svc.db[payments.ORDERS].find_one({"_id": second["order_no"]}).get("needs_refund") is None


def test_late_success_for_bills_now_in_another_live_order_is_flagged_for_refund(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    """The money of an expired order arrives while its bill sits in a newer, unpaid order.

    Whatever happens next, a paid order either settled all its bills or is flagged for refund:
    otherwise the resident who pays the newer order has paid the bill twice and nobody knows.
    """
    verify(svc, ALICE)
    verify(svc, ERIN)
    first = ok(pay(ALICE, world.oct_fee))
    svc.clock.advance(svc.settings.order_ttl_s + 1)
    payments.expire_orders(svc)
    second = ok(pay(ERIN, world.oct_fee))  # the bill is 支付中 again, in ERIN's order

    late = bank.notify_form(as_paid(svc, first["order_no"]), NOTIFY_URL)
    assert reply_of(post_notify(urlencode(late)), bank)["return_code"] == 0
    paid = bank.notify_form(bank.settle(second["order_no"], "success"), NOTIFY_URL)
    assert reply_of(post_notify(urlencode(paid)), bank)["return_code"] == 0

    bill = svc.db["bills"].find_one({"_id": world.oct_fee})
    assert bill["status"] == "paid"
    for order_no in (first["order_no"], second["order_no"]):
        order = svc.db[payments.ORDERS].find_one({"_id": order_no})
        assert order["status"] == "paid"
        settled_here = bill["order_no"] == order_no
        assert settled_here or order.get("needs_refund") is True, (
            f"order {order_no} took the money but settled no bill and is not flagged for refund"
        )


def test_sign_with_unescaped_plus_signs_still_verifies(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    """Some senders leave the base64 ``+`` of the signature unescaped in the form; a form
    decoder turns it into a space. The notify must still verify (and nothing else loosens)."""
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    sign = form.pop("sign")
    body = urlencode(form) + "&sign=" + quote(sign, safe="+/=")

    answer = reply_of(post_notify(body), bank)

    assert answer["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"

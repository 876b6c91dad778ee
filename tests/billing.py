"""The billing tests' bank, people and calls.

The ICBC sandbox (FakeIcbc, real RSA keys on both sides) wired into the services as the real ICBC
client's bank; residents with valid resident ID and card numbers; a world of houses, accounts
and bills; the resident's calls (real-name, list, pay, order) and ICBC's signed notifies.

A plugin (conftest.py's ``pytest_plugins``): its fixtures ``keys``, ``bank`` and ``svc`` are
there for every test, and a test file that needs them otherwise defines its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import invoke, make_settings
from worlds import GARDEN, MAPLE, ok, owner_row, resident_account, staff_account

from caiyun.adapters.icbc_protocol import (
    SIGN_ALGS,
    aes_decrypt,
    generate_private_key_pem,
    rsa_verify,
)
from caiyun.adapters.sms import sandbox_outbox
from caiyun.clock import business_date
from caiyun.domain import icbc_notifies
from caiyun.domain.owner_import import import_owners
from caiyun.sandbox.functions import handler
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.services import Services, build_services, install_services
from caiyun.stores import houses as house_store
from caiyun.stores.orders import ORDERS

NOTIFY_URL = "https://caiyun.example.com/icbc/notify"
# The resident mini-program's WeChat appid: ICBC's shop_appid for WeChat Pay.
RESIDENT_APPID = "wx0123456789abcdef"
ADMIN = "o-staff-admin"  # admin of 彩云花园
MAPLE_ADMIN = "o-staff-maple"  # admin of 枫林苑


# ------------------------------------------------------------------------------ numbers


def with_luhn(partial: str) -> str:
    """``partial`` plus the Luhn check digit that makes it a valid card number."""
    total = 0
    for index, digit in enumerate(reversed(partial)):
        n = int(digit)
        if index % 2 == 0:  # doubled once the check digit is appended
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return partial + str((10 - total % 10) % 10)


def card_number(prefix: str, length: int = 19) -> str:
    """A card number of ``length`` digits starting ``prefix`` with a valid Luhn digit."""
    return with_luhn(prefix.ljust(length - 1, "0"))


def with_id_check(first17: str) -> str:
    """A GB 11643 resident ID number: 17 digits and their check character."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


# ------------------------------------------------------------------------------ people


def person(n: int, name: str) -> SimpleNamespace:
    """Resident ``n``: phone, bank phone, openid, a valid ID number and an ICBC card."""
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


# ------------------------------------------------------------------------------ the bank


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    """ICBC's gateway key (1024 bits, as in every ICBC sample), our merchant key, and a
    stranger's key for forgeries."""
    return {
        "gateway": generate_private_key_pem(1024),
        "merchant": generate_private_key_pem(),
        "stranger": generate_private_key_pem(1024),
    }


@pytest.fixture
def bank(services: Services, keys: dict[str, str]) -> Iterator[FakeIcbc]:
    """The ICBC sandbox, running on the test's database and clock."""
    fake = FakeIcbc(
        services.db,
        services.clock,
        gateway_private_key=keys["gateway"],
        merchant_private_key=keys["merchant"],
    )
    fake.start()
    yield fake
    fake.stop()


def wire(services: Services, bank: FakeIcbc, **settings: Any) -> Services:
    """The test's services rebuilt with the real ICBC client pointed at ``bank`` (and any other
    ``settings``), installed for the functions."""
    wired = build_services(
        make_settings(
            **bank.settings_overrides(),
            icbc_notify_url=NOTIFY_URL,
            icbc_timeout_s=5.0,
            **{"wechat_appid": RESIDENT_APPID, **settings},
        ),
        clock=services.clock,
        db=services.db,
    )
    install_services(wired)
    return wired


@pytest.fixture
def svc(services: Services, bank: FakeIcbc) -> Services:
    """The test's services, with the real ICBC client pointed at the running sandbox bank."""
    return wire(services, bank)


# ------------------------------------------------------------------------------ worlds


def import_estate(svc: Services) -> SimpleNamespace:
    """彩云花园 (ALICE's 1栋-101, BOB's 1栋-102, CAROL's 2栋-201) and 枫林苑 (DAVE's 1栋-101),
    imported with their owners on record; returns both community ids and the four houses."""
    garden = import_owners(
        svc,
        GARDEN,
        [
            owner_row(101, ALICE.name, ALICE.phone),
            owner_row(102, BOB.name, BOB.phone),
            owner_row(201, CAROL.name, CAROL.phone, building=2),
        ],
    )
    maple = import_owners(svc, MAPLE, [owner_row(101, DAVE.name, DAVE.phone)])
    h101, h102, h201 = (house_store.get(svc.db, r.house_id) for r in garden.rows)
    return SimpleNamespace(
        garden=garden.community_id,
        maple=maple.community_id,
        h101=h101,
        h102=h102,
        h201=h201,
        m101=house_store.get(svc.db, maple.rows[0].house_id),
    )


def move_in(
    svc: Services,
    now: datetime,
    *placements: tuple[SimpleNamespace, dict[str, Any] | None, str | None],
) -> dict[str, str]:
    """Each (person, house or None, role) an account in the app, a member of the house; returns
    the account ids by openid."""
    ids = {}
    for who, house, role in placements:
        homes = [house] if house is not None else []
        account = resident_account(svc, who.phone, who.name, who.openid, homes, role, now)
        ids[who.openid] = account["_id"]
    return ids


def billed_world(
    svc: Services, garden_staff: Sequence[tuple[str, str, str, str]] = ()
) -> SimpleNamespace:
    """The estate with everyone moved in (ALICE and ERIN in 101, BOB in 102, DAVE in 枫林苑,
    NOBODY homeless, CAROL never), an admin per community (and ``garden_staff``: phone, name,
    role, openid) and the bills they imported, due in ten days."""
    db, now = svc.db, svc.clock.now()
    estate = import_estate(svc)
    h101, h102, h201, m101 = estate.h101, estate.h102, estate.h201, estate.m101
    ids = move_in(
        svc,
        now,
        (ALICE, h101, "owner"),
        (ERIN, h101, "family"),
        (BOB, h102, "owner"),
        (DAVE, m101, "owner"),
        (NOBODY, None, None),
    )
    staff_account(svc, "13900000001", "王经理", "admin", [estate.garden], ADMIN, now=now)
    for phone, name, role, openid in garden_staff:
        staff_account(svc, phone, name, role, [estate.garden], openid, now=now)
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
                "community_id": estate.garden,
                "rows": [
                    {**r, "amount_fen": a, "due_date": due}
                    for r, a in zip(bill_rows, amounts, strict=True)
                ],
            },
            ADMIN,
            "staff",
        )
    )
    assert report["counts"]["created"] == 5
    staff_account(svc, "13900000002", "周主管", "admin", [estate.maple], MAPLE_ADMIN, now=now)
    ok(
        invoke(
            "admin",
            {
                "action": "import_bills",
                "community_id": estate.maple,
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
            MAPLE_ADMIN,
            "staff",
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


@pytest.fixture
def world(svc: Services) -> SimpleNamespace:
    """Residents of two communities with bills to pay (``billed_world``); a test module that
    needs another world defines its own ``world``, which wins over this one."""
    return billed_world(svc)


# ------------------------------------------------------------------------------ calls


def realname_details(who: SimpleNamespace, method: str = "card", **changes: Any) -> dict[str, Any]:
    """``realname_start`` as the app sends it for ``who`` (an e-wallet is Class II)."""
    start = {
        "action": "realname_start",
        "method": method,
        "name": who.name,
        "id_number": who.id_number,
        "card_no": who.card,
        "bank_phone": who.bank_phone,
        "occupation": 3,
        "id_valid_until": "long_term",
    }
    if method == "wallet":
        start["wallet_class"] = "II"
    return {**start, **changes}


def verify(
    svc: Services, who: SimpleNamespace, method: str = "card", **changes: Any
) -> dict[str, Any]:
    """Real-name verification as the app does it, with the code ICBC texted to the bank phone;
    returns the verified wallet summary."""
    ticket = ok(invoke("account", realname_details(who, method, **changes), who.openid))["ticket"]
    code = sandbox_outbox(svc.db, who.bank_phone)[0]["code"]
    confirm = {
        "action": "realname_confirm",
        "ticket": ticket,
        "sms_code": code,
        "agreements": ["wallet_service", "privacy"],
        "autodebit": False,
    }
    result = ok(invoke("account", confirm, who.openid))
    assert result["status"] == "verified", result
    return result["wallet"]


def sign_autodebit(svc: Services, who: SimpleNamespace) -> dict[str, Any]:
    """Turn auto-debit on as the app does: ICBC texts a code for the agreement, the resident
    signs it with that code; returns the wallet summary."""
    ticket = ok(invoke("account", {"action": "autodebit_start"}, who.openid))["ticket"]
    event = {
        "action": "set_autodebit",
        "enabled": True,
        "ticket": ticket,
        "sms_code": sandbox_outbox(svc.db, who.bank_phone)[0]["code"],
        "agreements": ["autodebit"],
    }
    return ok(invoke("account", event, who.openid))


def list_bills(who: SimpleNamespace, **filters: Any) -> dict[str, Any]:
    return invoke("bills", {"action": "list", **filters}, who.openid)


def pay(who: SimpleNamespace, *bill_ids: str, method: str = "wechat") -> dict[str, Any]:
    return invoke(
        "bills", {"action": "pay", "bill_ids": list(bill_ids), "method": method}, who.openid
    )


def get_order(who: SimpleNamespace, order_no: str) -> dict[str, Any]:
    return invoke("bills", {"action": "order", "order_no": order_no}, who.openid)


def bill_status(svc: Services, bill_id: str) -> str:
    return svc.db["bills"].find_one({"_id": bill_id})["status"]


def status_of(who: SimpleNamespace, bill_id: str) -> str:
    items = ok(list_bills(who))["items"]
    return next(b["status"] for b in items if b["bill_id"] == bill_id)


def messages(who: SimpleNamespace, kind: str) -> list[dict[str, Any]]:
    items = ok(invoke("notify", {"action": "messages", "page_size": 100}, who.openid))["items"]
    return [m for m in items if m["kind"] == kind]


# ------------------------------------------------------------------------------ notifies


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


def reply_of(response: dict[str, Any], bank: FakeIcbc) -> dict[str, Any]:
    """The notify answer's business content, after checking it is signed as ICBC expects."""
    assert response["statusCode"] == 200
    text = response["body"]
    assert bank.verify_reply(text), text
    # The same check done by hand with our public key over the documented span.
    cut = text.rfind(',"sign":')
    envelope = json.loads(text)
    sign_type = envelope["sign_type"]
    assert sign_type == bank.registered_sign_type
    assert rsa_verify(text[1:cut], envelope["sign"], bank.merchant_public_key, SIGN_ALGS[sign_type])
    biz = envelope["response_biz_content"]
    # The answer to an encrypted notify is encrypted too (ICBC's NotifyUrlServlet sample).
    return json.loads(aes_decrypt(biz, bank.aes_key)) if isinstance(biz, str) else biz


def bank_order(svc: Services, order_no: str) -> dict[str, Any]:
    return svc.db["sandbox_icbc_orders"].find_one({"_id": order_no})


def as_paid(svc: Services, order_no: str, **changes: Any) -> dict[str, Any]:
    """ICBC's record of the order as if it had been paid (to sign notifies the fake would not
    send on its own: late, altered or about unknown orders)."""
    doc = bank_order(svc, order_no)
    return {**doc, "status": "paid", "paid_at": svc.clock.now(), **changes}


def charges(svc: Services, order_no: str | None = None) -> int:
    """The bank charges on record (of one order): the one that paid each paid order, and every
    further one, which is a payment issue to refund."""
    about = {} if order_no is None else {"order_no": order_no}
    paid = {"status": "paid"} if order_no is None else {"_id": order_no, "status": "paid"}
    extra = {"kind": "extra_settlement", **about}
    return svc.db[ORDERS].count_documents(paid) + svc.db["payment_issues"].count_documents(extra)


def snapshot(svc: Services) -> dict[str, Any]:
    """What a notify may change: orders, bills, charges and payment messages."""
    db = svc.db
    return {
        "orders": sorted(db[ORDERS].find({}), key=lambda d: d["_id"]),
        "bills": sorted(db["bills"].find({}), key=lambda d: d["_id"]),
        "charges": charges(svc),
        "messages": db["messages"].count_documents({"kind": "payment"}),
    }


def notifies(svc: Services) -> list[dict[str, Any]]:
    """Every notify received, oldest first."""
    return list(svc.db[icbc_notifies.NOTIFIES].find({}).sort("received_at", 1))

"""admin.import_bills: bills keyed by house, period and fee item, a report per row, and each
new bill announced to the accounts bound to its house (inbox always, WeChat where consented)."""

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
from caiyun.domain import accounts, houses, memberships, staff
from caiyun.domain.owner_import import import_owners
from caiyun.sandbox.fake_wechat import FakeWeChat
from caiyun.sandbox.functions import handler
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.services import Services, build_services, install_services

GARDEN = {"province": "广东省", "city": "深圳市", "district": "南山区", "name": "彩云花园"}
MAPLE = {"province": "广东省", "city": "深圳市", "district": "福田区", "name": "枫林苑"}
NOTIFY_URL = "https://caiyun.example.com/icbc/notify"
ADMIN = "o-staff-admin"
MAPLE_ADMIN = "o-staff-maple"
CHIEF = "o-staff-chief"
RESIDENT_APPID, RESIDENT_SECRET = "wxresident", "resident-secret-0123456789abcdef"
BILL_TEMPLATE = "tmpl-bill"


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


@pytest.fixture(scope="module")
def wechat_server() -> Iterator[FakeWeChat]:
    with FakeWeChat(apps={RESIDENT_APPID: RESIDENT_SECRET}) as server:
        yield server


@pytest.fixture
def wechat(wechat_server: FakeWeChat) -> FakeWeChat:
    wechat_server.sent.clear()
    return wechat_server


@pytest.fixture
def svc(services: Services, bank: FakeIcbc, wechat: FakeWeChat) -> Services:
    """The test's services: the real ICBC client on the sandbox bank, the real WeChat client on
    the fake WeChat, with a subscription template for new bills."""
    settings = make_settings(
        **bank.settings_overrides(),
        icbc_notify_url=NOTIFY_URL,
        icbc_timeout_s=5.0,
        wechat_api_base=wechat.url,
        wechat_appid=RESIDENT_APPID,
        wechat_secret=RESIDENT_SECRET,
        wechat_templates={"bill": BILL_TEMPLATE},
        wechat_timeout_s=2.0,
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
    ):
        account, _ = accounts.ensure_account(db, who.phone, now, who.name)
        memberships.add(db, house, account["_id"], role, now, account["_id"])
        accounts.bind_openid(db, account["_id"], "resident", who.openid)
        ids[who.openid] = account["_id"]
    for phone, openid, name, scope in (
        ("13900000001", ADMIN, "王经理", [garden.community_id]),
        ("13900000002", MAPLE_ADMIN, "周主管", [maple.community_id]),
        ("13900000003", CHIEF, "总部管理员", None),
    ):
        admin, _ = accounts.ensure_account(db, phone, now)
        staff.upsert(db, admin["_id"], name, "admin", scope, now)
        accounts.bind_openid(db, admin["_id"], "staff", openid)
    return SimpleNamespace(
        ids=ids,
        garden=garden.community_id,
        maple=maple.community_id,
        h101=h101,
        h102=h102,
        h201=h201,
        m101=m101,
        due=(business_date(now) + timedelta(days=10)).isoformat(),
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


def row(room: int = 101, item: str = "物业费", amount: Any = 12000, **extra: Any) -> dict[str, Any]:
    building = 2 if room == 201 else 1
    return {
        "building": building,
        "unit": 1,
        "room": room,
        "period": "2026-11",
        "item": item,
        "amount_fen": amount,
        "due_date": "2026-11-30",
        **extra,
    }


def import_bills(rows: list[Any], community_id: str, openid: str = ADMIN) -> dict[str, Any]:
    event = {"action": "import_bills", "community_id": community_id, "rows": rows}
    return invoke("admin", event, openid)


def all_bills(svc: Services) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(b["house_id"], b["period"], b["item"]): b for b in svc.db["bills"].find({})}


def inbox_total(svc: Services) -> int:
    return svc.db["messages"].count_documents({"kind": "bill"})


# ------------------------------------------------------------------------------ keyed import


def test_import_creates_one_bill_per_house_period_and_item(
    svc: Services, world: SimpleNamespace
) -> None:
    rows = [row(101), row(101, "停车费", 5000), row(102, amount=15000), row(201, amount="9000")]

    report = ok(import_bills(rows, world.garden))

    assert report["community_id"] == world.garden
    assert report["counts"] == {"created": 4, "updated": 0, "unchanged": 0, "error": 0}
    assert [r["row"] for r in report["rows"]] == [1, 2, 3, 4]
    assert report["rows"][0]["house_id"] == world.h101["_id"]
    assert report["rows"][0]["label"] == houses.label(world.h101)
    bills = all_bills(svc)
    assert len(bills) == 4
    fee = bills[(world.h101["_id"], "2026-11", "物业费")]
    assert fee["amount_fen"] == 12000
    assert fee["due_date"] == "2026-11-30"
    assert fee["status"] == "unpaid"
    assert fee["community_id"] == world.garden
    assert bills[(world.h201["_id"], "2026-11", "物业费")]["amount_fen"] == 9000
    assert ok(list_bills(ALICE))["unpaid_total_fen"] == 17000


def test_reimporting_the_same_rows_creates_no_duplicates(
    svc: Services, world: SimpleNamespace
) -> None:
    rows = [row(101), row(101, "停车费", 5000), row(102, amount=15000)]
    ok(import_bills(rows, world.garden))
    before = {k: b["_id"] for k, b in all_bills(svc).items()}
    announced = inbox_total(svc)

    report = ok(import_bills(rows, world.garden))

    assert report["counts"] == {"created": 0, "updated": 0, "unchanged": 3, "error": 0}
    assert {k: b["_id"] for k, b in all_bills(svc).items()} == before
    assert inbox_total(svc) == announced  # nothing new to announce


def test_corrected_amount_updates_the_unpaid_bill_in_place(
    svc: Services, world: SimpleNamespace
) -> None:
    ok(import_bills([row(101), row(102, amount=15000)], world.garden))
    before = all_bills(svc)[(world.h101["_id"], "2026-11", "物业费")]

    report = ok(
        import_bills(
            [row(101, amount=11800, due_date="2026-12-05"), row(102, amount=15000)], world.garden
        )
    )

    assert report["counts"] == {"created": 0, "updated": 1, "unchanged": 1, "error": 0}
    assert report["rows"][0]["status"] == "updated"
    after = all_bills(svc)[(world.h101["_id"], "2026-11", "物业费")]
    assert after["_id"] == before["_id"]
    assert after["amount_fen"] == 11800
    assert after["due_date"] == "2026-12-05"
    assert len(all_bills(svc)) == 2
    assert ok(list_bills(ALICE))["unpaid_total_fen"] == 11800


def test_same_bill_twice_in_one_file_is_one_bill(svc: Services, world: SimpleNamespace) -> None:
    report = ok(import_bills([row(101), row(101, amount=12300)], world.garden))

    assert [r["status"] for r in report["rows"]] == ["created", "updated"]
    assert len(all_bills(svc)) == 1
    assert all_bills(svc)[(world.h101["_id"], "2026-11", "物业费")]["amount_fen"] == 12300


def test_reimport_never_touches_a_paid_bill(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    ok(import_bills([row(101), row(101, "停车费", 5000)], world.garden))
    bill_id = all_bills(svc)[(world.h101["_id"], "2026-11", "物业费")]["_id"]
    verify(svc, ALICE)
    order = ok(pay(ALICE, bill_id))
    post_notify(urlencode(bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)))
    paid = svc.db["bills"].find_one({"_id": bill_id})
    assert paid["status"] == "paid"

    report = ok(
        import_bills(
            [row(101, amount=99900, due_date="2026-12-31"), row(101, "停车费", 5200)], world.garden
        )
    )

    assert report["rows"][0]["status"] == "error"
    assert report["rows"][0]["reason"]
    assert report["rows"][0]["house_id"] == world.h101["_id"]
    assert report["rows"][1]["status"] == "updated"  # the good row still lands
    assert svc.db["bills"].find_one({"_id": bill_id}) == paid
    same = ok(import_bills([row(101)], world.garden))
    assert same["rows"][0]["status"] == "unchanged"  # the same row again is no error


def test_reimport_never_touches_a_bill_being_paid(svc: Services, world: SimpleNamespace) -> None:
    ok(import_bills([row(101)], world.garden))
    bill_id = all_bills(svc)[(world.h101["_id"], "2026-11", "物业费")]["_id"]
    verify(svc, ALICE)
    order = ok(pay(ALICE, bill_id))

    report = ok(import_bills([row(101, amount=1)], world.garden))

    assert report["counts"]["error"] == 1
    bill = svc.db["bills"].find_one({"_id": bill_id})
    assert bill["amount_fen"] == 12000  # the order's amount still matches its bills
    assert bill["status"] == "locked"
    assert ok(get_order(ALICE, order["order_no"]))["amount_fen"] == 12000


def test_unknown_house_is_an_error_row_and_the_good_rows_still_land(
    svc: Services, world: SimpleNamespace
) -> None:
    rows = [row(101), {**row(101), "building": 9}, {**row(102), "room": 1999}, row(102)]

    report = ok(import_bills(rows, world.garden))

    assert [r["status"] for r in report["rows"]] == ["created", "error", "error", "created"]
    assert "房屋不存在" in report["rows"][1]["reason"]
    assert len(all_bills(svc)) == 2


def test_house_of_another_community_is_unknown_here(svc: Services, world: SimpleNamespace) -> None:
    # 枫林苑 has a 1栋-1单元-101 too; a 彩云花园 import must never bill it.
    ok(import_bills([row(101)], world.garden))

    assert ok(list_bills(DAVE))["items"] == []


@pytest.mark.parametrize(
    "amount",
    [12.5, -100, 0, "一百元", "12.50", "1e3", "", None, True, [1200], {"$gt": 0}, 100_000_001],
    ids=[
        "float-with-fraction",
        "negative",
        "zero",
        "text",
        "decimal-text",
        "exponent-text",
        "empty",
        "missing",
        "boolean",
        "list",
        "operator",
        "too-large",
    ],
)
def test_bad_amount_is_an_error_row_and_the_good_rows_still_land(
    svc: Services, world: SimpleNamespace, amount: Any
) -> None:
    rows = [row(101), row(101, "停车费", amount), row(102, amount=15000)]

    report = ok(import_bills(rows, world.garden))

    assert [r["status"] for r in report["rows"]] == ["created", "error", "created"]
    assert "金额" in report["rows"][1]["reason"]
    assert (world.h101["_id"], "2026-11", "停车费") not in all_bills(svc)
    assert len(all_bills(svc)) == 2


@pytest.mark.parametrize("amount", [1200.0, "1200", " 1200 "])
def test_whole_amounts_from_a_spreadsheet_are_accepted(
    svc: Services, world: SimpleNamespace, amount: Any
) -> None:
    report = ok(import_bills([row(101, amount=amount)], world.garden))

    assert report["counts"]["created"] == 1
    assert all_bills(svc)[(world.h101["_id"], "2026-11", "物业费")]["amount_fen"] == 1200


@pytest.mark.parametrize(
    ("field", "value", "column"),
    [
        ("period", "2026-13", "账期"),
        ("period", "202611", "账期"),
        ("due_date", "2026-02-30", "缴费截止日"),
        ("item", "", "收费项目"),
        ("room", None, "房号"),
    ],
)
def test_other_bad_fields_are_error_rows_naming_the_column(
    svc: Services, world: SimpleNamespace, field: str, value: Any, column: str
) -> None:
    report = ok(import_bills([{**row(101), field: value}, row(102)], world.garden))

    assert report["rows"][0]["status"] == "error"
    assert column in report["rows"][0]["reason"]
    assert report["rows"][1]["status"] == "created"


def test_row_that_is_not_an_object_is_an_error_row(svc: Services, world: SimpleNamespace) -> None:
    report = ok(import_bills(["1栋,1单元,101", row(101)], world.garden))

    assert [r["status"] for r in report["rows"]] == ["error", "created"]


def test_too_many_rows_in_one_call_are_refused(svc: Services, world: SimpleNamespace) -> None:
    reply = import_bills([row(101)] * 2001, world.garden)

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "rows" in reply["error"]["details"]["fields"]
    assert all_bills(svc) == {}


# ------------------------------------------------------------------------------ announcing


def test_each_new_bill_is_announced_to_every_account_bound_to_the_house(
    svc: Services, world: SimpleNamespace
) -> None:
    rows = [row(101), row(101, "停车费", 5000), row(102, amount=15000), row(201, amount=9000)]

    ok(import_bills(rows, world.garden))

    for who in (ALICE, ERIN):
        told = messages(who, "bill")
        assert len(told) == 1
        assert "2026-11 物业费" in told[0]["body"]
        assert "2026-11 停车费" in told[0]["body"]
        assert told[0]["page"] == "/pages/bills/index"
    bob = messages(BOB, "bill")
    assert len(bob) == 1 and "物业费" in bob[0]["body"]
    assert messages(DAVE, "bill") == []
    # 2栋-1单元-201 has no account bound yet: nobody to tell, nothing fails.
    assert inbox_total(svc) == 3


def test_updated_and_unchanged_bills_are_not_announced_again(
    svc: Services, world: SimpleNamespace
) -> None:
    ok(import_bills([row(101)], world.garden))

    ok(import_bills([row(101, amount=12100)], world.garden))
    ok(import_bills([row(101, amount=12100), row(101, "停车费", 5000)], world.garden))

    bodies = [m["body"] for m in messages(ALICE, "bill")]
    assert len(bodies) == 2
    assert "停车费" in bodies[0] and "物业费" not in bodies[0]


def test_new_bill_is_pushed_on_wechat_only_to_consenting_accounts(
    svc: Services, wechat: FakeWeChat, world: SimpleNamespace
) -> None:
    ok(invoke("notify", {"action": "subscribe", "template_ids": [BILL_TEMPLATE]}, ALICE.openid))

    ok(import_bills([row(101)], world.garden))
    ok(import_bills([row(101, "停车费", 5000)], world.garden))

    assert [(m["touser"], m["template_id"]) for m in wechat.sent] == [
        (ALICE.openid, BILL_TEMPLATE)
    ]  # one consent, one push; ERIN never consented
    assert all(len(v["value"]) <= 20 for v in wechat.sent[0]["data"].values())
    assert len(messages(ALICE, "bill")) == 2
    assert len(messages(ERIN, "bill")) == 2


# ------------------------------------------------------------------------------ who may import


def test_admin_of_another_community_is_forbidden(svc: Services, world: SimpleNamespace) -> None:
    reply = import_bills([row(101)], world.garden, MAPLE_ADMIN)

    assert refused(reply) == "FORBIDDEN"
    assert all_bills(svc) == {}
    assert inbox_total(svc) == 0


def test_residents_cannot_import_bills(svc: Services, world: SimpleNamespace) -> None:
    assert refused(import_bills([row(101)], world.garden, ALICE.openid)) == "FORBIDDEN"
    assert refused(import_bills([row(101)], world.garden, "o-nobody")) == "UNAUTHENTICATED"
    assert all_bills(svc) == {}


def test_company_wide_admin_imports_for_any_community(
    svc: Services, world: SimpleNamespace
) -> None:
    report = ok(import_bills([row(101, amount=8800)], world.maple, CHIEF))

    assert report["counts"]["created"] == 1
    assert ok(list_bills(DAVE))["unpaid_total_fen"] == 8800


def test_unknown_community_is_not_found(svc: Services, world: SimpleNamespace) -> None:
    assert refused(import_bills([row(101)], "no-such-community", CHIEF)) == "NOT_FOUND"

"""What property staff see of bills (已交/未交 by building, the lists with owners) and the
payment reminders (催交) an admin sends, through the bills and notify functions."""

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
    guard, _ = accounts.ensure_account(db, "13900000003", now)
    staff.upsert(db, guard["_id"], "刘保安", "guard", [garden.community_id], now)
    accounts.bind_openid(db, guard["_id"], "staff", "o-staff-guard")
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


def summary(community_id: str, openid: str = ADMIN, **extra: Any) -> dict[str, Any]:
    event = {"action": "staff_summary", "community_id": community_id, **extra}
    return invoke("bills", event, openid)


def staff_list(community_id: str, status: str, openid: str = ADMIN, **extra: Any) -> dict[str, Any]:
    event = {"action": "staff_list", "community_id": community_id, "status": status, **extra}
    return invoke("bills", event, openid)


def remind(community_id: str, openid: str = ADMIN, **extra: Any) -> dict[str, Any]:
    return invoke(
        "notify", {"action": "remind_unpaid", "community_id": community_id, **extra}, openid
    )


def pay_and_settle(svc: Services, bank: FakeIcbc, who: SimpleNamespace, *bill_ids: str) -> None:
    order = ok(pay(who, *bill_ids))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    post_notify(urlencode(form))
    assert ok(get_order(who, order["order_no"]))["status"] == "paid"


@pytest.fixture
def garden(world: SimpleNamespace) -> str:
    return world.h101["community_id"]


@pytest.fixture
def maple(world: SimpleNamespace) -> str:
    return world.m101["community_id"]


@pytest.fixture
def paid_world(svc: Services, bank: FakeIcbc, world: SimpleNamespace) -> SimpleNamespace:
    """1栋-1单元-101 paid its October bills; its November fee is in a live order (支付中)."""
    verify(svc, ALICE)
    pay_and_settle(svc, bank, ALICE, world.oct_fee, world.oct_parking)
    ok(pay(ALICE, world.nov_fee))
    return world


# ------------------------------------------------------------------------------ staff_summary


def test_summary_counts_and_sums_paid_and_unpaid_by_building(
    paid_world: SimpleNamespace, garden: str
) -> None:
    data = ok(summary(garden))

    assert data["community_id"] == garden
    assert data["period"] is None
    assert (data["paid_count"], data["paid_fen"]) == (2, 17000)
    # A bill being paid (支付中) is still unpaid for the office.
    assert (data["unpaid_count"], data["unpaid_fen"]) == (3, 12500 + 15000 + 9000)
    assert data["by_building"] == [
        {
            "building": "1栋",
            "paid_count": 2,
            "paid_fen": 17000,
            "unpaid_count": 2,
            "unpaid_fen": 27500,
        },
        {"building": "2栋", "paid_count": 0, "paid_fen": 0, "unpaid_count": 1, "unpaid_fen": 9000},
    ]


def test_summary_for_one_period(paid_world: SimpleNamespace, garden: str) -> None:
    october = ok(summary(garden, period="2026-10"))
    november = ok(summary(garden, period="2026-11"))
    december = ok(summary(garden, period="2026-12"))

    assert (october["paid_count"], october["paid_fen"], october["unpaid_count"]) == (2, 17000, 0)
    assert (november["paid_count"], november["unpaid_count"], november["unpaid_fen"]) == (
        0,
        3,
        36500,
    )
    assert december["by_building"] == [] and december["unpaid_count"] == 0


def test_summary_covers_only_the_asked_community(paid_world: SimpleNamespace, maple: str) -> None:
    data = ok(summary(maple, "o-staff-maple"))

    assert (data["paid_count"], data["unpaid_count"], data["unpaid_fen"]) == (0, 1, 8800)


# ------------------------------------------------------------------------------ staff_list


def test_unpaid_list_shows_house_owner_name_and_masked_phone(
    paid_world: SimpleNamespace, garden: str
) -> None:
    data = ok(staff_list(garden, "unpaid"))

    assert data["total"] == 3
    assert (data["page"], data["page_size"]) == (1, 20)
    by_bill = {b["bill_id"]: b for b in data["items"]}
    assert set(by_bill) == {paid_world.nov_fee, paid_world.bob_fee, paid_world.carol_fee}
    alice = by_bill[paid_world.nov_fee]
    assert alice["owner_name"] == ALICE.name
    assert alice["owner_phone"] == "138****0001"
    assert alice["house_label"] == houses.label(paid_world.h101)
    assert alice["status"] == "paying"
    assert by_bill[paid_world.carol_fee]["owner_name"] == CAROL.name  # bound in the app or not
    text = str(data)
    for who in (ALICE, BOB, CAROL):
        assert who.phone not in text


def test_paid_list_shows_when_it_was_paid(paid_world: SimpleNamespace, garden: str) -> None:
    data = ok(staff_list(garden, "paid"))

    assert {b["bill_id"] for b in data["items"]} == {paid_world.oct_fee, paid_world.oct_parking}
    assert all(b["status"] == "paid" and b["paid_at"] for b in data["items"])


def test_list_pages_without_overlap(paid_world: SimpleNamespace, garden: str) -> None:
    first = ok(staff_list(garden, "unpaid", page=1, page_size=2))
    second = ok(staff_list(garden, "unpaid", page=2, page_size=2))
    third = ok(staff_list(garden, "unpaid", page=3, page_size=2))

    assert (first["total"], second["total"]) == (3, 3)
    assert len(first["items"]) == 2 and len(second["items"]) == 1 and third["items"] == []
    ids = [b["bill_id"] for b in first["items"] + second["items"]]
    assert len(set(ids)) == 3
    assert [b["house_id"] for b in first["items"] + second["items"]][-1] == paid_world.h201["_id"]
    assert refused(staff_list(garden, "unpaid", page_size=101)) == "INVALID_ARGUMENT"
    assert refused(staff_list(garden, "unpaid", page=0)) == "INVALID_ARGUMENT"


def test_list_filters_by_building_and_period(paid_world: SimpleNamespace, garden: str) -> None:
    second = ok(staff_list(garden, "unpaid", building="2栋"))
    october = ok(staff_list(garden, "unpaid", period="2026-10"))

    assert [b["bill_id"] for b in second["items"]] == [paid_world.carol_fee]
    assert october == {"items": [], "total": 0, "page": 1, "page_size": 20}


@pytest.mark.parametrize("action", ["staff_summary", "staff_list"])
def test_staff_views_are_only_for_admins_of_that_community(
    paid_world: SimpleNamespace, garden: str, action: str
) -> None:
    event = {"action": action, "community_id": garden, "status": "unpaid"}
    if action == "staff_summary":
        del event["status"]

    assert refused(invoke("bills", event, "o-staff-maple")) == "FORBIDDEN"
    assert refused(invoke("bills", event, "o-staff-guard")) == "FORBIDDEN"
    assert refused(invoke("bills", event, ALICE.openid)) == "FORBIDDEN"
    assert refused(invoke("bills", event, "o-nobody")) == "UNAUTHENTICATED"


# ------------------------------------------------------------------------------ remind_unpaid


def test_remind_tells_every_account_bound_to_each_unpaid_house(
    svc: Services, world: SimpleNamespace, garden: str
) -> None:
    counts = ok(remind(garden))

    # 101 (ALICE, ERIN), 102 (BOB), 201 (nobody bound in the app yet).
    assert counts == {
        "houses_unpaid": 3,
        "houses_reminded": 3,
        "houses_skipped": 0,
        "accounts_notified": 3,
    }
    for who, total in ((ALICE, "295.00"), (ERIN, "295.00"), (BOB, "150.00")):
        told = messages(who, "reminder")
        assert len(told) == 1, who
        assert total in told[0]["body"]
        assert told[0]["page"] == "/pages/bills/index"
    assert messages(DAVE, "reminder") == []  # another community
    assert messages(NOBODY, "reminder") == []


def test_second_remind_within_the_window_skips_the_houses(
    svc: Services, world: SimpleNamespace, garden: str
) -> None:
    ok(remind(garden))
    svc.clock.advance(3600)

    again = ok(remind(garden))

    assert again == {
        "houses_unpaid": 3,
        "houses_reminded": 0,
        "houses_skipped": 3,
        "accounts_notified": 0,
    }
    assert len(messages(ALICE, "reminder")) == 1
    assert len(messages(BOB, "reminder")) == 1


def test_remind_again_after_the_window(svc: Services, world: SimpleNamespace, garden: str) -> None:
    ok(remind(garden))
    svc.clock.advance(svc.settings.reminder_window_s)

    again = ok(remind(garden))

    assert again["houses_reminded"] == 3
    assert again["accounts_notified"] == 3
    assert len(messages(ALICE, "reminder")) == 2


def test_paid_houses_are_not_reminded(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace, garden: str
) -> None:
    verify(svc, BOB)
    pay_and_settle(svc, bank, BOB, world.bob_fee)

    counts = ok(remind(garden))

    assert counts["houses_unpaid"] == 2
    assert counts["accounts_notified"] == 2
    assert messages(BOB, "reminder") == []


def test_remind_only_the_listed_houses(svc: Services, world: SimpleNamespace, garden: str) -> None:
    counts = ok(remind(garden, house_ids=[world.h102["_id"]]))

    assert counts == {
        "houses_unpaid": 1,
        "houses_reminded": 1,
        "houses_skipped": 0,
        "accounts_notified": 1,
    }
    assert len(messages(BOB, "reminder")) == 1
    assert messages(ALICE, "reminder") == []


def test_listed_house_of_another_community_is_never_reminded(
    svc: Services, world: SimpleNamespace, garden: str
) -> None:
    counts = ok(remind(garden, house_ids=[world.m101["_id"]]))

    assert counts["houses_unpaid"] == 0
    assert messages(DAVE, "reminder") == []


def test_remind_is_only_for_admins_of_that_community(
    svc: Services, world: SimpleNamespace, garden: str
) -> None:
    assert refused(remind(garden, "o-staff-maple")) == "FORBIDDEN"
    assert refused(remind(garden, "o-staff-guard")) == "FORBIDDEN"
    assert refused(remind(garden, ALICE.openid)) == "FORBIDDEN"
    assert messages(ALICE, "reminder") == []
    assert svc.db["payment_reminders"].count_documents({}) == 0


def test_timer_sends_due_reminders_once_per_window(svc: Services, world: SimpleNamespace) -> None:
    # The world's bills fall due in 10 days; the daily timer reminds only once they are due.
    timer = {"Type": "Timer", "TriggerName": "daily", "Time": "2026-11-25T01:00:00Z"}
    before = handler("scheduler")(timer, {})
    assert messages(ALICE, "reminder") == []
    svc.clock.advance(11 * 24 * 3600)

    due = handler("scheduler")(timer, {})
    again = handler("scheduler")(timer, {})

    assert before["ok"] and due["ok"] and again["ok"]
    assert due["data"]["failed_jobs"] == []
    assert due["data"]["reminders_accounts_notified"] == 4  # ALICE, ERIN, BOB and DAVE
    assert again["data"]["reminders_accounts_notified"] == 0
    assert len(messages(ALICE, "reminder")) == 1
    assert len(messages(DAVE, "reminder")) == 1

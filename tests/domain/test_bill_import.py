"""admin.import_bills: bills keyed by house, period and fee item, a report per row, and each
new bill announced to the accounts bound to its house (inbox always, WeChat where consented)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from billing import (
    ADMIN,
    ALICE,
    BOB,
    DAVE,
    ERIN,
    MAPLE_ADMIN,
    NOTIFY_URL,
    get_order,
    import_estate,
    list_bills,
    messages,
    move_in,
    pay,
    post_notify,
    verify,
    wire,
)
from conftest import invoke
from round_trips import counting
from worlds import ok, refused, staff_account

from caiyun.clock import business_date
from caiyun.domain import bill_import, houses, pushes
from caiyun.errors import AppError
from caiyun.sandbox.fake_wechat import FakeWeChat
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.services import Services
from caiyun.stores import bills as bill_store

CHIEF = "o-staff-chief"
RESIDENT_APPID, RESIDENT_SECRET = "wxresident", "resident-secret-0123456789abcdef"
BILL_TEMPLATE = "tmpl-bill"


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
    return wire(
        services,
        bank,
        wechat_api_base=wechat.url,
        wechat_appid=RESIDENT_APPID,
        wechat_secret=RESIDENT_SECRET,
        wechat_templates={"bill": BILL_TEMPLATE},
        wechat_timeout_s=2.0,
    )


@pytest.fixture
def world(svc: Services) -> SimpleNamespace:
    """The estate (see ``billing.import_estate``) with everyone but CAROL in the app, an admin
    per community and one over every community, and no bills yet."""
    now = svc.clock.now()
    world = import_estate(svc)
    world.ids = move_in(
        svc,
        now,
        (ALICE, world.h101, "owner"),
        (ERIN, world.h101, "family"),
        (BOB, world.h102, "owner"),
        (DAVE, world.m101, "owner"),
    )
    for phone, openid, name, scope in (
        ("13900000001", ADMIN, "王经理", [world.garden]),
        ("13900000002", MAPLE_ADMIN, "周主管", [world.maple]),
        ("13900000003", CHIEF, "总部管理员", None),
    ):
        staff_account(svc, phone, name, "admin", scope, openid, now=now)
    world.due = (business_date(now) + timedelta(days=10)).isoformat()
    return world


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


def import_bills(
    rows: list[Any], community_id: str, openid: str = ADMIN, app: str = "staff"
) -> dict[str, Any]:
    event = {"action": "import_bills", "community_id": community_id, "rows": rows}
    return invoke("admin", event, openid, app)


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


def test_a_file_imported_in_chunks_numbers_its_rows_as_in_the_file(
    svc: Services, world: SimpleNamespace
) -> None:
    # An import job reading the file in chunks calls the import once per chunk.
    first = bill_import.import_bills(svc, world.garden, [row(101), row(102)])
    second = bill_import.import_bills(
        svc, world.garden, [row(201), {"room": 101}, row(101)], first_row=3
    )

    assert [(r.row, r.status) for r in first] == [(1, "created"), (2, "created")]
    assert [(r.row, r.status) for r in second] == [(3, "created"), (4, "error"), (5, "unchanged")]
    assert len(all_bills(svc)) == 3


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


# ------------------------------------------------------------------------------ batches


def months(*rooms: int) -> list[dict[str, Any]]:
    """Three months of 物业费 for each room, room by room."""
    return [
        row(room, period=f"2026-{month:02d}", due_date=f"2026-{month:02d}-28")
        for room in rooms
        for month in (9, 10, 11)
    ]


def test_a_batch_of_rows_costs_one_read_of_houses_and_one_insert(
    svc: Services, world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bill_import, "BATCH", 4)
    rows = months(101, 102, 201)  # 9 rows: batches of 4, 4 and 1

    with counting(svc) as (counting_svc, sent):
        results = bill_import.import_bills(counting_svc, world.garden, rows)

    assert [r.status for r in results] == ["created"] * 9
    assert [r.row for r in results] == list(range(1, 10))
    # Batch 1 reads 101 and 102, batch 2 only 201 (102 was read), batch 3 no house at all.
    assert sent.count("houses.aggregate") == 2
    assert sent.count("bills.insert_many") == 3
    assert "bills.insert_one" not in sent and "houses.find_one" not in sent
    assert "memberships.find" not in sent  # the accounts to tell came with the houses
    assert "communities.find_one" not in sent  # a house found proves the community
    assert len(all_bills(svc)) == 9


def test_reimport_across_batches_reads_each_batch_once_and_writes_nothing(
    svc: Services, world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bill_import, "BATCH", 4)
    rows = months(101, 102, 201)
    bill_import.import_bills(svc, world.garden, rows)
    before = all_bills(svc)

    with counting(svc) as (counting_svc, sent):
        results = bill_import.import_bills(counting_svc, world.garden, rows)

    assert [r.status for r in results] == ["unchanged"] * 9
    assert sorted(set(sent)) == ["bills.find", "bills.insert_many", "houses.aggregate"]
    assert len(sent) == 8  # three per batch, less the houses read by an earlier batch
    assert all_bills(svc) == before


def test_each_house_is_announced_once_even_when_its_rows_span_batches(
    svc: Services, world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bill_import, "BATCH", 2)

    report = ok(import_bills(months(101, 102), world.garden))

    assert report["counts"]["created"] == 6
    for who in (ALICE, ERIN, BOB):
        told = messages(who, "bill")
        assert len(told) == 1
        assert all(f"2026-{m} 物业费" in told[0]["body"] for m in ("09", "10", "11"))


def test_repeats_of_a_bill_across_batches_end_as_its_last_row_says(
    svc: Services, world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bill_import, "BATCH", 2)
    rows = [row(101), row(101), row(101, amount=12300), row(102), row(101, amount=12300)]

    report = ok(import_bills(rows, world.garden))

    assert [r["status"] for r in report["rows"]] == [
        "created",
        "unchanged",
        "updated",
        "created",
        "unchanged",
    ]
    assert all_bills(svc)[(world.h101["_id"], "2026-11", "物业费")]["amount_fen"] == 12300


def lock_after_the_batch_is_read(
    svc: Services, monkeypatch: pytest.MonkeyPatch, bill: dict[str, Any]
) -> None:
    """A payment locks ``bill`` just after the import has read its batch's bills."""
    read = bill_store.terms_of

    def then_a_payment_locks_it(*args: Any) -> Any:
        found = read(*args)
        svc.db["bills"].update_one(bill, {"$set": {"status": "locked", "order_no": "CY-race"}})
        return found

    monkeypatch.setattr(bill_store, "terms_of", then_a_payment_locks_it)


def test_a_bill_locked_while_its_batch_is_written_is_reported_and_left_alone(
    svc: Services, world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(import_bills([row(101), row(102, amount=15000)], world.garden))
    key = {"house_id": world.h101["_id"], "period": "2026-11", "item": "物业费"}
    lock_after_the_batch_is_read(svc, monkeypatch, key)

    results = bill_import.import_bills(
        svc, world.garden, [row(101, amount=1), row(102, amount=15500)]
    )

    assert [r.status for r in results] == ["error", "updated"]
    assert results[0].house_id == world.h101["_id"] and results[0].reason
    assert svc.db["bills"].find_one(key)["amount_fen"] == 12000


def test_a_key_repeated_in_the_batch_is_not_reported_when_another_bill_was_locked(
    svc: Services, world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(import_bills([row(101), row(102, amount=15000)], world.garden))
    locked = {"house_id": world.h101["_id"], "period": "2026-11", "item": "物业费"}
    repeated = {"house_id": world.h102["_id"], "period": "2026-11", "item": "物业费"}
    lock_after_the_batch_is_read(svc, monkeypatch, locked)

    results = bill_import.import_bills(
        svc,
        world.garden,
        [row(101, amount=1), row(102, amount=15500), row(102, amount=16000)],
    )

    # 102's first row was overwritten by its second, as if the rows were written one by one.
    assert [r.status for r in results] == ["error", "updated", "updated"]
    assert svc.db["bills"].find_one(repeated)["amount_fen"] == 16000


def test_unknown_community_is_refused_before_anything_is_written(
    svc: Services, world: SimpleNamespace
) -> None:
    for rows in ([], [row(101)], ["not a row"]):
        with pytest.raises(AppError) as refusal:
            bill_import.import_bills(svc, "no-such-community", rows)
        assert refusal.value.code == "NOT_FOUND"
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
    pushes.drain(svc)

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
    assert refused(import_bills([row(101)], world.garden, ALICE.openid, "resident")) == "FORBIDDEN"
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

"""What property staff see of bills (已交/未交 by building, the lists with owners) and the
payment reminders (催交) an admin sends, through the bills and notify functions."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from billing import (
    ADMIN,
    ALICE,
    BOB,
    CAROL,
    DAVE,
    ERIN,
    NOBODY,
    NOTIFY_URL,
    billed_world,
    get_order,
    messages,
    pay,
    post_notify,
    verify,
    wire,
)
from conftest import TEST_START, invoke
from round_trips import counted
from worlds import ok, refused

from caiyun.clock import SHANGHAI
from caiyun.domain import houses, reminders
from caiyun.sandbox.functions import handler
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.services import Services
from caiyun.stores import accounts, memberships


@pytest.fixture
def world(svc: Services) -> SimpleNamespace:
    """Residents of two communities with bills to pay (see ``billing.billed_world``), and a
    guard of 彩云花园."""
    return billed_world(svc, garden_staff=[("13900000003", "刘保安", "guard", "o-staff-guard")])


def summary(community_id: str, openid: str = ADMIN, **extra: Any) -> dict[str, Any]:
    event = {"action": "staff_summary", "community_id": community_id, **extra}
    return invoke("bills", event, openid, "staff")


def staff_list(community_id: str, status: str, openid: str = ADMIN, **extra: Any) -> dict[str, Any]:
    event = {"action": "staff_list", "community_id": community_id, "status": status, **extra}
    return invoke("bills", event, openid, "staff")


def remind(community_id: str, openid: str = ADMIN, **extra: Any) -> dict[str, Any]:
    event = {"action": "remind_unpaid", "community_id": community_id, **extra}
    return invoke("notify", event, openid, "staff")


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


def test_unpaid_list_shows_house_owner_name_and_full_phone_to_the_admin(
    paid_world: SimpleNamespace, garden: str
) -> None:
    data = ok(staff_list(garden, "unpaid"))

    assert data["total"] == 3
    assert (data["page"], data["page_size"]) == (1, 20)
    by_bill = {b["bill_id"]: b for b in data["items"]}
    assert set(by_bill) == {paid_world.nov_fee, paid_world.bob_fee, paid_world.carol_fee}
    alice = by_bill[paid_world.nov_fee]
    assert alice["owner_name"] == ALICE.name
    # Contract §1: an admin sees the phones of owners in their communities (to call them).
    assert alice["owner_phone"] == "13800000001"
    assert alice["house_label"] == houses.label(paid_world.h101)
    assert alice["status"] == "paying"
    assert by_bill[paid_world.carol_fee]["owner_name"] == CAROL.name  # bound in the app or not
    assert by_bill[paid_world.carol_fee]["owner_phone"] == CAROL.phone


def test_staff_list_of_one_house_and_of_the_bills_being_paid(
    paid_world: SimpleNamespace, garden: str
) -> None:
    paying = ok(staff_list(garden, "paying"))
    of_101 = ok(staff_list(garden, "unpaid", house_id=paid_world.h101["_id"]))

    assert [(b["bill_id"], b["status_name"]) for b in paying["items"]] == [
        (paid_world.nov_fee, "支付中")
    ]
    assert [b["bill_id"] for b in of_101["items"]] == [paid_world.nov_fee]
    assert {b["community_name"] for b in of_101["items"]} == {"彩云花园"}


# ------------------------------------------------------------------------------ staff_houses


def houses_of(community_id: str, openid: str = ADMIN, **narrow: Any) -> dict[str, Any]:
    event = {"action": "staff_houses", "community_id": community_id, **narrow}
    return invoke("bills", event, openid, "staff")


def test_each_house_is_listed_once_with_what_it_owes_and_paid_and_the_tab_counts(
    paid_world: SimpleNamespace, garden: str
) -> None:
    data = ok(houses_of(garden))

    assert data["counts"] == {"unpaid": 3, "paid": 0}
    assert data["total"] == 3
    assert [h["house_label"] for h in data["items"]] == [
        "1栋-1单元-101",
        "1栋-1单元-102",
        "2栋-1单元-201",
    ]
    alice = data["items"][0]
    assert alice == {
        "house_id": paid_world.h101["_id"],
        "house_label": "1栋-1单元-101",
        "building": "1栋",
        "unit": "1单元",
        "room": "101",
        "owner_name": ALICE.name,
        "owner_phone": ALICE.phone,  # in full: the admin calls about unpaid fees
        "status": "unpaid",  # its November fee is being paid, not paid
        "status_name": "未交",
        "unpaid_count": 1,
        "unpaid_fen": 12500,
        "paid_count": 2,
        "paid_fen": 17000,
    }
    assert data["items"][2]["owner_phone"] == CAROL.phone  # never bound in the app


def test_a_period_and_a_tab_narrow_the_houses(paid_world: SimpleNamespace, garden: str) -> None:
    october = ok(houses_of(garden, period="2026-10"))
    paid = ok(houses_of(garden, period="2026-10", status="paid"))
    owing = ok(houses_of(garden, status="unpaid", page_size=2))
    rest = ok(houses_of(garden, status="unpaid", page=2, page_size=2))

    assert october["counts"] == {"unpaid": 0, "paid": 1}
    assert [(h["house_label"], h["status_name"]) for h in paid["items"]] == [
        ("1栋-1单元-101", "已交")
    ]
    assert (owing["total"], len(owing["items"]), len(rest["items"])) == (3, 2, 1)
    assert owing["counts"] == rest["counts"] == {"unpaid": 3, "paid": 0}


def test_houses_are_found_by_building_unit_room_owner_name_and_phone(
    paid_world: SimpleNamespace, garden: str
) -> None:
    def labels(**narrow: Any) -> list[str]:
        return [h["house_label"] for h in ok(houses_of(garden, **narrow))["items"]]

    assert labels(building="2栋") == ["2栋-1单元-201"]
    assert labels(building="1栋", unit="1单元", room="102") == ["1栋-1单元-102"]
    assert labels(owner_name=BOB.name[1:]) == ["1栋-1单元-102"]
    assert labels(owner_name=".*") == []  # a name, not a pattern
    assert labels(owner_phone=BOB.phone) == ["1栋-1单元-102"]
    assert labels(owner_phone=BOB.phone[:-1] + "0") == []  # the whole phone, not a part
    assert refused(houses_of(garden, owner_phone="138")) == "INVALID_ARGUMENT"
    assert ok(houses_of(garden, room="999"))["counts"] == {"unpaid": 0, "paid": 0}


def test_houses_of_another_community_are_forbidden(
    paid_world: SimpleNamespace, garden: str, maple: str
) -> None:
    assert refused(houses_of(garden, "o-staff-maple")) == "FORBIDDEN"
    assert ok(houses_of(maple, "o-staff-maple"))["counts"] == {"unpaid": 1, "paid": 0}


def test_the_house_list_is_the_caller_lookup_and_one_query(
    svc: Services, paid_world: SimpleNamespace, garden: str
) -> None:
    with counted(svc) as sent:
        ok(houses_of(garden, owner_name="张"))

    assert sent == ["accounts.aggregate", "houses.aggregate"]


def test_staff_list_joins_the_houses_in_its_one_query(
    svc: Services, paid_world: SimpleNamespace, garden: str
) -> None:
    with counted(svc) as sent:
        data = ok(staff_list(garden, "unpaid"))

    assert sent == ["accounts.aggregate", "bills.aggregate"]
    assert all(b["house_label"] and b["owner_name"] for b in data["items"])


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

    assert refused(invoke("bills", event, "o-staff-maple", "staff")) == "FORBIDDEN"
    assert refused(invoke("bills", event, "o-staff-guard", "staff")) == "FORBIDDEN"
    assert refused(invoke("bills", event, ALICE.openid)) == "FORBIDDEN"
    assert refused(invoke("bills", event, "o-nobody")) == "UNAUTHENTICATED"


# ------------------------------------------------------------------------------ remind_unpaid


def counts(reminded: int, skipped: int, unbound: int, notified: int) -> dict[str, int]:
    """A reminder's reply; every owing house is reminded, skipped or unbound."""
    return {
        "houses_unpaid": reminded + skipped + unbound,
        "houses_reminded": reminded,
        "houses_skipped": skipped,
        "houses_unbound": unbound,
        "accounts_notified": notified,
    }


def join(svc: Services, who: SimpleNamespace, house: dict[str, Any], role: str) -> None:
    """Make ``who`` (already an account) a member of another house."""
    account = accounts.by_phone(svc.db, who.phone)
    memberships.add(svc.db, house, account["_id"], role, svc.clock.now(), account["_id"])


def test_remind_tells_every_account_bound_to_each_unpaid_house(
    svc: Services, world: SimpleNamespace, garden: str
) -> None:
    replied = ok(remind(garden))

    # 101 (ALICE, ERIN), 102 (BOB); 201 owes too but nobody is bound to it in the app yet.
    assert replied == counts(reminded=2, skipped=0, unbound=1, notified=3)
    for who, total in ((ALICE, "295.00"), (ERIN, "295.00"), (BOB, "150.00")):
        told = messages(who, "reminder")
        assert len(told) == 1, who
        assert total in told[0]["body"]
        assert told[0]["page"] == "/pages/bills/index"
    assert "彩云花园 1栋-1单元-101：3 笔，共 295.00 元" in messages(ALICE, "reminder")[0]["body"]
    assert messages(DAVE, "reminder") == []  # another community
    assert messages(NOBODY, "reminder") == []


def test_an_owner_reminded_about_one_house_is_still_told_about_another(
    svc: Services, world: SimpleNamespace, garden: str
) -> None:
    # Issue 15.2 as reported: an owner of houses in two communities, reminded about the first,
    # was never told about the second ({houses_reminded: 1, accounts_notified: 0}).
    join(svc, ALICE, world.m101, "owner")
    maple = world.m101["community_id"]
    assert ok(remind(maple, "o-staff-maple")) == counts(
        reminded=1, skipped=0, unbound=0, notified=2
    )

    replied = ok(remind(garden))

    assert replied == counts(reminded=2, skipped=0, unbound=1, notified=3)
    first, second = messages(ALICE, "reminder")  # newest first
    assert "彩云花园 1栋-1单元-101" in first["body"] and "295.00" in first["body"]
    assert "枫林苑 1栋-1单元-101" in second["body"] and "88.00" in second["body"]


def test_one_message_per_account_lists_each_house_and_its_amount(
    svc: Services, world: SimpleNamespace, garden: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ALICE is also family of 102; with one house per batch her two houses are claimed in two
    # batches and still reach her as one message.
    monkeypatch.setattr(reminders, "BATCH", 1)
    join(svc, ALICE, world.h102, "family")

    replied = ok(remind(garden))

    assert replied == counts(reminded=2, skipped=0, unbound=1, notified=3)
    (told,) = messages(ALICE, "reminder")
    assert told["body"] == (
        "以下房屋有待缴费用，合计 445.00 元："
        "彩云花园 1栋-1单元-101：3 笔，共 295.00 元；"
        "彩云花园 1栋-1单元-102：1 笔，共 150.00 元。请及时缴纳。"
    )
    assert len(messages(BOB, "reminder")) == 1 and len(messages(ERIN, "reminder")) == 1


def test_a_house_added_to_an_account_later_in_the_window_is_still_reminded(
    svc: Services, world: SimpleNamespace, garden: str
) -> None:
    ok(remind(garden))
    join(svc, ALICE, world.h102, "family")
    svc.clock.advance(3600)

    again = ok(remind(garden))

    # 101's payers and BOB were told already; ALICE has not heard about 102.
    assert again == counts(reminded=1, skipped=1, unbound=1, notified=1)
    newest = messages(ALICE, "reminder")[0]
    assert "1栋-1单元-102" in newest["body"] and "1栋-1单元-101" not in newest["body"]


def test_tenants_are_reminded_unless_the_setting_leaves_them_out(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace, garden: str
) -> None:
    join(svc, NOBODY, world.h102, "tenant")
    assert ok(remind(garden, house_ids=[world.h102["_id"]]))["accounts_notified"] == 2
    assert len(messages(NOBODY, "reminder")) == 1

    wire(svc, bank, reminder_include_tenants=False)
    svc.clock.advance(svc.settings.reminder_window_s)
    replied = ok(remind(garden, house_ids=[world.h102["_id"]]))

    assert replied == counts(reminded=1, skipped=0, unbound=0, notified=1)
    assert len(messages(NOBODY, "reminder")) == 1 and len(messages(BOB, "reminder")) == 2


def test_remind_goes_through_every_batch_of_unpaid_houses(
    svc: Services, world: SimpleNamespace, garden: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One house per batch: the same outcome as one batch, so no batch is lost or repeated.
    monkeypatch.setattr(reminders, "BATCH", 1)

    assert ok(remind(garden)) == counts(reminded=2, skipped=0, unbound=1, notified=3)
    for who in (ALICE, ERIN, BOB):
        assert len(messages(who, "reminder")) == 1, who


def test_second_remind_within_the_window_skips_the_houses(
    svc: Services, world: SimpleNamespace, garden: str
) -> None:
    ok(remind(garden))
    svc.clock.advance(3600)

    again = ok(remind(garden))

    assert again == counts(reminded=0, skipped=2, unbound=1, notified=0)
    assert len(messages(ALICE, "reminder")) == 1
    assert len(messages(BOB, "reminder")) == 1


def test_remind_again_after_the_window(svc: Services, world: SimpleNamespace, garden: str) -> None:
    ok(remind(garden))
    svc.clock.advance(svc.settings.reminder_window_s)

    again = ok(remind(garden))

    assert again == counts(reminded=2, skipped=0, unbound=1, notified=3)
    assert len(messages(ALICE, "reminder")) == 2


def test_paid_houses_are_not_reminded(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace, garden: str
) -> None:
    verify(svc, BOB)
    pay_and_settle(svc, bank, BOB, world.bob_fee)

    assert ok(remind(garden)) == counts(reminded=1, skipped=0, unbound=1, notified=2)
    assert messages(BOB, "reminder") == []


def test_remind_only_the_listed_houses(svc: Services, world: SimpleNamespace, garden: str) -> None:
    replied = ok(remind(garden, house_ids=[world.h102["_id"]]))

    assert replied == counts(reminded=1, skipped=0, unbound=0, notified=1)
    assert len(messages(BOB, "reminder")) == 1
    assert messages(ALICE, "reminder") == []


def test_listed_house_of_another_community_is_never_reminded(
    svc: Services, world: SimpleNamespace, garden: str
) -> None:
    counts = ok(remind(garden, house_ids=[world.m101["_id"]]))

    assert counts["houses_unpaid"] == 0
    assert messages(DAVE, "reminder") == []


def test_a_reminder_costs_three_commands_per_batch_and_one_read_per_run(
    svc: Services, world: SimpleNamespace, garden: str
) -> None:
    with counted(svc) as sent:
        ok(remind(garden))

    assert [
        c for c in sent if not c.startswith(("messages.", "subscription_consents.", "pushes."))
    ] == [
        "accounts.aggregate",  # the admin
        "bills.aggregate",  # the owing houses, with count and sum
        "houses.find",  # the batch's houses: their addresses
        "memberships.find",  # and who may pay each
        "communities.find",  # a community's name, the first time one of its houses owes
        "payment_reminders.insert_many",  # a slot per (house, payer)
        "payment_reminders.find",  # this run's slots, by account
    ]


def test_remind_is_only_for_admins_of_that_community(
    svc: Services, world: SimpleNamespace, garden: str
) -> None:
    assert refused(remind(garden, "o-staff-maple")) == "FORBIDDEN"
    assert refused(remind(garden, "o-staff-guard")) == "FORBIDDEN"
    event = {"action": "remind_unpaid", "community_id": garden}
    assert refused(invoke("notify", event, ALICE.openid)) == "FORBIDDEN"
    assert messages(ALICE, "reminder") == []
    assert svc.db["payment_reminders"].count_documents({}) == 0


def test_the_timer_keeps_quiet_hours_the_same_due_bills_wait_from_3am_until_10am(
    svc: Services, world: SimpleNamespace
) -> None:
    # The world starts at 10:00 on a Wednesday (TEST_START) with bills due in 10 days; 03:00 in
    # Shanghai eleven days later is past their due date but before the reminder hours.
    assert svc.clock.now() - TEST_START < timedelta(minutes=1)
    timer = {"Type": "Timer", "TriggerName": "daily", "Time": "2026-12-05T19:00:00Z"}
    svc.clock.advance((10 * 24 + 17) * 3600)
    assert svc.clock.now().astimezone(SHANGHAI).hour == 3

    at_night = handler("scheduler")(timer, {})
    assert at_night["ok"] and at_night["data"]["reminders_accounts_notified"] == 0
    assert messages(ALICE, "reminder") == []

    svc.clock.advance(7 * 3600)
    assert svc.clock.now().astimezone(SHANGHAI).hour == 10
    by_day = handler("scheduler")(timer, {})
    assert by_day["ok"] and by_day["data"]["reminders_accounts_notified"] == 4
    assert by_day["data"]["reminders_houses_reminded"] == 3  # 101, 102 and 枫林苑's 101
    assert by_day["data"]["reminders_houses_unbound"] == 1  # 201: nobody bound
    assert len(messages(ALICE, "reminder")) == 1


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


def test_reminders_cut_short_by_the_budget_resume_and_tell_each_payer_once(
    svc: Services, world: SimpleNamespace
) -> None:
    svc.clock.advance(11 * 24 * 3600)  # the world's bills are due
    one_at_a_time = dataclasses.replace(
        svc, settings=svc.settings.model_copy(update={"scheduler_batch_size": 1})
    )
    spent = svc.clock.now()  # the budget is over once a batch is done
    runs = []
    while not runs or runs[-1].get("unfinished"):
        runs.append(reminders.remind_overdue(one_at_a_time, until=spent))
        assert len(runs) < 20

    # Four owing houses claimed one per run, then four payers told one per run.
    assert len(runs) == 9
    assert sum(r["houses_unpaid"] for r in runs) == 4
    assert sum(r["houses_reminded"] for r in runs) == 3
    assert sum(r["accounts_notified"] for r in runs) == 4
    for who in (ALICE, ERIN, BOB, DAVE):
        assert len(messages(who, "reminder")) == 1, who
    # The window's run is finished: later invocations in it do nothing.
    assert reminders.remind_overdue(svc)["accounts_notified"] == 0

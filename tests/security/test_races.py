"""Races: the same thing done twice at once leaves exactly one outcome.

Threads released together by a barrier call the real ``main_handler``. What is already proven
elsewhere is not repeated here:

* two payers for one bill, a double-tapped pay, 100 replays of one notify (8 threads), notify
  against the expiry job and the order query, two expiry runs: tests/security/test_payment_races.py;
  a late payment for an expired order while a second payer holds the bill:
  tests/domain/test_icbc_notify.py (``..._now_in_another_live_order_is_flagged_for_refund``);
* a rating against the 3-day auto-close, two timer runs at once:
  tests/domain/test_scheduler_auto_close.py;
* two admins dispatching one repair to different repairmen, and a repair created six times at once
  with one request_id: tests/domain/test_repair_flow.py;
* two guards admitting one pass: tests/domain/test_visitor_pass.py; two admins resolving one
  complaint: tests/domain/test_complaints.py; parallel guesses at one SMS code:
  tests/domain/test_sms_code_rules.py.

Added here: two imports of the same owner file and of the same bill file at once; create with one
request_id double-submitted for complaints and visitors (and, for repairs, what the retry after
the race gets); a double-tapped dispatch to one repairman; dispatch against the resident's cancel.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import invoke

from caiyun.clock import business_date
from caiyun.domain import accounts
from caiyun.domain.owner_import import import_owners
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import houses as house_store
from caiyun.stores import memberships, staff

GARDEN = {"province": "广东省", "city": "深圳市", "district": "南山区", "name": "彩云花园"}
BAY = {"province": "广东省", "city": "广州市", "district": "天河区", "name": "星河湾"}
BOSS, BOSS2, ADMIN = "o-staff-boss", "o-staff-boss2", "o-staff-admin"
FIXER, GUARD = "o-staff-fixer", "o-staff-guard"
ROOMS = 10


def person(n: int, name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, phone=f"1380000{n:04d}", openid=f"o-resident-{n}")


ALICE = person(1, "张伟")  # owner of 1栋-1单元-101
OWNERS = [ALICE] + [person(100 + i, f"业主{i}") for i in range(1, ROOMS)]  # rooms 101..110


def ok(reply: dict[str, Any]) -> Any:
    assert reply["ok"] is True, reply
    return reply["data"]


def together(*calls: Callable[[], Any]) -> list[Any]:
    """Run every call in its own thread, released at the same moment; results in order."""
    barrier = threading.Barrier(len(calls), timeout=10)
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    return results


def _staff(svc: Services, phone: str, name: str, role: Any, scope: Any, openid: str) -> str:
    now = svc.clock.now()
    account, _ = account_store.ensure_account(svc.db, phone, now, name)
    staff.upsert(svc.db, account["_id"], name, role, scope, now)
    accounts.bind_openid(svc.db, account["_id"], "staff", openid)
    return account["_id"]


@pytest.fixture
def world(services: Services) -> SimpleNamespace:
    """彩云花园 with rooms 101..110, each bound to its owner, and its staff."""
    db, now = services.db, services.clock.now()
    rows = [
        {"building": 1, "unit": 1, "room": 101 + i, "owner_name": o.name, "owner_phone": o.phone}
        for i, o in enumerate(OWNERS)
    ]
    garden = import_owners(services, GARDEN, rows)
    ids: dict[str, str] = {}
    house_ids = [r.house_id for r in garden.rows]
    for who, house_id in zip(OWNERS, house_ids, strict=True):
        account = account_store.by_phone(db, who.phone)
        memberships.add(db, house_store.get(db, house_id), account["_id"], "owner", now, "test")
        accounts.bind_openid(db, account["_id"], "resident", who.openid)
        ids[who.openid] = account["_id"]
    cid = garden.community_id
    for phone, name, role, scope, openid in (
        ("13900000001", "总部张总", "admin", None, BOSS),
        ("13900000002", "总部李总", "admin", None, BOSS2),
        ("13900000003", "王经理", "admin", [cid], ADMIN),
        ("13900000004", "李师傅", "repairman", [cid], FIXER),
        ("13900000005", "赵保安", "guard", [cid], GUARD),
    ):
        ids[openid] = _staff(services, phone, name, role, scope, openid)
    return SimpleNamespace(community_id=cid, house_ids=house_ids, ids=ids)


def inbox_titles(svc: Services, account_id: str) -> list[str]:
    return [m["title"] for m in svc.db["messages"].find({"account_id": account_id})]


# ------------------------------------------------------------------------------ imports


def test_two_imports_of_the_same_owner_file_at_once_make_each_thing_once(
    services: Services, world: SimpleNamespace
) -> None:
    rows = [
        {
            "building": 1 + i // 10,
            "unit": 1,
            "room": 100 + i,
            "owner_name": f"星河{i}",
            "owner_phone": f"1360000{i:04d}",
        }
        for i in range(30)
    ]
    event = {"action": "import_owners", "community": BAY, "rows": rows}

    replies = together(
        *[lambda who=who: invoke("admin", event, who, "staff") for who in (BOSS, BOSS2) * 2]
    )

    reports = [ok(r) for r in replies]
    db = services.db
    [bay] = db["communities"].find({"name": BAY["name"]})
    assert [r["community_created"] for r in reports].count(True) == 1
    assert {r["community_id"] for r in reports} == {bay["_id"]}
    assert db["houses"].count_documents({"community_id": bay["_id"]}) == len(rows)
    phones = [r["owner_phone"] for r in rows]
    assert db["accounts"].count_documents({"phone": {"$in": phones}}) == len(rows)
    for number in range(1, len(rows) + 1):
        statuses = Counter(
            next(x["status"] for x in r["rows"] if x["row"] == number) for r in reports
        )
        assert statuses == {"created": 1, "unchanged": 3}, (number, statuses)


def test_two_imports_of_the_same_bill_file_at_once_make_each_bill_once_and_tell_once(
    services: Services, world: SimpleNamespace
) -> None:
    due = business_date(services.clock.now()).isoformat()
    rows = [
        {
            "building": 1,
            "unit": 1,
            "room": 101 + i,
            "period": "2026-11",
            "item": "物业费",
            "amount_fen": 12000 + i,
            "due_date": due,
        }
        for i in range(ROOMS)
    ]
    event = {"action": "import_bills", "community_id": world.community_id, "rows": rows}

    replies = together(
        *[lambda who=who: invoke("admin", event, who, "staff") for who in (ADMIN, BOSS) * 2]
    )

    reports = [ok(r) for r in replies]
    db = services.db
    assert db["bills"].count_documents({"community_id": world.community_id}) == ROOMS
    for number in range(1, ROOMS + 1):
        statuses = Counter(
            next(x["status"] for x in r["rows"] if x["row"] == number) for r in reports
        )
        assert statuses == {"created": 1, "unchanged": 3}, (number, statuses)
    # Each owner is told of their new bill once, however many imports carried it.
    for who in OWNERS:
        assert inbox_titles(services, world.ids[who.openid]).count("新账单") == 1, who.name


# ------------------------------------------------------------------------------ create twice


def _repair(world: SimpleNamespace, request_id: str) -> tuple[str, dict[str, Any]]:
    return "repair", {
        "action": "create",
        "house_id": world.house_ids[0],
        "category": "water_electric",
        "description": "厨房水管漏水",
        "contact_phone": ALICE.phone,
        "request_id": request_id,
    }


def _complaint(world: SimpleNamespace, request_id: str) -> tuple[str, dict[str, Any]]:
    return "complaint", {
        "action": "create",
        "house_id": world.house_ids[0],
        "kind": "complaint",
        "type": "environment",
        "contact_phone": ALICE.phone,
        "content": "楼下垃圾桶三天没有清理，气味很大",
        "request_id": request_id,
    }


def _visitor(world: SimpleNamespace, request_id: str) -> tuple[str, dict[str, Any]]:
    return "visitor", {
        "action": "register",
        "house_id": world.house_ids[0],
        "name": "王芳",
        "phone": "13612345678",
        "count": 2,
        "request_id": request_id,
    }


CREATES = {
    "repair": (_repair, "repairs", "reporter_id", "repair_id"),
    "complaint": (_complaint, "complaints", "account_id", "complaint_id"),
    "visitor": (_visitor, "visitors", "host_id", "visitor_id"),
}


@pytest.mark.parametrize("kind", list(CREATES))
def test_a_create_double_submitted_with_one_request_id_creates_one(
    services: Services, world: SimpleNamespace, kind: str
) -> None:
    build, collection, owner_field, id_field = CREATES[kind]
    function, event = build(world, "8c1f6a2e-double-tap")
    call = lambda: invoke(function, event, ALICE.openid)  # noqa: E731

    replies = together(*[call] * 6)

    owner = {owner_field: world.ids[ALICE.openid]}
    assert services.db[collection].count_documents(owner) == 1
    created = {r["data"][id_field] for r in replies if r["ok"]}
    assert len(created) == 1, replies
    for refused in (r["error"] for r in replies if not r["ok"]):
        # A retry that overlaps the first call is told to retry, never given a second one.
        assert refused["code"] == "CONFLICT"
        assert refused["details"]["retryable"] is True
    # The app's retry after the race gets the first result back.
    assert ok(call())[id_field] in created
    assert services.db[collection].count_documents(owner) == 1


# ------------------------------------------------------------------------------ dispatch


def _report(world: SimpleNamespace, n: int = 0) -> str:
    _, event = _repair(world, f"report-{n}")
    return ok(invoke("repair", event, ALICE.openid))["repair_id"]


def test_a_double_tapped_dispatch_to_one_repairman_dispatches_once_and_tells_once(
    services: Services, world: SimpleNamespace
) -> None:
    rid = _report(world)
    event = {"action": "dispatch", "repair_id": rid, "repairman_id": world.ids[FIXER]}

    replies = together(*[lambda: invoke("repair", event, ADMIN, "staff")] * 4)

    assert any(r["ok"] for r in replies)
    assert all(r["error"]["code"] == "CONFLICT" for r in replies if not r["ok"])
    doc = services.db["repairs"].find_one({"_id": rid})
    assert [e["event"] for e in doc["timeline"]] == ["created", "dispatched"]
    assert inbox_titles(services, world.ids[FIXER]) == ["新的维修工单"]
    assert inbox_titles(services, world.ids[ALICE.openid]).count("报修已派单") == 1


def test_dispatch_racing_the_residents_cancel_ends_one_way_only(
    services: Services, world: SimpleNamespace
) -> None:
    outcomes = Counter()
    for n in range(8):
        rid = _report(world, n)
        dispatch = {"action": "dispatch", "repair_id": rid, "repairman_id": world.ids[FIXER]}
        cancel = {"action": "cancel", "repair_id": rid}

        sent, withdrawn = together(
            lambda d=dispatch: invoke("repair", d, ADMIN, "staff"),
            lambda c=cancel: invoke("repair", c, ALICE.openid),
        )

        doc = services.db["repairs"].find_one({"_id": rid})
        assert [sent["ok"], withdrawn["ok"]].count(True) == 1, (sent, withdrawn)
        loser = withdrawn if sent["ok"] else sent
        assert loser["error"]["code"] == "CONFLICT"
        assert doc["status"] == ("dispatched" if sent["ok"] else "cancelled")
        assert len(doc["timeline"]) == 2
        outcomes[doc["status"]] += 1
    # The repairman is told only of the repairs that were really sent to him.
    assert inbox_titles(services, world.ids[FIXER]).count("新的维修工单") == outcomes["dispatched"]

"""Races around payment: payers competing for one bill, ICBC resending a notify from many
threads, the notify against the expiry job and the order query. Each must transition once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

from billing import (
    ADMIN,
    ALICE,
    BOB,
    ERIN,
    NOTIFY_URL,
    charges,
    get_order,
    list_bills,
    messages,
    notifies,
    pay,
    post_notify,
    reply_of,
    sign_autodebit,
    status_of,
    verify,
)
from conftest import invoke
from worlds import ok

from caiyun.domain import autodebit_charges, payments
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.sandbox.icbc_bank import OPENING_BALANCE_FEN
from caiyun.services import Services
from caiyun.stores.orders import ORDERS


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
    assert charges(svc) == 1
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
    live = list(svc.db[ORDERS].find({"status": "pending"}))
    assert [o["_id"] for o in live] == [won[0]["data"]["order_no"]]
    bill = svc.db["bills"].find_one({"_id": world.oct_fee})
    assert bill["status"] == "locked"
    assert bill["order_no"] == won[0]["data"]["order_no"]
    # A loser may have had ICBC open its WeChat Pay order before losing the bills: that order is
    # on our file, closed, and its answer never reached the app, so nobody can pay it.
    asked = {o["_id"] for o in svc.db["sandbox_icbc_orders"].find({})}
    ours = {o["_id"]: o["status"] for o in svc.db[ORDERS].find({})}
    assert asked <= set(ours)
    assert sorted(ours.values()) == ["closed"] * (len(ours) - 1) + ["pending"]


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
        assert svc.db[ORDERS].count_documents({"status": "pending"}) == 1
        # Let the winner's order lapse so the next round starts from unpaid bills.
        svc.clock.advance(svc.settings.order_ttl_s + 1)
        payments.expire_orders(svc)
        assert svc.db["bills"].count_documents({"status": "locked"}) == 0


def test_double_tap_on_pay_makes_one_order(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)

    replies = race([lambda: pay(ALICE, world.oct_fee, world.nov_fee)] * 4, 4)

    assert sum(r["ok"] for r in replies) == 1
    assert svc.db[ORDERS].count_documents({"status": "pending"}) == 1


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
    assert charges(svc) == 1
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
    assert svc.db[ORDERS].count_documents({"status": "pending"}) == 0


def test_autodebit_runs_at_once_charge_each_bill_once(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    sign_autodebit(svc, ALICE)
    svc.clock.advance(11 * 24 * 3600)  # the world's bills are now due

    race([lambda: autodebit_charges.run_autodebit(svc)] * 4, 4)

    paid = list(svc.db[ORDERS].find({"status": "paid"}))
    assert len(paid) == 1
    assert paid[0]["amount_fen"] == 12000 + 5000 + 12500
    assert svc.db[ORDERS].count_documents({"status": "pending"}) == 0
    balance = ok(invoke("account", {"action": "wallet"}, ALICE.openid))["balance_fen"]
    assert balance == OPENING_BALANCE_FEN - 29500
    assert charges(svc) == 1
    assert ok(list_bills(ALICE))["unpaid_total_fen"] == 0


def test_admins_reminding_at_once_reach_each_account_once(
    svc: Services, world: SimpleNamespace
) -> None:
    event = {"action": "remind_unpaid", "community_id": world.h101["community_id"]}

    replies = race([lambda: invoke("notify", event, ADMIN, "staff")] * 6, 6)

    counts = [ok(r) for r in replies]
    assert sum(c["accounts_notified"] for c in counts) == 3  # ALICE, ERIN, BOB
    assert sum(c["houses_reminded"] for c in counts) == 2  # 101 and 102 (nobody bound to 201)
    # Every run saw every owing house: reminded once, skipped by the other runs.
    assert all(c["houses_unpaid"] == 3 and c["houses_unbound"] == 1 for c in counts)
    for who in (ALICE, ERIN, BOB):
        assert len(messages(who, "reminder")) == 1

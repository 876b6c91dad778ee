"""The timer closes repairs left unrated for three days: every one, once, whoever races it."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import TEST_START, fresh_services, invoke, make_settings
from worlds import GARDEN

from caiyun.clock import OffsetClock
from caiyun.domain import accounts, messaging, repairs, scheduler
from caiyun.domain.owner_import import import_owners
from caiyun.sandbox.functions import handler
from caiyun.sandbox.server import create_server
from caiyun.services import Services, install_services
from caiyun.stores import accounts as account_store
from caiyun.stores import houses as house_store
from caiyun.stores import memberships, staff
from caiyun.stores.repairs import REPAIRS

DAY = 24 * 3600
OWNER_OPENID = "o-res-owner"


@dataclasses.dataclass(frozen=True)
class World:
    house_id: str
    owner: dict[str, Any]
    admin: dict[str, Any]
    fixer: dict[str, Any]


@pytest.fixture
def services() -> Iterator[Services]:
    """Room for the dozens of repairs one resident files here (issue 17.4's daily limits)."""
    yield from fresh_services(
        make_settings(repairs_per_account_per_day=100, repairs_per_house_per_day=100)
    )


def build_world(services: Services) -> World:
    """One owned house in 彩云花园 with its admin and repairman."""
    db, now = services.db, services.clock.now()
    rows = [
        {
            "building": 1,
            "unit": 1,
            "room": "101",
            "owner_name": "张三",
            "owner_phone": "13800000101",
        }
    ]
    report = import_owners(services, GARDEN, rows)
    house = house_store.get(db, report.rows[0].house_id or "")
    assert house is not None
    owner = account_store.by_phone(db, "13800000101")
    assert owner is not None
    memberships.add(db, house, owner["_id"], "owner", now, "test")
    accounts.bind_openid(db, owner["_id"], "resident", OWNER_OPENID)
    people = {}
    for phone, name, role in (
        ("13700000001", "物业小王", "admin"),
        ("13700000002", "李师傅", "repairman"),
    ):
        account, _ = account_store.ensure_account(db, phone, now, name)
        people[role] = staff.upsert(db, account["_id"], name, role, [report.community_id], now)
    return World(house["_id"], owner, people["admin"], people["repairman"])


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


def awaiting_rating(services: Services, world: World, count: int) -> list[str]:
    """``count`` repairs the repairman has just finished."""
    photo = services.storage.upload_target(f"test/{world.fixer['_id']}", "done.jpg").file_id
    assert photo is not None
    ids = []
    for i in range(count):
        created = repairs.create(
            services,
            world.owner,
            house_id=world.house_id,
            category="other",
            description=f"问题{i}",
            contact_phone="13800000101",
            images=[],
        )
        rid = created["repair_id"]
        repairs.dispatch(services, world.admin, rid, world.fixer["_id"])
        repairs.complete(services, world.fixer, rid, [photo], "")
        ids.append(rid)
    return ids


def advance(services: Services, seconds: float) -> None:
    """Move the sandbox clock, as ``POST /dev/clock`` does."""
    assert isinstance(services.clock, OffsetClock)
    services.clock.advance(seconds)


def closed_by(counts: dict) -> int:
    """How many repairs a timer run closed, after checking no job failed."""
    assert counts["failed_jobs"] == []
    return counts["repairs_auto_closed"]


def fire_timer() -> dict[str, Any]:
    """The SCF timer event, as the platform delivers it."""
    event = {"Type": "Timer", "TriggerName": "scheduler-timer", "Time": "2026-01-01T00:00:00Z"}
    reply = handler("scheduler")(event, {"request_id": "timer"})
    assert reply["ok"] is True, reply
    return reply["data"]


def doc(services: Services, rid: str) -> dict[str, Any]:
    found = services.db[REPAIRS].find_one({"_id": rid})
    assert found is not None
    return found


def completions(services: Services, rid: str) -> list[str]:
    """The timeline entries that completed this repair."""
    return [e["event"] for e in doc(services, rid)["timeline"] if e["status"] == "completed"]


def auto_close_messages(services: Services, world: World) -> int:
    items, _, _ = messaging.inbox(services, world.owner["_id"], "resident", False, 1, 100)
    return sum(1 for m in items if m["title"] == "报修已自动完成")


def run_together(*targets: Callable[[], Any]) -> list[Any]:
    """Start every target at the same moment in its own thread; their results in order."""
    barrier = threading.Barrier(len(targets))
    results: list[Any] = [None] * len(targets)

    def run(i: int, target: Callable[[], Any]) -> None:
        barrier.wait()
        results[i] = target()

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_after_three_days_the_timer_closes_the_repair_and_tells_the_resident(
    services: Services, world: World
) -> None:
    [rid] = awaiting_rating(services, world, 1)
    advance(services, 3 * DAY - 60)
    assert closed_by(fire_timer()) == 0
    assert doc(services, rid)["status"] == "awaiting_rating"

    advance(services, 61)
    assert closed_by(fire_timer()) == 1
    detail = repairs.detail(services, world.owner, rid)
    assert detail["status"] == "completed" and detail["auto_closed"] is True
    assert detail["rating"] is None
    last = detail["timeline"][-1]
    assert (last["event"], last["status"], last["actor_role"]) == (
        "auto_closed",
        "completed",
        "system",
    )
    assert auto_close_messages(services, world) == 1
    # Rating afterwards is refused and changes nothing; a later run finds nothing to do.
    reply = invoke("repair", {"action": "rate", "repair_id": rid, "stars": 5}, OWNER_OPENID)
    assert reply["error"]["code"] == "CONFLICT"
    assert fire_timer()["repairs_auto_closed"] == 0
    assert completions(services, rid) == ["auto_closed"]


def test_over_the_sandbox_routes_moving_the_clock_three_days_lets_the_timer_close(
    tmp_path: Path,
) -> None:
    server = create_server("127.0.0.1", 0, tmp_path / "sandbox", seed=False, clock_start=TEST_START)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        [rid] = awaiting_rating(server.services, build_world(server.services), 1)
        timer = requests.post(f"{server.url}/timer/scheduler", timeout=10).json()
        assert timer["ok"] is True
        assert closed_by(timer["data"]) == 0
        moved = requests.post(
            f"{server.url}/dev/clock", json={"advance_seconds": 3 * DAY}, timeout=10
        )
        assert moved.status_code == 200
        timer = requests.post(f"{server.url}/timer/scheduler", timeout=10).json()
        assert timer["ok"] is True
        assert closed_by(timer["data"]) == 1
        assert completions(server.services, rid) == ["auto_closed"]
    finally:
        server.shutdown()
        thread.join(10)


def test_the_three_days_count_from_the_finished_work_not_the_report(
    services: Services, world: World
) -> None:
    created = repairs.create(
        services,
        world.owner,
        house_id=world.house_id,
        category="other",
        description="旧问题",
        contact_phone="13800000101",
        images=[],
    )
    rid = created["repair_id"]
    advance(services, 5 * DAY)  # pending for days: not a rating window
    assert fire_timer()["repairs_auto_closed"] == 0
    repairs.dispatch(services, world.admin, rid, world.fixer["_id"])
    advance(services, 5 * DAY)  # dispatched for days: not a rating window either
    photo = services.storage.upload_target(f"test/{world.fixer['_id']}", "done.jpg").file_id
    assert photo is not None
    repairs.complete(services, world.fixer, rid, [photo], "")
    advance(services, 2 * DAY)
    assert fire_timer()["repairs_auto_closed"] == 0
    advance(services, DAY + 1)
    assert fire_timer()["repairs_auto_closed"] == 1


def test_a_rated_repair_is_left_alone(services: Services, world: World) -> None:
    [rid] = awaiting_rating(services, world, 1)
    repairs.rate(services, world.owner, rid, 4, "好")
    advance(services, 4 * DAY)
    assert fire_timer()["repairs_auto_closed"] == 0
    assert completions(services, rid) == ["rated"]
    assert doc(services, rid)["auto_closed"] is False


class BatchWriteHook:
    """A database whose repairs collection calls ``before(ids)`` ahead of each batch's write
    (the timer's ``update_many`` over the ids of one batch).

    It stands between the timer's read of a batch and its write, where races happen, on the
    embedded engine and on MongoDB alike.
    """

    def __init__(self, db: Any, before: Callable[[list[Any]], None]) -> None:
        self._db = db
        self._before = before

    def __getitem__(self, name: str) -> Any:
        collection = self._db[name]
        return _HookedCollection(collection, self._before) if name == REPAIRS else collection

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._db, attr)


class _HookedCollection:
    def __init__(self, collection: Any, before: Callable[[list[Any]], None]) -> None:
        self._collection = collection
        self._before = before

    def update_many(self, query: dict[str, Any], update: Any, **kwargs: Any) -> Any:
        self._before(query["_id"]["$in"])
        return self._collection.update_many(query, update, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._collection, attr)


def hooked(services: Services, before: Callable[[list[Any]], None], batch: int) -> Services:
    """These services with the batch-write hook and ``batch``-sized timer batches, installed."""
    changed = dataclasses.replace(
        services,
        db=BatchWriteHook(services.db, before),
        settings=services.settings.model_copy(update={"scheduler_batch_size": batch}),
    )
    install_services(changed)
    return changed


def test_more_than_one_batch_is_closed_in_one_run(services: Services, world: World) -> None:
    ids = awaiting_rating(services, world, 8)
    advance(services, 3 * DAY)
    fresh = awaiting_rating(services, world, 1)  # finished just now: not due
    batches: list[int] = []
    hooked(services, lambda batch_ids: batches.append(len(batch_ids)), batch=3)

    assert closed_by(fire_timer()) == 8
    assert batches == [3, 3, 2]
    assert all(completions(services, rid) == ["auto_closed"] for rid in ids)
    assert doc(services, fresh[0])["status"] == "awaiting_rating"


def test_a_run_past_its_budget_stops_at_a_checkpoint_and_the_next_resumes_it(
    services: Services, world: World
) -> None:
    ids = awaiting_rating(services, world, 8)
    advance(services, 3 * DAY)
    budget = services.settings.scheduler_budget_s
    batches: list[int] = []

    def slow_batch(batch_ids: list[Any]) -> None:
        batches.append(len(batch_ids))
        advance(services, budget * 0.6)  # each batch takes 60 % of the budget

    hooked(services, slow_batch, batch=3)
    first = fire_timer()
    assert closed_by(first) == 6  # the second batch crossed the budget: stop there
    assert first["unfinished_jobs"] == ["repairs_auto_close"]
    assert "pushes" in first["deferred_jobs"]

    second = fire_timer()
    assert closed_by(second) == 2 and second["deferred_jobs"] == []
    assert second["unfinished_jobs"] == []
    assert batches == [3, 3, 2]
    assert all(completions(services, rid) == ["auto_closed"] for rid in ids)
    assert closed_by(fire_timer()) == 0


def test_a_rating_between_the_timers_read_and_write_wins_alone(
    services: Services, world: World
) -> None:
    ids = awaiting_rating(services, world, 6)
    advance(services, 3 * DAY + 1)
    timer_has_read, rated = threading.Event(), threading.Event()

    def hold_first_batch(batch_ids: list[Any]) -> None:
        if not timer_has_read.is_set():
            timer_has_read.set()
            assert rated.wait(10)

    hooked(services, hold_first_batch, batch=3)
    replies: list[dict[str, Any]] = []

    def resident() -> None:
        # Rates one repair of the batch the timer holds, and one it has not read yet.
        assert timer_has_read.wait(10)
        for rid in (ids[1], ids[4]):
            event = {"action": "rate", "repair_id": rid, "stars": 4, "comment": ""}
            replies.append(invoke("repair", event, OWNER_OPENID))
        rated.set()

    timer, _ = run_together(fire_timer, resident)
    assert [r["ok"] for r in replies] == [True, True]
    assert timer["repairs_auto_closed"] == 4
    for rid in ids:
        expected = ["rated"] if rid in (ids[1], ids[4]) else ["auto_closed"]
        assert completions(services, rid) == expected
    assert auto_close_messages(services, world) == 4


def test_ratings_racing_the_timer_in_threads_leave_exactly_one_completion(
    services: Services, world: World
) -> None:
    ids = awaiting_rating(services, world, 24)
    advance(services, 3 * DAY + 1)

    def rate(rid: str) -> Callable[[], dict[str, Any]]:
        event = {"action": "rate", "repair_id": rid, "stars": 5, "comment": ""}
        return lambda: invoke("repair", event, OWNER_OPENID)

    # The resident rates in reverse order, so the timer (paging forward) meets them midway.
    results = run_together(
        lambda: repairs.auto_close_due(services, batch_size=4),
        *[rate(rid) for rid in reversed(ids)],
    )
    closed = results[0]["repairs_auto_closed"]
    rated = {rid for rid, reply in zip(reversed(ids), results[1:], strict=True) if reply["ok"]}
    assert all(r["error"]["code"] == "CONFLICT" for r in results[1:] if not r["ok"])
    assert closed + len(rated) == len(ids)
    for rid in ids:
        assert completions(services, rid) == (["rated"] if rid in rated else ["auto_closed"])
        assert doc(services, rid)["auto_closed"] is (rid not in rated)
    assert auto_close_messages(services, world) == closed


def test_two_timer_runs_at_once_close_each_repair_once(services: Services, world: World) -> None:
    ids = awaiting_rating(services, world, 10)
    advance(services, 3 * DAY + 1)
    both_read = threading.Barrier(2, timeout=10)
    waited: set[int] = set()

    def meet_on_first_batch(batch_ids: list[Any]) -> None:
        # Each run reads its first batch before either writes it: they hold the same repairs.
        me = threading.get_ident()
        if me not in waited:
            waited.add(me)
            both_read.wait()

    hooked(services, meet_on_first_batch, batch=3)
    first, second = run_together(fire_timer, fire_timer)
    assert first["repairs_auto_closed"] + second["repairs_auto_closed"] == len(ids)
    for rid in ids:
        assert completions(services, rid) == ["auto_closed"]
    assert auto_close_messages(services, world) == len(ids)


def test_a_failing_job_does_not_stop_the_others(services: Services, world: World) -> None:
    [rid] = awaiting_rating(services, world, 1)
    advance(services, 3 * DAY + 1)

    def broken(_: Services, __: datetime) -> dict[str, int]:
        raise RuntimeError("bank unreachable")

    jobs = (scheduler.Job("broken", broken), *scheduler.JOBS)
    counts = scheduler.run_jobs(services, jobs)
    assert counts["failed_jobs"] == ["broken"]
    assert counts["repairs_auto_closed"] == 1
    assert doc(services, rid)["status"] == "completed"


def test_the_repair_job_is_an_entry_of_the_timer_job_list() -> None:
    assert "repairs_auto_close" in [job.name for job in scheduler.JOBS]

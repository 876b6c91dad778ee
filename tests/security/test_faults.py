"""Faults in the middle of an action: the database, ICBC or WeChat failing part-way.

Whatever fails, the caller gets a clear envelope (a Chinese message, no internals), and what is
left behind is either nothing, or something the next call or the timer
(:func:`caiyun.domain.scheduler.run_jobs`) puts right. Everything goes through the real
``main_handler``; ICBC is a running FakeIcbc and WeChat a running FakeWeChat.

The database faults wrap ``services.db`` in :class:`FlakyDb`, which lets the first N-1 calls of
an action through and fails every later one (a fail-over) with pymongo's ``AutoReconnect``, in
two modes: ``lost`` (the call never reached the server) and ``unacknowledged`` (the write was
applied but its reply was lost, as MongoDB can do). Each action is replayed with the outage
starting at every one of its database calls in turn.

SMS provider failures are proven in tests/domain/test_sms_code_rules.py (UNAVAILABLE, no live
code, no resend hold, no quota used, 503 over HTTP) and WeChat being down during a complaint
reply in tests/domain/test_inbox_and_push.py; they are not repeated here.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from billing import ALICE, BOB, charges, realname_details
from conftest import invoke, make_settings
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError
from worlds import account_of

from caiyun.adapters.icbc_protocol import generate_private_key_pem
from caiyun.adapters.sms import sandbox_outbox
from caiyun.clock import business_date
from caiyun.domain import accounts, bill_import, icbc_notifies, pushes, scheduler
from caiyun.domain.idempotency import IDEMPOTENCY
from caiyun.domain.owner_import import import_owners
from caiyun.domain.realname import TICKETS
from caiyun.sandbox.fake_wechat import FakeWeChat
from caiyun.sandbox.functions import handler
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.services import Services, build_services, install_services
from caiyun.stores import accounts as account_store
from caiyun.stores import houses as house_store
from caiyun.stores import memberships, staff
from caiyun.stores.orders import ORDERS
from caiyun.stores.repairs import REPAIRS

GARDEN = {"province": "广东省", "city": "深圳市", "district": "南山区", "name": "彩云花园"}
NOTIFY_URL = "https://caiyun.example.com/icbc/notify"
CHINESE = re.compile(r"[\u4e00-\u9fff]")
RESIDENT_APPID, RESIDENT_SECRET = "wx-resident-faults", "resident-secret-0123456789abcdef"
STAFF_APPID, STAFF_SECRET = "wx-staff-faults", "staff-secret-0123456789abcdef"
TEMPLATES = {"repair": "tmpl-repair", "repair_assigned": "tmpl-assigned", "payment": "tmpl-pay"}
ADMIN, FIXER = "o-staff-admin", "o-staff-fixer"


# ALICE (1栋-1单元-101) is made real-name verified by the world fixture; BOB (1栋-1单元-102) is not.


# ------------------------------------------------------------------------------ the flaky db


class FlakyDb:
    """``services.db`` failing over part-way through an action.

    Calls are counted from 1; from call ``fail_from`` on, every call raises ``error`` until
    :meth:`heal`. ``unacknowledged``: the first failing call was applied before its reply was
    lost; the later ones never reach the server.
    """

    def __init__(
        self,
        db: Any,
        fail_from: int | None = None,
        unacknowledged: bool = False,
        error: type[Exception] = AutoReconnect,
    ) -> None:
        self._db = db
        self.fail_from = fail_from
        self.unacknowledged = unacknowledged
        self.error = error
        self.calls: list[str] = []
        self.failed = 0
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> _FlakyCollection:
        return _FlakyCollection(self, self._db[name])

    def get_collection(self, name: str) -> _FlakyCollection:
        return self[name]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def heal(self) -> None:
        self.fail_from = None

    def run(self, what: str, call: Callable[[], Any]) -> Any:
        with self._lock:
            self.calls.append(what)
            failing = self.fail_from is not None and len(self.calls) >= self.fail_from
            if failing:
                self.failed += 1
        if not failing:
            return call()
        if self.unacknowledged and self.failed == 1:
            call()  # the write in flight when the connection dropped
        raise self.error(f"connection to db.internal:27017 closed during {what}")


class _FlakyCollection:
    def __init__(self, owner: FlakyDb, collection: Any) -> None:
        self._owner = owner
        self._collection = collection

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._collection, attr)
        if not callable(target):
            return target
        what = f"{self._collection.name}.{attr}"

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._owner.run(what, lambda: target(*args, **kwargs))

        return call


def during_outage(
    svc: Services, action: Callable[[], Any], fail_from: int | None, unacknowledged: bool = False
) -> tuple[Any, FlakyDb]:
    """Run ``action`` with the database failing over from call ``fail_from``; then heal."""
    flaky = FlakyDb(svc.db, fail_from, unacknowledged)
    install_services(dataclasses.replace(svc, db=flaky))
    try:
        return action(), flaky
    finally:
        flaky.heal()
        install_services(svc)


def db_calls(svc: Services, action: Callable[[], Any]) -> list[str]:
    """The database calls a healthy run of ``action`` makes (it does run)."""
    reply, flaky = during_outage(svc, action, None)
    assert reply["ok"] is True, reply
    return flaky.calls


def outage_points(calls: list[str]) -> list[tuple[int, bool, str]]:
    """Every (call number, unacknowledged, call name) an outage can start at."""
    points = [(n, False, what) for n, what in enumerate(calls, start=1)]
    writes = ("insert", "update", "delete", "replace", "bulk_write")
    points += [
        (n, True, what) for n, what in enumerate(calls, start=1) if any(w in what for w in writes)
    ]
    return points


def describe(n: int, unacknowledged: bool, what: str) -> str:
    return (
        f"outage from call {n} ({what}{', applied but unacknowledged' if unacknowledged else ''})"
    )


def clear_failure(reply: dict[str, Any]) -> str | None:
    """Why ``reply`` is not a clear failure envelope (None when it is one)."""
    if reply.get("ok") is not False:
        return f"answered {reply}"
    error = reply["error"]
    if error["code"] not in ("INTERNAL", "UNAVAILABLE"):
        return f"answered {error['code']}"
    if not CHINESE.search(error["message"]):
        return "message is not Chinese"
    text = json.dumps(reply, ensure_ascii=False)
    if any(leak in text for leak in ("AutoReconnect", "db.internal", "Traceback", ".py")):
        return f"leaks internals: {text}"
    return None


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {"gateway": generate_private_key_pem(), "merchant": generate_private_key_pem()}


@pytest.fixture
def wechat() -> Iterator[FakeWeChat]:
    fake = FakeWeChat({RESIDENT_APPID: RESIDENT_SECRET, STAFF_APPID: STAFF_SECRET})
    fake.start()
    yield fake
    fake.stop()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def wired(services: Services, bank: FakeIcbc, wechat: FakeWeChat, **overrides: Any) -> Services:
    """Services on the test's database and clock, with ICBC and WeChat pointed at the fakes."""
    settings = make_settings(
        **{
            **bank.settings_overrides(),
            "icbc_notify_url": NOTIFY_URL,
            "icbc_timeout_s": 3.0,
            "wechat_api_base": wechat.url,
            "wechat_appid": RESIDENT_APPID,
            "wechat_secret": RESIDENT_SECRET,
            "wechat_staff_appid": STAFF_APPID,
            "wechat_staff_secret": STAFF_SECRET,
            "wechat_templates": TEMPLATES,
            "wechat_timeout_s": 2.0,
            "sms_daily_limit": 1000,
            **overrides,
        }
    )
    return build_services(settings, clock=services.clock, db=services.db)


@pytest.fixture
def svc(services: Services, bank: FakeIcbc, wechat: FakeWeChat) -> Services:
    healthy = wired(services, bank, wechat)
    install_services(healthy)
    return healthy


@pytest.fixture
def icbc_down(services: Services, bank: FakeIcbc, wechat: FakeWeChat) -> Services:
    """The same services, but ICBC's gateway is a port nobody listens on (not installed)."""
    return wired(services, bank, wechat, icbc_gateway=closed_port_url(), icbc_timeout_s=1.0)


def ok(reply: dict[str, Any]) -> Any:
    assert reply["ok"] is True, reply
    return reply["data"]


def verify(svc: Services, who: SimpleNamespace, autodebit: bool = False) -> None:
    """Real-name verification with the code the ICBC sandbox texted to the bank phone, and the
    auto-debit agreement signed with the next one."""
    ticket = ok(invoke("account", realname_details(who), who.openid))["ticket"]
    code = sandbox_outbox(svc.db, who.bank_phone)[0]["code"]
    confirm = {
        "action": "realname_confirm",
        "ticket": ticket,
        "sms_code": code,
        "agreements": ["wallet_service", "privacy"],
        "autodebit": autodebit,
    }
    result = ok(invoke("account", confirm, who.openid))
    if autodebit:
        signing = {
            "action": "set_autodebit",
            "enabled": True,
            "ticket": result["autodebit_ticket"],
            "sms_code": sandbox_outbox(svc.db, who.bank_phone)[0]["code"],
            "agreements": ["autodebit"],
        }
        ok(invoke("account", signing, who.openid))


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
    ]
    garden = import_owners(svc, GARDEN, rows)
    ids = {}
    for who, result in zip((ALICE, BOB), garden.rows, strict=True):
        house = house_store.get(db, result.house_id or "")
        account = account_store.by_phone(db, who.phone)
        memberships.add(db, house, account["_id"], "owner", now, account["_id"])
        accounts.bind_openid(db, account["_id"], "resident", who.openid)
        ids[who.openid] = account["_id"]
    for phone, name, role, openid in (
        ("13900000001", "王经理", "admin", ADMIN),
        ("13900000002", "李师傅", "repairman", FIXER),
    ):
        account, _ = account_store.ensure_account(db, phone, now, name)
        staff.upsert(db, account["_id"], name, role, [garden.community_id], now)
        accounts.bind_openid(db, account["_id"], "staff", openid)
        ids[openid] = account["_id"]
    verify(svc, ALICE)
    world = SimpleNamespace(
        community_id=garden.community_id,
        h101=garden.rows[0].house_id,
        h102=garden.rows[1].house_id,
        ids=ids,
        periods=iter(range(1, 1000)),
    )
    return world


def new_bills(svc: Services, world: SimpleNamespace, count: int = 2, due_days: int = 10) -> list:
    """``count`` fresh unpaid bills of 1栋-1单元-101 (a new period each call)."""
    n = next(world.periods)
    due = (business_date(svc.clock.now()) + timedelta(days=due_days)).isoformat()
    rows = [
        {
            "building": 1,
            "unit": 1,
            "room": 101,
            "period": f"{2000 + n // 12:04d}-{n % 12 + 1:02d}",
            "item": f"物业费{i}",
            "amount_fen": 10000 + i,
            "due_date": due,
        }
        for i in range(count)
    ]
    results = bill_import.import_bills(svc, world.community_id, rows)
    assert [r.status for r in results] == ["created"] * count
    period = rows[0]["period"]
    found = svc.db["bills"].find({"house_id": world.h101, "period": period})
    return sorted(b["_id"] for b in found)


def pay(who: SimpleNamespace, bill_ids: list[str]) -> dict[str, Any]:
    return invoke("bills", {"action": "pay", "bill_ids": bill_ids, "method": "wechat"}, who.openid)


def bill_states(svc: Services, bill_ids: list[str]) -> dict[str, str]:
    return {b["_id"]: b["status"] for b in svc.db["bills"].find({"_id": {"$in": bill_ids}})}


def pending_orders(svc: Services, bill_ids: list[str]) -> list[dict[str, Any]]:
    query = {"status": "pending", "bill_ids": {"$in": bill_ids}}
    return list(svc.db[ORDERS].find(query))


def expire_everything(svc: Services) -> dict[str, Any]:
    """Move past every order's expiry and fire the timer's jobs, as the scheduler would."""
    svc.clock.advance(svc.settings.order_ttl_s + 1)
    counts = scheduler.run_jobs(svc)
    assert counts["failed_jobs"] == [], counts
    return counts


def post_notify(body: str) -> dict[str, Any]:
    """ICBC's notify as the API Gateway trigger delivers it: ``POST /icbc/notify``, a form."""
    event = {
        "httpMethod": "POST",
        "path": "/icbc/notify",
        "headers": {"content-type": "application/x-www-form-urlencoded; charset=UTF-8"},
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {"sourceIp": "202.106.0.20", "requestId": "apigw-notify"},
    }
    return handler("icbc_callback")(event, {})


def acknowledged(response: dict[str, Any], bank: FakeIcbc) -> bool:
    """Whether ICBC would stop resending: a signed reply with return_code 0."""
    if response.get("statusCode") != 200 or not bank.verify_reply(response["body"]):
        return False
    return json.loads(response["body"])["response_biz_content"]["return_code"] == 0


def inbox(svc: Services, openid: str, **query: Any) -> list[dict[str, Any]]:
    found = svc.db["messages"].find({"account_id": account_of(svc.db, openid)["_id"]})
    return [m for m in found if all(m.get(k) == v for k, v in query.items())]


# ------------------------------------------------------------------------------ ICBC


@pytest.mark.parametrize("fault", ["unreachable", "busy"])
def test_icbc_failing_during_pay_is_retryable_fails_the_order_and_frees_the_bills(
    svc: Services, icbc_down: Services, bank: FakeIcbc, world: SimpleNamespace, fault: str
) -> None:
    bill_ids = new_bills(svc, world)
    if fault == "unreachable":
        install_services(icbc_down)
    else:
        bank.fail_next("SYSTEM_BUSY", svc.settings.icbc_pay_path)

    reply = pay(ALICE, bill_ids)
    install_services(svc)

    assert reply["ok"] is False
    error = reply["error"]
    assert error["code"] == "UNAVAILABLE"
    assert error["details"]["retryable"] is True
    assert CHINESE.search(error["message"])
    [order] = svc.db[ORDERS].find({"bill_ids": bill_ids[0]})
    assert order["status"] == "failed"
    assert bill_states(svc, bill_ids) == dict.fromkeys(bill_ids, "unpaid")
    order_no = order["_id"]
    shown = ok(invoke("bills", {"action": "order", "order_no": order_no}, ALICE.openid))
    assert shown["status"] == "failed"
    # ICBC is back: the same bills are payable at once.
    again = ok(pay(ALICE, bill_ids))
    assert bill_states(svc, bill_ids) == dict.fromkeys(bill_ids, "locked")
    assert again["order_no"] != order_no


def test_icbc_down_when_the_timer_reconciles_keeps_the_order_until_the_next_run(
    svc: Services, icbc_down: Services, world: SimpleNamespace
) -> None:
    bill_ids = new_bills(svc, world)
    order_no = ok(pay(ALICE, bill_ids))["order_no"]
    svc.clock.advance(svc.settings.order_ttl_s + 1)

    install_services(icbc_down)
    counts = scheduler.run_jobs(icbc_down)
    shown = ok(invoke("bills", {"action": "order", "order_no": order_no}, ALICE.openid))
    install_services(svc)

    # Nobody could ask ICBC whether the money arrived: nothing is released on a guess.
    assert counts["failed_jobs"] == []
    assert shown["status"] == "pending"
    assert bill_states(svc, bill_ids) == dict.fromkeys(bill_ids, "locked")
    counts = scheduler.run_jobs(svc)
    assert counts["orders_ended"] == 1
    assert svc.db[ORDERS].find_one({"_id": order_no})["status"] == "closed"
    assert bill_states(svc, bill_ids) == dict.fromkeys(bill_ids, "unpaid")


def test_icbc_down_during_real_name_verification_is_retryable_and_keeps_the_ticket(
    svc: Services, icbc_down: Services, world: SimpleNamespace
) -> None:
    start = realname_details(BOB)
    install_services(icbc_down)
    refused = invoke("account", start, BOB.openid)
    install_services(svc)
    assert refused["error"]["code"] == "UNAVAILABLE"
    assert refused["error"]["details"]["retryable"] is True
    assert svc.db[TICKETS].count_documents({"account_id": world.ids[BOB.openid]}) == 0

    ticket = ok(invoke("account", start, BOB.openid))["ticket"]
    code = sandbox_outbox(svc.db, BOB.bank_phone)[0]["code"]
    confirm = {
        "action": "realname_confirm",
        "ticket": ticket,
        "sms_code": code,
        "agreements": ["wallet_service", "privacy"],
        "autodebit": False,
    }
    install_services(icbc_down)
    refused = invoke("account", confirm, BOB.openid)
    install_services(svc)
    assert refused["error"]["code"] == "UNAVAILABLE"
    assert refused["error"]["details"]["retryable"] is True
    assert account_of(svc.db, BOB.openid)["realname_verified"] is False

    # The same ticket and code work once ICBC is back.
    ok(invoke("account", confirm, BOB.openid))
    assert account_of(svc.db, BOB.openid)["realname_verified"] is True


def test_icbc_unreachable_during_auto_debit_frees_the_bills_once_the_order_expires(
    svc: Services, icbc_down: Services, world: SimpleNamespace
) -> None:
    verify(svc, BOB, autodebit=True)
    due = (business_date(svc.clock.now()) - timedelta(days=1)).isoformat()
    row = {"building": 1, "unit": 1, "room": 102, "period": "2030-01", "item": "物业费"}
    bill_import.import_bills(
        svc, world.community_id, [{**row, "amount_fen": 9000, "due_date": due}]
    )
    [bill] = svc.db["bills"].find({"house_id": world.h102})

    counts = scheduler.run_jobs(icbc_down)  # the charge never reaches ICBC
    assert counts["failed_jobs"] == []
    assert bill_states(svc, [bill["_id"]]) == {bill["_id"]: "locked"}

    expire_everything(svc)
    expire_everything(svc)

    # ICBC never saw the order, so it can only answer "no such order" about it: the order must
    # still end and give the bill back, or the resident can never pay it again.
    assert pending_orders(svc, [bill["_id"]]) == []
    assert bill_states(svc, [bill["_id"]]) == {bill["_id"]: "unpaid"}


# ------------------------------------------------------------------------------ WeChat


def test_wechat_down_during_dispatch_still_dispatches_and_fills_both_inboxes(
    svc: Services, wechat: FakeWeChat, world: SimpleNamespace
) -> None:
    subscribe = {"action": "subscribe", "template_ids": ["tmpl-repair"]}
    ok(invoke("notify", subscribe, ALICE.openid))
    ok(invoke("notify", {"action": "subscribe", "template_ids": ["tmpl-assigned"]}, FIXER, "staff"))
    event = {
        "action": "create",
        "house_id": world.h101,
        "category": "water_electric",
        "description": "厨房水管漏水",
        "contact_phone": ALICE.phone,
    }
    rid = ok(invoke("repair", event, ALICE.openid))["repair_id"]
    wechat.stop()

    dispatch = {"action": "dispatch", "repair_id": rid, "repairman_id": world.ids[FIXER]}
    done = ok(invoke("repair", dispatch, ADMIN, "staff"))

    assert done["status"] == "dispatched"
    assert [m["title"] for m in inbox(svc, FIXER)] == ["新的维修工单"]
    assert [m["title"] for m in inbox(svc, ALICE.openid)] == ["报修已派单"]
    assert pushes.drain(svc)["pushes_queued"] == 2  # to be tried again later
    assert wechat.sent == []
    # Nothing was delivered, so neither consent was used up.
    consents = {c["template_id"]: c["remaining"] for c in svc.db["subscription_consents"].find()}
    assert consents == {"tmpl-repair": 1, "tmpl-assigned": 1}


def test_wechat_down_when_a_payment_settles_still_acknowledges_and_tells_the_payer(
    svc: Services, bank: FakeIcbc, wechat: FakeWeChat, world: SimpleNamespace
) -> None:
    ok(invoke("notify", {"action": "subscribe", "template_ids": ["tmpl-pay"]}, ALICE.openid))
    order_no = ok(pay(ALICE, new_bills(svc, world)))["order_no"]
    body = urlencode(bank.notify_form(bank.settle(order_no, "success"), NOTIFY_URL))
    wechat.stop()

    assert acknowledged(post_notify(body), bank)
    assert svc.db[ORDERS].find_one({"_id": order_no})["status"] == "paid"
    assert len(inbox(svc, ALICE.openid, kind="payment")) == 1


# ------------------------------------------------------------------------------ the database


@pytest.mark.parametrize("error", [AutoReconnect, ServerSelectionTimeoutError])
def test_a_database_outage_is_answered_as_retryable_not_as_a_crash(
    svc: Services, world: SimpleNamespace, error: type[Exception]
) -> None:
    flaky = FlakyDb(svc.db, fail_from=1, error=error)
    install_services(dataclasses.replace(svc, db=flaky))
    reply = invoke("repair", {"action": "my_list"}, ALICE.openid)
    install_services(svc)

    # A fail-over is transient: the app should be told to retry, not that the system broke.
    assert clear_failure(reply) is None, reply
    assert reply["error"]["code"] == "UNAVAILABLE", reply
    assert reply["error"].get("details", {}).get("retryable") is True, reply


def test_database_failing_at_any_point_of_repair_create_is_put_right_by_the_retry(
    svc: Services, world: SimpleNamespace
) -> None:
    def create(request_id: str, description: str) -> Callable[[], dict[str, Any]]:
        event = {
            "action": "create",
            "house_id": world.h101,
            "category": "water_electric",
            "description": description,
            "contact_phone": ALICE.phone,
            "request_id": request_id,
        }
        return lambda: invoke("repair", event, ALICE.openid)

    calls = db_calls(svc, create("healthy", "健康"))
    assert "repairs.insert_one" in calls
    problems = []
    for n, unacknowledged, what in outage_points(calls):
        request_id, description = f"req-{n}-{int(unacknowledged)}", f"水管漏水{n}-{unacknowledged}"
        reply, flaky = during_outage(svc, create(request_id, description), n, unacknowledged)
        where = describe(n, unacknowledged, what)
        # Answering with the repair is right when only the bookkeeping after it failed.
        if flaky.failed and not reply["ok"] and (why := clear_failure(reply)):
            problems.append(f"{where}: {why}")
        # The app retries with the same request_id: at once it may be told to wait (the first
        # call's outcome is unknown for a short lease), and after the lease it must get one
        # repair, and only one.
        first_retry = create(request_id, description)()
        if not first_retry["ok"]:
            assert first_retry["error"]["code"] == "CONFLICT", first_retry
            assert first_retry["error"]["details"]["retryable"] is True
            svc.clock.advance(31)
        retry = first_retry if first_retry["ok"] else create(request_id, description)()
        made = svc.db[REPAIRS].count_documents({"description": description})
        if not retry["ok"]:
            key = svc.db[IDEMPOTENCY].find_one({"_id": {"$regex": f":{request_id}$"}}) or {}
            problems.append(
                f"{where}: the retry answered {retry['error']['code']}, {made} repair(s) exist, "
                f"idempotency key left {key.get('state')!r}"
            )
        elif made != 1:
            problems.append(f"{where}: {made} repairs exist after the retry")
    assert problems == [], "\n".join(problems)


def test_database_failing_at_any_point_of_pay_leaves_nothing_the_timer_does_not_release(
    svc: Services, world: SimpleNamespace
) -> None:
    bill_ids = new_bills(svc, world)
    calls = db_calls(svc, lambda: pay(ALICE, bill_ids))
    expire_everything(svc)
    assert bill_states(svc, bill_ids) == dict.fromkeys(bill_ids, "unpaid")
    problems = []
    for n, unacknowledged, what in outage_points(calls):
        where = describe(n, unacknowledged, what)
        reply, flaky = during_outage(svc, lambda: pay(ALICE, bill_ids), n, unacknowledged)
        if flaky.failed and (why := clear_failure(reply)):
            problems.append(f"{where}: {why}")
        states = bill_states(svc, bill_ids)
        live = pending_orders(svc, bill_ids)
        if "paid" in states.values() or len(live) > 1:
            problems.append(f"{where}: bills {states}, {len(live)} pending orders")
        # Whatever was left half-done is released once the order's expiry passes.
        expire_everything(svc)
        states, live = bill_states(svc, bill_ids), pending_orders(svc, bill_ids)
        if set(states.values()) != {"unpaid"} or live:
            problems.append(
                f"{where}: after expiry and the timer the bills are {sorted(states.values())} "
                f"and {len(live)} order(s) still pending"
            )
            # Start the next point from unpaid bills and no live order.
            svc.db[ORDERS].update_many(
                {"bill_ids": {"$in": bill_ids}, "status": "pending"}, {"$set": {"status": "closed"}}
            )
            svc.db["bills"].update_many(
                {"_id": {"$in": bill_ids}},
                {"$set": {"status": "unpaid"}, "$unset": {"order_no": ""}},
            )
            continue
        again = pay(ALICE, bill_ids)
        if not again["ok"]:
            problems.append(f"{where}: paying again answered {again['error']['code']}")
        expire_everything(svc)
    assert problems == [], "\n".join(problems)


def test_database_failing_at_any_point_of_login_leaves_the_resident_able_to_sign_in(
    svc: Services, world: SimpleNamespace
) -> None:
    def send_code() -> str:
        svc.clock.advance(svc.settings.sms_resend_s + 1)
        ok(invoke("login", {"action": "send_code", "phone": BOB.phone, "purpose": "login"}))
        return sandbox_outbox(svc.db, BOB.phone)[0]["code"]

    def login(code: str, openid: str) -> Callable[[], dict[str, Any]]:
        event = {"action": "login", "phone": BOB.phone, "code": code}
        return lambda: invoke("login", event, openid)

    calls = db_calls(svc, login(send_code(), "o-healthy"))
    problems, burnt = [], []
    for n, unacknowledged, what in outage_points(calls):
        where = describe(n, unacknowledged, what)
        code, openid = send_code(), f"o-login-{n}-{int(unacknowledged)}"
        reply, flaky = during_outage(svc, login(code, openid), n, unacknowledged)
        if flaky.failed and (why := clear_failure(reply)):
            problems.append(f"{where}: {why}")
        retry = login(code, openid)()
        if not retry["ok"]:
            # The code was spent before the failure: a new one must sign the resident in.
            if retry["error"]["code"] != "CODE_INVALID":
                problems.append(f"{where}: the retry answered {retry['error']['code']}")
            burnt.append(where)
            retry = login(send_code(), openid)()
        if not retry["ok"]:
            problems.append(f"{where}: a fresh code then answered {retry['error']['code']}")
            continue
        bound = account_of(svc.db, openid)
        if bound is None or bound["phone"] != BOB.phone:
            problems.append(f"{where}: the openid is not bound to the account after login")
    assert problems == [], "\n".join(problems)
    # Where the code was already spent the resident asks for a new one (see the findings).
    print("login outages that burnt the code:", *burnt, sep="\n  ")
    assert len(burnt) < len(outage_points(calls))


def test_database_failing_at_any_point_of_a_notify_is_mended_by_icbcs_resend(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    def settled_order() -> tuple[str, str]:
        order_no = ok(pay(ALICE, new_bills(svc, world)))["order_no"]
        form = bank.notify_form(bank.settle(order_no, "success"), NOTIFY_URL)
        return order_no, urlencode(form)

    order_no, body = settled_order()
    calls = db_calls(svc, lambda: {"ok": acknowledged(post_notify(body), bank)})
    problems = []
    for n, unacknowledged, what in outage_points(calls):
        where = describe(n, unacknowledged, what)
        order_no, body = settled_order()
        response, flaky = during_outage(svc, lambda b=body: post_notify(b), n, unacknowledged)
        if flaky.failed and acknowledged(response, bank):
            problems.append(f"{where}: ICBC was told success, so it will not resend")
        # ICBC resends until it is told success.
        if not acknowledged(post_notify(body), bank):
            problems.append(f"{where}: the resent notify was not acknowledged")
            continue
        order = svc.db[ORDERS].find_one({"_id": order_no})
        states = set(bill_states(svc, order["bill_ids"]).values())
        told = svc.db["messages"].count_documents({"kind": "payment", "page": {"$regex": order_no}})
        kept = charges(svc, order_no)
        if (order["status"], states, kept, told) != ("paid", {"paid"}, 1, 1):
            problems.append(
                f"{where}: order {order['status']}, bills {states}, {kept} transaction(s), "
                f"payer told {told} time(s)"
            )
    assert problems == [], "\n".join(problems)


class _FailsOnce(FlakyDb):
    """The database failing one call (``fail_from``) and back at once."""

    def run(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return super().run(what, call)
        except AutoReconnect:
            self.heal()
            raise


def test_a_notify_the_database_fails_part_way_is_kept_as_an_error_and_the_resend_settles_it(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    order_no = ok(pay(ALICE, new_bills(svc, world)))["order_no"]
    body = urlencode(bank.notify_form(bank.settle(order_no, "success"), NOTIFY_URL))
    # The order's update (call 1) goes through; settling its bills (call 2) fails.
    install_services(dataclasses.replace(svc, db=_FailsOnce(svc.db, fail_from=2)))
    try:
        failed = post_notify(body)
    finally:
        install_services(svc)

    assert not acknowledged(failed, bank)  # ICBC is not told success: it sends it again
    kept = svc.db[icbc_notifies.NOTIFIES].find_one({"outcome": "error"})
    assert kept is not None and kept["body"] == body
    assert acknowledged(post_notify(body), bank)
    assert svc.db[ORDERS].find_one({"_id": order_no})["status"] == "paid"
    assert charges(svc, order_no) == 1

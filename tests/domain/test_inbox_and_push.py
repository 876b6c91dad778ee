"""The inbox always, WeChat subscription messages when consented: driven through the real
WeChat client against the fake WeChat server."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import fresh_services, http, invoke, make_settings
from round_trips import counted, counting
from worlds import GARDEN, account_of, ok, owner_row, refused, staff_account

from caiyun.domain import accounts, messaging, pushes, scheduler, sessions
from caiyun.domain.owner_import import import_owners
from caiyun.labels import App
from caiyun.sandbox.fake_wechat import FakeWeChat
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import houses as house_store
from caiyun.stores import memberships

RESIDENT_APPID, RESIDENT_SECRET = "wxresident", "resident-secret-0123456789abcdef"
STAFF_APPID, STAFF_SECRET = "wxstaff", "staff-secret-0123456789abcdef"
TEMPLATES = {
    "complaint": "tmpl-complaint",
    "visitor": "tmpl-visitor",
    "notice": "tmpl-notice",
    "repair": "tmpl-repair",
    "repair_assigned": "tmpl-assigned",
    "complaint_filed": "tmpl-complaint-filed",
}
RESIDENT_OPENID = "o-resident-alice"


@pytest.fixture
def fake() -> Iterator[FakeWeChat]:
    with FakeWeChat(apps={RESIDENT_APPID: RESIDENT_SECRET, STAFF_APPID: STAFF_SECRET}) as server:
        yield server


@pytest.fixture
def services(fake: FakeWeChat) -> Iterator[Services]:
    """Services whose WeChat is the fake server, with a template per purpose."""
    settings = make_settings(
        wechat_api_base=fake.url,
        wechat_appid=RESIDENT_APPID,
        wechat_secret=RESIDENT_SECRET,
        wechat_staff_appid=STAFF_APPID,
        wechat_staff_secret=STAFF_SECRET,
        wechat_templates=TEMPLATES,
        wechat_timeout_s=2.0,
    )
    yield from fresh_services(settings)


def pushed(services: Services, fake: FakeWeChat) -> list[dict[str, Any]]:
    """What the fake WeChat received once the timer's sender drained the push outbox."""
    pushes.drain(services)
    return fake.sent


@pytest.fixture
def world(services: Services) -> dict[str, Any]:
    report = import_owners(services, GARDEN, [owner_row(101, "张伟", "13800000001")])
    house = house_store.get(services.db, report.rows[0].house_id)
    db, now = services.db, services.clock.now()
    alice = account_store.by_phone(db, "13800000001")
    memberships.add(db, house, alice["_id"], "owner", now, alice["_id"])
    accounts.bind_openid(db, alice["_id"], "resident", RESIDENT_OPENID)
    scope = [house["community_id"]]
    staff_account(services, "13900000001", "王经理", "admin", scope, "o-staff-admin", now=now)
    staff_account(services, "13900000002", "李保安", "guard", scope, "o-staff-guard", now=now)
    return {
        "house": house,
        "alice": alice["_id"],
        "admin": "o-staff-admin",
        "guard": "o-staff-guard",
    }


def subscribe(*template_ids: str) -> dict[str, Any]:
    event = {"action": "subscribe", "template_ids": list(template_ids)}
    return invoke("notify", event, RESIDENT_OPENID)


def complain(world: dict[str, Any]) -> str:
    event = {
        "action": "create",
        "house_id": world["house"]["_id"],
        "kind": "complaint",
        "type": "environment",
        "contact_phone": "13800000001",
        "content": "小区东门的绿化带长期无人修剪，杂草已经长到半人高了",
    }
    return ok(invoke("complaint", event, RESIDENT_OPENID))["complaint_id"]


def reply(world: dict[str, Any], complaint_id: str, text: str = "已安排处理") -> dict[str, Any]:
    event = {"action": "reply", "complaint_id": complaint_id, "reply": text, "status": "processing"}
    return invoke("complaint", event, world["admin"], "staff")


def consents_left(services: Services, account_id: str, template_id: str) -> int:
    doc = services.db[messaging.CONSENTS].find_one({"_id": f"{account_id}:{template_id}"})
    return 0 if doc is None else doc["remaining"]


def inbox_count(services: Services, account_id: str) -> int:
    return messaging.inbox(services, account_id, "resident", False, 1, 1)[1]


# ------------------------------------------------------------------------------ subscribe


def test_a_new_complaint_is_pushed_to_the_admin_who_consented_in_the_staff_app(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    event = {"action": "subscribe", "template_ids": ["tmpl-complaint-filed"]}
    given = invoke("notify", event, world["admin"], "staff")
    assert ok(given)["remaining"] == {"tmpl-complaint-filed": 1}

    complaint_id = complain(world)
    complain(world)  # the one consent is spent: this one reaches the inbox only

    filed = [m for m in pushed(services, fake) if m["template_id"] == "tmpl-complaint-filed"]
    assert [(m["appid"], m["touser"], m["page"]) for m in filed] == [
        (STAFF_APPID, world["admin"], f"pages/complaint/detail?id={complaint_id}")
    ]
    assert filed[0]["data"]["thing1"]["value"] == "投诉·环境绿化"
    admin_id = accounts.caller_by_openid(services.db, "staff", world["admin"])["_id"]
    titles = [m["title"] for m in messaging.inbox(services, admin_id, "staff", False, 1, 10)[0]]
    assert titles == ["新的投诉", "新的投诉"]
    # The guard of the same community is not an admin: nothing for him.
    guard_id = accounts.caller_by_openid(services.db, "staff", world["guard"])["_id"]
    assert inbox_count(services, guard_id) == 0


def test_subscribe_counts_one_consent_per_template_and_call(
    services: Services, world: dict[str, Any]
) -> None:
    assert ok(subscribe("tmpl-complaint", "tmpl-visitor"))["remaining"] == {
        "tmpl-complaint": 1,
        "tmpl-visitor": 1,
    }
    assert ok(subscribe("tmpl-complaint", "tmpl-complaint"))["remaining"] == {"tmpl-complaint": 2}


def test_subscribe_refuses_templates_that_are_not_ours(
    services: Services, world: dict[str, Any]
) -> None:
    reply = subscribe("tmpl-complaint", "tmpl-somebody-elses")

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "template_ids" in reply["error"]["details"]["fields"]
    assert services.db[messaging.CONSENTS].count_documents({}) == 0


def test_subscribe_needs_an_account(world: dict[str, Any]) -> None:
    event = {"action": "subscribe", "template_ids": ["tmpl-complaint"]}
    assert refused(invoke("notify", event, "o-nobody")) == "UNAUTHENTICATED"


# ------------------------------------------------------------------------------ pushing


def test_consented_reply_is_pushed_once_and_spends_the_consent(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    complaint_id = complain(world)
    ok(subscribe("tmpl-complaint"))

    ok(reply(world, complaint_id, "已通知绿化组，本周内修剪完毕"))
    ok(reply(world, complaint_id, "绿化组已到场"))

    assert len(pushed(services, fake)) == 1
    sent = pushed(services, fake)[0]
    assert (sent["appid"], sent["touser"], sent["template_id"]) == (
        RESIDENT_APPID,
        RESIDENT_OPENID,
        "tmpl-complaint",
    )
    assert complaint_id in sent["page"]
    assert sent["data"]["phrase2"]["value"] == "处理中"
    assert all(len(item["value"]) <= 20 for item in sent["data"].values())
    assert consents_left(services, world["alice"], "tmpl-complaint") == 0
    assert inbox_count(services, world["alice"]) == 2


def test_without_consent_nothing_is_pushed_but_the_inbox_has_it(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    ok(reply(world, complain(world)))

    assert pushed(services, fake) == []
    assert inbox_count(services, world["alice"]) == 1


def test_consent_for_another_template_is_not_spent(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    ok(subscribe("tmpl-visitor"))

    ok(reply(world, complain(world)))

    assert pushed(services, fake) == []
    assert consents_left(services, world["alice"], "tmpl-visitor") == 1


def test_signed_out_resident_keeps_the_consent(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    complaint_id = complain(world)
    ok(subscribe("tmpl-complaint"))
    alice = account_store.by_id(services.db, world["alice"])
    accounts.unbind_openid(services.db, alice, "resident", RESIDENT_OPENID)

    ok(reply(world, complaint_id))

    assert pushed(services, fake) == []
    assert consents_left(services, world["alice"], "tmpl-complaint") == 1
    assert inbox_count(services, world["alice"]) == 1


def test_wechat_down_never_fails_the_reply_and_keeps_the_consent(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    complaint_id = complain(world)
    ok(subscribe("tmpl-complaint"))
    fake.stop()

    data = ok(reply(world, complaint_id))

    assert data["status"] == "processing"
    assert inbox_count(services, world["alice"]) == 1
    assert consents_left(services, world["alice"], "tmpl-complaint") == 1


def test_wechat_busy_never_fails_the_reply(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    complaint_id = complain(world)
    ok(subscribe("tmpl-complaint"))
    fake.fail_next(-1, endpoint="subscribe/send")

    ok(reply(world, complaint_id))

    assert pushed(services, fake) == []
    assert inbox_count(services, world["alice"]) == 1
    assert consents_left(services, world["alice"], "tmpl-complaint") == 1


def test_consent_refused_by_wechat_is_forgotten(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    complaint_id = complain(world)
    ok(subscribe("tmpl-complaint"))
    ok(subscribe("tmpl-complaint"))
    fake.consents[(RESIDENT_OPENID, "tmpl-complaint")] = 0  # the user withdrew it in WeChat

    ok(reply(world, complaint_id))

    assert pushed(services, fake) == []
    assert consents_left(services, world["alice"], "tmpl-complaint") == 0
    assert inbox_count(services, world["alice"]) == 1


def test_visitor_arrival_is_pushed_to_the_consenting_host(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    ok(subscribe("tmpl-visitor"))
    event = {
        "action": "register",
        "house_id": world["house"]["_id"],
        "name": "王芳",
        "phone": "13612345678",
        "count": 3,
    }
    token = ok(invoke("visitor", event, RESIDENT_OPENID))["pass_token"]

    checked = ok(invoke("visitor", {"action": "verify", "token": token}, world["guard"], "staff"))

    assert checked["result"] == "valid"
    assert [(m["touser"], m["template_id"]) for m in pushed(services, fake)] == [
        (RESIDENT_OPENID, "tmpl-visitor")
    ]
    assert pushed(services, fake)[0]["data"]["name1"]["value"] == "王芳"


# ------------------------------------------------------------------------------ whose consent


def complaint_note(account_id: str, app: App = "resident") -> messaging.Note:
    return messaging.Note(
        account_id,
        "complaint",
        "投诉有回复",
        "已安排处理",
        "/pages/complaint/detail?id=c1",
        push=messaging.Push("complaint", {"thing1": "绿化", "phrase2": "处理中"}),
        app=app,
    )


def consent(services: Services, account_id: str, template_id: str) -> dict[str, Any]:
    return services.db[messaging.CONSENTS].find_one({"_id": f"{account_id}:{template_id}"})


def test_subscribe_records_who_gave_the_consent_in_one_write_and_one_read(
    services: Services, world: dict[str, Any]
) -> None:
    with counted(services) as calls:
        ok(subscribe("tmpl-complaint", "tmpl-visitor", "tmpl-notice"))

    assert calls == [
        "accounts.aggregate",  # the caller (a resident)
        "subscription_consents.bulk_write",
        "subscription_consents.find",
    ]
    given = consent(services, world["alice"], "tmpl-visitor")
    assert (given["openid"], given["app"], given["held"]) == (RESIDENT_OPENID, "resident", True)


def test_subscribe_over_http_records_the_openid_of_the_app_the_session_is_for(
    services: Services, world: dict[str, Any]
) -> None:
    token = sessions.open_session(services, world["alice"], "resident")[0].token

    status, reply = http("notify", {"action": "subscribe", "template_ids": ["tmpl-notice"]}, token)

    assert (status, ok(reply)) == (200, {"remaining": {"tmpl-notice": 1}})
    given = consent(services, world["alice"], "tmpl-notice")
    assert (given["openid"], given["app"], given["held"]) == (RESIDENT_OPENID, "resident", True)


def test_subscribe_from_a_session_with_no_wechat_user_changes_no_consent(
    services: Services, world: dict[str, Any]
) -> None:
    ok(subscribe("tmpl-notice"))
    # Alice has no openid bound for the staff mini-program: nobody there could be pushed to.
    token = sessions.open_session(services, world["alice"], "staff")[0].token

    status, reply = http("notify", {"action": "subscribe", "template_ids": ["tmpl-notice"]}, token)

    assert (status, ok(reply)) == (200, {"remaining": {"tmpl-notice": 1}})
    given = consent(services, world["alice"], "tmpl-notice")
    assert (given["openid"], given["remaining"], given["held"]) == (RESIDENT_OPENID, 1, True)


def test_a_note_spends_its_consent_directly_and_pushes_to_the_openid_that_gave_it(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    ok(subscribe("tmpl-complaint"))

    with counting(services) as (recording, calls):
        counts = messaging.deliver_many(recording, [complaint_note(world["alice"])])

    # The action queues the push in its inbox write, whatever WeChat's latency.
    assert counts == {"inbox": 1, "queued": 1}
    assert calls == ["messages.insert_many"]
    assert [(m["touser"], m["template_id"]) for m in pushed(services, fake)] == [
        (RESIDENT_OPENID, "tmpl-complaint")
    ]


def test_a_big_batch_reads_the_consents_once_and_spends_only_those_left(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    ok(subscribe("tmpl-complaint"))
    others = [
        account_store.ensure_account(services.db, f"1370000000{i}", services.clock.now())[0]["_id"]
        for i in range(3)
    ]

    notes = [complaint_note(a) for a in [*others, world["alice"]]]
    with counting(services) as (recording, calls):
        counts = messaging.deliver_many(recording, notes)

    assert counts == {"inbox": 4, "queued": 1}
    assert calls == ["subscription_consents.find", "messages.insert_many"]
    assert [m["touser"] for m in pushed(services, fake)] == [RESIDENT_OPENID]


def test_a_consent_from_the_accounts_previous_openid_is_not_spent_on_the_new_one(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    complaint_id = complain(world)
    ok(subscribe("tmpl-complaint"))
    accounts.bind_openid(services.db, world["alice"], "resident", "o-alice-new-phone")

    ok(reply(world, complaint_id))

    assert pushed(services, fake) == []
    assert consents_left(services, world["alice"], "tmpl-complaint") == 1
    # The new WeChat user's own consent replaces the old user's count, and is theirs to spend.
    event = {"action": "subscribe", "template_ids": ["tmpl-complaint"]}
    assert ok(invoke("notify", event, "o-alice-new-phone"))["remaining"] == {"tmpl-complaint": 1}
    ok(reply(world, complaint_id))
    assert [m["touser"] for m in pushed(services, fake)] == ["o-alice-new-phone"]


def test_a_consent_whose_openid_now_belongs_to_another_account_is_not_spent(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    complaint_id = complain(world)
    ok(subscribe("tmpl-complaint"))
    bob, _ = account_store.ensure_account(services.db, "13700000009", services.clock.now())
    accounts.bind_openid(services.db, bob["_id"], "resident", RESIDENT_OPENID)

    ok(reply(world, complaint_id))

    assert pushed(services, fake) == []
    assert consents_left(services, world["alice"], "tmpl-complaint") == 1


def test_signing_back_in_with_the_same_openid_makes_the_kept_consent_spendable(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    complaint_id = complain(world)
    ok(subscribe("tmpl-complaint"))
    alice = account_store.by_id(services.db, world["alice"])
    accounts.unbind_openid(services.db, alice, "resident", RESIDENT_OPENID)
    ok(reply(world, complaint_id))
    assert pushed(services, fake) == []

    accounts.bind_openid(services.db, world["alice"], "resident", RESIDENT_OPENID)
    ok(reply(world, complaint_id))

    assert [m["touser"] for m in pushed(services, fake)] == [RESIDENT_OPENID]
    assert consents_left(services, world["alice"], "tmpl-complaint") == 0


def test_a_consent_given_in_one_app_is_not_spent_on_a_message_for_the_other(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    admin_id = account_of(services.db, world["admin"])["_id"]
    event = {"action": "subscribe", "template_ids": ["tmpl-complaint"]}
    ok(invoke("notify", event, world["admin"], "staff"))
    assert consent(services, admin_id, "tmpl-complaint")["app"] == "staff"

    messaging.deliver_many(services, [complaint_note(admin_id, "resident")])
    resident_side = pushes.drain(services)
    messaging.deliver_many(services, [complaint_note(admin_id, "staff")])
    staff_side = pushes.drain(services)

    assert (resident_side["pushes_sent"], staff_side["pushes_sent"]) == (0, 1)
    assert [(m["appid"], m["touser"]) for m in pushed(services, fake)] == [
        (STAFF_APPID, world["admin"])
    ]


def test_dispatch_pushes_to_the_resident_and_the_repairman_from_one_inbox_write(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    scope = [world["house"]["community_id"]]
    fixer = staff_account(services, "13900000003", "李师傅", "repairman", scope, "o-staff-fixer")
    ok(subscribe("tmpl-repair"))
    ok(
        invoke(
            "notify",
            {"action": "subscribe", "template_ids": ["tmpl-assigned"]},
            "o-staff-fixer",
            "staff",
        )
    )
    event = {
        "action": "create",
        "house_id": world["house"]["_id"],
        "category": "water_electric",
        "description": "厨房水管漏水",
        "contact_phone": "13800000001",
    }
    repair_id = ok(invoke("repair", event, RESIDENT_OPENID))["repair_id"]

    dispatch = {"action": "dispatch", "repair_id": repair_id, "repairman_id": fixer["_id"]}
    with counted(services) as calls:
        ok(invoke("repair", dispatch, world["admin"], "staff"))

    assert calls.count("messages.insert_many") == 1
    assert "accounts.find" not in calls and "subscription_consents.find" not in calls
    assert sorted((m["appid"], m["touser"], m["template_id"]) for m in pushed(services, fake)) == [
        (RESIDENT_APPID, RESIDENT_OPENID, "tmpl-repair"),
        (STAFF_APPID, "o-staff-fixer", "tmpl-assigned"),
    ]


# ------------------------------------------------------------------------------ the sender


def queue_for_alice(services: Services, world: dict[str, Any], n: int, consents: int) -> None:
    for _ in range(consents):
        ok(subscribe("tmpl-complaint"))
    for _ in range(n):
        messaging.deliver_many(services, [complaint_note(world["alice"])])


def push_states(services: Services) -> list[str]:
    outbox = services.db[messaging.MESSAGES].find({"push": {"$exists": True}})
    return sorted(m["push"]["state"] for m in outbox)


def test_a_busy_wechat_is_tried_again_after_a_backoff_and_the_consent_spent_on_delivery(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    queue_for_alice(services, world, 1, consents=1)
    fake.fail_next(-1, endpoint="subscribe/send")

    assert pushes.drain(services)["pushes_queued"] == 1
    assert consents_left(services, world["alice"], "tmpl-complaint") == 1
    assert pushes.drain(services)["pushes_sent"] == 0  # not due before its backoff

    services.clock.advance(services.settings.push_retry_base_s)
    assert pushes.drain(services)["pushes_sent"] == 1
    assert len(fake.sent) == 1
    assert consents_left(services, world["alice"], "tmpl-complaint") == 0


@pytest.mark.parametrize("errcode", [45009, 45011, 40001])
def test_rate_limits_and_token_trouble_are_retried_until_the_attempts_run_out(
    services: Services, fake: FakeWeChat, world: dict[str, Any], errcode: int
) -> None:
    queue_for_alice(services, world, 1, consents=1)
    attempts = services.settings.push_max_attempts
    for _ in range(attempts * 2):  # a token error is retried once inside the client
        fake.fail_next(errcode, endpoint="subscribe/send")

    for attempt in range(attempts):
        services.clock.advance(services.settings.push_retry_base_s * 2**attempt)
        pushes.drain(services)

    assert push_states(services) == ["failed"]
    assert fake.sent == []
    assert consents_left(services, world["alice"], "tmpl-complaint") == 1


def test_a_push_wechat_rejects_for_good_is_not_retried(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    queue_for_alice(services, world, 1, consents=1)
    fake.fail_next(40003, endpoint="subscribe/send")  # invalid openid

    assert pushes.drain(services)["pushes_failed"] == 1
    services.clock.advance(86400)
    assert pushes.drain(services)["pushes_sent"] == 0
    assert consents_left(services, world["alice"], "tmpl-complaint") == 1


def test_wechat_refusing_one_of_a_rounds_pushes_zeroes_the_consent_whatever_was_sent_on_it(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    queue_for_alice(services, world, 3, consents=3)
    fake.consents[(RESIDENT_OPENID, "tmpl-complaint")] = 1  # withdrawn in WeChat but one

    counts = pushes.drain(services)

    assert (counts["pushes_sent"], counts["pushes_refused"]) == (1, 2)
    assert consents_left(services, world["alice"], "tmpl-complaint") == 0
    assert push_states(services) == ["refused", "refused", "sent"]


def test_two_senders_racing_send_each_push_once_and_spend_one_consent_each(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    queue_for_alice(services, world, 12, consents=10)
    fake.send_latency_s = 0.01  # so the two senders' calls overlap

    with ThreadPoolExecutor(max_workers=2) as senders:
        runs = list(senders.map(lambda _: pushes.drain(services), range(2)))

    assert sum(r["pushes_sent"] for r in runs) == 10 == len(fake.sent)
    assert push_states(services) == ["dropped"] * 2 + ["sent"] * 10
    assert consents_left(services, world["alice"], "tmpl-complaint") == 0


def test_a_sender_past_its_deadline_leaves_the_rest_queued_for_the_next_run(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    queue_for_alice(services, world, 3, consents=3)

    assert pushes.drain(services, until=services.clock.now())["pushes_sent"] == 0
    assert push_states(services) == ["queued"] * 3
    assert pushes.drain(services)["pushes_sent"] == 3
    assert pushes.drain(services)["pushes_sent"] == 0


def test_the_timer_sends_what_the_actions_queued(
    services: Services, fake: FakeWeChat, world: dict[str, Any]
) -> None:
    queue_for_alice(services, world, 1, consents=1)

    counts = scheduler.run_jobs(services)

    assert counts["pushes_sent"] == 1 and counts["failed_jobs"] == []
    assert len(fake.sent) == 1


# ------------------------------------------------------------------------------ the inbox


def fill_inbox(services: Services, world: dict[str, Any], n: int) -> None:
    for i in range(n):
        messaging.deliver(
            services, [world["alice"]], "notice", title=f"通知{i}", body="正文", page="/pages/x"
        )
        services.clock.advance(1)


def messages(**fields: Any) -> dict[str, Any]:
    return ok(invoke("notify", {"action": "messages", **fields}, RESIDENT_OPENID))


def test_messages_are_newest_first_with_the_unread_count(
    services: Services, world: dict[str, Any]
) -> None:
    fill_inbox(services, world, 3)

    first = messages(page_size=2)
    second = messages(page=2, page_size=2)

    assert (first["total"], first["unread"], first["page"], first["page_size"]) == (3, 3, 1, 2)
    assert [m["title"] for m in first["items"] + second["items"]] == ["通知2", "通知1", "通知0"]
    item = first["items"][0]
    assert set(item) == {
        "message_id",
        "kind",
        "kind_name",
        "title",
        "body",
        "page",
        "created_at",
        "read",
    }
    assert item["read"] is False and item["created_at"].endswith("+08:00")


def test_mark_read_some_then_all(services: Services, world: dict[str, Any]) -> None:
    fill_inbox(services, world, 3)
    newest = messages()["items"][0]["message_id"]

    marked = invoke("notify", {"action": "mark_read", "message_ids": [newest]}, RESIDENT_OPENID)

    assert ok(marked) == {"marked": 1}
    unread = messages(unread_only=True)
    assert (unread["total"], unread["unread"]) == (2, 2)
    assert newest not in [m["message_id"] for m in unread["items"]]
    assert [m["read"] for m in messages()["items"]] == [True, False, False]
    assert ok(invoke("notify", {"action": "mark_read"}, RESIDENT_OPENID)) == {"marked": 2}
    assert messages()["unread"] == 0


def test_mark_read_never_touches_another_accounts_messages(
    services: Services, world: dict[str, Any]
) -> None:
    admin_id = account_of(services.db, world["admin"])["_id"]
    messaging.deliver(
        services, [admin_id], "repair", title="派单", body="正文", page="/pages/x", app="staff"
    )
    theirs = messaging.inbox(services, admin_id, "staff", False, 1, 20)[0][0]["_id"]

    reply = invoke("notify", {"action": "mark_read", "message_ids": [theirs]}, RESIDENT_OPENID)

    assert ok(reply) == {"marked": 0}
    assert messaging.inbox(services, admin_id, "staff", True, 1, 20)[2] == 1
    assert messages()["total"] == 0


def test_each_app_shows_its_own_inbox_and_marks_only_its_own_read(
    services: Services, world: dict[str, Any]
) -> None:
    # A staff member who also lives in a community: their work reaches the staff app only, their
    # bills the resident app only (the matrix's admin in the resident app found the leak).
    admin_id = account_of(services.db, world["admin"])["_id"]
    page = "/pages/repair/detail?id=r1"
    messaging.deliver(
        services, [admin_id], "repair_filed", title="新的报修", body="正文", page=page, app="staff"
    )
    messaging.deliver(
        services, [admin_id], "bill", title="新账单", body="正文", page="/pages/bills/index"
    )

    def titles(app: str) -> list[str]:
        return [m["title"] for m in messaging.inbox(services, admin_id, app, False, 1, 20)[0]]

    assert (titles("staff"), titles("resident")) == (["新的报修"], ["新账单"])
    assert messaging.mark_read(services, admin_id, "resident", None) == 1
    assert messaging.inbox(services, admin_id, "staff", True, 1, 20)[2] == 1

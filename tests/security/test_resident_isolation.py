"""A resident never sees another house's complaints or visitors, nor another community's
notices, whether they ask by id, by list, over CloudBase or over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import http, invoke
from worlds import BAY, GARDEN, ok, refused, resident_account, staff_account

from caiyun.domain import accounts, sessions
from caiyun.domain.owner_import import import_owners
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import houses as house_store
from caiyun.stores import staff

ALICE_PHONE, BOB_PHONE, CAROL_PHONE = "13800000001", "13800000002", "13800000003"
VISITOR_PHONE = "13612345678"
SECRET_CONTENT = "隔壁装修噪音从早上七点开始"


def house_in(services: Services, record: dict[str, str], room: str, phone: str) -> dict:
    row = {"building": 2, "unit": 1, "room": room, "owner_name": "业主", "owner_phone": phone}
    return house_store.get(services.db, import_owners(services, record, [row]).rows[0].house_id)


def resident(services: Services, phone: str, name: str, house: dict[str, Any]) -> dict:
    account = resident_account(services, phone, name, f"o-{phone}", [house])
    token = sessions.open_session(services, account["_id"], "resident")[0].token
    return {"id": account["_id"], "openid": f"o-{phone}", "token": token, "house": house}


@pytest.fixture
def world(services: Services) -> dict[str, Any]:
    """Alice and Bob are neighbours in the garden; Carol lives in the bay.

    Alice has filed a complaint and registered a visitor, and both communities have a notice.
    """
    alice = resident(services, ALICE_PHONE, "张伟", house_in(services, GARDEN, "301", ALICE_PHONE))
    bob = resident(services, BOB_PHONE, "李娜", house_in(services, GARDEN, "302", BOB_PHONE))
    carol = resident(services, CAROL_PHONE, "王芳", house_in(services, BAY, "101", CAROL_PHONE))
    staff_account(services, "13900000001", "总部", "admin", None, "o-boss")
    complaint = ok(
        invoke(
            "complaint",
            {
                "action": "create",
                "house_id": alice["house"]["_id"],
                "kind": "complaint",
                "type": "noise",
                "contact_phone": ALICE_PHONE,
                "content": SECRET_CONTENT,
            },
            alice["openid"],
        )
    )
    visit = ok(
        invoke(
            "visitor",
            {
                "action": "register",
                "house_id": alice["house"]["_id"],
                "name": "赵敏",
                "phone": VISITOR_PHONE,
                "count": 1,
                "plate": "粤B12345",
            },
            alice["openid"],
        )
    )
    notices = {}
    for name, house in (("garden", alice["house"]), ("bay", carol["house"])):
        event = {
            "action": "publish_notice",
            "community_id": house["community_id"],
            "title": f"{name} 停水通知",
            "content": "周六上午停水",
        }
        notices[name] = ok(invoke("notify", event, "o-boss", "staff"))["notice_id"]
    return {
        "alice": alice,
        "bob": bob,
        "carol": carol,
        "complaint_id": complaint["complaint_id"],
        "visit": visit,
        "notices": notices,
    }


def as_cloudbase(person: dict[str, Any], function: str, **event: Any) -> dict[str, Any]:
    return invoke(function, event, person["openid"])


def as_http(person: dict[str, Any], function: str, **event: Any) -> dict[str, Any]:
    return http(function, event, token=person["token"])[1]


CALLERS = [pytest.param(as_cloudbase, id="cloudbase"), pytest.param(as_http, id="http")]


@pytest.mark.parametrize("ask", CALLERS)
def test_neighbour_cannot_read_or_list_a_complaint(world: dict[str, Any], ask: Any) -> None:
    for person in (world["bob"], world["carol"]):
        detail = ask(person, "complaint", action="detail", complaint_id=world["complaint_id"])
        assert refused(detail) == "NOT_FOUND"
        mine = ok(ask(person, "complaint", action="my_list"))
        assert mine["total"] == 0 and mine["items"] == []
        assert refused(ask(person, "complaint", action="staff_list")) == "FORBIDDEN"


@pytest.mark.parametrize("ask", CALLERS)
def test_neighbour_cannot_file_for_or_answer_another_house(world: dict[str, Any], ask: Any) -> None:
    filed = ask(
        world["bob"],
        "complaint",
        action="create",
        house_id=world["alice"]["house"]["_id"],
        kind="complaint",
        type="other",
        contact_phone=BOB_PHONE,
        content="冒名投诉",
    )
    answered = ask(
        world["bob"],
        "complaint",
        action="reply",
        complaint_id=world["complaint_id"],
        reply="已解决",
        status="resolved",
    )

    assert refused(filed) == "FORBIDDEN"
    assert refused(answered) == "FORBIDDEN"


@pytest.mark.parametrize("ask", CALLERS)
def test_neighbour_cannot_register_for_or_list_anothers_visitors(
    world: dict[str, Any], ask: Any
) -> None:
    registered = ask(
        world["bob"],
        "visitor",
        action="register",
        house_id=world["alice"]["house"]["_id"],
        name="冒名访客",
        phone=VISITOR_PHONE,
        count=1,
    )
    history = ok(ask(world["bob"], "visitor", action="history"))

    assert refused(registered) == "FORBIDDEN"
    assert history["total"] == 0 and history["items"] == []
    assert refused(ask(world["bob"], "visitor", action="verify", token="x")) == "FORBIDDEN"


@pytest.mark.parametrize("ask", CALLERS)
def test_residents_see_only_their_own_communitys_notices(world: dict[str, Any], ask: Any) -> None:
    for person, mine, theirs in (
        (world["bob"], "garden", "bay"),
        (world["carol"], "bay", "garden"),
    ):
        groups = ok(ask(person, "notify", action="notices"))["groups"]
        assert [[n["notice_id"] for n in g["items"]] for g in groups] == [[world["notices"][mine]]]
        other = ask(person, "notify", action="notice_detail", notice_id=world["notices"][theirs])
        assert refused(other) == "NOT_FOUND"
        own = ask(person, "notify", action="notice_detail", notice_id=world["notices"][mine])
        assert ok(own)["notice_id"] == world["notices"][mine]


@pytest.mark.parametrize("ask", CALLERS)
def test_inbox_is_the_callers_own(world: dict[str, Any], ask: Any) -> None:
    alices = ok(ask(world["alice"], "notify", action="messages"))["items"]
    bobs = ok(ask(world["bob"], "notify", action="messages"))["items"]
    carols = ok(ask(world["carol"], "notify", action="messages"))["items"]

    assert [m["title"] for m in alices] == ["garden 停水通知"]
    assert [m["title"] for m in bobs] == ["garden 停水通知"]
    assert [m["title"] for m in carols] == ["bay 停水通知"]
    marked = ask(world["bob"], "notify", action="mark_read", message_ids=[alices[0]["message_id"]])
    assert ok(marked) == {"marked": 0}
    assert ok(ask(world["alice"], "notify", action="messages"))["unread"] == 1


def test_shared_pass_reveals_nothing_about_the_host(world: dict[str, Any]) -> None:
    token = world["visit"]["pass_token"]

    for caller in (None, world["carol"]["openid"]):
        view = ok(invoke("visitor", {"action": "pass", "token": token}, caller))
        text = json.dumps(view, ensure_ascii=False)
        for secret in (ALICE_PHONE, "张伟", world["alice"]["id"], VISITOR_PHONE, "粤B12345"):
            assert secret not in text
        assert view["community_name"] == "彩云花园"


def test_other_communitys_guard_learns_nothing_from_a_pass(
    services: Services, world: dict[str, Any]
) -> None:
    now = services.clock.now()
    guard, _ = account_store.ensure_account(services.db, "13900000003", now)
    staff.upsert(
        services.db, guard["_id"], "门岗", "guard", [world["carol"]["house"]["community_id"]], now
    )
    accounts.bind_openid(services.db, guard["_id"], "staff", "o-bay-guard")

    event = {"action": "verify", "token": world["visit"]["pass_token"]}
    reply = invoke("visitor", event, "o-bay-guard", "staff")

    assert refused(reply) == "FORBIDDEN"
    assert "赵敏" not in json.dumps(reply, ensure_ascii=False)

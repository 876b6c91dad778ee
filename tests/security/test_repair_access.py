"""Who may touch a repair: the reporter, admins of its community, its assigned repairman.

Everyone else is refused without learning anything, and the timer-only scheduler answers no
client at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import http, invoke
from worlds import BAY, GARDEN, log_in, ok, owner_row, staff_account
from worlds import refused as code

from caiyun.clock import OffsetClock
from caiyun.domain.owner_import import import_owners
from caiyun.sandbox.functions import handler
from caiyun.services import Services
from caiyun.stores import accounts, memberships, staff
from caiyun.stores import houses as house_store
from caiyun.stores.repairs import REPAIRS


@dataclass(frozen=True)
class Person:
    account_id: str
    openid: str
    app: str = "resident"

    def call(self, action: str, **fields: Any) -> dict[str, Any]:
        return invoke("repair", {"action": action, **fields}, self.openid, self.app)


def sign_in(services: Services, phone: str, app: str) -> tuple[Person, str]:
    """A real login (code from the sandbox outbox); returns the person and their token."""
    openid, data = log_in(services, phone, app)
    return Person(data["account"]["account_id"], openid, app), data["session_token"]


@dataclass(frozen=True)
class Scene:
    repair_id: str
    garden_id: str
    bay_id: str
    reporter: Person
    reporter_token: str
    family: Person  # lives in the same house, did not report
    stranger: Person  # owner of another house
    admin: Person
    bay_admin: Person
    fixer: Person
    bay_fixer: Person


@pytest.fixture
def scene(services: Services) -> Scene:
    db, now = services.db, services.clock.now()
    garden = import_owners(
        services,
        GARDEN,
        [owner_row("101", "张三", "13800000101"), owner_row("102", "李四", "13800000102")],
    )
    bay = import_owners(services, BAY, [])
    h101 = house_store.get(db, garden.rows[0].house_id or "")
    h102 = house_store.get(db, garden.rows[1].house_id or "")
    assert h101 is not None and h102 is not None
    family_account, _ = accounts.ensure_account(db, "13800000111", now, "张小三")
    memberships.add(db, h101, family_account["_id"], "family", now, "test")
    for phone, house in (("13800000101", h101), ("13800000102", h102)):
        account = accounts.by_phone(db, phone)
        assert account is not None
        memberships.add(db, house, account["_id"], "owner", now, "test")
    for phone, name, role, community in (
        ("13700000001", "物业小王", "admin", garden.community_id),
        ("13700000002", "星河湾管理员", "admin", bay.community_id),
        ("13700000003", "李师傅", "repairman", garden.community_id),
        ("13700000004", "吴师傅", "repairman", bay.community_id),
    ):
        staff_account(services, phone, name, role, [community], account_name=name, now=now)
    reporter, token = sign_in(services, "13800000101", "resident")
    created = ok(
        reporter.call(
            "create",
            house_id=h101["_id"],
            category="water_electric",
            description="漏水",
            contact_phone="13911112222",
        )
    )
    return Scene(
        repair_id=created["repair_id"],
        garden_id=garden.community_id,
        bay_id=bay.community_id,
        reporter=reporter,
        reporter_token=token,
        family=sign_in(services, "13800000111", "resident")[0],
        stranger=sign_in(services, "13800000102", "resident")[0],
        admin=sign_in(services, "13700000001", "staff")[0],
        bay_admin=sign_in(services, "13700000002", "staff")[0],
        fixer=sign_in(services, "13700000003", "staff")[0],
        bay_fixer=sign_in(services, "13700000004", "staff")[0],
    )


def stored(services: Services, repair_id: str) -> dict[str, Any]:
    found = services.db[REPAIRS].find_one({"_id": repair_id})
    assert found is not None
    return found


def test_other_residents_cannot_see_or_move_a_repair(services: Services, scene: Scene) -> None:
    before = stored(services, scene.repair_id)
    for person in (scene.family, scene.stranger):
        rid = scene.repair_id
        assert code(person.call("detail", repair_id=rid)) == "NOT_FOUND"
        assert code(person.call("cancel", repair_id=rid)) == "NOT_FOUND"
        assert code(person.call("rate", repair_id=rid, stars=1, comment="差")) == "NOT_FOUND"
        assert ok(person.call("my_list"))["total"] == 0
    # The answer is the same as for an id that does not exist.
    missing = scene.stranger.call("detail", repair_id="000000000000000000000000")
    assert missing["error"] == scene.stranger.call("detail", repair_id=scene.repair_id)["error"]
    assert stored(services, scene.repair_id) == before


def test_residents_cannot_use_staff_actions(scene: Scene) -> None:
    rid = scene.repair_id
    for action, fields in (
        ("staff_list", {}),
        ("repairmen", {"community_id": scene.garden_id}),
        ("dispatch", {"repair_id": rid, "repairman_id": scene.fixer.account_id}),
        ("assigned", {}),
        ("complete", {"repair_id": rid, "photos": ["sandbox://files/a.jpg"]}),
    ):
        assert code(scene.reporter.call(action, **fields)) == "FORBIDDEN", action


def test_staff_roles_are_kept_apart(scene: Scene) -> None:
    rid = scene.repair_id
    photos = ["sandbox://files/a.jpg"]
    reply = scene.fixer.call("dispatch", repair_id=rid, repairman_id=scene.fixer.account_id)
    assert code(reply) == "FORBIDDEN"
    assert code(scene.fixer.call("staff_list")) == "FORBIDDEN"
    assert code(scene.admin.call("complete", repair_id=rid, photos=photos)) == "FORBIDDEN"
    assert code(scene.admin.call("assigned")) == "FORBIDDEN"


def test_an_admin_of_another_community_is_kept_out(services: Services, scene: Scene) -> None:
    rid = scene.repair_id
    reply = scene.bay_admin.call("dispatch", repair_id=rid, repairman_id=scene.bay_fixer.account_id)
    assert code(reply) == "FORBIDDEN"
    assert code(scene.bay_admin.call("staff_list", community_id=scene.garden_id)) == "FORBIDDEN"
    assert ok(scene.bay_admin.call("staff_list"))["total"] == 0
    assert code(scene.bay_admin.call("repairmen", community_id=scene.garden_id)) == "FORBIDDEN"
    assert code(scene.bay_admin.call("detail", repair_id=rid)) == "NOT_FOUND"
    assert stored(services, rid)["status"] == "pending"


def test_dispatch_to_a_repairman_of_another_community_is_forbidden(
    services: Services, scene: Scene
) -> None:
    rid = scene.repair_id
    reply = scene.admin.call("dispatch", repair_id=rid, repairman_id=scene.bay_fixer.account_id)
    assert code(reply) == "FORBIDDEN"
    assert stored(services, rid)["status"] == "pending"
    assert ok(scene.bay_fixer.call("assigned"))["total"] == 0


def test_a_repairman_moved_to_another_community_can_no_longer_complete(
    services: Services, scene: Scene
) -> None:
    rid = scene.repair_id
    ok(scene.admin.call("dispatch", repair_id=rid, repairman_id=scene.fixer.account_id))
    now = services.clock.now()
    staff.upsert(services.db, scene.fixer.account_id, "李师傅", "repairman", [scene.bay_id], now)
    reply = scene.fixer.call("complete", repair_id=rid, photos=["sandbox://files/a.jpg"])
    assert code(reply) == "FORBIDDEN"
    assert code(scene.fixer.call("detail", repair_id=rid)) == "NOT_FOUND"
    assert stored(services, rid)["status"] == "dispatched"


def test_lists_mask_the_contact_phone_and_the_detail_shows_it_to_the_people_working_on_it(
    scene: Scene,
) -> None:
    rid = scene.repair_id
    assert ok(scene.admin.call("staff_list"))["items"][0]["contact_phone"] == "139****2222"
    assert ok(scene.admin.call("detail", repair_id=rid))["contact_phone"] == "13911112222"
    summary = ok(scene.reporter.call("my_list"))["items"][0]
    assert "contact_phone" not in summary


def test_calls_without_an_identity_are_unauthenticated(scene: Scene) -> None:
    assert code(invoke("repair", {"action": "categories"}, openid=None)) == "UNAUTHENTICATED"
    unknown = invoke("repair", {"action": "my_list"}, openid="o-nobody")
    assert code(unknown) == "UNAUTHENTICATED"
    status, body = http("repair", {"action": "detail", "repair_id": scene.repair_id})
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
    # Over HTTP the bearer token is the identity; a userInfo in the body is ignored.
    status, body = http(
        "repair",
        {"action": "detail", "repair_id": scene.repair_id, "userInfo": {"openId": "x"}},
        token=scene.reporter_token,
    )
    assert status == 200 and body["data"]["repair_id"] == scene.repair_id


@pytest.mark.parametrize(
    "fields",
    [
        {"repair_id": {"$gt": ""}},
        {"repair_id": ["a"]},
        {"repair_id": "a" * 65},
        {"repair_id": "../x"},
    ],
)
def test_query_operators_and_odd_ids_never_reach_a_query(scene: Scene, fields: Any) -> None:
    reply = scene.reporter.call("detail", **fields)
    assert code(reply) == "INVALID_ARGUMENT"
    assert "repair_id" in reply["error"]["details"]["fields"]


def _due_repair(services: Services, scene: Scene) -> str:
    rid = scene.repair_id
    ok(scene.admin.call("dispatch", repair_id=rid, repairman_id=scene.fixer.account_id))
    photo = f"sandbox://files/repair/completion/{scene.fixer.account_id}/done.jpg"
    ok(scene.fixer.call("complete", repair_id=rid, photos=[photo]))
    assert isinstance(services.clock, OffsetClock)
    services.clock.advance(4 * 24 * 3600)
    return rid


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"action": "run"},
        {"action": "timer"},
        # A mini-program can send any data, including the timer's shape.
        {"Type": "Timer", "TriggerName": "scheduler-timer", "Time": "2026-01-01T00:00:00Z"},
    ],
)
def test_the_scheduler_answers_no_mini_program(
    services: Services, scene: Scene, event: dict[str, Any]
) -> None:
    rid = _due_repair(services, scene)
    assert code(invoke("scheduler", event, scene.reporter.openid)) == "UNKNOWN_ACTION"
    context = {"request_id": "t", "environment": json.dumps({"WX_OPENID": scene.reporter.openid})}
    assert code(handler("scheduler")(event, context)) == "UNKNOWN_ACTION"
    assert stored(services, rid)["status"] == "awaiting_rating"


def test_the_scheduler_answers_no_http_caller(services: Services, scene: Scene) -> None:
    rid = _due_repair(services, scene)
    timer_like = {"Type": "Timer", "TriggerName": "scheduler-timer"}
    for token in (None, scene.reporter_token):
        status, body = http("scheduler", timer_like, token=token)
        assert status == 400 and body["error"]["code"] == "UNKNOWN_ACTION"
    assert stored(services, rid)["status"] == "awaiting_rating"

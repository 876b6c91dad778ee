"""Complaints and suggestions: filed by a house member, answered by the community's admins."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import invoke
from round_trips import counted, own
from worlds import BAY, GARDEN, account_of, ok, refused, resident_account, staff_account

from caiyun.catalog import open_database
from caiyun.domain import houses, messaging
from caiyun.domain.owner_import import import_owners
from caiyun.services import Services, current_services
from caiyun.stores import complaints as complaint_store
from caiyun.stores import houses as house_store
from caiyun.stores.complaints import COMPLAINTS


def image_of(openid: str) -> str:
    """A complaint image uploaded by the account behind ``openid`` (uploads sit under it)."""
    account = account_of(current_services(open_database).db, openid)
    return f"sandbox://files/complaint/{account['_id'] if account else 'nobody'}/a1.jpg"


def community(services: Services, record: dict[str, str], rooms: list[str]) -> list[dict]:
    """A community with one house per room (owners imported, nobody bound yet)."""
    rows = [
        {
            "building": 1,
            "unit": 1,
            "room": r,
            "owner_name": "业主",
            "owner_phone": f"1370000{r:0>4}",
        }
        for r in rooms
    ]
    report = import_owners(services, record, rows)
    return [house_store.get(services.db, row.house_id) for row in report.rows]


def resident(services: Services, phone: str, *homes: dict) -> str:
    """An account bound to ``homes`` as owner, signed in to the resident app; returns openid."""
    openid = f"o-res-{phone}"
    resident_account(services, phone, "居民" + phone[-4:], openid, homes)
    return openid


def staffer(services: Services, phone: str, role: str, community_ids: list[str] | None) -> str:
    openid = f"o-staff-{phone}"
    staff_account(
        services, phone, "王经理", role, community_ids, openid, account_name="员工" + phone[-4:]
    )
    return openid


# The world's staff, who call from the staff app.
STAFF = ("admin", "bay_admin", "boss", "guard")


def call(world: dict[str, Any], who: str, event: dict[str, Any]) -> dict[str, Any]:
    """``who`` of the world calls the complaint function from their app."""
    return invoke("complaint", event, world[who], "staff" if who in STAFF else "resident")


def account_id(services: Services, openid: str) -> str:
    return account_of(services.db, openid)["_id"]


def file(openid: str, house_id: str, **overrides: Any) -> dict[str, Any]:
    event = {
        "action": "create",
        "house_id": house_id,
        "kind": "complaint",
        "type": "environment",
        "contact_phone": "13912345678",
        "content": "楼下垃圾桶三天没有清理，气味很大",
        "images": [image_of(openid)],
        **overrides,
    }
    return invoke("complaint", event, openid)


@pytest.fixture
def world(services: Services) -> dict[str, Any]:
    garden = community(services, GARDEN, ["101", "102"])
    bay = community(services, BAY, ["201"])
    return {
        "garden": garden,
        "bay": bay,
        "alice": resident(services, "13800000001", garden[0]),
        "bob": resident(services, "13800000002", garden[1]),
        "admin": staffer(services, "13900000001", "admin", [garden[0]["community_id"]]),
        "bay_admin": staffer(services, "13900000002", "admin", [bay[0]["community_id"]]),
        "boss": staffer(services, "13900000003", "admin", None),
        "guard": staffer(services, "13900000004", "guard", [garden[0]["community_id"]]),
    }


# ------------------------------------------------------------------------------ filing


def test_types_name_each_type_in_chinese(world: dict[str, Any]) -> None:
    items = ok(call(world, "alice", {"action": "types"}))["items"]

    names = {item["code"]: item["name"] for item in items}
    assert names["engineering"] == "工程维修"
    assert names["service_staff"] == "服务人员"
    assert {"环境绿化", "安保秩序", "停车管理", "其他"} <= set(names.values())


def test_member_files_a_complaint_that_starts_submitted(
    services: Services, world: dict[str, Any]
) -> None:
    house = world["garden"][0]

    data = ok(file(world["alice"], house["_id"], kind="suggestion", type="parking"))

    assert data["status"] == "submitted"
    assert data["kind"] == "suggestion"
    assert data["type_name"] == "停车管理"
    assert data["house_label"] == houses.label(house)
    assert data["community_name"] == "彩云花园"
    assert [i["file_id"] for i in data["images"]] == [image_of(world["alice"])]
    assert data["images"][0]["url"].startswith("http://127.0.0.1:8787/files/complaint/")
    assert data["replies"] == [] and data["reply_count"] == 0
    assert data["created_at"].endswith("+08:00")
    stored = services.db[COMPLAINTS].find_one({"_id": data["complaint_id"]})
    assert stored["community_id"] == house["community_id"]
    assert stored["account_id"] == account_id(services, world["alice"])


def test_caller_without_any_house_is_told_to_bind_one(
    services: Services, world: dict[str, Any]
) -> None:
    lonely = resident(services, "13800000009")

    assert refused(file(lonely, world["garden"][0]["_id"])) == "HOUSE_NOT_BOUND"


def test_house_of_someone_else_is_forbidden(services: Services, world: dict[str, Any]) -> None:
    assert refused(file(world["alice"], world["garden"][1]["_id"])) == "FORBIDDEN"
    assert refused(file(world["alice"], "no-such-house")) == "FORBIDDEN"
    assert services.db[COMPLAINTS].count_documents({}) == 0


def test_anonymous_caller_is_unauthenticated(world: dict[str, Any]) -> None:
    assert refused(file("o-unknown", world["garden"][0]["_id"])) == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"kind": "praise"}, "kind"),
        ({"type": "工程维修"}, "type"),
        ({"contact_phone": "12345"}, "contact_phone"),
        ({"content": "   "}, "content"),
        ({"content": "长" * 1001}, "content"),
        ({"images": ["sandbox://files/complaint/x/a1.jpg"] * 10}, "images"),
        ({"images": ["cloud://another-env.bucket/x.jpg"]}, "images.0"),
        ({"images": ["https://evil.example/x.jpg"]}, "images.0"),
    ],
)
def test_bad_fields_are_refused_and_nothing_is_filed(
    services: Services, world: dict[str, Any], overrides: dict[str, Any], field: str
) -> None:
    reply = file(world["alice"], world["garden"][0]["_id"], **overrides)

    assert refused(reply) == "INVALID_ARGUMENT"
    assert field in reply["error"]["details"]["fields"]
    assert services.db[COMPLAINTS].count_documents({}) == 0


def test_same_request_id_files_once(services: Services, world: dict[str, Any]) -> None:
    house_id = world["garden"][0]["_id"]

    first = ok(file(world["alice"], house_id, request_id="4f9c2a1e-retry"))
    again = ok(file(world["alice"], house_id, request_id="4f9c2a1e-retry"))
    other = ok(file(world["alice"], house_id, request_id="another-request"))

    assert again["complaint_id"] == first["complaint_id"]
    assert other["complaint_id"] != first["complaint_id"]
    assert services.db[COMPLAINTS].count_documents({}) == 2


def test_a_request_id_costs_one_claim_and_the_retry_answers_from_the_complaint(
    services: Services, world: dict[str, Any]
) -> None:
    house_id = world["garden"][0]["_id"]

    with counted(services) as commands:
        first = ok(file(world["alice"], house_id, request_id="7d1e-one-claim"))
    ok(answer(world, first["complaint_id"], "已安排专人处理", "processing"))
    again = ok(file(world["alice"], house_id, request_id="7d1e-one-claim"))

    assert own(commands) == [
        "memberships.aggregate",
        "idempotency_keys.insert_one",
        "rate_limits.bulk_write",  # issue 17.4: the daily create limits (the retry takes none)
        "complaints.insert_one",
    ]
    assert again["complaint_id"] == first["complaint_id"]
    assert again["status"] == "processing"  # the complaint as it is now, not a stale copy


# ------------------------------------------------------------------------------ reading


def test_my_list_is_newest_first_filtered_and_paged(
    services: Services, world: dict[str, Any]
) -> None:
    house_id = world["garden"][0]["_id"]
    ids = [ok(file(world["alice"], house_id, content=f"第{i}件"))["complaint_id"] for i in range(3)]
    ok(file(world["bob"], world["garden"][1]["_id"]))
    reply = {"action": "reply", "complaint_id": ids[0], "reply": "已安排", "status": "processing"}
    ok(call(world, "admin", reply))

    page1 = ok(call(world, "alice", {"action": "my_list", "page_size": 2}))
    page2 = ok(call(world, "alice", {"action": "my_list", "page": 2, "page_size": 2}))
    busy = ok(call(world, "alice", {"action": "my_list", "status": "processing"}))

    assert page1["total"] == 3 and (page1["page"], page1["page_size"]) == (1, 2)
    assert [c["complaint_id"] for c in page1["items"] + page2["items"]] == ids[::-1]
    assert [c["complaint_id"] for c in busy["items"]] == [ids[0]]
    assert busy["items"][0]["reply_count"] == 1


def test_detail_is_for_the_reporter_and_the_communitys_admins(
    services: Services, world: dict[str, Any]
) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]
    ask = {"action": "detail", "complaint_id": complaint_id}

    assert ok(call(world, "alice", ask))["complaint_id"] == complaint_id
    assert ok(call(world, "admin", ask))["contact_phone"] == "13912345678"
    assert ok(call(world, "boss", ask))["complaint_id"] == complaint_id
    for outsider in ("bob", "bay_admin", "guard"):
        assert refused(call(world, outsider, ask)) == "NOT_FOUND"
    assert refused(call(world, "alice", {**ask, "complaint_id": "missing"})) == ("NOT_FOUND")


def test_the_owner_sees_every_complaint_of_the_house_read_only(
    services: Services, world: dict[str, Any]
) -> None:
    house = world["garden"][0]
    resident_account(services, "13800000009", "家人", "o-res-family", [house], "family")
    world["family"] = "o-res-family"
    theirs = ok(file(world["family"], house["_id"], contact_phone="13800000009"))["complaint_id"]
    mine = ok(file(world["alice"], house["_id"]))["complaint_id"]

    listed = ok(call(world, "alice", {"action": "my_list"}))["items"]
    shown = ok(call(world, "alice", {"action": "detail", "complaint_id": theirs}))

    assert [(i["complaint_id"], i["mine"], i["contact_phone"]) for i in listed] == [
        (mine, True, "13912345678"),
        (theirs, False, "138****0009"),
    ]
    assert (shown["mine"], shown["contact_phone"]) == (False, "138****0009")
    family_list = ok(call(world, "family", {"action": "my_list"}))["items"]
    assert [i["complaint_id"] for i in family_list] == [theirs]
    ask_mine = {"action": "detail", "complaint_id": mine}
    assert refused(call(world, "family", ask_mine)) == "NOT_FOUND"
    assert refused(call(world, "bob", {**ask_mine, "complaint_id": theirs})) == "NOT_FOUND"


def test_staff_list_covers_only_the_admins_communities(
    services: Services, world: dict[str, Any]
) -> None:
    in_garden = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]
    bay_owner = resident(services, "13800000003", world["bay"][0])
    in_bay = ok(file(bay_owner, world["bay"][0]["_id"]))["complaint_id"]
    garden_id = world["garden"][0]["community_id"]
    bay_id = world["bay"][0]["community_id"]

    def listed(who: str, **fields: Any) -> list[str]:
        page = ok(call(world, who, {"action": "staff_list", **fields}))
        return [c["complaint_id"] for c in page["items"]]

    assert listed("admin") == [in_garden]
    assert listed("admin", community_id=garden_id) == [in_garden]
    assert listed("bay_admin") == [in_bay]
    assert listed("boss") == [in_bay, in_garden]
    assert listed("boss", community_id=bay_id) == [in_bay]
    assert listed("boss", status="resolved") == []
    reply = call(world, "admin", {"action": "staff_list", "community_id": bay_id})
    assert refused(reply) == "FORBIDDEN"


def test_staff_list_narrows_by_kind_and_type_and_counts_every_status(
    services: Services, world: dict[str, Any]
) -> None:
    house_id = world["garden"][0]["_id"]
    noise = ok(file(world["alice"], house_id, type="noise"))["complaint_id"]
    ok(file(world["alice"], house_id, type="environment"))
    idea = ok(file(world["alice"], house_id, kind="suggestion", type="environment"))
    ok(answer(world, noise, "已提醒楼上住户", "resolved"))

    def page(**fields: Any) -> dict[str, Any]:
        return ok(call(world, "admin", {"action": "staff_list", **fields}))

    everything = page()
    complaints_only = page(kind="complaint")
    environment = page(type="environment", status="submitted")
    suggestions = page(kind="suggestion")

    assert everything["counts"] == {"submitted": 2, "processing": 0, "resolved": 1}
    assert complaints_only["counts"] == {"submitted": 1, "processing": 0, "resolved": 1}
    assert environment["counts"] == {"submitted": 2, "processing": 0, "resolved": 0}
    assert environment["total"] == 2
    assert [c["complaint_id"] for c in suggestions["items"]] == [idea["complaint_id"]]
    item = suggestions["items"][0]
    assert (item["kind_name"], item["type_name"], item["status_name"]) == (
        "建议",
        "环境绿化",
        "已提交",
    )
    assert item["community_name"] == "彩云花园"
    mine = ok(call(world, "alice", {"action": "my_list", "status": "resolved"}))
    assert [c["complaint_id"] for c in mine["items"]] == [noise]
    assert mine["counts"] == everything["counts"]


def test_staff_list_masks_the_contact_phone(world: dict[str, Any]) -> None:
    ok(file(world["alice"], world["garden"][0]["_id"]))

    page = ok(call(world, "admin", {"action": "staff_list"}))

    assert page["items"][0]["contact_phone"] == "139****5678"


@pytest.mark.parametrize("who", ["alice", "guard"])
def test_staff_actions_are_for_admins_only(world: dict[str, Any], who: str) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]

    assert refused(call(world, who, {"action": "staff_list"})) == "FORBIDDEN"
    answer = {"action": "reply", "complaint_id": complaint_id, "reply": "好", "status": "resolved"}
    assert refused(call(world, who, answer)) == "FORBIDDEN"


# ------------------------------------------------------------------------------ replies


def answer(world: dict[str, Any], complaint_id: str, text: str, status: str, who: str = "admin"):
    event = {"action": "reply", "complaint_id": complaint_id, "reply": text, "status": status}
    return call(world, who, event)


def test_replies_move_it_forward_and_are_kept_for_the_resident(
    services: Services, world: dict[str, Any]
) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]

    processing = ok(answer(world, complaint_id, "已通知保洁，今天下午处理", "processing"))
    services.clock.advance(3600)
    resolved = ok(answer(world, complaint_id, "已清理完毕", "resolved"))

    assert processing["status"] == "processing" and processing["resolved_at"] is None
    assert resolved["status"] == "resolved" and resolved["resolved_at"] is not None
    seen = ok(call(world, "alice", {"action": "detail", "complaint_id": complaint_id}))
    assert [(r["text"], r["status"], r["staff_name"]) for r in seen["replies"]] == [
        ("已通知保洁，今天下午处理", "processing", "王经理"),
        ("已清理完毕", "resolved", "王经理"),
    ]
    assert seen["replies"][0]["replied_at"] < seen["replies"][1]["replied_at"]
    stored = services.db[COMPLAINTS].find_one({"_id": complaint_id})
    assert stored["replies"][0]["staff_id"] == account_id(services, world["admin"])


def test_reporter_is_told_in_the_inbox(services: Services, world: dict[str, Any]) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]

    ok(answer(world, complaint_id, "已安排专人处理", "processing"))

    items, _, unread = messaging.inbox(
        services, account_id(services, world["alice"]), "resident", False, 1, 20
    )
    assert unread == 1
    assert items[0]["kind"] == "complaint"
    assert items[0]["title"] == "您的投诉处理中"
    assert items[0]["body"] == "已安排专人处理"
    assert complaint_id in items[0]["page"]


def test_submitted_may_be_resolved_at_once(world: dict[str, Any]) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"], kind="suggestion"))[
        "complaint_id"
    ]

    assert ok(answer(world, complaint_id, "感谢建议，已采纳", "resolved"))["status"] == "resolved"


def test_resolved_takes_no_more_replies(services: Services, world: dict[str, Any]) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]
    ok(answer(world, complaint_id, "已处理", "resolved"))

    assert refused(answer(world, complaint_id, "补充说明", "processing")) == "CONFLICT"
    assert refused(answer(world, complaint_id, "再次确认", "resolved")) == "CONFLICT"
    stored = services.db[COMPLAINTS].find_one({"_id": complaint_id})
    assert stored["status"] == "resolved" and len(stored["replies"]) == 1


def test_status_never_goes_back_to_submitted(world: dict[str, Any]) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]
    ok(answer(world, complaint_id, "处理中", "processing"))

    reply = answer(world, complaint_id, "撤回", "submitted")

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "status" in reply["error"]["details"]["fields"]


def test_admin_of_another_community_cannot_reply(services: Services, world: dict[str, Any]) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]

    assert refused(answer(world, complaint_id, "越权", "resolved", who="bay_admin")) == "FORBIDDEN"
    assert refused(answer(world, "missing", "无", "resolved")) == "NOT_FOUND"
    stored = services.db[COMPLAINTS].find_one({"_id": complaint_id})
    assert stored["status"] == "submitted" and stored["replies"] == []


def test_replies_are_bounded(
    monkeypatch: pytest.MonkeyPatch, services: Services, world: dict[str, Any]
) -> None:
    monkeypatch.setattr(complaint_store, "MAX_REPLIES", 2)
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]
    ok(answer(world, complaint_id, "第一次", "processing"))
    ok(answer(world, complaint_id, "第二次", "processing"))

    assert refused(answer(world, complaint_id, "第三次", "processing")) == "CONFLICT"
    assert len(services.db[COMPLAINTS].find_one({"_id": complaint_id})["replies"]) == 2


def test_two_admins_resolving_at_once_make_one_resolution(
    services: Services, world: dict[str, Any]
) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]
    start = threading.Barrier(2)
    results: list[dict[str, Any]] = []

    def resolve(who: str) -> None:
        start.wait()
        results.append(answer(world, complaint_id, f"{who} 已处理", "resolved", who=who))

    threads = [threading.Thread(target=resolve, args=(who,)) for who in ("admin", "boss")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r["ok"] for r in results) == [False, True]
    assert [r["error"]["code"] for r in results if not r["ok"]] == ["CONFLICT"]
    assert len(services.db[COMPLAINTS].find_one({"_id": complaint_id})["replies"]) == 1


# ------------------------------------------------------------------------------ round trips


def test_filing_checks_the_house_in_one_read_and_replies_from_what_it_stored(
    services: Services, world: dict[str, Any]
) -> None:
    event = {
        "action": "create",
        "house_id": world["garden"][0]["_id"],
        "kind": "complaint",
        "type": "noise",
        "contact_phone": "13912345678",
        "content": "楼上装修周末早上七点就开始施工",
        "images": [image_of(world["alice"])],
    }
    with counted(services) as commands:
        filed = ok(call(world, "alice", event))

    # The membership check also reads the community's admins; they are told in one write.
    assert commands == [
        "accounts.aggregate",
        "memberships.aggregate",
        "rate_limits.bulk_write",  # issue 17.4: the daily create limits, one command for all
        "complaints.insert_one",
        "messages.insert_many",
    ]
    assert filed["community_name"] == "彩云花园"
    assert filed == ok(
        call(world, "alice", {"action": "detail", "complaint_id": filed["complaint_id"]})
    )


def test_detail_is_one_read_after_the_caller(services: Services, world: dict[str, Any]) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]

    with counted(services) as commands:
        ok(call(world, "admin", {"action": "detail", "complaint_id": complaint_id}))

    assert commands == ["accounts.aggregate", "complaints.find_one"]


def test_a_reply_in_scope_is_one_conditional_write(
    services: Services, world: dict[str, Any]
) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]

    with counted(services) as commands:
        answered = ok(answer(world, complaint_id, "已安排专人处理", "processing"))

    assert own(commands) == ["complaints.find_one_and_update"]
    assert answered["community_name"] == "彩云花园"


def test_a_complaint_stored_before_names_were_kept_still_shows_its_community(
    services: Services, world: dict[str, Any]
) -> None:
    complaint_id = ok(file(world["alice"], world["garden"][0]["_id"]))["complaint_id"]
    services.db[COMPLAINTS].update_one({"_id": complaint_id}, {"$unset": {"community_name": ""}})

    seen = call(world, "alice", {"action": "detail", "complaint_id": complaint_id})
    listed = call(world, "alice", {"action": "my_list"})

    assert ok(seen)["community_name"] == "彩云花园"
    assert ok(listed)["items"][0]["community_name"] == "彩云花园"

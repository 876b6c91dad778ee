"""Repairs end to end: report, dispatch, finish, rate or cancel, each move checked by state."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import invoke
from round_trips import counted
from worlds import BAY, GARDEN, ok, owner_row, refused, resident_account, staff_account

from caiyun.domain import messaging
from caiyun.domain.owner_import import import_owners
from caiyun.services import Services
from caiyun.stores import houses as house_store
from caiyun.stores import memberships, staff
from caiyun.stores.repairs import REPAIRS


@dataclass(frozen=True)
class Person:
    account_id: str
    openid: str
    phone: str
    app: str = "resident"

    def call(self, action: str, **fields: Any) -> dict[str, Any]:
        return invoke("repair", {"action": action, **fields}, self.openid, self.app)


@dataclass(frozen=True)
class World:
    garden_id: str
    bay_id: str
    house_101: str
    house_102: str
    house_bay: str
    owner: Person  # owner of 101
    family: Person  # family of 101
    neighbour: Person  # owner of 102
    homeless: Person  # an account with no house
    admin: Person  # admin of 彩云花园
    hq: Person  # company-wide admin
    fixer: Person  # repairman of 彩云花园
    fixer2: Person  # another repairman of 彩云花园
    bay_fixer: Person  # repairman of 星河湾


def _resident(services: Services, phone: str, name: str) -> Person:
    openid = f"o-res-{phone}"
    account = resident_account(services, phone, name, openid)
    return Person(account["_id"], openid, phone)


def _staff(
    services: Services,
    phone: str,
    name: str,
    role: staff.StaffRole,
    communities: list[str] | None,
) -> Person:
    openid = f"o-staff-{phone}"
    account = staff_account(services, phone, name, role, communities, openid, account_name=name)
    return Person(account["_id"], openid, phone, "staff")


def _member(
    services: Services, person: Person, house_id: str, role: memberships.ResidentRole
) -> None:
    house = house_store.get(services.db, house_id)
    assert house is not None
    memberships.add(services.db, house, person.account_id, role, services.clock.now(), "test")


@pytest.fixture
def world(services: Services) -> World:
    rows = [
        owner_row("101", "张三", "13800000101", building=3, unit=2),
        owner_row("102", "李四", "13800000102", building=3, unit=2),
    ]
    garden = import_owners(services, GARDEN, rows)
    bay = import_owners(services, BAY, [owner_row("901", "王五", "13800000901")])
    h101, h102 = (r.house_id for r in garden.rows)
    hbay = bay.rows[0].house_id
    assert h101 and h102 and hbay
    owner = _resident(services, "13800000101", "张三")
    family = _resident(services, "13800000111", "张小三")
    neighbour = _resident(services, "13800000102", "李四")
    _member(services, owner, h101, "owner")
    _member(services, family, h101, "family")
    _member(services, neighbour, h102, "owner")
    return World(
        garden_id=garden.community_id,
        bay_id=bay.community_id,
        house_101=h101,
        house_102=h102,
        house_bay=hbay,
        owner=owner,
        family=family,
        neighbour=neighbour,
        homeless=_resident(services, "13800000999", "赵六"),
        admin=_staff(services, "13700000001", "物业小王", "admin", [garden.community_id]),
        hq=_staff(services, "13700000000", "总部", "admin", None),
        fixer=_staff(services, "13700000002", "李师傅", "repairman", [garden.community_id]),
        fixer2=_staff(services, "13700000003", "周师傅", "repairman", [garden.community_id]),
        bay_fixer=_staff(services, "13700000004", "吴师傅", "repairman", [bay.community_id]),
    )


def report(person: Person, house_id: str, **fields: Any) -> dict[str, Any]:
    event = {
        "house_id": house_id,
        "category": "water_electric",
        "description": "厨房水管漏水",
        "contact_phone": person.phone,
        **fields,
    }
    return ok(person.call("create", **event))


def photo(services: Services, name: str, uploader: Person) -> str:
    target = services.storage.upload_target(f"test/{uploader.account_id}", f"{name}.jpg")
    assert target.file_id is not None
    return target.file_id


def inbox(services: Services, person: Person) -> list[dict[str, Any]]:
    items, _, _ = messaging.inbox(services, person.account_id, person.app, False, 1, 100)
    return items


def events(detail: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["event"], e["status"], e["actor_role"]) for e in detail["timeline"]]


def test_categories_are_listed_with_their_names(world: World) -> None:
    items = ok(world.owner.call("categories"))["items"]
    names = {i["code"]: i["name"] for i in items}
    assert names["water_electric"] == "水电维修"
    assert names["pipe_unclog"] == "管道疏通"
    assert names["other"] == "其他"


def test_a_repair_goes_from_report_to_rating_telling_people_at_each_step(
    services: Services, world: World
) -> None:
    images = [photo(services, "leak", world.owner)]
    created = report(world.owner, world.house_101, images=images)
    rid = created["repair_id"]
    assert created["status"] == "pending" and created["status_name"] == "待处理"
    assert created["house_label"] == "3栋-2单元-101"
    assert created["community_name"] == "彩云花园"
    assert [i["file_id"] for i in created["images"]] == images
    assert created["repairman"] is None
    assert events(created) == [("created", "pending", "resident")]

    dispatched = ok(
        world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id)
    )
    assert dispatched["status"] == "dispatched" and dispatched["status_name"] == "待上门"
    seen = ok(world.owner.call("detail", repair_id=rid))
    assert seen["repairman"] == {
        "account_id": world.fixer.account_id,
        "name": "李师傅",
        "phone": world.fixer.phone,
    }
    assert [m["title"] for m in inbox(services, world.owner)] == ["报修已派单"]
    assert [m["title"] for m in inbox(services, world.fixer)] == ["新的维修工单"]
    mine = ok(world.fixer.call("assigned"))
    assert [i["repair_id"] for i in mine["items"]] == [rid]
    assert mine["items"][0]["contact_phone"] == "138****0101"

    photos = [photo(services, "fixed-1", world.fixer), photo(services, "fixed-2", world.fixer)]
    done = ok(world.fixer.call("complete", repair_id=rid, photos=photos, note="更换了阀门"))
    assert done["status"] == "awaiting_rating" and done["status_name"] == "待评价"
    assert [p["file_id"] for p in done["completion"]["photos"]] == photos and done["completion"][
        "note"
    ] == "更换了阀门"
    assert done["auto_close_at"] is not None
    assert inbox(services, world.owner)[0]["title"] == "维修已完成，请评价"

    rated = ok(world.owner.call("rate", repair_id=rid, stars=5, comment="很及时"))
    assert rated["status"] == "completed" and rated["status_name"] == "已完成"
    assert rated["rating"]["stars"] == 5 and rated["rating"]["comment"] == "很及时"
    assert rated["auto_closed"] is False and rated["auto_close_at"] is None
    assert events(rated) == [
        ("created", "pending", "resident"),
        ("dispatched", "dispatched", "admin"),
        ("work_done", "awaiting_rating", "repairman"),
        ("rated", "completed", "resident"),
    ]
    assert all(e["at"].endswith("+08:00") for e in rated["timeline"])


def test_my_list_pages_newest_first_and_filters_by_status(services: Services, world: World) -> None:
    ids = [
        report(world.owner, world.house_101, description=f"问题{i}")["repair_id"] for i in range(5)
    ]
    ok(world.owner.call("cancel", repair_id=ids[0]))
    first = ok(world.owner.call("my_list", page=1, page_size=2))
    assert first["total"] == 5 and first["page"] == 1 and first["page_size"] == 2
    assert [i["repair_id"] for i in first["items"]] == [ids[4], ids[3]]
    third = ok(world.owner.call("my_list", page=3, page_size=2))
    assert [i["repair_id"] for i in third["items"]] == [ids[0]]
    cancelled = ok(world.owner.call("my_list", status="cancelled"))
    assert [i["repair_id"] for i in cancelled["items"]] == [ids[0]]
    assert cancelled["items"][0]["status_name"] == "已取消"
    # Family members report for the house too, and see only their own reports.
    report(world.family, world.house_101)
    assert ok(world.family.call("my_list"))["total"] == 1


def test_the_owner_sees_every_repair_of_the_house_and_moves_only_their_own(
    services: Services, world: World
) -> None:
    # Issue 15.5 as reported: repair.detail of a repair family filed answered the owner
    # NOT_FOUND.
    theirs = report(world.family, world.house_101, description="卫生间漏水")
    mine = report(world.owner, world.house_101)
    report(world.neighbour, world.house_102)

    listed = ok(world.owner.call("my_list"))["items"]
    shown = ok(world.owner.call("detail", repair_id=theirs["repair_id"]))

    assert [(i["repair_id"], i["mine"]) for i in listed] == [
        (mine["repair_id"], True),
        (theirs["repair_id"], False),
    ]
    assert (shown["description"], shown["mine"]) == ("卫生间漏水", False)
    assert shown["contact_phone"] == "138****0111"  # family's number, not the owner's
    assert refused(world.owner.call("cancel", repair_id=theirs["repair_id"])) == "FORBIDDEN"
    assert refused(
        world.owner.call("rate", repair_id=theirs["repair_id"], stars=5, comment="")
    ) == ("FORBIDDEN")
    assert ok(world.owner.call("detail", repair_id=mine["repair_id"]))["contact_phone"] == (
        world.owner.phone
    )
    # Family and neighbours see their own only.
    family_list = ok(world.family.call("my_list"))["items"]
    assert [(i["repair_id"], i["mine"]) for i in family_list] == [(theirs["repair_id"], True)]
    assert refused(world.family.call("detail", repair_id=mine["repair_id"])) == "NOT_FOUND"
    assert refused(world.neighbour.call("detail", repair_id=theirs["repair_id"])) == "NOT_FOUND"
    assert refused(world.neighbour.call("cancel", repair_id=theirs["repair_id"])) == "NOT_FOUND"
    assert ok(world.family.call("cancel", repair_id=theirs["repair_id"]))["status"] == "cancelled"


ALL_ZERO = {s: 0 for s in ("pending", "dispatched", "awaiting_rating", "completed", "cancelled")}


def test_every_list_counts_its_repairs_by_status_for_the_tabs(
    services: Services, world: World
) -> None:
    ids = [report(world.owner, world.house_101)["repair_id"] for _ in range(4)]
    ok(world.owner.call("cancel", repair_id=ids[0]))
    for rid in ids[1:3]:
        ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))
    ok(world.fixer.call("complete", repair_id=ids[2], photos=[photo(services, "p", world.fixer)]))
    expected = {**ALL_ZERO, "pending": 1, "dispatched": 1, "awaiting_rating": 1, "cancelled": 1}

    mine = ok(world.owner.call("my_list", status="pending"))
    staff_view = ok(world.admin.call("staff_list", status="dispatched"))
    assigned = ok(world.fixer.call("assigned"))

    # The counts cover every tab whichever one the page shows.
    assert mine["counts"] == staff_view["counts"] == expected
    assert [i["repair_id"] for i in mine["items"]] == [ids[3]] and mine["total"] == 1
    assert [i["repair_id"] for i in staff_view["items"]] == [ids[1]]
    assert assigned["counts"] == {**ALL_ZERO, "dispatched": 1, "awaiting_rating": 1}
    assert ok(world.family.call("my_list"))["counts"] == ALL_ZERO
    assert ok(world.fixer2.call("assigned"))["counts"] == ALL_ZERO


def test_the_communitys_admins_hear_of_a_new_repair_once(services: Services, world: World) -> None:
    created = report(world.owner, world.house_101, request_id="tell-once")
    report(world.owner, world.house_101, request_id="tell-once")  # the retry tells nobody again

    for admin in (world.admin, world.hq):
        told = [m for m in inbox(services, admin) if m["kind"] == "repair_filed"]
        assert [(m["title"], m["page"]) for m in told] == [
            ("新的报修", f"/pages/repair/detail?id={created['repair_id']}")
        ]
        assert "厨房水管漏水" in told[0]["body"] and "3栋-2单元-101" in told[0]["body"]
    for nobody in (world.fixer, world.bay_fixer, world.owner):
        assert not [m for m in inbox(services, nobody) if m["kind"] == "repair_filed"]


def test_reporting_needs_a_bound_house_of_ones_own(world: World) -> None:
    event = {"category": "other", "description": "门禁坏了", "contact_phone": "13800000999"}
    assert refused(world.homeless.call("create", house_id=world.house_101, **event)) == (
        "HOUSE_NOT_BOUND"
    )
    assert refused(world.neighbour.call("create", house_id=world.house_101, **event)) == "FORBIDDEN"
    assert refused(world.neighbour.call("create", house_id="no-such-house", **event)) == "FORBIDDEN"
    assert ok(world.family.call("create", house_id=world.house_101, **event))["status"] == "pending"


def test_create_is_validated_field_by_field(world: World) -> None:
    reply = world.owner.call(
        "create",
        house_id=world.house_101,
        category="Roof!",
        description="",
        contact_phone="12345",
        images=["sandbox://files/a.jpg"] * 10,
    )
    assert refused(reply) == "INVALID_ARGUMENT"
    assert set(reply["error"]["details"]["fields"]) == {
        "category",
        "description",
        "contact_phone",
        "images",
    }
    # A well-formed code that is not a category in force is refused by name too.
    reply = world.owner.call(
        "create",
        house_id=world.house_101,
        category="roof",
        description="屋顶漏水",
        contact_phone=world.owner.phone,
    )
    assert reply["error"]["details"] == {"fields": {"category": "不在可选范围内"}}


def test_double_submitted_create_with_one_request_id_creates_one_repair(
    services: Services, world: World
) -> None:
    first = report(world.owner, world.house_101, request_id="req-1")
    again = report(world.owner, world.house_101, request_id="req-1")
    assert again["repair_id"] == first["repair_id"]
    assert services.db[REPAIRS].count_documents({"reporter_id": world.owner.account_id}) == 1

    barrier = threading.Barrier(6)
    replies: list[dict[str, Any]] = []

    def submit() -> None:
        barrier.wait()
        replies.append(
            world.owner.call(
                "create",
                house_id=world.house_101,
                category="door_window",
                description="窗户关不上",
                contact_phone=world.owner.phone,
                request_id="req-2",
            )
        )

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert services.db[REPAIRS].count_documents({"reporter_id": world.owner.account_id}) == 2
    created = {r["data"]["repair_id"] for r in replies if r["ok"]}
    assert len(created) == 1
    # A retry that overlaps the first call is told to retry, never given a second repair.
    assert all(r["error"]["code"] == "CONFLICT" for r in replies if not r["ok"])


def test_cancel_only_while_pending(services: Services, world: World) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    cancelled = ok(world.owner.call("cancel", repair_id=rid))
    assert cancelled["status"] == "cancelled"
    assert events(cancelled)[-1] == ("cancelled", "cancelled", "resident")
    assert refused(world.owner.call("cancel", repair_id=rid)) == "CONFLICT"
    assert refused(
        world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id)
    ) == ("CONFLICT")

    rid = report(world.owner, world.house_101)["repair_id"]
    ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))
    before = services.db[REPAIRS].find_one({"_id": rid})
    reply = world.owner.call("cancel", repair_id=rid)
    assert refused(reply) == "CONFLICT"
    assert "待上门" in reply["error"]["message"]
    assert services.db[REPAIRS].find_one({"_id": rid}) == before


def test_rate_only_when_awaiting_rating(services: Services, world: World) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    assert refused(world.owner.call("rate", repair_id=rid, stars=5, comment="")) == "CONFLICT"
    ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))
    assert refused(world.owner.call("rate", repair_id=rid, stars=5, comment="")) == "CONFLICT"
    ok(world.fixer.call("complete", repair_id=rid, photos=[photo(services, "p", world.fixer)]))
    for stars in (0, 6):
        reply = world.owner.call("rate", repair_id=rid, stars=stars, comment="")
        assert refused(reply) == "INVALID_ARGUMENT"
        assert "stars" in reply["error"]["details"]["fields"]
    ok(world.owner.call("rate", repair_id=rid, stars=3, comment="一般"))
    before = services.db[REPAIRS].find_one({"_id": rid})
    assert refused(world.owner.call("rate", repair_id=rid, stars=5, comment="改评")) == "CONFLICT"
    assert services.db[REPAIRS].find_one({"_id": rid}) == before


def test_complete_without_photos_is_invalid_argument(services: Services, world: World) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))
    for fields in ({}, {"photos": []}):
        reply = world.fixer.call("complete", repair_id=rid, **fields)
        assert refused(reply) == "INVALID_ARGUMENT"
        assert "photos" in reply["error"]["details"]["fields"]
    assert services.db[REPAIRS].find_one({"_id": rid})["status"] == "dispatched"


def test_only_the_assigned_repairman_completes(services: Services, world: World) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    photos = [photo(services, "p", world.fixer)]
    # Not dispatched yet: nobody is assigned.
    assert refused(world.fixer.call("complete", repair_id=rid, photos=photos)) == "FORBIDDEN"
    ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))
    assert refused(world.fixer2.call("complete", repair_id=rid, photos=photos)) == "FORBIDDEN"
    assert refused(world.bay_fixer.call("complete", repair_id=rid, photos=photos)) == "FORBIDDEN"
    assert ok(world.fixer2.call("assigned"))["total"] == 0
    assert services.db[REPAIRS].find_one({"_id": rid})["status"] == "dispatched"
    ok(world.fixer.call("complete", repair_id=rid, photos=photos))
    assert refused(world.fixer.call("complete", repair_id=rid, photos=photos)) == "CONFLICT"


def test_redispatch_while_dispatched_moves_the_work_and_tells_both_repairmen(
    services: Services, world: World
) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))
    moved = ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer2.account_id))
    assert moved["repairman"]["name"] == "周师傅"
    assert [e[0] for e in events(moved)] == ["created", "dispatched", "redispatched"]
    assert [m["title"] for m in inbox(services, world.fixer)] == ["工单已改派", "新的维修工单"]
    assert [m["title"] for m in inbox(services, world.fixer2)] == ["新的维修工单"]
    assert ok(world.fixer.call("assigned"))["total"] == 0
    photos = [photo(services, "p", world.fixer2)]
    assert refused(world.fixer.call("complete", repair_id=rid, photos=photos)) == "FORBIDDEN"

    # The same repairman again changes nothing and tells nobody again.
    again = ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer2.account_id))
    assert len(again["timeline"]) == 3
    assert len(inbox(services, world.fixer2)) == 1

    ok(world.fixer2.call("complete", repair_id=rid, photos=photos))
    reply = world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id)
    assert refused(reply) == "CONFLICT"


def test_dispatch_needs_a_repairman_of_that_community(services: Services, world: World) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    reply = world.admin.call("dispatch", repair_id=rid, repairman_id=world.bay_fixer.account_id)
    assert refused(reply) == "FORBIDDEN"
    # A company-wide admin cannot send one across communities either.
    reply = world.hq.call("dispatch", repair_id=rid, repairman_id=world.bay_fixer.account_id)
    assert refused(reply) == "FORBIDDEN"
    # Staff who are not repairmen, and people who are not staff, are no repairmen at all.
    for somebody in (world.admin, world.owner):
        reply = world.admin.call("dispatch", repair_id=rid, repairman_id=somebody.account_id)
        assert refused(reply) == "NOT_FOUND"
    assert services.db[REPAIRS].find_one({"_id": rid})["status"] == "pending"
    assert inbox(services, world.bay_fixer) == []


def test_two_admins_dispatching_at_once_leave_one_dispatch(
    services: Services, world: World
) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    barrier = threading.Barrier(2)
    replies: list[dict[str, Any]] = []

    def send(admin: Person, fixer: Person) -> None:
        barrier.wait()
        replies.append(admin.call("dispatch", repair_id=rid, repairman_id=fixer.account_id))

    threads = [
        threading.Thread(target=send, args=(world.admin, world.fixer)),
        threading.Thread(target=send, args=(world.hq, world.fixer2)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = services.db[REPAIRS].find_one({"_id": rid})
    moves = [e["event"] for e in doc["timeline"]]
    winners = [r for r in replies if r["ok"]]
    # Either one won and the other was refused, or the second re-dispatched after the first.
    assert moves in (["created", "dispatched"], ["created", "dispatched", "redispatched"])
    assert len(winners) == len(moves) - 1
    assert all(r["error"]["code"] == "CONFLICT" for r in replies if not r["ok"])


def test_staff_lists_are_scoped_to_the_admins_communities(services: Services, world: World) -> None:
    bay_owner = _resident(services, "13800000901", "王五")
    _member(services, bay_owner, world.house_bay, "owner")
    garden_rid = report(world.owner, world.house_101)["repair_id"]
    bay_rid = report(bay_owner, world.house_bay)["repair_id"]

    own = ok(world.admin.call("staff_list"))
    assert [i["repair_id"] for i in own["items"]] == [garden_rid]
    assert own["items"][0]["contact_phone"] == "138****0101"
    everything = ok(world.hq.call("staff_list"))
    assert {i["repair_id"] for i in everything["items"]} == {garden_rid, bay_rid}
    only_bay = ok(world.hq.call("staff_list", community_id=world.bay_id, status="pending"))
    assert [i["repair_id"] for i in only_bay["items"]] == [bay_rid]
    assert ok(world.hq.call("staff_list", status="completed"))["total"] == 0
    assert refused(world.admin.call("staff_list", community_id=world.bay_id)) == "FORBIDDEN"


def test_repairmen_of_a_community_with_their_open_work(world: World) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))
    listed = ok(world.admin.call("repairmen", community_id=world.garden_id))
    assert [(i["name"], i["open_repairs"]) for i in listed["items"]] == [
        ("周师傅", 0),
        ("李师傅", 1),
    ]
    assert listed["items"][0]["phone"] == "137****0003"
    assert refused(world.admin.call("repairmen", community_id=world.bay_id)) == "FORBIDDEN"
    bay = ok(world.hq.call("repairmen", community_id=world.bay_id))
    assert [i["name"] for i in bay["items"]] == ["吴师傅"]
    assert refused(world.hq.call("repairmen", community_id="no-such-community")) == "NOT_FOUND"


def test_staff_working_on_a_repair_see_its_detail_with_the_contact_phone(world: World) -> None:
    rid = report(world.owner, world.house_101, contact_phone="13911112222")["repair_id"]
    assert ok(world.admin.call("detail", repair_id=rid))["contact_phone"] == "13911112222"
    assert ok(world.hq.call("detail", repair_id=rid))["contact_phone"] == "13911112222"
    assert refused(world.fixer.call("detail", repair_id=rid)) == "NOT_FOUND"
    ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))
    assert ok(world.fixer.call("detail", repair_id=rid))["contact_phone"] == "13911112222"
    assert refused(world.fixer2.call("detail", repair_id=rid)) == "NOT_FOUND"


def test_upload_url_gives_an_id_that_create_accepts(world: World) -> None:
    target = ok(world.owner.call("upload_url", purpose="report", filename="IMG_0001.JPG"))
    assert target["provider"] == "sandbox"
    assert target["file_id"].startswith("sandbox://files/repair/report/")
    assert target["file_id"].endswith(".jpg")
    created = report(world.owner, world.house_101, images=[target["file_id"]])
    assert [i["file_id"] for i in created["images"]] == [target["file_id"]]
    reply = world.owner.call("upload_url", purpose="report", filename="notes.exe")
    assert refused(reply) == "INVALID_ARGUMENT"
    assert reply["error"]["details"]["fields"] == {"filename": "文件类型不支持"}


@pytest.mark.parametrize(
    "foreign",
    [
        "cloud://other-env-1a2b.6f74-other-env-1a2b-1250000000/repair/a.jpg",
        "cos://someone-else-1250000000/repair/a.jpg",
        "https://evil.example.com/a.jpg",
        "sandbox://files/../../etc/passwd",
        "sandbox://elsewhere/a.jpg",
    ],
)
def test_foreign_file_ids_are_refused_by_field(
    services: Services, world: World, foreign: str
) -> None:
    good = photo(services, "ok", world.owner)
    reply = world.owner.call(
        "create",
        house_id=world.house_101,
        category="other",
        description="看图",
        contact_phone=world.owner.phone,
        images=[good, foreign],
    )
    assert refused(reply) == "INVALID_ARGUMENT"
    assert reply["error"]["details"]["fields"] == {"images.1": "不是本应用上传的文件"}
    assert services.db[REPAIRS].count_documents({}) == 0

    rid = report(world.owner, world.house_101)["repair_id"]
    ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))
    reply = world.fixer.call("complete", repair_id=rid, photos=[foreign])
    assert refused(reply) == "INVALID_ARGUMENT"
    assert reply["error"]["details"]["fields"] == {"photos.0": "不是本应用上传的文件"}
    assert services.db[REPAIRS].find_one({"_id": rid})["status"] == "dispatched"


def test_a_file_uploaded_by_someone_else_is_refused(services: Services, world: World) -> None:
    # Upload slots sit under the uploader's id: a file id copied from another account's upload
    # cannot be attached to one's own report.
    theirs = photo(services, "x", world.fixer)
    reply = world.owner.call(
        "create",
        house_id=world.house_101,
        category="other",
        description="看图",
        contact_phone=world.owner.phone,
        images=[theirs],
    )
    assert refused(reply) == "INVALID_ARGUMENT"
    assert reply["error"]["details"]["fields"] == {"images.0": "不是本应用上传的文件"}
    assert services.db[REPAIRS].count_documents({}) == 0


# ------------------------------------------------------------------------------ round trips


def test_create_checks_and_labels_the_house_in_one_read_and_writes_the_key_once(
    services: Services, world: World
) -> None:
    with counted(services) as calls:
        report(world.owner, world.house_101, request_id="once")

    assert calls == [
        "accounts.aggregate",  # the caller (a resident)
        "memberships.aggregate",  # membership, house, community and its admins
        "idempotency_keys.insert_one",
        # issue 17.4: the daily create limits, after the key (a retry takes none)
        "rate_limits.bulk_write",
        "repairs.insert_one",
        "messages.insert_many",  # the community's admins are told
    ]


def test_a_retry_after_the_repair_moved_on_still_gets_the_first_result(
    services: Services, world: World
) -> None:
    first = report(world.owner, world.house_101, request_id="req-moved")
    services.clock.advance(60)
    ok(
        world.admin.call(
            "dispatch", repair_id=first["repair_id"], repairman_id=world.fixer.account_id
        )
    )

    again = report(world.owner, world.house_101, request_id="req-moved")

    assert again == first
    assert services.db[REPAIRS].count_documents({"reporter_id": world.owner.account_id}) == 1


def test_a_first_dispatch_is_one_conditional_write_after_reading_the_repairman(
    services: Services, world: World
) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]

    with counted(services) as calls:
        ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))

    # No template configured here, so no consent is spent.
    assert calls == [
        "accounts.aggregate",  # the caller
        "accounts.aggregate",  # the repairman and their staff record
        "repairs.find_one_and_update",
        "messages.insert_many",  # the resident and the repairman
    ]


def test_a_redispatch_tells_the_resident_and_both_repairmen_in_one_inbox_write(
    services: Services, world: World
) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))

    with counted(services) as calls:
        ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer2.account_id))

    assert calls.count("messages.insert_many") == 1
    assert len(inbox(services, world.owner)) == 2
    assert len(inbox(services, world.fixer)) == 2 and len(inbox(services, world.fixer2)) == 1


def test_a_first_dispatch_outside_either_scope_changes_nothing(
    services: Services, world: World
) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    # The admin of 彩云花园 may not send 星河湾's repairman; nor may 星河湾's repairman be sent
    # by anyone to a 彩云花园 repair.
    for admin, fixer in ((world.admin, world.bay_fixer), (world.hq, world.bay_fixer)):
        reply = admin.call("dispatch", repair_id=rid, repairman_id=fixer.account_id)
        assert refused(reply) == "FORBIDDEN"
    bay_owner = _resident(services, "13800000901", "王五")
    _member(services, bay_owner, world.house_bay, "owner")
    bay_rid = report(bay_owner, world.house_bay)["repair_id"]
    reply = world.admin.call("dispatch", repair_id=bay_rid, repairman_id=world.fixer.account_id)
    assert refused(reply) == "FORBIDDEN"
    assert {d["status"] for d in services.db[REPAIRS].find()} == {"pending"}


def test_complete_is_one_conditional_write_when_the_repairman_may(
    services: Services, world: World
) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))
    photos = [photo(services, "p", world.fixer)]

    with counted(services) as calls:
        ok(world.fixer.call("complete", repair_id=rid, photos=photos))

    assert calls == ["accounts.aggregate", "repairs.find_one_and_update", "messages.insert_many"]


def test_complete_by_a_repairman_who_no_longer_covers_the_community_changes_nothing(
    services: Services, world: World
) -> None:
    rid = report(world.owner, world.house_101)["repair_id"]
    ok(world.admin.call("dispatch", repair_id=rid, repairman_id=world.fixer.account_id))
    staff.upsert(
        services.db,
        world.fixer.account_id,
        "李师傅",
        "repairman",
        [world.bay_id],
        services.clock.now(),
    )
    photos = [photo(services, "p", world.fixer)]

    assert refused(world.fixer.call("complete", repair_id=rid, photos=photos)) == "FORBIDDEN"
    assert services.db[REPAIRS].find_one({"_id": rid})["status"] == "dispatched"


def test_repairmen_of_a_scoped_admin_are_two_reads_after_the_caller(
    services: Services, world: World
) -> None:
    with counted(services) as calls:
        ok(world.admin.call("repairmen", community_id=world.garden_id))

    assert calls == ["accounts.aggregate", "staff.aggregate", "repairs.aggregate"]


def test_my_list_is_the_caller_lookup_with_its_owned_houses_and_one_page(
    services: Services, world: World
) -> None:
    report(world.family, world.house_101)

    with counted(services) as calls:
        assert ok(world.owner.call("my_list"))["total"] == 1

    assert calls == [
        "accounts.aggregate",  # the caller, with the houses it owns (issue 15.5)
        "repairs.aggregate",  # the page and its total
    ]

"""Choosing and binding a house, my houses, and who may manage a house's members."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import pytest
import worlds
from conftest import invoke
from worlds import Person, make_staff, ok, refused, sign_in

from caiyun.services import Services
from caiyun.stores import accounts

GARDEN = {**worlds.GARDEN, "address": "科技南路 1 号"}
BAY = {**worlds.BAY, "address": "天河路 8 号"}
GARDEN_ROWS = [
    {"building": 1, "unit": 1, "room": "101", "owner_name": "张三", "owner_phone": "13800000001"},
    {"building": 1, "unit": 1, "room": "102", "owner_name": "李四", "owner_phone": "13800000002"},
    {"building": 2, "unit": 1, "room": "201", "owner_name": "王五", "owner_phone": "13800000003"},
]
BAY_ROWS = [
    {"building": 1, "unit": 1, "room": "101", "owner_name": "赵六", "owner_phone": "13800000004"},
]


@dataclass(frozen=True)
class Estate:
    hq: Person
    garden_id: str
    bay_id: str
    house: dict[str, str]  # label → house_id in 彩云花园
    bay_house: str


@pytest.fixture
def estate(services: Services) -> Estate:
    hq = make_staff(services, "13700000000", "admin", None)
    garden = ok(hq.call("admin", "import_owners", community=GARDEN, rows=GARDEN_ROWS))
    bay = ok(hq.call("admin", "import_owners", community=BAY, rows=BAY_ROWS))
    assert garden["counts"]["created"] == 3 and bay["counts"]["created"] == 1
    return Estate(
        hq=hq,
        garden_id=garden["community_id"],
        bay_id=bay["community_id"],
        house={r["label"]: r["house_id"] for r in garden["rows"]},
        bay_house=bay["rows"][0]["house_id"],
    )


def bind(person: Person, estate: Estate, room: str, name: str, phone: str | None = None) -> Any:
    building = "2栋" if room.startswith("2") else "1栋"
    return person.call(
        "bind_house",
        "bind",
        community_id=estate.garden_id,
        building=building,
        unit="1单元",
        room=room,
        owner_name=name,
        owner_phone=phone or person.phone,
    )


def bound_owner(services: Services, estate: Estate, phone: str, room: str, name: str) -> Person:
    person = sign_in(services, phone)
    ok(bind(person, estate, room, name))
    return person


def my_houses(person: Person) -> list[dict[str, Any]]:
    return ok(person.call("bind_house", "my_houses"))["items"]


H101, H102 = "1栋-1单元-101", "1栋-1单元-102"


# ------------------------------------------------------------------------------ selection


def test_communities_are_filtered_by_region(services: Services, estate: Estate) -> None:
    resident = sign_in(services, "13800000001")

    shenzhen = ok(resident.call("bind_house", "communities", city="深圳市"))["items"]
    guangzhou = ok(resident.call("bind_house", "communities", city="广州市"))["items"]
    province = ok(resident.call("bind_house", "communities", province="广东省"))["items"]
    district = ok(resident.call("bind_house", "communities", district="天河区"))["items"]
    nowhere = ok(resident.call("bind_house", "communities", city="北京市"))["items"]

    assert [c["name"] for c in shenzhen] == ["彩云花园"]
    assert shenzhen[0] == {"community_id": estate.garden_id, **GARDEN}
    assert [c["name"] for c in guangzhou] == ["星河湾"]
    assert {c["name"] for c in province} == {"彩云花园", "星河湾"}
    assert [c["community_id"] for c in district] == [estate.bay_id]
    assert nowhere == []


def test_house_tree_lists_buildings_units_and_rooms(services: Services, estate: Estate) -> None:
    resident = sign_in(services, "13800000001")

    tree = ok(resident.call("bind_house", "house_tree", community_id=estate.garden_id))

    assert tree == {
        "community_id": estate.garden_id,
        "buildings": [
            {
                "building": "1栋",
                "units": [
                    {
                        "unit": "1单元",
                        "rooms": [
                            {"room": "101", "house_id": estate.house[H101]},
                            {"room": "102", "house_id": estate.house[H102]},
                        ],
                    }
                ],
            },
            {
                "building": "2栋",
                "units": [
                    {
                        "unit": "1单元",
                        "rooms": [{"room": "201", "house_id": estate.house["2栋-1单元-201"]}],
                    }
                ],
            },
        ],
    }


def test_house_tree_shows_no_owner_names_or_phones(services: Services, estate: Estate) -> None:
    resident = sign_in(services, "13800000004")

    reply = resident.call("bind_house", "house_tree", community_id=estate.garden_id)

    text = json.dumps(ok(reply), ensure_ascii=False)
    for row in GARDEN_ROWS:
        assert row["owner_name"] not in text
        assert row["owner_phone"] not in text
        assert row["owner_phone"][-4:] not in text
    assert "owner" not in text


def test_house_tree_of_an_unknown_community_is_not_found(
    services: Services, estate: Estate
) -> None:
    resident = sign_in(services, "13800000001")

    assert refused(resident.call("bind_house", "house_tree", community_id="nope")) == "NOT_FOUND"


def test_selection_and_binding_need_a_signed_in_account(estate: Estate) -> None:
    for openid in (None, "o-never-signed-in"):
        for action, fields in (
            ("communities", {}),
            ("house_tree", {"community_id": estate.garden_id}),
            ("my_houses", {}),
        ):
            reply = invoke("bind_house", {"action": action, **fields}, openid)
            assert refused(reply) == "UNAUTHENTICATED"


# -------------------------------------------------------------------------------- binding


def test_owner_binds_with_the_imported_name_and_own_phone(
    services: Services, estate: Estate
) -> None:
    owner = sign_in(services, "13800000001")

    houses = ok(bind(owner, estate, "101", "张三"))["items"]

    assert houses == [
        {
            "house_id": estate.house[H101],
            "community_id": estate.garden_id,
            "community_name": "彩云花园",
            "label": H101,
            "role": "owner",
            "role_name": "业主",
            "can_manage_members": True,
        }
    ]
    assert my_houses(owner) == houses


def test_binding_again_keeps_one_house(services: Services, estate: Estate) -> None:
    owner = bound_owner(services, estate, "13800000001", "101", "张三")

    again = ok(bind(owner, estate, "101", "张三"))["items"]

    assert [h["house_id"] for h in again] == [estate.house[H101]]


def test_mismatch_answers_the_same_whichever_detail_is_wrong(
    services: Services, estate: Estate
) -> None:
    zhang = sign_in(services, "13800000001")  # the owner of 101 on record
    li = sign_in(services, "13800000002")  # owner of 102, not of 101

    wrong_name = bind(zhang, estate, "101", "张叁")
    wrong_phone = bind(li, estate, "101", "张三")
    both_wrong = bind(li, estate, "101", "张叁")

    assert refused(wrong_name) == "OWNER_MISMATCH"
    assert wrong_name["error"] == wrong_phone["error"] == both_wrong["error"]
    assert "details" not in wrong_name["error"]
    for word in ("姓名", "手机", "电话"):
        assert word not in wrong_name["error"]["message"]
    assert my_houses(zhang) == [] and my_houses(li) == []


def test_binding_with_someone_elses_phone_is_refused_even_when_it_matches(
    services: Services, estate: Estate
) -> None:
    li = sign_in(services, "13800000002")

    reply = bind(li, estate, "101", "张三", phone="13800000001")

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "owner_phone" in reply["error"]["details"]["fields"]
    assert my_houses(li) == []


def test_binding_an_unknown_house_is_not_found(services: Services, estate: Estate) -> None:
    owner = sign_in(services, "13800000001")

    assert refused(bind(owner, estate, "109", "张三")) == "NOT_FOUND"


def at_the_start_of_a_day(services: Services) -> None:
    """Move the clock to just past a UTC day boundary: every try of the test falls inside one
    hourly and one daily window."""
    now = services.clock.now().timestamp()
    services.clock.advance(86400 - now % 86400 + 1)


def stranger(services: Services, n: int) -> Person:
    """Another account signed in to the resident app, with no house."""
    phone = f"1360000{n:04d}"
    account = worlds.resident_account(services, phone, None, f"o-stranger-{n}")
    return Person(phone, f"o-stranger-{n}", account["_id"], "")


def test_wrong_binding_attempts_are_limited_per_account(services: Services, estate: Estate) -> None:
    # Issue 15.6 as reported: eight wrong owner names in a row were never limited.
    owner = sign_in(services, "13800000001")
    at_the_start_of_a_day(services)
    limit = services.settings.bind_wrong_per_account_per_hour

    for _ in range(limit - 1):
        assert refused(bind(owner, estate, "101", "张叁")) == "OWNER_MISMATCH"
    assert refused(bind(owner, estate, "109", "张三")) == "NOT_FOUND"  # no such house: wrong too
    limited = bind(owner, estate, "101", "张三")  # even the right details wait now

    assert refused(limited) == "RATE_LIMITED"
    assert limited["error"]["message"] == "房屋绑定尝试次数过多，请稍后再试"
    assert 0 < limited["error"]["details"]["retry_after_s"] <= 3600
    assert my_houses(owner) == []
    services.clock.advance(3600)
    assert [h["label"] for h in ok(bind(owner, estate, "101", "张三"))["items"]] == [H101]


def test_a_right_binding_does_not_count_against_the_limit(
    services: Services, estate: Estate
) -> None:
    owner = sign_in(services, "13800000001")
    at_the_start_of_a_day(services)
    limit = services.settings.bind_wrong_per_account_per_hour
    for _ in range(limit - 1):
        refused(bind(owner, estate, "101", "张叁"))

    ok(bind(owner, estate, "101", "张三"))
    ok(bind(owner, estate, "101", "张三"))  # binding again is right too

    assert refused(bind(owner, estate, "102", "李四")) == "OWNER_MISMATCH"  # the last one left
    assert refused(bind(owner, estate, "102", "李四")) == "RATE_LIMITED"


def test_wrong_attempts_on_one_house_are_limited_across_accounts(
    services: Services, estate: Estate
) -> None:
    # Guessing the owner's name from many accounts, one try each.
    at_the_start_of_a_day(services)
    limit = services.settings.bind_wrong_per_house_per_day
    for n in range(limit):
        guess = bind(stranger(services, n), estate, "101", f"张{n}")
        assert refused(guess) == "OWNER_MISMATCH", n

    owner = sign_in(services, "13800000001")
    limited = bind(owner, estate, "101", "张三")
    assert refused(limited) == "RATE_LIMITED"
    assert 0 < limited["error"]["details"]["retry_after_s"] <= 86400
    # Another house is not affected, and the house can be bound the next day.
    assert ok(bind(sign_in(services, "13800000002"), estate, "102", "李四"))["items"]
    services.clock.advance(86400)
    assert [h["label"] for h in ok(bind(owner, estate, "101", "张三"))["items"]] == [H101]


def test_wrong_attempts_racing_are_judged_only_as_often_as_the_limit_allows(
    services: Services, estate: Estate
) -> None:
    owner = sign_in(services, "13800000001")
    at_the_start_of_a_day(services)
    start = threading.Barrier(12)
    codes: list[str] = []

    def guess(n: int) -> None:
        start.wait()
        codes.append(refused(bind(owner, estate, "101", f"张{n}")))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    limit = services.settings.bind_wrong_per_account_per_hour
    assert sorted(codes) == ["OWNER_MISMATCH"] * limit + ["RATE_LIMITED"] * (12 - limit)


def test_an_owner_added_as_family_first_becomes_owner_on_binding(
    services: Services, estate: Estate
) -> None:
    house = estate.house[H101]
    ok(
        estate.hq.call(
            "bind_house",
            "add_member",
            house_id=house,
            name="张三",
            phone="13800000001",
            role="family",
        )
    )
    owner = sign_in(services, "13800000001")
    assert [h["role"] for h in my_houses(owner)] == ["family"]

    ok(bind(owner, estate, "101", "张三"))

    assert [(h["role"], h["can_manage_members"]) for h in my_houses(owner)] == [("owner", True)]
    members = ok(owner.call("bind_house", "members", house_id=house))["items"]
    assert [(m["role"], m["is_me"]) for m in members] == [("owner", True)]


# ------------------------------------------------------------------------------ my houses


def test_one_account_owns_one_house_and_rents_another(services: Services, estate: Estate) -> None:
    zhang = bound_owner(services, estate, "13800000001", "101", "张三")
    li = bound_owner(services, estate, "13800000002", "102", "李四")
    ok(
        li.call(
            "bind_house",
            "add_member",
            house_id=estate.house[H102],
            name="张三",
            phone=zhang.phone,
            role="tenant",
        )
    )

    houses = {h["label"]: h for h in my_houses(zhang)}

    assert houses[H101]["role"] == "owner" and houses[H101]["can_manage_members"] is True
    assert houses[H102]["role"] == "tenant" and houses[H102]["can_manage_members"] is False
    assert {h["community_name"] for h in houses.values()} == {"彩云花园"}
    assert refused(zhang.call("bind_house", "members", house_id=estate.house[H102])) == "FORBIDDEN"
    assert ok(zhang.call("bind_house", "members", house_id=estate.house[H101]))


# -------------------------------------------------------------------------------- members


def add(person: Person, house_id: str, phone: str, role: str, name: str = "成员") -> Any:
    return person.call(
        "bind_house", "add_member", house_id=house_id, name=name, phone=phone, role=role
    )


def test_added_family_member_can_log_in_and_sees_the_house(
    services: Services, estate: Estate
) -> None:
    owner = bound_owner(services, estate, "13800000001", "101", "张三")

    added = ok(add(owner, estate.house[H101], "13900000011", "family", name="张小三"))

    assert added["role"] == "family" and added["name"] == "张小三"
    assert added["phone"] == "139****0011"
    assert added["is_me"] is False
    family = sign_in(services, "13900000011")
    assert family.account_id == added["account_id"]
    assert my_houses(family) == [
        {
            "house_id": estate.house[H101],
            "community_id": estate.garden_id,
            "community_name": "彩云花园",
            "label": H101,
            "role": "family",
            "role_name": "家人",
            "can_manage_members": False,
        }
    ]


def test_members_masks_the_phones_of_everyone_but_the_caller(
    services: Services, estate: Estate
) -> None:
    owner = bound_owner(services, estate, "13800000001", "101", "张三")
    ok(add(owner, estate.house[H101], "13900000011", "family", name="张小三"))
    ok(add(owner, estate.house[H101], "13900000012", "tenant", name="租客甲"))

    seen_by_owner = ok(owner.call("bind_house", "members", house_id=estate.house[H101]))
    seen_by_admin = ok(estate.hq.call("bind_house", "members", house_id=estate.house[H101]))

    assert seen_by_owner["house_id"] == estate.house[H101]
    assert [(m["name"], m["phone"], m["role"], m["is_me"]) for m in seen_by_owner["items"]] == [
        ("张三", "13800000001", "owner", True),
        ("张小三", "139****0011", "family", False),
        ("租客甲", "139****0012", "tenant", False),
    ]
    assert [m["phone"] for m in seen_by_admin["items"]] == [
        "138****0001",
        "139****0011",
        "139****0012",
    ]
    assert not any(m["is_me"] for m in seen_by_admin["items"])


def test_family_and_tenants_cannot_manage_members(services: Services, estate: Estate) -> None:
    owner = bound_owner(services, estate, "13800000001", "101", "张三")
    house = estate.house[H101]
    ok(add(owner, house, "13900000011", "family"))
    ok(add(owner, house, "13900000012", "tenant"))
    family, tenant = sign_in(services, "13900000011"), sign_in(services, "13900000012")

    for person in (family, tenant):
        assert refused(person.call("bind_house", "members", house_id=house)) == "FORBIDDEN"
        assert refused(add(person, house, "13900000013", "family")) == "FORBIDDEN"
        for target in (owner, family, tenant):
            reply = person.call(
                "bind_house", "remove_member", house_id=house, account_id=target.account_id
            )
            assert refused(reply) == "FORBIDDEN"
    assert len(ok(owner.call("bind_house", "members", house_id=house))["items"]) == 3
    assert accounts.by_phone(services.db, "13900000013") is None


def test_owner_of_another_house_and_strangers_cannot_manage_members(
    services: Services, estate: Estate
) -> None:
    owner = bound_owner(services, estate, "13800000001", "101", "张三")
    neighbour = bound_owner(services, estate, "13800000002", "102", "李四")
    stranger = sign_in(services, "13800000004")  # owns a house in another community, unbound
    house = estate.house[H101]

    for person in (neighbour, stranger):
        assert refused(person.call("bind_house", "members", house_id=house)) == "FORBIDDEN"
        assert refused(add(person, house, "13900000013", "tenant")) == "FORBIDDEN"
        reply = person.call(
            "bind_house", "remove_member", house_id=house, account_id=owner.account_id
        )
        assert refused(reply) == "FORBIDDEN"


def test_admin_of_the_community_manages_its_members(services: Services, estate: Estate) -> None:
    owner = bound_owner(services, estate, "13800000001", "101", "张三")
    admin = make_staff(services, "13700000001", "admin", [estate.garden_id])
    house = estate.house[H101]

    added = ok(add(admin, house, "13900000011", "tenant"))
    listed = ok(admin.call("bind_house", "members", house_id=house))["items"]
    removed = admin.call(
        "bind_house", "remove_member", house_id=house, account_id=added["account_id"]
    )

    assert [m["account_id"] for m in listed] == [owner.account_id, added["account_id"]]
    assert ok(removed) == {"removed": True}
    assert [
        m["role"] for m in ok(owner.call("bind_house", "members", house_id=house))["items"]
    ] == ["owner"]


def test_admin_or_repairman_of_another_community_cannot_manage_members(
    services: Services, estate: Estate
) -> None:
    bound_owner(services, estate, "13800000001", "101", "张三")
    other_admin = make_staff(services, "13700000002", "admin", [estate.bay_id])
    repairman = make_staff(services, "13700000003", "repairman", [estate.garden_id])
    house = estate.house[H101]

    for person in (other_admin, repairman):
        assert refused(person.call("bind_house", "members", house_id=house)) == "FORBIDDEN"
        assert refused(add(person, house, "13900000011", "family")) == "FORBIDDEN"
    assert ok(other_admin.call("bind_house", "members", house_id=estate.bay_house))


def test_company_wide_admin_covers_a_community_imported_after_it_was_made(
    services: Services, estate: Estate
) -> None:
    late_admin = make_staff(services, "13700000009", "admin", None)
    new_town = {**GARDEN, "name": "新城小区", "address": "新城路 2 号"}
    imported = ok(
        estate.hq.call(
            "admin",
            "import_owners",
            community=new_town,
            rows=[
                {
                    "building": 9,
                    "unit": 1,
                    "room": "901",
                    "owner_name": "钱八",
                    "owner_phone": "13800000008",
                }
            ],
        )
    )
    house = imported["rows"][0]["house_id"]

    assert imported["community_created"] is True
    assert ok(add(late_admin, house, "13900000011", "family"))["role"] == "family"
    assert len(ok(late_admin.call("bind_house", "members", house_id=house))["items"]) == 1


def test_a_removed_member_loses_the_house_at_once(services: Services, estate: Estate) -> None:
    owner = bound_owner(services, estate, "13800000001", "101", "张三")
    house = estate.house[H101]
    added = ok(add(owner, house, "13900000012", "tenant"))
    tenant = sign_in(services, "13900000012")
    assert [h["house_id"] for h in my_houses(tenant)] == [house]

    removed = owner.call(
        "bind_house", "remove_member", house_id=house, account_id=added["account_id"]
    )

    assert ok(removed) == {"removed": True}
    assert my_houses(tenant) == []
    assert refused(tenant.call("bind_house", "members", house_id=house)) == "FORBIDDEN"
    members = ok(owner.call("bind_house", "members", house_id=house))["items"]
    assert [m["account_id"] for m in members] == [owner.account_id]


def test_the_owner_cannot_be_removed(services: Services, estate: Estate) -> None:
    owner = bound_owner(services, estate, "13800000001", "101", "张三")
    house = estate.house[H101]

    by_self = owner.call("bind_house", "remove_member", house_id=house, account_id=owner.account_id)
    by_admin = estate.hq.call(
        "bind_house", "remove_member", house_id=house, account_id=owner.account_id
    )

    assert refused(by_self) == "CONFLICT"
    assert refused(by_admin) == "CONFLICT"
    assert [h["role"] for h in my_houses(owner)] == ["owner"]


def test_removing_someone_who_is_not_a_member_is_not_found(
    services: Services, estate: Estate
) -> None:
    owner = bound_owner(services, estate, "13800000001", "101", "张三")
    neighbour = bound_owner(services, estate, "13800000002", "102", "李四")

    reply = owner.call(
        "bind_house", "remove_member", house_id=estate.house[H101], account_id=neighbour.account_id
    )

    assert refused(reply) == "NOT_FOUND"
    assert [h["label"] for h in my_houses(neighbour)] == [H102]


def test_adding_the_same_member_twice_conflicts(services: Services, estate: Estate) -> None:
    owner = bound_owner(services, estate, "13800000001", "101", "张三")
    house = estate.house[H101]
    ok(add(owner, house, "13900000011", "family"))

    twice = add(owner, house, "13900000011", "tenant")
    the_owner = add(owner, house, owner.phone, "family")

    assert refused(twice) == "CONFLICT"
    assert refused(the_owner) == "CONFLICT"
    members = ok(owner.call("bind_house", "members", house_id=house))["items"]
    assert [m["role"] for m in members] == ["owner", "family"]


def test_members_are_only_family_or_tenants(services: Services, estate: Estate) -> None:
    owner = bound_owner(services, estate, "13800000001", "101", "张三")

    reply = add(owner, estate.house[H101], "13900000011", "owner")

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "role" in reply["error"]["details"]["fields"]
    assert accounts.by_phone(services.db, "13900000011") is None


def test_managing_an_unknown_house_is_not_found(services: Services, estate: Estate) -> None:
    assert refused(estate.hq.call("bind_house", "members", house_id="no-such-house")) == (
        "NOT_FOUND"
    )

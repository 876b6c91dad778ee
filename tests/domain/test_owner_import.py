"""admin.import_owners: community, houses and owner accounts, with one result per row."""

from __future__ import annotations

from typing import Any

import pytest
import worlds
from conftest import invoke
from round_trips import counting
from worlds import ok, refused
from worlds import owner_row as row

from caiyun.contract.admin import MAX_IMPORT_ROWS
from caiyun.domain import owner_import
from caiyun.services import Services
from caiyun.stores import accounts

GARDEN = {**worlds.GARDEN, "address": "科技南路 1 号"}
ROWS = [
    row("101", "张三", "13800000001"),
    row("102", "李四", "13800000002"),
    row("201", "王五", "13800000003", building=2),
]


class Person(worlds.Person):
    """Someone signed in, who may try an owner import."""

    def import_owners(self, rows: list[Any], community: dict[str, Any] = GARDEN) -> Any:
        return self.call("admin", "import_owners", community=community, rows=rows)


def sign_in(services: Services, phone: str, app: str = "resident") -> Person:
    return worlds.sign_in(services, phone, app, Person)


def make_staff(
    services: Services, phone: str, role: str, community_ids: list[str] | None
) -> Person:
    return worlds.make_staff(services, phone, role, community_ids, person=Person)


@pytest.fixture
def hq(services: Services) -> Person:
    """A company-wide admin."""
    return make_staff(services, "13700000000", "admin", None)


def bind(person: Person, community_id: str, room: str, name: str, building: str = "1栋") -> Any:
    return person.call(
        "bind_house",
        "bind",
        community_id=community_id,
        building=building,
        unit="1单元",
        room=room,
        owner_name=name,
        owner_phone=person.phone,
    )


def my_labels(person: Person) -> list[str]:
    return [h["label"] for h in ok(person.call("bind_house", "my_houses"))["items"]]


def account_count(services: Services) -> int:
    return services.db[accounts.ACCOUNTS].count_documents({})


def tree_labels(person: Person, community_id: str) -> list[str]:
    tree = ok(person.call("bind_house", "house_tree", community_id=community_id))
    return [
        f"{b['building']}-{u['unit']}-{r['room']}"
        for b in tree["buildings"]
        for u in b["units"]
        for r in u["rooms"]
    ]


# ------------------------------------------------------------------------------ first import


def test_import_creates_the_community_its_houses_and_owner_accounts(
    services: Services, hq: Person
) -> None:
    report = ok(hq.import_owners(ROWS))

    assert report["community_created"] is True
    assert report["counts"] == {"created": 3, "updated": 0, "unchanged": 0, "error": 0}
    assert [(r["row"], r["status"], r["label"]) for r in report["rows"]] == [
        (1, "created", "1栋-1单元-101"),
        (2, "created", "1栋-1单元-102"),
        (3, "created", "2栋-1单元-201"),
    ]
    assert all(r["house_id"] for r in report["rows"])
    listed = ok(hq.call("bind_house", "communities", city="深圳市"))["items"]
    assert listed == [{"community_id": report["community_id"], **GARDEN}]
    assert tree_labels(hq, report["community_id"]) == [r["label"] for r in report["rows"]]


def test_every_imported_owner_can_log_in_and_bind(services: Services, hq: Person) -> None:
    community_id = ok(hq.import_owners(ROWS))["community_id"]

    for phone in ("13800000001", "13800000002", "13800000003"):
        exists = invoke("login", {"action": "check_account", "phone": phone}, "o-probe")
        assert ok(exists) == {"exists": True}
    owner = sign_in(services, "13800000002")

    assert my_labels(owner) == []
    ok(bind(owner, community_id, "102", "李四"))
    assert my_labels(owner) == ["1栋-1单元-102"]


def test_bare_numbers_become_building_and_unit_names(services: Services, hq: Person) -> None:
    report = ok(
        hq.import_owners(
            [
                row("1201", "张三", "13800000001", building=3, unit=2),
                row("1202", "李四", "13800000002", building="3", unit="2"),
                row("1203", "王五", "13800000003", building=3.0, unit=2.0),
                row("B1", "赵六", "13800000004", building="3号楼", unit="二单元"),
            ]
        )
    )

    assert [r["label"] for r in report["rows"]] == [
        "3栋-2单元-1201",
        "3栋-2单元-1202",
        "3栋-2单元-1203",
        "3号楼-二单元-B1",
    ]


# ------------------------------------------------------------------------------ re-imports


def test_reimporting_the_same_rows_changes_nothing(services: Services, hq: Person) -> None:
    first = ok(hq.import_owners(ROWS))
    accounts_before = account_count(services)

    again = ok(hq.import_owners(ROWS))

    assert again["community_id"] == first["community_id"]
    assert again["community_created"] is False
    assert again["counts"] == {"created": 0, "updated": 0, "unchanged": 3, "error": 0}
    assert [r["house_id"] for r in again["rows"]] == [r["house_id"] for r in first["rows"]]
    assert account_count(services) == accounts_before
    assert len(ok(hq.call("bind_house", "communities"))["items"]) == 1
    assert len(tree_labels(hq, first["community_id"])) == 3


def test_the_same_house_spelt_with_or_without_suffixes_is_one_house(
    services: Services, hq: Person
) -> None:
    ok(hq.import_owners([row("101", "张三", "13800000001", building=1, unit=1)]))

    again = ok(hq.import_owners([row("101", "张三", "13800000001", building="1栋", unit="1单元")]))

    assert again["counts"]["unchanged"] == 1


def test_a_changed_address_updates_the_community_without_duplicating_it(
    services: Services, hq: Person
) -> None:
    first = ok(hq.import_owners(ROWS))

    moved = ok(hq.import_owners(ROWS, community={**GARDEN, "address": "科技南路 9 号"}))

    assert moved["community_id"] == first["community_id"]
    listed = ok(hq.call("bind_house", "communities"))["items"]
    assert [c["address"] for c in listed] == ["科技南路 9 号"]


def test_a_corrected_owner_name_updates_the_house(services: Services, hq: Person) -> None:
    community_id = ok(hq.import_owners(ROWS))["community_id"]
    owner = sign_in(services, "13800000001")
    assert refused(bind(owner, community_id, "101", "张叁")) == "OWNER_MISMATCH"

    corrected = ok(hq.import_owners([row("101", "张叁", "13800000001"), *ROWS[1:]]))

    assert [r["status"] for r in corrected["rows"]] == ["updated", "unchanged", "unchanged"]
    assert corrected["counts"] == {"created": 0, "updated": 1, "unchanged": 2, "error": 0}
    assert refused(bind(owner, community_id, "101", "张三")) == "OWNER_MISMATCH"
    ok(bind(owner, community_id, "101", "张叁"))
    assert my_labels(owner) == ["1栋-1单元-101"]


def test_a_bound_owner_keeps_the_house_when_only_the_name_is_corrected(
    services: Services, hq: Person
) -> None:
    community_id = ok(hq.import_owners(ROWS))["community_id"]
    owner = sign_in(services, "13800000001")
    ok(bind(owner, community_id, "101", "张三"))

    ok(hq.import_owners([row("101", "张叁", "13800000001")]))

    assert my_labels(owner) == ["1栋-1单元-101"]


def test_a_corrected_owner_name_is_what_members_shows(services: Services, hq: Person) -> None:
    report = ok(hq.import_owners(ROWS))
    owner = sign_in(services, "13800000001")
    ok(bind(owner, report["community_id"], "101", "张三"))

    ok(hq.import_owners([row("101", "张叁", "13800000001")]))

    house_id = report["rows"][0]["house_id"]
    members = ok(hq.call("bind_house", "members", house_id=house_id))["items"]
    assert [m["name"] for m in members] == ["张叁"]


def test_a_new_owner_phone_ends_the_old_owners_binding_and_lets_the_new_owner_bind(
    services: Services, hq: Person
) -> None:
    report = ok(hq.import_owners(ROWS))
    community_id, house_id = report["community_id"], report["rows"][0]["house_id"]
    old_owner = sign_in(services, "13800000001")
    ok(bind(old_owner, community_id, "101", "张三"))

    sold = ok(hq.import_owners([row("101", "孙七", "13800000007")]))

    assert sold["rows"] == [
        {
            "row": 1,
            "status": "updated",
            "status_name": "已更新",
            "house_id": house_id,
            "label": "1栋-1单元-101",
            "reason": None,
        }
    ]
    assert my_labels(old_owner) == []
    assert refused(old_owner.call("bind_house", "members", house_id=house_id)) == "FORBIDDEN"
    assert refused(bind(old_owner, community_id, "101", "张三")) == "OWNER_MISMATCH"
    new_owner = sign_in(services, "13800000007")  # the import made the account
    ok(bind(new_owner, community_id, "101", "孙七"))
    houses = ok(new_owner.call("bind_house", "my_houses"))["items"]
    assert [(h["house_id"], h["role"], h["can_manage_members"]) for h in houses] == [
        (house_id, "owner", True)
    ]


# ------------------------------------------------------------------------------- bad rows


def test_bad_rows_get_errors_and_never_stop_the_good_ones(services: Services, hq: Person) -> None:
    report = ok(
        hq.import_owners(
            [
                row("101", "张三", "13800000001"),
                row("102", "李四", "1380000"),  # bad phone
                {"building": 1, "unit": 1, "owner_name": "王五", "owner_phone": "13800000003"},
                "1栋,1单元,103,赵六,13800000004",  # not an object
                row("104", "", "13800000005"),  # blank name
                None,
                row("105", "钱八", "13800000008"),
            ]
        )
    )

    statuses = [(r["row"], r["status"]) for r in report["rows"]]
    assert statuses == [
        (1, "created"),
        (2, "error"),
        (3, "error"),
        (4, "error"),
        (5, "error"),
        (6, "error"),
        (7, "created"),
    ]
    assert report["counts"] == {"created": 2, "updated": 0, "unchanged": 0, "error": 5}
    errors = {r["row"]: r for r in report["rows"] if r["status"] == "error"}
    assert "业主手机号" in errors[2]["reason"]
    assert "房号" in errors[3]["reason"]
    assert "业主姓名" in errors[5]["reason"]
    assert all(r["reason"] and r["house_id"] is None for r in errors.values())
    assert tree_labels(hq, report["community_id"]) == ["1栋-1单元-101", "1栋-1单元-105"]
    for phone in ("1380000", "13800000003", "13800000005"):
        assert accounts.by_phone(services.db, phone) is None


def test_an_error_row_leaves_the_existing_house_as_it_was(services: Services, hq: Person) -> None:
    community_id = ok(hq.import_owners(ROWS))["community_id"]
    owner = sign_in(services, "13800000001")
    ok(bind(owner, community_id, "101", "张三"))

    report = ok(hq.import_owners([row("101", "张三", "not-a-phone")]))

    assert report["rows"][0]["status"] == "error"
    assert my_labels(owner) == ["1栋-1单元-101"]
    assert ok(hq.import_owners(ROWS[:1]))["counts"]["unchanged"] == 1


def test_a_house_listed_twice_in_one_file_is_created_once(services: Services, hq: Person) -> None:
    report = ok(
        hq.import_owners([row("101", "张三", "13800000001"), row("101", "张叁", "13800000001")])
    )

    assert [r["status"] for r in report["rows"]] == ["created", "updated"]
    assert report["rows"][0]["house_id"] == report["rows"][1]["house_id"]
    assert tree_labels(hq, report["community_id"]) == ["1栋-1单元-101"]


def test_an_invalid_community_is_refused_and_nothing_is_created(
    services: Services, hq: Person
) -> None:
    incomplete = {k: v for k, v in GARDEN.items() if k != "city"}

    reply = hq.import_owners(ROWS, community=incomplete)

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "city" in reply["error"]["details"]["fields"]
    assert ok(hq.call("bind_house", "communities"))["items"] == []
    assert accounts.by_phone(services.db, "13800000001") is None


def test_one_call_carries_at_most_the_row_limit(services: Services, hq: Person) -> None:
    too_many = [row(str(i), "张三", "13800000001") for i in range(MAX_IMPORT_ROWS + 1)]

    reply = hq.import_owners(too_many)

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "rows" in reply["error"]["details"]["fields"]
    assert ok(hq.call("bind_house", "communities"))["items"] == []


# ------------------------------------------------------------------------------ who imports


def test_a_community_admin_imports_into_its_own_community(services: Services, hq: Person) -> None:
    community_id = ok(hq.import_owners(ROWS))["community_id"]
    admin = make_staff(services, "13700000001", "admin", [community_id])

    report = ok(admin.import_owners([*ROWS, row("301", "孙七", "13800000007", building=3)]))

    assert report["community_id"] == community_id
    assert report["counts"] == {"created": 1, "updated": 0, "unchanged": 3, "error": 0}


def test_a_community_admin_cannot_create_a_new_community(services: Services, hq: Person) -> None:
    community_id = ok(hq.import_owners(ROWS))["community_id"]
    admin = make_staff(services, "13700000001", "admin", [community_id])
    elsewhere = {**GARDEN, "name": "新城小区"}

    reply = admin.import_owners([row("101", "孙七", "13800000007")], community=elsewhere)

    assert refused(reply) == "FORBIDDEN"
    names = [c["name"] for c in ok(hq.call("bind_house", "communities"))["items"]]
    assert names == ["彩云花园"]
    assert accounts.by_phone(services.db, "13800000007") is None


def test_a_community_admin_cannot_import_into_another_community(
    services: Services, hq: Person
) -> None:
    garden_id = ok(hq.import_owners(ROWS))["community_id"]
    bay = {**GARDEN, "city": "广州市", "district": "天河区", "name": "星河湾"}
    bay_id = ok(hq.import_owners([row("101", "赵六", "13800000004")], community=bay))[
        "community_id"
    ]
    admin = make_staff(services, "13700000001", "admin", [garden_id])

    reply = admin.import_owners([row("101", "孙七", "13800000007")], community=bay)

    assert refused(reply) == "FORBIDDEN"
    assert (
        ok(hq.import_owners([row("101", "赵六", "13800000004")], community=bay))["counts"][
            "unchanged"
        ]
        == 1
    )
    assert accounts.by_phone(services.db, "13800000007") is None
    assert tree_labels(hq, bay_id) == ["1栋-1单元-101"]


@pytest.mark.parametrize("role", ["repairman", "guard"])
def test_repairmen_and_guards_cannot_import(services: Services, hq: Person, role: str) -> None:
    community_id = ok(hq.import_owners(ROWS))["community_id"]
    worker = make_staff(services, "13700000002", role, [community_id])

    assert refused(worker.import_owners(ROWS)) == "FORBIDDEN"


def test_residents_cannot_import_and_anonymous_callers_must_sign_in(
    services: Services, hq: Person
) -> None:
    ok(hq.import_owners(ROWS))
    resident = sign_in(services, "13800000001")
    event = {"action": "import_owners", "community": GARDEN, "rows": ROWS}

    assert refused(resident.import_owners(ROWS)) == "FORBIDDEN"
    assert refused(invoke("admin", event, None)) == "UNAUTHENTICATED"
    assert refused(invoke("admin", event, "o-unknown")) == "UNAUTHENTICATED"


def test_a_large_file_is_written_a_batch_of_rows_at_a_time(services: Services) -> None:
    rows = [
        row(str(1000 + i), f"业主{i}", f"1390000{i:04d}") for i in range(owner_import.BATCH + 3)
    ]

    with counting(services) as (counted_services, log):
        report = owner_import.import_owners(counted_services, GARDEN, rows)

    assert owner_import.count_statuses(report.rows)["created"] == len(rows)
    # Per batch: the accounts read and inserted, the houses read and inserted; before this,
    # three commands per row.
    batch = ["accounts.find", "accounts.insert_many", "houses.find", "houses.insert_many"]
    assert log == ["communities.find_one_and_update", *batch, *batch]
    assert account_count(services) == len(rows)


def test_a_file_imported_in_chunks_numbers_its_rows_as_in_the_file(
    services: Services, hq: Person
) -> None:
    # An import job reading the file in chunks calls the import once per chunk.
    first = owner_import.import_owners(services, GARDEN, ROWS[:2])
    second = owner_import.import_owners(
        services, GARDEN, [ROWS[2], {"building": 1}, ROWS[0]], first_row=3
    )

    assert [(r.row, r.status) for r in first.rows] == [(1, "created"), (2, "created")]
    assert [(r.row, r.status) for r in second.rows] == [
        (3, "created"),
        (4, "error"),
        (5, "unchanged"),
    ]
    assert tree_labels(hq, first.community_id) == [
        "1栋-1单元-101",
        "1栋-1单元-102",
        "2栋-1单元-201",
    ]


def test_a_changed_owner_in_one_batch_with_a_new_house_ends_only_that_houses_bindings(
    services: Services, hq: Person
) -> None:
    community_id = ok(hq.import_owners(ROWS))["community_id"]
    zhang = sign_in(services, "13800000001")
    li = sign_in(services, "13800000002")
    ok(bind(zhang, community_id, "101", "张三"))
    ok(bind(li, community_id, "102", "李四"))

    report = ok(
        hq.import_owners([row("101", "赵六", "13800000009"), row("103", "李四", "13800000002")])
    )

    assert [r["status"] for r in report["rows"]] == ["updated", "created"]
    assert my_labels(zhang) == []
    assert my_labels(li) == ["1栋-1单元-102"]

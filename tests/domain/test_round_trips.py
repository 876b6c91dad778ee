"""Database commands per call for login, houses and staff admin.

On MongoDB every collection call is a network round trip, so these pin how many a call makes
(reads: the caller lookup and one more; writes: at most four) and that a call builds its reply
from the documents it already holds instead of reading them again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import invoke
from round_trips import counted
from worlds import GARDEN, make_staff, ok, refused, sign_in, staff_account

from caiyun.adapters.sms import sandbox_outbox
from caiyun.domain import accounts, rate_limits
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores import accounts as account_store

PHONE = "13800005555"
OPENID = "o-round-trips"


@pytest.fixture
def commands(services: Services) -> Iterator[list[str]]:
    """The collection calls the functions make from now on (set-up through ``services`` is not
    counted; the sandbox's SMS outbox, production's SMS provider, is not counted either)."""
    with counted(services) as log:
        yield log


def _code_sent(services: Services, commands: list[str], phone: str = PHONE) -> str:
    ok(invoke("login", {"action": "send_code", "phone": phone}, openid=None))
    commands.clear()
    return sandbox_outbox(services.db, phone)[0]["code"]


# ------------------------------------------------------------------------------------ login


def test_send_code_counts_the_caller_and_takes_the_phones_limits_in_one_command(
    services: Services, commands: list[str]
) -> None:
    account_store.ensure_account(services.db, PHONE, services.clock.now(), "王五")
    ok(invoke("login", {"action": "send_code", "phone": PHONE}, openid=None))
    assert commands == ["accounts.find_one", "rate_limits.bulk_write", "sms_codes.bulk_write"]
    counters = {d["_id"].split(":")[0] for d in services.db["rate_limits"].find()}
    assert counters == {"send_code", "sms-resend", "sms-daily"}


def test_a_refused_send_code_still_counts_against_the_callers_limit(
    services: Services, commands: list[str]
) -> None:
    reply = invoke("login", {"action": "send_code", "phone": PHONE}, openid=None)
    assert refused(reply) == "ACCOUNT_NOT_FOUND"
    assert commands == ["accounts.find_one", "rate_limits.bulk_write"]
    assert [d["count"] for d in services.db["rate_limits"].find()] == [1]


def test_login_with_the_openid_already_bound_reads_once_and_writes_the_code_and_session(
    services: Services, commands: list[str]
) -> None:
    account, _ = account_store.ensure_account(services.db, PHONE, services.clock.now(), "王五")
    accounts.bind_openid(services.db, account["_id"], "resident", OPENID)
    code = _code_sent(services, commands)
    data = ok(invoke("login", {"action": "login", "phone": PHONE, "code": code}, OPENID))
    assert commands == [
        "accounts.aggregate",
        "sms_codes.find_one_and_update",
        "accounts.find_one_and_update",
    ]
    assert data["account"]["name"] == "王五" and data["first_login"] is True


def test_login_binding_a_new_openid_moves_it_in_one_more_command(
    services: Services, commands: list[str]
) -> None:
    account, _ = account_store.ensure_account(services.db, PHONE, services.clock.now(), "王五")
    other, _ = account_store.ensure_account(
        services.db, "13800006666", services.clock.now(), "赵六"
    )
    accounts.bind_openid(services.db, other["_id"], "resident", OPENID)
    code = _code_sent(services, commands)
    ok(invoke("login", {"action": "login", "phone": PHONE, "code": code}, OPENID))
    # Consents following the openid (messaging's write, made before the binding moves) are the
    # one command beyond the bind.
    assert commands == [
        "accounts.aggregate",
        "sms_codes.find_one_and_update",
        "subscription_consents.bulk_write",
        "accounts.bulk_write",
        "accounts.find_one_and_update",
    ]
    assert account_store.by_id(services.db, account["_id"])["wx"]["resident"] == OPENID
    assert "resident" not in account_store.by_id(services.db, other["_id"])["wx"]


def test_login_reply_shows_houses_and_staff_role_without_reading_them_again(
    services: Services, commands: list[str]
) -> None:
    staff_account(services, PHONE, "王师傅", "repairman", [], account_name="王五")
    code = _code_sent(services, commands)
    event = {"action": "login", "phone": PHONE, "code": code, "app": "staff"}
    data = ok(invoke("login", event, OPENID, "staff"))
    assert data["account"]["staff"]["role"] == "repairman"
    assert not any(c.startswith(("staff.", "memberships.")) for c in commands)
    second = ok(invoke("login", {"action": "me"}, OPENID, "staff"))
    assert second == data["account"]


def test_a_wrong_code_counts_a_try_and_spends_nothing(
    services: Services, commands: list[str]
) -> None:
    account_store.ensure_account(services.db, PHONE, services.clock.now(), "王五")
    code = _code_sent(services, commands)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert refused(invoke("login", {"action": "login", "phone": PHONE, "code": wrong})) == (
        "CODE_INVALID"
    )
    stored = services.db["sms_codes"].find_one({"phone": PHONE})
    assert stored["attempts"] == 1 and stored["used"] is False and "used_at" not in stored
    ok(invoke("login", {"action": "login", "phone": PHONE, "code": code}))


# ------------------------------------------------------------------------------ rate limits


def _refusal(call: Any) -> AppError:
    with pytest.raises(AppError) as caught:
        call()
    assert caught.value.code == "RATE_LIMITED"
    return caught.value


def test_take_all_stops_at_the_first_refused_limit_and_leaves_later_ones_untouched(
    services: Services,
) -> None:
    db, now = services.db, services.clock.now()
    end = now + timedelta(hours=1)
    limits = [rate_limits.Lease("l", 60), rate_limits.Hits("h", 5, end)]
    rate_limits.take_all(db, limits, now)
    refusal = _refusal(lambda: rate_limits.take_all(db, limits, now + timedelta(seconds=10)))
    assert refusal.details == {"retry_after_s": 50}
    assert db["rate_limits"].find_one({"_id": "h"})["count"] == 1


def test_a_full_counter_refuses_until_its_window_ends_and_counts_no_further(
    services: Services,
) -> None:
    db, now = services.db, services.clock.now()
    end = now + timedelta(seconds=30)
    for _ in range(3):
        rate_limits.take_all(db, [rate_limits.Hits("h", 3, end)], now)
    for _ in range(2):
        refusal = _refusal(lambda: rate_limits.take_all(db, [rate_limits.Hits("h", 3, end)], now))
        assert refusal.details == {"retry_after_s": 30}
    assert db["rate_limits"].find_one({"_id": "h"})["count"] == 3


# ----------------------------------------------------------------------------------- houses

ROWS = [
    {"building": 1, "unit": 1, "room": "101", "owner_name": "张三", "owner_phone": "13800000001"},
    {"building": 1, "unit": 1, "room": "102", "owner_name": "张三", "owner_phone": "13800000001"},
]


@pytest.fixture
def estate(services: Services) -> dict[str, Any]:
    """彩云花园 with two houses owned by 张三 (signed in, 101 bound) and its company admin."""
    hq = make_staff(services, "13700000000", "admin", None)
    garden = ok(hq.call("admin", "import_owners", community=GARDEN, rows=ROWS))
    owner = sign_in(services, "13800000001")
    ok(owner.call("bind_house", "bind", **_address(garden["community_id"], "101")))
    return {"hq": hq, "owner": owner, "community_id": garden["community_id"], **garden}


def _address(community_id: str, room: str) -> dict[str, str]:
    return {
        "community_id": community_id,
        "building": "1栋",
        "unit": "1单元",
        "room": room,
        "owner_name": "张三",
        "owner_phone": "13800000001",
    }


def test_my_houses_reads_houses_and_community_names_in_one_command(
    estate: dict[str, Any], commands: list[str]
) -> None:
    items = ok(estate["owner"].call("bind_house", "my_houses"))["items"]
    assert commands == ["accounts.aggregate", "accounts.aggregate"]
    assert [(i["label"], i["community_name"], i["role"]) for i in items] == [
        ("1栋-1单元-101", "彩云花园", "owner")
    ]


def test_bind_replies_with_every_house_of_the_caller_from_the_one_read_of_the_house(
    estate: dict[str, Any], commands: list[str]
) -> None:
    items = ok(
        estate["owner"].call("bind_house", "bind", **_address(estate["community_id"], "102"))
    )["items"]
    assert commands == [
        "accounts.aggregate",
        "rate_limits.bulk_write",  # a try against the caller's and the house's limits
        "houses.aggregate",
        "rate_limits.bulk_write",  # a right try is given back: only wrong ones count
        "memberships.insert_one",
    ]
    assert [i["label"] for i in items] == ["1栋-1单元-101", "1栋-1单元-102"]
    assert items == ok(estate["owner"].call("bind_house", "my_houses"))["items"]


def test_members_reads_the_house_its_members_and_their_names_in_one_command(
    estate: dict[str, Any], commands: list[str]
) -> None:
    house_id = estate["rows"][0]["house_id"]
    owner = estate["owner"]
    ok(
        owner.call(
            "bind_house",
            "add_member",
            house_id=house_id,
            name="张小",
            phone="13800000009",
            role="family",
        )
    )
    assert commands == [
        "accounts.aggregate",
        "houses.aggregate",
        "rate_limits.bulk_write",  # issue 17.4: the daily create limits, one command for all
        "accounts.find_one_and_update",
        "memberships.insert_one",
    ]
    commands.clear()
    items = ok(owner.call("bind_house", "members", house_id=house_id))["items"]
    assert commands == ["accounts.aggregate", "houses.aggregate"]
    assert [(m["name"], m["phone"], m["role"]) for m in items] == [
        ("张三", "13800000001", "owner"),
        ("张小", "138****0009", "family"),
    ]
    family = items[1]["account_id"]
    commands.clear()
    ok(owner.call("bind_house", "remove_member", house_id=house_id, account_id=family))
    assert commands == ["accounts.aggregate", "houses.aggregate", "memberships.delete_one"]


def test_house_tree_reads_the_community_only_when_it_has_no_house(
    services: Services, estate: dict[str, Any], commands: list[str]
) -> None:
    owner = estate["owner"]
    tree = ok(owner.call("bind_house", "house_tree", community_id=estate["community_id"]))
    assert commands == ["accounts.aggregate", "houses.find"] and tree["buildings"]
    commands.clear()
    assert refused(owner.call("bind_house", "house_tree", community_id="0" * 24)) == "NOT_FOUND"
    assert commands == ["accounts.aggregate", "houses.find", "communities.find_one"]


def test_staff_are_told_their_communities_names_without_reading_them_again(
    services: Services, estate: dict[str, Any], commands: list[str]
) -> None:
    garden = {"community_id": estate["community_id"], "name": "彩云花园"}
    ok(
        estate["hq"].call(
            "admin",
            "add_staff",
            phone="13700000009",
            name="钱师傅",
            role="repairman",
            community_ids=[garden["community_id"]],
        )
    )
    code = _code_sent(services, commands, "13700000009")
    event = {"action": "login", "phone": "13700000009", "code": code, "app": "staff"}
    data = ok(invoke("login", event, "o-staff-fixer", "staff"))
    assert data["account"]["staff"]["communities"] == [garden]
    assert not any(c.startswith("communities.") for c in commands)
    commands.clear()
    # A company-wide admin covers every community: their names and the admin's houses are one
    # command.
    hq = ok(estate["hq"].call("login", "me"))
    assert hq["staff"]["communities"] == [garden] and hq["staff"]["all_communities"]
    assert commands == ["accounts.aggregate", "communities.aggregate"]


def test_the_apps_configuration_is_one_command_in_a_warm_container(
    services: Services, estate: dict[str, Any], commands: list[str]
) -> None:
    ok(invoke("login", {"action": "config"}, None))
    assert commands == ["communities.aggregate"]  # the regions
    commands.clear()
    ok(invoke("login", {"action": "staff_config"}, None))
    assert commands == []


# ------------------------------------------------------------------------------ staff admin


def test_list_staff_joins_each_phone_into_the_page_command(
    services: Services, commands: list[str]
) -> None:
    hq = make_staff(services, "13700000000", "admin", None)
    staff_account(services, "13700000001", "钱师傅", "repairman", [])
    commands.clear()
    page = ok(hq.call("admin", "list_staff"))
    assert commands == ["accounts.aggregate", "staff.aggregate"]
    assert sorted(m["phone"] for m in page["items"]) == ["137****0000", "137****0001"]


def test_add_staff_checks_scope_in_its_write_for_new_and_existing_people(
    services: Services, estate: dict[str, Any], commands: list[str]
) -> None:
    community_ids = [estate["community_id"]]
    for phone in ("13700000005", "13800000001"):  # a new account, then 张三's
        commands.clear()
        added = ok(
            estate["hq"].call(
                "admin",
                "add_staff",
                phone=phone,
                name="钱师傅",
                role="guard",
                community_ids=community_ids,
            )
        )
        assert commands == [
            "accounts.aggregate",
            "communities.find",
            "rate_limits.bulk_write",  # issue 17.4: the daily create limits, one command for all
            "accounts.find_one_and_update",
            "staff.find_one_and_update",
        ]
        assert added["role"] == "guard" and added["community_ids"] == community_ids

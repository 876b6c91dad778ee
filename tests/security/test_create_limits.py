"""Issue 17.4: one account created ~190,000 repairs in ten minutes; nothing limited creates.

Every create action now takes a unit of a daily limit per account (and per house where the
action is about one) before its first write: past it the answer is RATE_LIMITED with
``retry_after_s`` until the Asia/Shanghai day ends, nothing is created, and two callers at the
limit cannot both pass. A retry of an idempotent create (same ``request_id``) takes no unit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import fresh_services, make_settings
from worlds import GARDEN, Person, make_staff, ok, owner_row, refused, sign_in

from caiyun.services import Services

LIMIT = 3
# Every limit at LIMIT, so each action's fourth create of the day is the first refused.
LIMITS = {
    f"{action}_per_{kind}_per_day": LIMIT
    for action in ("repairs", "complaints", "member_adds", "visitors")
    for kind in ("account", "house")
} | {
    "uploads_per_account_per_day": LIMIT,
    "notices_per_account_per_day": LIMIT,
    "staff_adds_per_account_per_day": LIMIT,
}
# Seconds from TEST_START (10:00 Asia/Shanghai) to midnight.
UNTIL_MIDNIGHT = 14 * 3600


@pytest.fixture
def services() -> Iterator[Services]:
    yield from fresh_services(make_settings(**LIMITS))


class Estate:
    """彩云花园 with houses 101 and 102 owned by 张三 (signed in, both bound) and its admin."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.hq = make_staff(services, "13700000000", "admin", None)
        rows = [owner_row(room, "张三", "13800000001") for room in ("101", "102")]
        garden = ok(self.hq.call("admin", "import_owners", community=GARDEN, rows=rows))
        self.community_id = garden["community_id"]
        self.houses = [row["house_id"] for row in garden["rows"]]
        self.owner = sign_in(services, "13800000001")
        for room in ("101", "102"):
            bind = {
                "community_id": self.community_id,
                "building": "1栋",
                "unit": "1单元",
                "room": room,
                "owner_name": "张三",
                "owner_phone": "13800000001",
            }
            ok(self.owner.call("bind_house", "bind", **bind))


@pytest.fixture
def estate(services: Services) -> Estate:
    return Estate(services)


Create = Callable[[Estate, Person, int, dict[str, Any]], dict[str, Any]]


def _repair(estate: Estate, who: Person, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    fields = {"category": "water_electric", "description": f"厨房水管漏水{n}"}
    return who.call(
        "repair", "create", house_id=estate.houses[0], contact_phone=who.phone, **fields, **extra
    )


def _complaint(estate: Estate, who: Person, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    return who.call(
        "complaint",
        "create",
        house_id=estate.houses[0],
        kind="complaint",
        type="environment",
        contact_phone=who.phone,
        content=f"楼下垃圾桶三天没有清理{n}",
        images=[],
        **extra,
    )


def _visitor(estate: Estate, who: Person, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    fields = {"name": "王芳", "phone": "13612345678", "count": 1}
    return who.call("visitor", "register", house_id=estate.houses[0], **fields, **extra)


def _notice(estate: Estate, who: Person, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    return estate.hq.call(
        "notify",
        "publish_notice",
        community_id=estate.community_id,
        title=f"停水通知{n}",
        content="明日九点至十二点停水，请提前储水。",
        **extra,
    )


def _member(estate: Estate, who: Person, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    return who.call(
        "bind_house",
        "add_member",
        house_id=estate.houses[0],
        name="张小",
        phone=f"1390000{n:04d}",
        role="family",
    )


def _staff(estate: Estate, who: Person, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    return estate.hq.call(
        "admin",
        "add_staff",
        phone=f"1370000{n + 100:04d}",
        name="钱师傅",
        role="repairman",
        community_ids=[estate.community_id],
    )


def _repair_upload(estate: Estate, who: Person, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    return who.call("repair", "upload_url", purpose="report", filename=f"{n}.jpg")


def _avatar_upload(estate: Estate, who: Person, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    return who.call("account", "upload_url", purpose="avatar", filename=f"{n}.jpg")


# action: (create, the collection its records go to and the filter that counts them)
CREATES: dict[str, tuple[Create, str, dict[str, Any]]] = {
    "repair.create": (_repair, "repairs", {}),
    "complaint.create": (_complaint, "complaints", {}),
    "visitor.register": (_visitor, "visitors", {}),
    "notify.publish_notice": (_notice, "notices", {}),
    "bind_house.add_member": (_member, "memberships", {"role": "family"}),
    "admin.add_staff": (_staff, "staff", {"role": "repairman"}),
}


def _count(services: Services, collection: str, query: dict[str, Any]) -> int:
    return services.db[collection].count_documents(query)


@pytest.mark.parametrize("action", CREATES)
def test_a_create_past_the_callers_daily_limit_is_refused_until_midnight_and_creates_nothing(
    services: Services, estate: Estate, action: str
) -> None:
    create, collection, query = CREATES[action]
    for n in range(LIMIT):
        ok(create(estate, estate.owner, n, {}))

    reply = create(estate, estate.owner, LIMIT, {})

    assert refused(reply) == "RATE_LIMITED"
    assert reply["error"]["details"] == {"retry_after_s": UNTIL_MIDNIGHT}
    assert "上限" in reply["error"]["message"]
    assert _count(services, collection, query) == LIMIT
    services.clock.advance(UNTIL_MIDNIGHT)
    ok(create(estate, estate.owner, LIMIT + 1, {}))


@pytest.mark.parametrize("create", [_repair_upload, _avatar_upload])
def test_upload_slots_of_both_functions_share_one_daily_limit(
    services: Services, estate: Estate, create: Create
) -> None:
    for n in range(LIMIT - 1):
        ok(_repair_upload(estate, estate.owner, n, {}))
    ok(_avatar_upload(estate, estate.owner, LIMIT, {}))

    reply = create(estate, estate.owner, LIMIT + 1, {})

    assert refused(reply) == "RATE_LIMITED"
    assert reply["error"]["details"] == {"retry_after_s": UNTIL_MIDNIGHT}


@pytest.mark.parametrize("action", ["repair.create", "complaint.create", "visitor.register"])
def test_the_house_limit_holds_across_every_account_of_the_house(
    services: Services, estate: Estate, action: str
) -> None:
    create, collection, query = CREATES[action]
    family = [f"1390000{n:04d}" for n in range(2)]
    for phone in family:
        ok(_member(estate, estate.owner, int(phone[-4:]), {}))
    # Each member files once, below their own limit; together they reach the house's.
    people = [estate.owner, *(sign_in(services, phone) for phone in family)]
    for n, who in enumerate(people):
        ok(create(estate, who, n, {}))

    assert refused(create(estate, people[1], LIMIT + 1, {})) == "RATE_LIMITED"
    assert _count(services, collection, query) == LIMIT


@pytest.mark.parametrize(
    "action", ["repair.create", "complaint.create", "visitor.register", "notify.publish_notice"]
)
def test_a_retried_create_with_the_same_request_id_takes_no_second_unit(
    services: Services, estate: Estate, action: str
) -> None:
    create, collection, query = CREATES[action]
    first = ok(create(estate, estate.owner, 0, {"request_id": "same-request"}))
    for _ in range(LIMIT + 2):
        assert ok(create(estate, estate.owner, 0, {"request_id": "same-request"})) == first
    for n in range(1, LIMIT):
        ok(create(estate, estate.owner, n, {}))

    assert refused(create(estate, estate.owner, LIMIT, {})) == "RATE_LIMITED"
    assert _count(services, collection, query) == LIMIT


def test_a_refused_create_gives_its_request_id_back_for_tomorrow(
    services: Services, estate: Estate
) -> None:
    for n in range(LIMIT):
        ok(_repair(estate, estate.owner, n, {}))
    assert refused(_repair(estate, estate.owner, 9, {"request_id": "late"})) == "RATE_LIMITED"
    services.clock.advance(UNTIL_MIDNIGHT)

    assert ok(_repair(estate, estate.owner, 9, {"request_id": "late"}))["description"].endswith("9")


def test_callers_racing_at_the_limit_never_create_more_than_it(
    services: Services, estate: Estate
) -> None:
    replies: list[dict[str, Any]] = []
    start = threading.Barrier(8)

    def file(n: int) -> None:
        start.wait()
        replies.append(_repair(estate, estate.owner, n, {}))

    threads = [threading.Thread(target=file, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted("error" in r for r in replies) == [False] * LIMIT + [True] * (8 - LIMIT)
    assert {refused(r) for r in replies if "error" in r} == {"RATE_LIMITED"}
    assert _count(services, "repairs", {}) == LIMIT

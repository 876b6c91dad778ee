"""Community notices: published by an admin of the community, read by its residents."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from typing import Any

import pytest
from conftest import invoke
from round_trips import counted, own
from worlds import BAY, GARDEN, account_of, ok, refused, resident_account, staff_account

from caiyun.domain import messaging, notices
from caiyun.domain.owner_import import import_owners
from caiyun.services import Services
from caiyun.stores import houses as house_store
from caiyun.stores.notices import NOTICES, READS

HOST = "13700000000"


def community(services: Services, record: dict[str, str], rooms: int) -> list[dict[str, Any]]:
    rows = [
        {"building": 1, "unit": 1, "room": 101 + i, "owner_name": "业主", "owner_phone": HOST}
        for i in range(rooms)
    ]
    report = import_owners(services, record, rows)
    return [house_store.get(services.db, row.house_id) for row in report.rows]


def resident(services: Services, phone: str, *homes: dict[str, Any]) -> str:
    openid = f"o-res-{phone}"
    resident_account(services, phone, None, openid, homes, "family")
    return openid


def staffer(services: Services, phone: str, role: str, community_ids: list[str] | None) -> str:
    openid = f"o-staff-{phone}"
    staff_account(services, phone, "物业", role, community_ids, openid)
    return openid


# The world's staff, who call from the staff app.
STAFF = ("admin", "boss", "guard")


def call(world: dict[str, Any], who: str, event: dict[str, Any]) -> dict[str, Any]:
    """``who`` of the world calls the notify function from their app."""
    return invoke("notify", event, world[who], "staff" if who in STAFF else "resident")


def account_id(services: Services, openid: str) -> str:
    return account_of(services.db, openid)["_id"]


@pytest.fixture
def world(services: Services) -> dict[str, Any]:
    garden = community(services, GARDEN, 3)
    bay = community(services, BAY, 1)
    garden_id, bay_id = garden[0]["community_id"], bay[0]["community_id"]
    return {
        "garden": garden,
        "bay": bay,
        "garden_id": garden_id,
        "bay_id": bay_id,
        # Two houses in the garden and one in the bay: two groups, one inbox message per notice.
        "both": resident(services, "13800000001", garden[0], garden[1], bay[0]),
        "garden_only": resident(services, "13800000002", garden[2]),
        "bay_only": resident(services, "13800000003", bay[0]),
        "admin": staffer(services, "13900000001", "admin", [garden_id]),
        "boss": staffer(services, "13900000002", "admin", None),
        "guard": staffer(services, "13900000003", "guard", [garden_id]),
    }


def publish(world: dict[str, Any], community: str, title: str, who: str = "admin", **extra: Any):
    event = {
        "action": "publish_notice",
        "community_id": world[community],
        "title": title,
        "content": f"{title}：详情请见物业服务中心公告栏。",
        **extra,
    }
    return call(world, who, event)


def groups(world: dict[str, Any], who: str) -> list[dict[str, Any]]:
    return ok(call(world, who, {"action": "notices"}))["groups"]


def test_admin_publishes_a_notice(services: Services, world: dict[str, Any]) -> None:
    data = ok(publish(world, "garden_id", "停水通知"))

    assert data["title"] == "停水通知"
    assert data["community_id"] == world["garden_id"]
    assert data["community_name"] == "彩云花园"
    assert data["content"].startswith("停水通知：")
    assert data["published_at"].endswith("+08:00")


def test_residents_see_one_group_per_community_newest_first(
    services: Services, world: dict[str, Any]
) -> None:
    ok(publish(world, "garden_id", "停水通知"))
    services.clock.advance(60)
    ok(publish(world, "bay_id", "消防演练", who="boss"))
    services.clock.advance(60)
    ok(publish(world, "garden_id", "电梯检修"))

    both = groups(world, "both")
    garden_only = groups(world, "garden_only")

    assert [(g["community_name"], g["total"]) for g in both] == [("彩云花园", 2), ("星河湾", 1)]
    assert [n["title"] for n in both[0]["items"]] == ["电梯检修", "停水通知"]
    assert both[0]["items"][0]["published_at"] > both[0]["items"][1]["published_at"]
    assert set(both[0]["items"][0]) == {"notice_id", "title", "published_at", "read"}
    assert [(g["unread"], g["page"], g["page_size"]) for g in both] == [(2, 1, 20), (1, 1, 20)]
    assert [g["community_name"] for g in garden_only] == ["彩云花园"]
    assert groups(world, "admin") == []


def test_each_group_of_the_first_page_holds_a_page_of_its_notices(
    services: Services, world: dict[str, Any]
) -> None:
    for i in range(5):
        ok(publish(world, "garden_id", f"第{i}号通知"))

    garden = ok(call(world, "garden_only", {"action": "notices", "page_size": 3}))["groups"][0]

    assert garden["total"] == 5
    assert [n["title"] for n in garden["items"]] == ["第4号通知", "第3号通知", "第2号通知"]


def test_every_notice_of_a_community_is_reached_by_paging_it(
    services: Services, world: dict[str, Any]
) -> None:
    # Issue 15.3 as reported: after 22 notices only the 20 newest could be read.
    for i in range(22):
        if i == 11:
            services.clock.advance(86400)  # an admin publishes at most 20 a day (issue 17.4)
        ok(publish(world, "garden_id", f"第{i}号通知"))
    ok(publish(world, "bay_id", "星河湾通知", who="boss"))

    def page(n: int) -> dict[str, Any]:
        ask = {"action": "notices", "community_id": world["garden_id"], "page": n}
        (group,) = ok(call(world, "both", ask))["groups"]
        return group

    first, second, third = page(1), page(2), page(3)

    assert (first["total"], len(first["items"]), len(second["items"])) == (22, 20, 2)
    assert [n["title"] for n in second["items"]] == ["第1号通知", "第0号通知"]
    assert third["items"] == [] and third["page"] == 3
    titles = [n["title"] for n in first["items"] + second["items"]]
    assert sorted(titles) == sorted(f"第{i}号通知" for i in range(22))


def test_a_community_where_the_caller_has_no_house_is_forbidden_unless_they_staff_it(
    services: Services, world: dict[str, Any]
) -> None:
    ok(publish(world, "bay_id", "星河湾通知", who="boss"))
    bay = {"action": "notices", "community_id": world["bay_id"]}

    assert refused(call(world, "garden_only", bay)) == "FORBIDDEN"
    assert refused(call(world, "guard", bay)) == "FORBIDDEN"  # staffs the garden only
    (group,) = ok(call(world, "boss", bay))["groups"]  # company-wide admin, no house
    assert (group["community_name"], group["total"]) == ("星河湾", 1)
    assert refused(call(world, "both", {**bay, "community_id": "missing"})) == "FORBIDDEN"


def test_reading_a_notice_marks_it_read_for_that_reader_only(
    services: Services, world: dict[str, Any]
) -> None:
    first = ok(publish(world, "garden_id", "停水通知"))["notice_id"]
    ok(publish(world, "garden_id", "电梯检修"))
    ok(publish(world, "bay_id", "星河湾通知", who="boss"))

    for _ in range(2):  # reading again changes nothing
        ok(call(world, "both", {"action": "notice_detail", "notice_id": first}))

    garden, bay = groups(world, "both")
    assert (garden["unread"], bay["unread"]) == (1, 1)
    assert {n["title"]: n["read"] for n in garden["items"]} == {"停水通知": True, "电梯检修": False}
    assert groups(world, "garden_only")[0]["unread"] == 2
    assert services.db[READS].count_documents({}) == 1


def test_two_reads_of_a_notice_at_once_keep_one_record(
    services: Services, world: dict[str, Any]
) -> None:
    notice_id = ok(publish(world, "garden_id", "停水通知"))["notice_id"]
    start = threading.Barrier(4)
    replies: list[dict[str, Any]] = []

    def read() -> None:
        start.wait()
        replies.append(call(world, "both", {"action": "notice_detail", "notice_id": notice_id}))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [r["ok"] for r in replies] == [True] * 4
    assert services.db[READS].count_documents({}) == 1
    assert groups(world, "both")[0]["unread"] == 0


def test_notice_detail_only_for_that_communitys_residents_and_staff(
    services: Services, world: dict[str, Any]
) -> None:
    notice_id = ok(publish(world, "garden_id", "停水通知"))["notice_id"]
    ask = {"action": "notice_detail", "notice_id": notice_id}

    for reader in ("both", "garden_only", "admin", "guard", "boss"):
        assert ok(call(world, reader, ask))["title"] == "停水通知", reader
    assert refused(call(world, "bay_only", ask)) == "NOT_FOUND"
    assert refused(call(world, "both", {**ask, "notice_id": "missing"})) == "NOT_FOUND"
    assert refused(invoke("notify", ask, None)) == "UNAUTHENTICATED"


def test_publishing_is_for_admins_of_that_community(
    services: Services, world: dict[str, Any]
) -> None:
    assert refused(publish(world, "bay_id", "越权通知")) == "FORBIDDEN"
    assert refused(publish(world, "garden_id", "保安通知", who="guard")) == "FORBIDDEN"
    assert refused(publish(world, "garden_id", "住户通知", who="both")) == "FORBIDDEN"
    world["nowhere"] = "no-such-community"
    assert refused(publish(world, "nowhere", "空通知", who="boss")) == "NOT_FOUND"
    assert services.db[NOTICES].count_documents({}) == 0


@pytest.mark.parametrize(
    "fields, bad",
    [({"title": "  "}, "title"), ({"title": "长" * 65}, "title"), ({"content": ""}, "content")],
)
def test_bad_notice_fields_are_refused(
    world: dict[str, Any], fields: dict[str, Any], bad: str
) -> None:
    event = {"action": "publish_notice", "community_id": world["garden_id"], "title": "通知"}
    reply = call(world, "admin", {**event, "content": "内容", **fields})

    assert refused(reply) == "INVALID_ARGUMENT"
    assert bad in reply["error"]["details"]["fields"]


def test_publishing_tells_each_resident_of_the_community_once(
    monkeypatch: pytest.MonkeyPatch, services: Services, world: dict[str, Any]
) -> None:
    monkeypatch.setattr(notices, "DELIVERY_BATCH", 1)  # every account in a batch of its own
    notice_id = ok(publish(world, "garden_id", "停水通知"))["notice_id"]

    def inbox(who: str) -> list[dict[str, Any]]:
        return messaging.inbox(
            services, account_id(services, world[who]), "resident", False, 1, 20
        )[0]

    for who in ("both", "garden_only"):
        assert [(m["kind"], m["title"]) for m in inbox(who)] == [("notice", "停水通知")], who
        assert notice_id in inbox(who)[0]["page"]
    assert inbox("bay_only") == []
    stored = services.db[NOTICES].find_one({"_id": notice_id})
    assert (stored["inbox"], stored["inbox_count"]) == ("sent", 2)


def test_a_delivery_cut_short_is_finished_by_the_timer_without_repeats(
    services: Services, world: dict[str, Any]
) -> None:
    notice_id = ok(publish(world, "garden_id", "停电通知"))["notice_id"]
    garden_only = account_id(services, world["garden_only"])
    both = account_id(services, world["both"])
    # As if the sender died after reaching "both" but before "garden_only".
    services.db[messaging.MESSAGES].delete_many({"account_id": garden_only})
    services.db[NOTICES].update_one(
        {"_id": notice_id}, {"$set": {"inbox": "sending", "sending_since": services.clock.now()}}
    )

    too_soon = invoke("scheduler", {"Type": "Timer", "TriggerName": "t"}, openid=None)
    services.clock.advance(6 * 60)
    later = invoke("scheduler", {"Type": "Timer", "TriggerName": "t"}, openid=None)

    assert too_soon["data"]["notices_resumed"] == 0
    assert later["data"]["notices_resumed"] == 1
    for who in (garden_only, both):
        assert messaging.inbox(services, who, "resident", False, 1, 20)[1] == 1, who
    assert services.db[NOTICES].find_one({"_id": notice_id})["inbox"] == "sent"


def test_same_request_id_publishes_and_delivers_once(
    services: Services, world: dict[str, Any]
) -> None:
    first = ok(publish(world, "garden_id", "停水通知", request_id="notice-1"))
    again = ok(publish(world, "garden_id", "停水通知", request_id="notice-1"))

    assert again == first
    assert services.db[NOTICES].count_documents({}) == 1
    garden_only = account_id(services, world["garden_only"])
    assert messaging.inbox(services, garden_only, "resident", False, 1, 20)[1] == 1


def test_a_community_without_notices_still_has_its_group(world: dict[str, Any]) -> None:
    ok(publish(world, "garden_id", "停水通知"))

    both = groups(world, "both")

    assert [(g["community_name"], g["total"], g["items"]) for g in both][1] == ("星河湾", 0, [])


def test_a_publisher_dying_before_delivery_leaves_it_to_the_timer(
    monkeypatch: pytest.MonkeyPatch, services: Services, world: dict[str, Any]
) -> None:
    def dies(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("container recycled")

    with monkeypatch.context() as patched:
        patched.setattr(messaging, "deliver", dies)
        assert refused(publish(world, "garden_id", "停气通知")) == "INTERNAL"
    services.clock.advance(6 * 60)
    later = invoke("scheduler", {"Type": "Timer", "TriggerName": "t"}, openid=None)

    assert later["data"]["notices_resumed"] == 1
    garden_only = account_id(services, world["garden_only"])
    assert [
        m["title"] for m in messaging.inbox(services, garden_only, "resident", False, 1, 20)[0]
    ] == ["停气通知"]
    assert services.db[NOTICES].find_one({})["inbox"] == "sent"


def test_a_notice_stored_before_names_were_kept_still_shows_its_community(
    services: Services, world: dict[str, Any]
) -> None:
    notice_id = ok(publish(world, "garden_id", "停水通知"))["notice_id"]
    services.db[NOTICES].update_one({"_id": notice_id}, {"$unset": {"community_name": ""}})

    for reader in ("both", "admin"):
        seen = call(world, reader, {"action": "notice_detail", "notice_id": notice_id})
        assert ok(seen)["community_name"] == "彩云花园", reader


# ------------------------------------------------------------------------------ round trips


def test_publishing_reads_the_community_once_and_replies_from_what_it_wrote(
    services: Services, world: dict[str, Any]
) -> None:
    with counted(services) as commands:
        published = ok(publish(world, "garden_id", "停水通知"))

    assert own(commands) == [
        "communities.find_one",
        "rate_limits.bulk_write",  # issue 17.4: the daily create limits, one command for all
        "notices.insert_one",
        "memberships.find",
        "notices.update_one",
    ]
    assert published["community_name"] == "彩云花园"


def test_the_notice_page_is_one_read_however_many_communities(
    services: Services, world: dict[str, Any]
) -> None:
    ok(publish(world, "garden_id", "停水通知"))
    ok(publish(world, "bay_id", "消防演练", who="boss"))

    with counted(services) as commands:
        assert len(groups(world, "both")) == 2

    assert commands == ["accounts.aggregate", "memberships.aggregate"]


def test_a_notice_is_one_read_for_its_residents_and_its_staff(
    services: Services, world: dict[str, Any]
) -> None:
    notice_id = ok(publish(world, "garden_id", "停水通知"))["notice_id"]
    ask = {"action": "notice_detail", "notice_id": notice_id}

    with counted(services) as as_resident:
        ok(call(world, "garden_only", ask))
    with counted(services) as as_staff:
        ok(call(world, "guard", ask))

    # The read itself, then the caller's read record (an upsert, one command).
    assert as_resident == ["accounts.aggregate", "notices.aggregate", "notice_reads.update_one"]
    assert as_staff == ["accounts.aggregate", "notices.find_one", "notice_reads.update_one"]


def test_a_delivery_the_budget_cuts_short_is_carried_on_by_the_next_run_from_where_it_stopped(
    services: Services, world: dict[str, Any]
) -> None:
    notice_id = ok(publish(world, "garden_id", "停水通知"))["notice_id"]
    readers = [account_id(services, world[k]) for k in ("both", "garden_only")]
    # As if the publisher died before telling anyone.
    services.db[messaging.MESSAGES].delete_many({"account_id": {"$in": readers}})
    stale = services.clock.now() - timedelta(minutes=6)
    services.db[NOTICES].update_one(
        {"_id": notice_id}, {"$set": {"inbox": "sending", "sending_since": stale}}
    )
    one_at_a_time = dataclasses.replace(
        services, settings=services.settings.model_copy(update={"scheduler_batch_size": 1})
    )
    spent = services.clock.now()  # the budget is over once a batch is done

    first = notices.resume_deliveries(one_at_a_time, until=spent)
    halfway = services.db[NOTICES].find_one({"_id": notice_id})
    second = notices.resume_deliveries(one_at_a_time, until=spent)
    third = notices.resume_deliveries(one_at_a_time, until=spent)

    assert (first["unfinished"], second["unfinished"]) == (1, 1)
    assert halfway["inbox"] == "sending" and halfway["delivered_after"] == min(readers)
    assert third == {"notices_resumed": 1}
    for reader in readers:
        assert messaging.inbox(services, reader, "resident", False, 1, 20)[1] == 1, reader
    assert services.db[NOTICES].find_one({"_id": notice_id})["inbox"] == "sent"

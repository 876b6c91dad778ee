"""报修 over the running sandbox, walked as the resident app and the staff app would walk it.

A resident reports a repair on his bound house, an admin dispatches it to 郑师傅, the repairman
finishes it with a photo, and then either the resident rates it or, after three unrated days,
the scheduler's timer completes it on its own. Every transition lands in the inbox.
"""

from __future__ import annotations

import uuid
from typing import Any

import requests
from sandbox_client import (
    TIMEOUT_S,
    App,
    Running,
    advance,
    resident,
    staff_by_api,
    staff_by_invoke,
)

from caiyun.sandbox.seed import (
    CAIYUN_GARDEN,
    DEMO_BOUND_OWNERS,
    DEMO_STAFF,
    YUNQI_COURT,
)

OWNER = DEMO_BOUND_OWNERS[0]  # 张伟: bound to a house in each demo community
STAFF = {member.name: member.phone for member in DEMO_STAFF}
COMPANY_ADMIN = STAFF["周敏"]  # every community
GARDEN_ADMIN = STAFF["吴刚"]  # 彩云花园 only
REPAIRMAN = STAFF["郑师傅"]  # both communities
THREE_DAYS_S = 3 * 86400


def house_in(app: App, community_name: str) -> dict[str, Any]:
    """The caller's house in a community, as 我的房屋 lists it."""
    houses = app.ok("bind_house", "my_houses")["items"]
    return next(h for h in houses if h["community_name"] == community_name)


def upload(app: App, purpose: str, filename: str) -> str:
    """A storage file id for one image; the sandbox hands it out ready, without any bytes."""
    target = app.ok("repair", "upload_url", purpose=purpose, filename=filename)
    assert target["provider"] == "sandbox"
    assert target["file_id"].startswith("sandbox://files/")
    return target["file_id"]


def report(app: App, house: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    """The resident's 报修 form, submitted with one photo of the problem."""
    image = upload(app, "report", "problem.jpg")
    return app.ok(
        "repair",
        "create",
        house_id=house["house_id"],
        category="water_electric",
        description=description,
        contact_phone=OWNER,
        images=[image],
        **extra,
    )


def repairman_id(admin: App, community_id: str) -> str:
    """郑师傅 from the admin's repairman picker."""
    picker = admin.ok("repair", "repairmen", community_id=community_id)["items"]
    return next(r["account_id"] for r in picker if r["name"] == "郑师傅")


def finish(repairman: App, repair_id: str) -> dict[str, Any]:
    """The repairman finds the job in 我的工单 and reports it done with a photo."""
    assigned = repairman.ok("repair", "assigned", status="dispatched")["items"]
    assert repair_id in [r["repair_id"] for r in assigned]
    photo = upload(repairman, "completion", "fixed.jpg")
    done = repairman.ok("repair", "complete", repair_id=repair_id, photos=[photo], note="已更换")
    assert [p["file_id"] for p in done["completion"]["photos"]] == [photo]
    return done


def fire_scheduler(base: str) -> dict[str, Any]:
    """The platform's timer trigger, fired now."""
    reply = requests.post(f"{base}/timer/scheduler", timeout=TIMEOUT_S)
    body = reply.json()
    assert (reply.status_code, body["ok"]) == (200, True), body
    assert body["data"]["failed_jobs"] == []
    return body["data"]


def inbox_titles(app: App, kind: str) -> list[str]:
    """The titles of the caller's inbox messages of one kind, oldest first."""
    messages = app.ok("notify", "messages", page_size=100)["items"]
    return [m["title"] for m in reversed(messages) if m["kind"] == kind]


def events(detail: dict[str, Any]) -> list[str]:
    return [entry["event"] for entry in detail["timeline"]]


def test_an_unrated_repair_goes_from_report_to_work_done_and_auto_closes_after_three_days(
    sandbox: Running,
) -> None:
    base = sandbox.url
    owner = resident(base, OWNER, "o-zhangwei")
    categories = owner.ok("repair", "categories")["items"]
    assert {"code": "water_electric", "name": "水电维修"} in categories

    house = house_in(owner, CAIYUN_GARDEN)
    created = report(owner, house, "厨房水龙头漏水")
    repair_id = created["repair_id"]
    assert (created["status"], created["status_name"]) == ("pending", "待处理")
    assert created["house_label"] == "1栋-1单元-101"
    assert created["images"][0]["file_id"].startswith("sandbox://files/")
    assert events(created) == ["created"]
    mine = owner.ok("repair", "my_list", status="pending")
    assert [r["repair_id"] for r in mine["items"]] == [repair_id]

    admin = staff_by_api(base, GARDEN_ADMIN)
    queue = admin.ok("repair", "staff_list", community_id=house["community_id"], status="pending")
    listed = next(r for r in queue["items"] if r["repair_id"] == repair_id)
    assert listed["contact_phone"] == "138****0001"  # masked in staff lists
    zheng = repairman_id(admin, house["community_id"])
    dispatched = admin.ok("repair", "dispatch", repair_id=repair_id, repairman_id=zheng)
    assert (dispatched["status"], dispatched["status_name"]) == ("dispatched", "待上门")
    assert dispatched["repairman"]["name"] == "郑师傅"

    repairman = staff_by_invoke(base, REPAIRMAN, "o-zheng")
    finish(repairman, repair_id)

    detail = owner.ok("repair", "detail", repair_id=repair_id)
    assert (detail["status"], detail["status_name"]) == ("awaiting_rating", "待评价")
    assert events(detail) == ["created", "dispatched", "work_done"]
    assert detail["repairman"] == {"account_id": zheng, "name": "郑师傅", "phone": REPAIRMAN}
    assert detail["images"] == created["images"]
    assert detail["completion"]["note"] == "已更换"
    assert detail["completion"]["photos"][0]["file_id"].startswith("sandbox://files/")
    assert detail["auto_close_at"] is not None and detail["rating"] is None

    # Within the three days the timer leaves it for the resident to rate.
    assert fire_scheduler(base)["repairs_auto_closed"] == 0
    assert owner.ok("repair", "detail", repair_id=repair_id)["status"] == "awaiting_rating"

    status, moved = advance(base, THREE_DAYS_S + 1)
    assert status == 200, moved
    assert fire_scheduler(base)["repairs_auto_closed"] == 1

    closed = owner.ok("repair", "detail", repair_id=repair_id)
    assert (closed["status"], closed["auto_closed"]) == ("completed", True)
    assert events(closed) == ["created", "dispatched", "work_done", "auto_closed"]
    assert closed["timeline"][-1]["actor_role"] == "system"
    assert closed["rating"] is None and closed["auto_close_at"] is None
    listed = owner.ok("repair", "my_list", status="completed")["items"]
    assert [(r["repair_id"], r["auto_closed"]) for r in listed] == [(repair_id, True)]
    assert owner.refused("repair", "rate", repair_id=repair_id, stars=5) == (409, "CONFLICT")

    assert inbox_titles(owner, "repair") == ["报修已派单", "维修已完成，请评价", "报修已自动完成"]
    assert inbox_titles(repairman, "repair") == ["新的维修工单"]


def test_a_rated_repair_is_completed_by_the_resident_and_never_auto_closed(
    sandbox: Running,
) -> None:
    base = sandbox.url
    owner = resident(base, OWNER, "o-zhangwei")
    house = house_in(owner, YUNQI_COURT)
    repair_id = report(owner, house, "卫生间灯不亮")["repair_id"]

    # The 彩云花园 admin does not see 云栖苑's repairs; the company-wide admin does.
    garden_admin = staff_by_invoke(base, GARDEN_ADMIN, "o-wugang")
    assert garden_admin.ok("repair", "staff_list")["items"] == []
    admin = staff_by_invoke(base, COMPANY_ADMIN, "o-zhoumin")
    assert [r["repair_id"] for r in admin.ok("repair", "staff_list")["items"]] == [repair_id]
    zheng = repairman_id(admin, house["community_id"])
    admin.ok("repair", "dispatch", repair_id=repair_id, repairman_id=zheng)

    repairman = staff_by_invoke(base, REPAIRMAN, "o-zheng")
    finish(repairman, repair_id)

    rated = owner.ok("repair", "rate", repair_id=repair_id, stars=5, comment="师傅很专业")
    assert (rated["status"], rated["status_name"], rated["auto_closed"]) == (
        "completed",
        "已完成",
        False,
    )
    assert (rated["rating"]["stars"], rated["rating"]["comment"]) == (5, "师傅很专业")
    assert events(rated) == ["created", "dispatched", "work_done", "rated"]

    assert advance(base, THREE_DAYS_S + 1)[0] == 200
    assert fire_scheduler(base)["repairs_auto_closed"] == 0
    later = owner.ok("repair", "detail", repair_id=repair_id)
    assert (later["status"], later["auto_closed"], later["rating"]["stars"]) == (
        "completed",
        False,
        5,
    )
    assert owner.refused("repair", "rate", repair_id=repair_id, stars=1) == (409, "CONFLICT")

    assert inbox_titles(owner, "repair") == ["报修已派单", "维修已完成，请评价"]
    assert inbox_titles(repairman, "repair") == ["新的维修工单"]


def test_the_same_report_sent_twice_with_one_request_id_makes_one_repair(
    sandbox: Running,
) -> None:
    base = sandbox.url
    owner = resident(base, OWNER, "o-zhangwei")
    house = house_in(owner, CAIYUN_GARDEN)
    request_id = uuid.uuid4().hex
    form = {
        "house_id": house["house_id"],
        "category": "door_window",
        "description": "阳台推拉门关不上",
        "contact_phone": OWNER,
        "images": [],
        "request_id": request_id,
    }

    first = owner.ok("repair", "create", **form)
    # The mini-program retries after a timeout: same answer, nothing new.
    again = owner.ok("repair", "create", **form)
    assert again["repair_id"] == first["repair_id"]
    assert owner.ok("repair", "my_list")["total"] == 1

    # Another request id is another report.
    other = owner.ok("repair", "create", **{**form, "request_id": uuid.uuid4().hex})
    assert other["repair_id"] != first["repair_id"]
    assert owner.ok("repair", "my_list")["total"] == 2


def test_a_photo_uploaded_to_the_sandbox_is_shown_by_its_signed_url_until_it_expires(
    sandbox: Running,
) -> None:
    base = sandbox.url
    owner = resident(base, OWNER, "o-zhangwei")
    house = house_in(owner, CAIYUN_GARDEN)
    target = owner.ok("repair", "upload_url", purpose="report", filename="leak.png")
    assert (target["method"], target["headers"]) == ("PUT", {"Content-Type": "image/png"})
    sent = requests.put(target["url"], data=b"\x89PNG leak", headers=target["headers"], timeout=5)
    assert sent.status_code == 200
    created = owner.ok(
        "repair",
        "create",
        house_id=house["house_id"],
        category="water_electric",
        description="阳台漏水",
        contact_phone=OWNER,
        images=[target["file_id"]],
    )

    shown = created["images"][0]
    assert shown["file_id"] == target["file_id"]
    assert shown["url"].startswith(f"{base}/files/")
    got = requests.get(shown["url"], timeout=TIMEOUT_S)
    assert (got.status_code, got.content) == (200, b"\x89PNG leak")
    assert got.headers["Content-Type"] == "image/png"
    forged = shown["url"][:-4] + "0000"
    assert requests.get(forged, timeout=TIMEOUT_S).status_code == 403
    assert requests.put(shown["url"], data=b"x", timeout=TIMEOUT_S).status_code == 403

    assert advance(base, 3 * 3600)[0] == 200
    assert requests.get(shown["url"], timeout=TIMEOUT_S).status_code == 403
    again = owner.ok("repair", "detail", repair_id=created["repair_id"])["images"][0]["url"]
    assert requests.get(again, timeout=TIMEOUT_S).content == b"\x89PNG leak"
    # The garden's admin heard of the new repair.
    admin = staff_by_api(base, GARDEN_ADMIN)
    assert "新的报修" in inbox_titles(admin, "repair_filed")

"""The resident app's everyday services over the running sandbox, walked as a user would.

Binding a house and adding family, complaints and the property's replies, community notices,
visitor passes checked at the gate, and the 我的 page down to changing the phone number.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from sandbox_client import (
    App,
    Running,
    advance,
    invoke,
    latest_code,
    login_by_api,
    login_by_invoke,
    resident,
    staff_by_invoke,
)

from caiyun.sandbox.seed import (
    CAIYUN_GARDEN,
    DEMO_BOUND_OWNERS,
    DEMO_COMMUNITIES,
    DEMO_STAFF,
    YUNQI_COURT,
    DemoCommunity,
    DemoHouse,
)

GARDEN = next(c for c in DEMO_COMMUNITIES if c.name == CAIYUN_GARDEN)
TWO_COMMUNITY_OWNER = DEMO_BOUND_OWNERS[0]  # 张伟: a house in each demo community
STAFF = {member.name: member.phone for member in DEMO_STAFF}
GARDEN_ADMIN = STAFF["吴刚"]
GARDEN_GUARD = STAFF["孙立"]


def garden_house(owner_phone: str) -> DemoHouse:
    """A demo house of 彩云花园, as the property's import file records it."""
    return next(h for h in GARDEN.houses if h.owner_phone == owner_phone)


def pick_community(app: App, community: DemoCommunity) -> str:
    """The community picker, narrowed by region as the app's cascade does."""
    found = app.ok(
        "bind_house",
        "communities",
        province=community.province,
        city=community.city,
        district=community.district,
    )["items"]
    return next(c["community_id"] for c in found if c["name"] == community.name)


def pick_room(app: App, community_id: str, house: DemoHouse) -> str:
    """Building → unit → room in the house tree; returns the room's house id."""
    tree = app.ok("bind_house", "house_tree", community_id=community_id)["buildings"]
    building = next(b for b in tree if b["building"] == house.building)
    unit = next(u for u in building["units"] if u["unit"] == house.unit)
    return next(r["house_id"] for r in unit["rooms"] if r["room"] == house.room)


def bind(
    app: App, community: DemoCommunity, house: DemoHouse, owner_name: str
) -> tuple[int, dict[str, Any]]:
    """The 绑定房屋 form submitted with the given owner name."""
    return app.call(
        "bind_house",
        "bind",
        community_id=pick_community(app, community),
        building=house.building,
        unit=house.unit,
        room=house.room,
        owner_name=owner_name,
        owner_phone=house.owner_phone,
    )


def bind_own_house(owner: App, house: DemoHouse) -> dict[str, Any]:
    """The owner binds his 彩云花园 house with the imported details; returns that house."""
    status, body = bind(owner, GARDEN, house, house.owner_name)
    assert (status, body["ok"]) == (200, True), body
    return next(h for h in body["data"]["items"] if h["label"] == house.label)


def tampered(token: str) -> str:
    """The pass token with its last character changed, as a forger would try."""
    return token[:-1] + ("B" if token.endswith("A") else "A")


def inbox(app: App, kind: str) -> list[dict[str, Any]]:
    """The caller's inbox messages of one kind, oldest first."""
    messages = app.ok("notify", "messages", page_size=100)["items"]
    return [m for m in reversed(messages) if m["kind"] == kind]


def send_code(app: App, phone: str, purpose: str) -> str:
    """Ask for a code for ``purpose`` as this caller and read it from the sandbox outbox."""
    app.ok("login", "send_code", phone=phone, purpose=purpose)
    return latest_code(app.base, phone)


def test_an_owner_binds_his_house_and_the_family_member_he_adds_can_sign_in_and_see_it(
    sandbox: Running,
) -> None:
    base = sandbox.url
    house = garden_house("13800000002")  # 李娜, not bound yet
    owner = resident(base, house.owner_phone, "o-lina")
    assert owner.ok("bind_house", "my_houses")["items"] == []

    community_id = pick_community(owner, GARDEN)
    house_id = pick_room(owner, community_id, house)

    status, body = bind(owner, GARDEN, house, "李四")
    assert (status, body["error"]["code"]) == (403, "OWNER_MISMATCH")
    assert owner.ok("bind_house", "my_houses")["items"] == []

    status, body = bind(owner, GARDEN, house, house.owner_name)
    assert (status, body["ok"]) == (200, True), body
    assert body["data"]["items"] == [
        {
            "house_id": house_id,
            "community_id": community_id,
            "community_name": CAIYUN_GARDEN,
            "label": "1栋-1单元-102",
            "role": "owner",
            "role_name": "业主",
            "can_manage_members": True,
        }
    ]

    added = owner.ok(
        "bind_house",
        "add_member",
        house_id=house_id,
        name="李小娜",
        phone="13700000012",
        role="family",
    )
    assert (added["name"], added["phone"], added["role"]) == ("李小娜", "137****0012", "family")
    members = owner.ok("bind_house", "members", house_id=house_id)["items"]
    assert sorted((m["role"], m["is_me"]) for m in members) == [("family", False), ("owner", True)]

    family = resident(base, "13700000012", "o-lixiaona")
    assert family.ok("login", "me")["name"] == "李小娜"
    [seen] = family.ok("bind_house", "my_houses")["items"]
    assert (seen["house_id"], seen["label"], seen["role"]) == (house_id, "1栋-1单元-102", "family")
    assert seen["can_manage_members"] is False
    assert family.refused("bind_house", "members", house_id=house_id) == (403, "FORBIDDEN")


def test_a_complaint_is_answered_taken_up_and_resolved_and_the_resident_reads_the_replies(
    sandbox: Running,
) -> None:
    base = sandbox.url
    house = garden_house("13800000003")  # 王芳
    owner = resident(base, house.owner_phone, "o-wangfang")
    complaint = {
        "kind": "complaint",
        "type": "environment",
        "contact_phone": house.owner_phone,
        "content": "2单元楼道垃圾三天没人清理",
        "images": [],
    }
    # Before binding there is no house to complain about.
    assert owner.refused("complaint", "create", house_id="h-none", **complaint) == (
        403,
        "HOUSE_NOT_BOUND",
    )

    mine = bind_own_house(owner, house)
    types = owner.ok("complaint", "types")["items"]
    assert "environment" in [t["code"] for t in types]
    filed = owner.ok("complaint", "create", house_id=mine["house_id"], **complaint)
    complaint_id = filed["complaint_id"]
    assert (filed["status"], filed["house_label"], filed["replies"]) == (
        "submitted",
        "1栋-2单元-201",
        [],
    )
    listed = owner.ok("complaint", "my_list", status="submitted")["items"]
    assert [c["complaint_id"] for c in listed] == [complaint_id]

    admin = staff_by_invoke(base, GARDEN_ADMIN, "o-wugang")
    queue = admin.ok("complaint", "staff_list", status="submitted")["items"]
    assert [(c["complaint_id"], c["contact_phone"]) for c in queue] == [
        (complaint_id, "138****0003")
    ]
    taken = admin.ok(
        "complaint", "reply", complaint_id=complaint_id, reply="已安排保洁", status="processing"
    )
    assert taken["status"] == "processing"
    done = admin.ok(
        "complaint", "reply", complaint_id=complaint_id, reply="已清理完毕", status="resolved"
    )
    assert done["status"] == "resolved" and done["resolved_at"] is not None
    assert admin.refused(
        "complaint", "reply", complaint_id=complaint_id, reply="再补充", status="processing"
    ) == (409, "CONFLICT")

    seen = owner.ok("complaint", "detail", complaint_id=complaint_id)
    assert (seen["status"], seen["reply_count"], seen["community_name"]) == (
        "resolved",
        2,
        CAIYUN_GARDEN,
    )
    assert [(r["staff_name"], r["text"], r["status"]) for r in seen["replies"]] == [
        ("吴刚", "已安排保洁", "processing"),
        ("吴刚", "已清理完毕", "resolved"),
    ]
    assert [m["body"] for m in inbox(owner, "complaint")] == ["已安排保洁", "已清理完毕"]


def test_a_notice_published_in_one_community_shows_in_that_group_of_a_two_community_owner(
    sandbox: Running,
) -> None:
    base = sandbox.url
    owner = resident(base, TWO_COMMUNITY_OWNER, "o-zhangwei")
    admin = staff_by_invoke(base, GARDEN_ADMIN, "o-wugang")
    communities = {
        c["name"]: c["community_id"] for c in owner.ok("bind_house", "communities")["items"]
    }

    published = admin.ok(
        "notify",
        "publish_notice",
        community_id=communities[CAIYUN_GARDEN],
        title="停水通知",
        content="本周六 9:00-12:00 小区停水检修，请提前储水。",
    )
    # 吴刚 covers 彩云花园 only.
    assert admin.refused(
        "notify", "publish_notice", community_id=communities[YUNQI_COURT], title="x", content="y"
    ) == (403, "FORBIDDEN")

    groups = {g["community_name"]: g for g in owner.ok("notify", "notices")["groups"]}
    assert set(groups) == {CAIYUN_GARDEN, YUNQI_COURT}
    garden = groups[CAIYUN_GARDEN]
    assert (garden["total"], [n["title"] for n in garden["items"]]) == (1, ["停水通知"])
    assert garden["items"][0]["notice_id"] == published["notice_id"]
    assert (groups[YUNQI_COURT]["total"], groups[YUNQI_COURT]["items"]) == (0, [])

    detail = owner.ok("notify", "notice_detail", notice_id=published["notice_id"])
    assert (detail["title"], detail["community_name"]) == ("停水通知", CAIYUN_GARDEN)
    assert detail["content"] == "本周六 9:00-12:00 小区停水检修，请提前储水。"
    assert [m["title"] for m in inbox(owner, "notice")] == ["停水通知"]

    # An owner who has bound no house has no groups and cannot open the notice.
    stranger = resident(base, "13800000006", "o-yanglei")
    assert stranger.ok("notify", "notices")["groups"] == []
    assert stranger.refused("notify", "notice_detail", notice_id=published["notice_id"]) == (
        404,
        "NOT_FOUND",
    )


def test_a_visitor_pass_shows_no_host_admits_once_at_the_gate_and_appears_in_history(
    sandbox: Running,
) -> None:
    base = sandbox.url
    host = resident(base, TWO_COMMUNITY_OWNER, "o-zhangwei")
    houses = {h["community_name"]: h for h in host.ok("bind_house", "my_houses")["items"]}
    issued = host.ok(
        "visitor",
        "register",
        house_id=houses[CAIYUN_GARDEN]["house_id"],
        name="王小明",
        phone="13600000000",
        count=2,
        plate="粤B·12345",
    )
    token = issued["pass_token"]
    assert base64.b64decode(issued["qr_png_base64"]).startswith(b"\x89PNG")
    assert issued["share_path"].startswith("/pages/visitor/pass?token=")

    # The visitor opens the shared page: no sign-in, and nothing about the host.
    status, shown = invoke(base, "visitor", {"action": "pass", "token": token})
    assert status == 200, shown
    view = shown["data"]
    assert (view["status"], view["visitor_name"], view["count"]) == ("valid", "王小明", 2)
    assert (view["community_name"], view["house_label"]) == (CAIYUN_GARDEN, "1栋-1单元-101")
    assert view["plate"] == "粤B***45"
    page = json.dumps(view, ensure_ascii=False)
    assert "张伟" not in page and TWO_COMMUNITY_OWNER not in page

    guard = staff_by_invoke(base, GARDEN_GUARD, "o-sunli")
    first = guard.ok("visitor", "verify", token=token)
    assert first["result"] == "valid"
    assert (first["visitor"]["plate"], first["visitor"]["house_label"]) == (
        "粤B12345",
        "1栋-1单元-101",
    )
    assert first["visitor"]["entered_at"] is not None
    second = guard.ok("visitor", "verify", token=token)
    assert second["result"] == "used"
    assert second["visitor"]["entered_at"] == first["visitor"]["entered_at"]
    assert guard.ok("visitor", "verify", token=tampered(token))["result"] == "forged"

    # A 云栖苑 pass is not the 彩云花园 guard's to check.
    elsewhere = host.ok(
        "visitor",
        "register",
        house_id=houses[YUNQI_COURT]["house_id"],
        name="李雷",
        phone="13600000001",
        count=1,
    )
    assert guard.refused("visitor", "verify", token=elsewhere["pass_token"]) == (403, "FORBIDDEN")

    history = host.ok("visitor", "history")["items"]
    assert [(v["name"], v["status"]) for v in history] == [("李雷", "valid"), ("王小明", "used")]
    visited = history[1]
    # 访客记录 shows the host what they typed in: the phone and plate in full.
    assert (visited["phone"], visited["count"], visited["plate"]) == ("13600000000", 2, "粤B12345")
    assert visited["entered_at"] == first["visitor"]["entered_at"]
    # A pass still valid can be shared again from its record; a used one cannot.
    again = host.ok("visitor", "detail", visitor_id=elsewhere["visitor_id"])
    assert (again["pass_token"], again["share_path"]) == (
        elsewhere["pass_token"],
        elsewhere["share_path"],
    )
    assert host.ok("visitor", "detail", visitor_id=issued["visitor_id"])["pass_token"] is None
    assert [m["title"] for m in inbox(host, "visitor")] == ["访客已到达"]
    status, shown = invoke(base, "visitor", {"action": "pass", "token": token})
    assert (status, shown["data"]["status"]) == (200, "used")

    # A pass is good until the end of its visit date: the next day it is expired.
    late = host.ok(
        "visitor",
        "register",
        house_id=houses[CAIYUN_GARDEN]["house_id"],
        name="韩梅梅",
        phone="13600000002",
        count=1,
    )
    assert advance(base, 86400)[0] == 200
    assert guard.ok("visitor", "verify", token=late["pass_token"])["result"] == "expired"
    assert host.ok("visitor", "history")["items"][0]["status"] == "expired"


def test_the_profile_takes_a_nickname_and_a_new_phone_that_then_signs_in(
    sandbox: Running,
) -> None:
    base = sandbox.url
    old_phone, new_phone = "13800000004", "13700000044"  # 刘洋, moving to a new number
    me = App(base, token=login_by_api(base, old_phone))
    profile = me.ok("account", "profile")
    assert (profile["phone"], profile["name"], profile["nickname"]) == (old_phone, "刘洋", None)
    assert me.ok("account", "update_profile", nickname="阿洋")["nickname"] == "阿洋"
    assert me.ok("account", "profile")["nickname"] == "阿洋"

    old_code = send_code(me, old_phone, "change_phone_old")
    new_code = send_code(me, new_phone, "change_phone_new")
    changed = me.ok(
        "account", "change_phone", old_code=old_code, new_phone=new_phone, new_code=new_code
    )
    assert (changed["account_id"], changed["phone"]) == (profile["account_id"], new_phone)
    # The session in hand stays signed in, now under the new phone.
    assert me.ok("login", "me")["phone"] == new_phone

    status, body = invoke(base, "login", {"action": "send_code", "phone": old_phone}, "o-liuyang")
    assert (status, body["error"]["code"]) == (403, "ACCOUNT_NOT_FOUND")
    again = login_by_invoke(base, new_phone, "o-liuyang")
    assert again["account"]["account_id"] == profile["account_id"]
    assert (again["account"]["nickname"], again["first_login"]) == ("阿洋", False)


def test_a_mistyped_new_phone_code_can_be_corrected_without_asking_for_a_new_old_code(
    sandbox: Running,
) -> None:
    base = sandbox.url
    old_phone, new_phone = "13800000005", "13700000055"  # 陈静
    me = resident(base, old_phone, "o-chenjing")
    old_code = send_code(me, old_phone, "change_phone_old")
    new_code = send_code(me, new_phone, "change_phone_new")
    wrong = "000000" if new_code != "000000" else "111111"

    assert me.refused(
        "account", "change_phone", old_code=old_code, new_phone=new_phone, new_code=wrong
    ) == (403, "CODE_INVALID")
    changed = me.ok(
        "account", "change_phone", old_code=old_code, new_phone=new_phone, new_code=new_code
    )
    assert changed["phone"] == new_phone

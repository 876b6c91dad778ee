"""One person in both mini-programs, over the running sandbox with the demo data (issue 15.1).

陈静 owns 彩云花园 2栋-1单元-302 and is the community's guard; 郑师傅 repairs in both communities
and lives in one as family. Each signs in to the resident app and to the staff app with that
app's own openid (the sandbox plays the platform: ``X-WX-AppID`` names the calling app), and
neither app signs the other out.
"""

from __future__ import annotations

from sandbox_client import (
    App,
    Running,
    advance,
    appid_header,
    invoke,
    login_by_api,
    login_by_invoke,
    send_code,
)

from caiyun.sandbox.environment import SANDBOX_STAFF_APPID
from caiyun.sandbox.seed import CAIYUN_GARDEN, DEMO_COMMUNITIES, DEMO_STAFF

STAFF = {member.name: member.phone for member in DEMO_STAFF}
GARDEN = next(c for c in DEMO_COMMUNITIES if c.name == CAIYUN_GARDEN)
CHEN = STAFF["陈静"]  # owner of 2栋-1单元-302 and guard of 彩云花园
ZHENG = STAFF["郑师傅"]  # repairman
ZHANG = GARDEN.houses[0].owner_phone  # 张伟, bound to 1栋-1单元-101 by the seed


def both_apps(base: str, phone: str, name: str) -> tuple[App, App]:
    """``phone`` signed in to the resident app and then to the staff app, each with its own
    openid, over /invoke."""
    login_by_invoke(base, phone, f"o-{name}-resident")
    advance(base, 61)  # past the SMS resend hold
    login_by_invoke(base, phone, f"o-{name}-staff", app="staff")
    resident = App(base, openid=f"o-{name}-resident")
    on_staff = App(base, openid=f"o-{name}-staff", appid=SANDBOX_STAFF_APPID)
    return resident, on_staff


def test_an_owner_who_is_a_guard_stays_signed_in_to_both_apps(sandbox: Running) -> None:
    resident, on_staff = both_apps(sandbox.url, CHEN, "chen")

    # The staff login used to move the account's one openid: the resident app then answered
    # UNAUTHENTICATED.
    assert resident.ok("login", "me")["phone"] == CHEN
    assert on_staff.ok("login", "me")["staff"]["role"] == "guard"
    house = next(h for h in GARDEN.houses if h.owner_phone == CHEN)
    bound = resident.ok(
        "bind_house",
        "bind",
        community_id=resident.ok("bind_house", "communities", city="深圳市")["items"][0][
            "community_id"
        ],
        building=house.building,
        unit=house.unit,
        room=house.room,
        owner_name=house.owner_name,
        owner_phone=CHEN,
    )["items"]
    assert [h["label"] for h in bound] == [house.label]

    # A guard only in the staff app: in the resident app she is a resident.
    assert resident.ok("login", "me")["staff"] is None
    assert resident.refused("visitor", "verify", token="x") == (403, "FORBIDDEN")
    assert on_staff.ok("visitor", "verify", token="x")["result"] == "forged"

    # Signing out of the staff app keeps the resident app signed in.
    on_staff.ok("login", "logout")
    assert on_staff.refused("login", "me") == (401, "UNAUTHENTICATED")
    assert resident.ok("bills", "list")["unpaid_total_fen"] > 0


def test_a_repairman_who_lives_in_a_community_keeps_both_apps(sandbox: Running) -> None:
    base = sandbox.url
    login_by_invoke(base, ZHANG, "o-zhang")
    owner = App(base, openid="o-zhang")
    house_id = owner.ok("bind_house", "my_houses")["items"][0]["house_id"]
    owner.ok(
        "bind_house", "add_member", house_id=house_id, name="郑师傅", phone=ZHENG, role="family"
    )

    resident, on_staff = both_apps(base, ZHENG, "zheng")
    advance(base, 61)
    token = login_by_api(base, ZHENG, app="staff")

    assert [h["role"] for h in resident.ok("bind_house", "my_houses")["items"]] == ["family"]
    assert on_staff.ok("repair", "assigned")["total"] == 0
    assert App(base, token=token).ok("repair", "assigned")["total"] == 0
    assert resident.refused("repair", "assigned") == (403, "FORBIDDEN")


def test_a_staff_login_from_the_resident_apps_openid_is_refused_and_signs_nobody_out(
    sandbox: Running,
) -> None:
    # What the report did: {"app": "staff"} sent without the staff app's appid. The platform
    # names the resident app, so binding this openid as the staff app's would be wrong.
    base = sandbox.url
    both_apps(base, CHEN, "chen")
    advance(base, 61)
    code = send_code(base, CHEN, "o-chen-resident")

    status, body = invoke(
        base,
        "login",
        {"action": "login", "phone": CHEN, "code": code, "app": "staff"},
        "o-chen-resident",
    )

    assert (status, body["error"]["code"]) == (400, "INVALID_ARGUMENT")
    assert body["error"]["details"]["fields"] == {"app": "须为调用的小程序"}
    for openid, app in (("o-chen-resident", "resident"), ("o-chen-staff", "staff")):
        status, body = invoke(base, "login", {"action": "me"}, openid, **appid_header(app))
        assert (status, body["ok"]) == (200, True), (app, body)

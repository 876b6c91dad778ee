"""Visitor passes: registered by a house member, signed, shown to anyone holding them, and
admitted once at the gate by the community's guards."""

from __future__ import annotations

import base64
import threading
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from conftest import invoke, make_settings
from round_trips import counted, own
from worlds import BAY, GARDEN, account_of, ok, refused

from caiyun.clock import SHANGHAI, business_date
from caiyun.domain import accounts, houses, messaging, sessions, visitors
from caiyun.domain.owner_import import import_owners
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import houses as house_store
from caiyun.stores import memberships, staff
from caiyun.stores.visitors import VISITORS

HOST_PHONE = "13800000001"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def community(services: Services, record: dict[str, str], room: str) -> dict[str, Any]:
    row = {"building": 3, "unit": 2, "room": room, "owner_name": "业主", "owner_phone": HOST_PHONE}
    report = import_owners(services, record, [row])
    return house_store.get(services.db, report.rows[0].house_id)


def person(services: Services, phone: str, name: str) -> dict[str, Any]:
    account, _ = account_store.ensure_account(services.db, phone, services.clock.now(), name)
    return account


def resident(services: Services, phone: str, name: str, *homes: dict[str, Any]) -> str:
    account = person(services, phone, name)
    for house in homes:
        now = services.clock.now()
        memberships.add(services.db, house, account["_id"], "owner", now, account["_id"])
    openid = f"o-res-{phone}"
    accounts.bind_openid(services.db, account["_id"], "resident", openid)
    return openid


def staffer(services: Services, phone: str, role: str, community_id: str) -> str:
    account = person(services, phone, "员工")
    staff.upsert(services.db, account["_id"], "李保安", role, [community_id], services.clock.now())
    openid = f"o-staff-{phone}"
    accounts.bind_openid(services.db, account["_id"], "staff", openid)
    return openid


@pytest.fixture
def world(services: Services) -> dict[str, Any]:
    garden = community(services, GARDEN, "1201")
    bay = community(services, BAY, "501")
    return {
        "house": garden,
        "bay_house": bay,
        "host": resident(services, HOST_PHONE, "张伟", garden),
        "neighbour": resident(services, "13800000002", "李娜", bay),
        "guard": staffer(services, "13900000001", "guard", garden["community_id"]),
        "admin": staffer(services, "13900000002", "admin", garden["community_id"]),
        "repairman": staffer(services, "13900000003", "repairman", garden["community_id"]),
        "bay_guard": staffer(services, "13900000004", "guard", bay["community_id"]),
    }


# The world's staff, who call from the staff app.
STAFF = ("guard", "admin", "repairman", "bay_guard")


def call(world: dict[str, Any], who: str, event: dict[str, Any]) -> dict[str, Any]:
    """``who`` of the world calls the visitor function from their app."""
    return invoke("visitor", event, world[who], "staff" if who in STAFF else "resident")


def register(world: dict[str, Any], who: str = "host", **fields: Any) -> dict[str, Any]:
    event = {
        "action": "register",
        "house_id": world["house"]["_id"],
        "name": "王芳",
        "phone": "13612345678",
        "count": 2,
        **fields,
    }
    return call(world, who, event)


def verify(world: dict[str, Any], token: str, who: str = "guard") -> dict[str, Any]:
    return call(world, who, {"action": "verify", "token": token})


def show(token: str, openid: str | None = None) -> dict[str, Any]:
    return invoke("visitor", {"action": "pass", "token": token}, openid)


def end_of_day(services: Services, days_ahead: int = 0) -> datetime:
    day = business_date(services.clock.now()) + timedelta(days=days_ahead + 1)
    return datetime(day.year, day.month, day.day, tzinfo=SHANGHAI)


# ------------------------------------------------------------------------------ registering


def test_registration_returns_a_signed_pass_with_a_qr_code(
    services: Services, world: dict[str, Any]
) -> None:
    data = ok(register(world, plate="粤B·12345"))

    assert data["valid_until"] == end_of_day(services).isoformat()
    assert data["visit_date"] == business_date(services.clock.now()).isoformat()
    assert base64.b64decode(data["qr_png_base64"]).startswith(PNG_SIGNATURE)
    share = urlsplit(data["share_path"])
    assert share.path == "/pages/visitor/pass"
    assert parse_qs(share.query)["token"] == [data["pass_token"]]
    assert visitors.open_token(services.settings, data["pass_token"]) == data["visitor_id"]
    stored = services.db[VISITORS].find_one({"_id": data["visitor_id"]})
    assert stored["plate"] == "粤B12345"
    assert stored["community_id"] == world["house"]["community_id"]


def test_qr_code_encodes_the_token(world: dict[str, Any]) -> None:
    import png
    import qrcode

    data = ok(register(world))

    # The modules of the token's QR code, read back from the centre of each 8-pixel box.
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    code.add_data(data["pass_token"])
    code.make(fit=True)
    width, height, rows, _ = png.Reader(bytes=base64.b64decode(data["qr_png_base64"])).read()
    pixels = [list(row) for row in rows]
    modules = [
        [pixels[y * 8 + 4][x * 8 + 4] == 0 for x in range(width // 8)] for y in range(height // 8)
    ]
    assert modules == code.get_matrix()


def test_later_visit_date_is_valid_to_the_end_of_that_day(
    services: Services, world: dict[str, Any]
) -> None:
    day = business_date(services.clock.now()) + timedelta(days=7)

    data = ok(register(world, visit_date=day.isoformat()))

    assert data["valid_until"] == end_of_day(services, 7).isoformat()


@pytest.mark.parametrize("days", [-1, 8])
def test_visit_date_outside_the_coming_week_is_refused(
    services: Services, world: dict[str, Any], days: int
) -> None:
    day = business_date(services.clock.now()) + timedelta(days=days)

    reply = register(world, visit_date=day.isoformat())

    assert refused(reply) == "INVALID_ARGUMENT"
    assert "visit_date" in reply["error"]["details"]["fields"]
    assert services.db[VISITORS].count_documents({}) == 0


@pytest.mark.parametrize(
    "fields, bad",
    [
        ({"count": 0}, "count"),
        ({"count": 21}, "count"),
        ({"count": "2"}, "count"),
        ({"plate": "粤B1234"}, "plate"),
        ({"plate": "ABC12345"}, "plate"),
        ({"plate": "粤BO1234"}, "plate"),
        ({"plate": "粤B١٢٣٤٥"}, "plate"),
        ({"visit_date": "2026-02-30"}, "visit_date"),
        ({"visit_date": "明天"}, "visit_date"),
        ({"visit_date": "２０２６-０１-０１"}, "visit_date"),
        ({"phone": "1361234567"}, "phone"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_fields_are_refused(
    services: Services, world: dict[str, Any], fields: dict[str, Any], bad: str
) -> None:
    reply = register(world, **fields)

    assert refused(reply) == "INVALID_ARGUMENT"
    assert bad in reply["error"]["details"]["fields"]


@pytest.mark.parametrize("plate", ["粤B12345", "京A0000学", "粤BD12345", "沪A12345F"])
def test_regular_and_new_energy_plates_are_accepted(world: dict[str, Any], plate: str) -> None:
    ok(register(world, plate=plate))


def test_caller_without_a_house_or_with_another_house_is_refused(
    services: Services, world: dict[str, Any]
) -> None:
    world["stranger"] = resident(services, "13800000009", "路人")

    assert refused(register(world, who="stranger")) == "HOUSE_NOT_BOUND"
    assert refused(register(world, who="neighbour")) == "FORBIDDEN"
    assert services.db[VISITORS].count_documents({}) == 0


def test_same_request_id_registers_once(services: Services, world: dict[str, Any]) -> None:
    first = ok(register(world, request_id="visit-1"))
    again = ok(register(world, request_id="visit-1"))

    assert again == first
    assert services.db[VISITORS].count_documents({}) == 1


def test_registrations_per_day_are_limited(services: Services, world: dict[str, Any]) -> None:
    for _ in range(services.settings.visitors_per_account_per_day - 2):
        ok(register(world))
    ok(register(world))
    ok(register(world))

    assert refused(register(world)) == "RATE_LIMITED"
    assert (
        services.db[VISITORS].count_documents({}) == services.settings.visitors_per_account_per_day
    )


# ------------------------------------------------------------------------------ the shared page


def test_pass_page_shows_the_visit_and_nothing_about_the_host(
    services: Services, world: dict[str, Any]
) -> None:
    token = ok(register(world, plate="粤B12345"))["pass_token"]

    view = ok(show(token))

    assert view == {
        "status": "valid",
        "status_name": "有效",
        "visitor_name": "王芳",
        "count": 2,
        "plate": "粤B***45",
        "visit_date": business_date(services.clock.now()).isoformat(),
        "valid_until": end_of_day(services).isoformat(),
        "community_name": "彩云花园",
        "house_label": houses.label(world["house"]),
    }
    assert ok(show(token, world["neighbour"])) == view


def tamper(token: str, part: int) -> str:
    pieces = token.split(".")
    piece = pieces[part]
    pieces[part] = piece[:-1] + ("0" if piece[-1] != "0" else "1")
    return ".".join(pieces)


def forgeries(services: Services, token: str) -> list[str]:
    visitor_id, expires, _ = token.split(".")
    other_key = make_settings(token_secret="another-secret-0123456789abcdef-xyz")
    session = sessions.open_session(
        services, account_store.by_phone(services.db, HOST_PHONE)["_id"], "resident"
    )
    return [
        tamper(token, 0),  # another registration
        tamper(token, 1),  # a later expiry
        tamper(token, 2),  # a guessed signature
        visitors._sign(other_key, visitor_id, int(expires)),  # signed with another key
        f"{visitor_id}.{int(expires) + 86400}.{token.split('.')[2]}",
        token + "=",
        session[0].token,  # a session token is no pass
        jwt.encode({"vid": visitor_id}, "a-guessed-key-" * 3, algorithm="HS256"),
        "not-a-token",
    ]


def test_forged_or_altered_pass_shows_nothing(services: Services, world: dict[str, Any]) -> None:
    token = ok(register(world))["pass_token"]

    for forged in forgeries(services, token):
        assert refused(show(forged)) == "NOT_FOUND", forged


# ------------------------------------------------------------------------------ the gate


def test_guard_admits_a_pass_once_and_records_the_entry(
    services: Services, world: dict[str, Any]
) -> None:
    data = ok(register(world, plate="粤B12345"))

    first = ok(verify(world, data["pass_token"]))
    services.clock.advance(600)
    second = ok(verify(world, data["pass_token"], who="admin"))

    assert first["result"] == "valid"
    assert first["visitor"]["plate"] == "粤B12345"  # the guard matches the car in full
    assert first["visitor"]["visitor_name"] == "王芳" and first["visitor"]["count"] == 2
    assert second["result"] == "used"
    assert second["visitor"]["entered_at"] == first["visitor"]["entered_at"]
    stored = services.db[VISITORS].find_one({"_id": data["visitor_id"]})
    assert stored["status"] == "entered"
    assert stored["entry"]["by"] == account_of(services.db, world["guard"])["_id"]
    assert ok(show(data["pass_token"]))["status"] == "used"


def test_host_is_told_when_the_visitor_arrives(services: Services, world: dict[str, Any]) -> None:
    token = ok(register(world))["pass_token"]

    ok(verify(world, token))

    host_id = account_of(services.db, world["host"])["_id"]
    items, _, _ = messaging.inbox(services, host_id, "resident", True, 1, 20)
    assert [(m["kind"], m["title"]) for m in items] == [("visitor", "访客已到达")]
    assert "王芳" in items[0]["body"] and "彩云花园" in items[0]["body"]


def test_pass_expires_at_the_end_of_its_day(services: Services, world: dict[str, Any]) -> None:
    data = ok(register(world))
    left = (end_of_day(services) - services.clock.now()).total_seconds()
    services.clock.advance(left)

    checked = ok(verify(world, data["pass_token"]))

    assert checked["result"] == "expired"
    assert checked["visitor"]["entered_at"] is None
    assert ok(show(data["pass_token"]))["status"] == "expired"
    stored = services.db[VISITORS].find_one({"_id": data["visitor_id"]})
    assert stored["status"] == "registered" and stored["entry"] is None


def test_forged_pass_is_reported_forged_and_records_nothing(
    services: Services, world: dict[str, Any]
) -> None:
    token = ok(register(world))["pass_token"]

    for forged in forgeries(services, token):
        assert ok(verify(world, forged)) == {
            "result": "forged",
            "result_name": "无效通行证",
            "visitor": None,
        }, forged
    assert services.db[VISITORS].find_one({})["status"] == "registered"


def test_only_staff_of_that_community_may_verify(services: Services, world: dict[str, Any]) -> None:
    token = ok(register(world))["pass_token"]

    for outsider in ("bay_guard", "repairman", "host", "neighbour"):
        assert refused(verify(world, token, who=outsider)) == "FORBIDDEN", outsider
    assert refused(invoke("visitor", {"action": "verify", "token": token}, None)) == (
        "UNAUTHENTICATED"
    )
    assert services.db[VISITORS].find_one({})["status"] == "registered"
    assert ok(verify(world, token))["result"] == "valid"


def test_two_guards_scanning_at_once_admit_once(services: Services, world: dict[str, Any]) -> None:
    token = ok(register(world))["pass_token"]
    start = threading.Barrier(2)
    results: list[str] = []

    def scan(who: str) -> None:
        start.wait()
        results.append(ok(verify(world, token, who=who))["result"])

    threads = [threading.Thread(target=scan, args=(who,)) for who in ("guard", "admin")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == ["used", "valid"]


# ------------------------------------------------------------------------------ history


def test_history_lists_the_callers_registrations_newest_first(
    services: Services, world: dict[str, Any]
) -> None:
    first = ok(register(world, name="王芳", plate="粤B12345"))
    services.clock.advance(60)
    second = ok(register(world, name="赵敏", phone="13787654321", count=1))
    ok(verify(world, first["pass_token"]))
    ok(
        invoke(
            "visitor",
            {
                "action": "register",
                "house_id": world["bay_house"]["_id"],
                "name": "别人的客人",
                "phone": "13500000000",
                "count": 1,
            },
            world["neighbour"],
        )
    )

    page = ok(call(world, "host", {"action": "history"}))

    assert page["total"] == 2 and page["page"] == 1 and page["page_size"] == 20
    newest, oldest = page["items"]
    assert newest["visitor_id"] == second["visitor_id"]
    # Issue 15.4: 访客记录 shows the phone the resident typed in, not 137****4321.
    assert (newest["name"], newest["phone"], newest["count"], newest["plate"]) == (
        "赵敏",
        "13787654321",
        1,
        None,
    )
    assert newest["mine"] is True
    assert newest["status"] == "valid" and newest["entered_at"] is None
    assert oldest["status"] == "used" and oldest["entered_at"] is not None
    assert oldest["plate"] == "粤B12345" and oldest["registered_at"] < newest["registered_at"]
    assert oldest["house_label"] == houses.label(world["house"])


def family_of_the_house(services: Services, world: dict[str, Any]) -> str:
    """A family member of the host's house, signed in to the resident app; returns the openid."""
    account = person(services, "13800000009", "张小")
    now = services.clock.now()
    memberships.add(services.db, world["house"], account["_id"], "family", now, "test")
    accounts.bind_openid(services.db, account["_id"], "resident", "o-res-family")
    world["family"] = "o-res-family"
    return "family"


def detail(world: dict[str, Any], who: str, visitor_id: str) -> dict[str, Any]:
    return call(world, who, {"action": "detail", "visitor_id": visitor_id})


def test_the_registrant_shares_the_same_pass_again_from_a_record_while_it_is_valid(
    services: Services, world: dict[str, Any]
) -> None:
    issued = ok(register(world, plate="粤B12345"))

    again = ok(detail(world, "host", issued["visitor_id"]))

    assert (again["phone"], again["plate"], again["mine"]) == ("13612345678", "粤B12345", True)
    for field in ("pass_token", "qr_png_base64", "share_path", "valid_until"):
        assert again[field] == issued[field], field
    assert ok(verify(world, again["pass_token"]))["result"] == "valid"
    used = ok(detail(world, "host", issued["visitor_id"]))
    assert used["status"] == "used"
    assert (used["pass_token"], used["qr_png_base64"], used["share_path"]) == (None, None, None)


def test_an_expired_pass_is_not_shared_again(services: Services, world: dict[str, Any]) -> None:
    issued = ok(register(world))
    services.clock.advance(2 * 86400)

    shown = ok(detail(world, "host", issued["visitor_id"]))

    assert shown["status"] == "expired" and shown["pass_token"] is None


def test_the_owner_sees_visits_family_registered_masked_and_without_the_pass(
    services: Services, world: dict[str, Any]
) -> None:
    family = family_of_the_house(services, world)
    theirs = ok(register(world, family, phone="13598765432", plate="粤B54321"))
    ok(register(world))

    listed = ok(call(world, "host", {"action": "history"}))["items"]
    shown = ok(detail(world, "host", theirs["visitor_id"]))

    assert [(i["phone"], i["mine"]) for i in listed] == [
        ("13612345678", True),
        ("135****5432", False),
    ]
    assert (shown["phone"], shown["plate"], shown["mine"]) == ("135****5432", "粤B***21", False)
    assert (shown["pass_token"], shown["qr_png_base64"], shown["share_path"]) == (None, None, None)
    # Family see their own registrations only, in full.
    own = ok(call(world, family, {"action": "history"}))["items"]
    assert [(i["phone"], i["plate"]) for i in own] == [("13598765432", "粤B54321")]


def test_a_record_of_another_house_does_not_exist_for_the_caller(
    services: Services, world: dict[str, Any]
) -> None:
    family = family_of_the_house(services, world)
    hosts = ok(register(world))["visitor_id"]

    assert refused(detail(world, "neighbour", hosts)) == "NOT_FOUND"
    assert refused(detail(world, family, hosts)) == "NOT_FOUND"  # the owner's, not theirs
    assert refused(detail(world, "guard", hosts)) == "NOT_FOUND"
    assert refused(detail(world, "host", "0" * 24)) == "NOT_FOUND"


def test_history_shows_expired_passes(services: Services, world: dict[str, Any]) -> None:
    ok(register(world))
    services.clock.advance(2 * 86400)

    page = ok(call(world, "host", {"action": "history"}))

    assert [item["status"] for item in page["items"]] == ["expired"]


# ------------------------------------------------------------------------------ round trips


def test_registering_checks_the_house_in_one_read(
    services: Services, world: dict[str, Any]
) -> None:
    with counted(services) as commands:
        ok(register(world))

    assert commands == [
        "accounts.aggregate",
        "memberships.aggregate",
        "rate_limits.bulk_write",  # issue 17.4: the host's and the house's daily limits
        "visitors.insert_one",
    ]


def test_admitting_a_pass_is_one_conditional_write_and_names_come_with_it(
    services: Services, world: dict[str, Any]
) -> None:
    token = ok(register(world))["pass_token"]

    with counted(services) as shown:
        assert ok(show(token))["community_name"] == "彩云花园"
    with counted(services) as checked:
        admitted = ok(verify(world, token))

    assert shown == ["visitors.find_one"]
    assert own(checked) == ["visitors.find_one_and_update"]
    assert admitted["visitor"]["community_name"] == "彩云花园"


def test_a_pass_stored_before_names_were_kept_still_shows_its_community(
    services: Services, world: dict[str, Any]
) -> None:
    data = ok(register(world))
    services.db[VISITORS].update_one(
        {"_id": data["visitor_id"]}, {"$unset": {"community_name": ""}}
    )

    assert ok(show(data["pass_token"]))["community_name"] == "彩云花园"
    assert ok(verify(world, data["pass_token"]))["visitor"]["community_name"] == "彩云花园"


def test_history_is_the_caller_lookup_with_its_owned_houses_and_one_page(
    services: Services, world: dict[str, Any]
) -> None:
    ok(register(world))

    with counted(services) as commands:
        ok(call(world, "host", {"action": "history"}))

    assert commands == [
        "accounts.aggregate",  # the caller, with the houses it owns (issue 15.5)
        "visitors.aggregate",  # the page and its total
    ]

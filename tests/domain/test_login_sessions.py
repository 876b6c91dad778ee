"""Signing in: openid binding, the staff app, session tokens over HTTP, logout."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from conftest import fixed_clock, http, invoke, make_settings
from round_trips import counted
from worlds import BAY, GARDEN

from caiyun.adapters.sms import sandbox_outbox
from caiyun.catalog import open_database
from caiyun.domain import sessions
from caiyun.domain.owner_import import import_owners
from caiyun.services import Services, build_services, install_services
from caiyun.stores import accounts as account_store
from caiyun.stores import staff
from caiyun.stores.accounts import ensure_account

PHONE = "13800001111"
OTHER_PHONE = "13900002222"
OPENID = "o-resident-1"


@pytest.fixture
def services() -> Iterator[Services]:
    """Fresh services without the 60 s resend rule: these tests sign in again and again.

    (The SMS rules themselves are proven in test_sms_code_rules.py; here a second login must
    not need the clock moved, so that every token is issued at the wall-clock time.)
    """
    settings, clock = make_settings(sms_resend_s=0), fixed_clock()
    svc = build_services(settings, clock=clock, db=open_database(settings, clock))
    install_services(svc)
    yield svc
    install_services(None)


def new_account(services: Services, phone: str = PHONE, name: str = "张三") -> dict[str, Any]:
    account, _ = ensure_account(services.db, phone, services.clock.now(), name)
    return account


def fresh_code(
    services: Services, phone: str = PHONE, openid: str | None = OPENID, app: str = "resident"
) -> str:
    """Send a login code and read it from the sandbox outbox."""
    reply = invoke("login", {"action": "send_code", "phone": phone}, openid, app)
    assert reply["ok"], reply
    return sandbox_outbox(services.db, phone)[0]["code"]


def login(
    services: Services,
    phone: str = PHONE,
    openid: str | None = OPENID,
    app: str = "resident",
    **extra: Any,
) -> dict[str, Any]:
    """A login from ``openid`` in the mini-program ``app`` (the request names it too)."""
    code = fresh_code(services, phone, openid, app)
    event = {"action": "login", "phone": phone, "code": code, "app": app, **extra}
    reply = invoke("login", event, openid, app)
    assert reply["ok"], reply
    return reply["data"]


def me(openid: str | None = OPENID, app: str = "resident") -> dict[str, Any]:
    return invoke("login", {"action": "me"}, openid, app)


def http_me(token: str) -> tuple[int, Any]:
    return http("login", {"action": "me"}, token=token)


# ---------------------------------------------------------------------------- openid binding


def test_first_login_binds_the_callers_openid(services: Services) -> None:
    account = new_account(services)
    assert me()["error"]["code"] == "UNAUTHENTICATED"

    data = login(services)

    assert data["account"]["account_id"] == account["_id"]
    reply = me()
    assert reply["ok"]
    assert reply["data"]["account_id"] == account["_id"]
    assert reply["data"]["phone"] == PHONE
    assert reply["data"]["name"] == "张三"


def test_first_login_is_true_only_the_first_time(services: Services) -> None:
    new_account(services)

    assert login(services)["first_login"] is True
    assert login(services)["first_login"] is False
    assert login(services, openid="o-another-phone")["first_login"] is False


def test_login_reply_has_account_token_and_expiry(services: Services) -> None:
    account = new_account(services)

    data = login(services)

    assert set(data) == {"account", "session_token", "expires_at", "first_login"}
    assert data["account"] == {
        "account_id": account["_id"],
        "phone": PHONE,
        "name": "张三",
        "nickname": None,
        "avatar": None,
        "avatar_url": None,
        "realname_verified": False,
        "houses": [],
        "staff": None,
    }
    assert data["expires_at"].endswith("+08:00")


def test_logging_in_to_another_account_moves_the_openid_binding(services: Services) -> None:
    first = new_account(services)
    second = new_account(services, OTHER_PHONE, "李四")
    login(services, PHONE)
    assert me()["data"]["account_id"] == first["_id"]

    login(services, OTHER_PHONE)

    assert me()["data"]["account_id"] == second["_id"]
    assert services.db["accounts"].count_documents({"wx.resident": OPENID}) == 1
    login(services, PHONE)
    assert me()["data"]["account_id"] == first["_id"]


def test_signing_in_again_with_the_openid_already_bound_rewrites_no_binding(
    services: Services,
) -> None:
    new_account(services)
    login(services)
    code = fresh_code(services)

    with counted(services) as calls:
        event = {"action": "login", "phone": PHONE, "code": code}
        assert invoke("login", event, OPENID)["ok"]

    assert "accounts.update_many" not in calls and "accounts.update_one" not in calls
    assert "subscription_consents.bulk_write" not in calls
    assert me()["ok"]


def test_the_session_token_names_the_app_signed_in_to(services: Services) -> None:
    new_account(services)

    token = login(services)["session_token"]

    assert jwt.decode(token, options={"verify_signature": False})["app"] == "resident"


def test_logout_over_cloudbase_unbinds_the_openid(services: Services) -> None:
    new_account(services)
    login(services)

    reply = invoke("login", {"action": "logout"}, openid=OPENID)

    assert reply == {"ok": True, "data": {"logged_out": True}}
    assert me()["error"]["code"] == "UNAUTHENTICATED"
    assert invoke("login", {"action": "logout"}, openid=OPENID)["error"]["code"] == (
        "UNAUTHENTICATED"
    )


def test_staff_app_refuses_an_account_without_a_staff_record(services: Services) -> None:
    new_account(services)
    code = fresh_code(services)

    event = {"action": "login", "phone": PHONE, "code": code, "app": "staff"}
    reply = invoke("login", event, "o-staff-app", "staff")

    assert reply["ok"] is False
    assert reply["error"]["code"] == "FORBIDDEN"
    assert me("o-staff-app", "staff")["error"]["code"] == "UNAUTHENTICATED"  # nothing was bound


def test_staff_app_refusal_does_not_spend_the_code(services: Services) -> None:
    account = new_account(services)
    code = fresh_code(services)
    event = {"action": "login", "phone": PHONE, "code": code}
    refused = invoke("login", {**event, "app": "staff"}, "o-staff-app", "staff")
    assert refused["error"]["code"] == "FORBIDDEN"

    reply = invoke("login", {**event, "app": "resident"})

    assert reply["ok"], reply
    assert reply["data"]["account"]["account_id"] == account["_id"]


def test_a_company_wide_admin_is_told_every_community_by_name(services: Services) -> None:
    garden = import_owners(services, GARDEN, []).community_id
    bay = import_owners(services, BAY, []).community_id
    account = new_account(services, name="周敏")
    staff.upsert(services.db, account["_id"], "周敏", "admin", None, services.clock.now())

    signed_in = login(services, app="staff", openid="o-staff-app")["account"]["staff"]

    assert signed_in["role_name"] == "物业管理员" and signed_in["all_communities"]
    assert signed_in["community_ids"] == []
    assert signed_in["communities"] == [  # by name
        {"community_id": garden, "name": "彩云花园"},
        {"community_id": bay, "name": "星河湾"},
    ]
    assert me("o-staff-app", "staff")["data"]["staff"] == signed_in


def test_staff_app_signs_in_an_account_with_a_staff_record(services: Services) -> None:
    account = new_account(services, name="王师傅")
    staff.upsert(services.db, account["_id"], "王师傅", "repairman", ["c-1"], services.clock.now())

    data = login(services, app="staff", openid="o-staff-app")

    assert data["account"]["staff"] == {
        "role": "repairman",
        "role_name": "维修员",
        "community_ids": ["c-1"],
        "communities": [{"community_id": "c-1", "name": ""}],  # no such community here
        "all_communities": False,
    }
    assert me("o-staff-app", "staff")["data"]["account_id"] == account["_id"]
    assert http_me(data["session_token"])[0] == 200


# ---------------------------------------------------------------------------- session tokens


def test_session_token_signs_in_over_http(services: Services) -> None:
    account = new_account(services)
    token = login(services)["session_token"]

    status, body = http_me(token)

    assert status == 200
    assert body["ok"] is True
    assert body["data"]["account_id"] == account["_id"]


def test_http_call_without_a_token_is_unauthenticated(services: Services) -> None:
    new_account(services)
    login(services)

    status, body = http("login", {"action": "me"})

    assert status == 401
    assert body["error"]["code"] == "UNAUTHENTICATED"


def test_session_token_expires_after_the_session_ttl(services: Services) -> None:
    new_account(services)
    token = login(services)["session_token"]
    ttl = services.settings.session_ttl_s

    services.clock.advance(ttl - 120)
    assert http_me(token)[0] == 200
    services.clock.advance(121)

    status, body = http_me(token)

    assert status == 401
    assert body["error"]["code"] == "UNAUTHENTICATED"


def test_logout_over_http_revokes_the_token_at_once(services: Services) -> None:
    new_account(services)
    token = login(services)["session_token"]
    assert http_me(token)[0] == 200

    status, body = http("login", {"action": "logout"}, token=token)

    assert (status, body) == (200, {"ok": True, "data": {"logged_out": True}})
    assert http_me(token)[0] == 401
    assert http("login", {"action": "logout"}, token=token)[0] == 401


def test_logout_over_http_keeps_the_accounts_other_sessions(services: Services) -> None:
    new_account(services)
    kept = login(services, openid="o-phone-a")["session_token"]
    ended = login(services, openid="o-phone-b")["session_token"]

    assert http("login", {"action": "logout"}, token=ended)[0] == 200

    assert http_me(ended)[0] == 401
    assert http_me(kept)[0] == 200


def test_login_over_http_binds_no_openid(services: Services) -> None:
    new_account(services)
    code = fresh_code(services)

    status, body = http(
        "login",
        {
            "action": "login",
            "phone": PHONE,
            "code": code,
            "userInfo": {"openId": "o-claimed-over-http", "appId": "wx-resident"},
        },
    )

    assert status == 200, body
    assert me("o-claimed-over-http")["error"]["code"] == "UNAUTHENTICATED"
    assert http_me(body["data"]["session_token"])[0] == 200


def _segments(token: str) -> list[str]:
    return token.split(".")


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def test_a_token_signed_with_another_key_is_refused(services: Services) -> None:
    new_account(services)
    genuine = login(services)["session_token"]
    claims = jwt.decode(genuine, options={"verify_signature": False})

    forged = jwt.encode(claims, "an-attackers-own-key-of-sufficient-length!", algorithm="HS256")

    status, body = http_me(forged)
    assert status == 401
    assert body["error"]["code"] == "UNAUTHENTICATED"
    assert http_me(genuine)[0] == 200


def test_a_tampered_token_is_refused(services: Services) -> None:
    new_account(services)
    victim = new_account(services, OTHER_PHONE, "李四")
    login(services, OTHER_PHONE, openid="o-victim")
    header, payload, signature = _segments(login(services)["session_token"])
    claims = _unb64(payload)

    as_victim = ".".join([header, _b64({**claims, "sub": victim["_id"]}), signature])
    longer = ".".join([header, _b64({**claims, "exp": claims["exp"] + 10**8}), signature])

    assert http_me(as_victim)[0] == 401
    assert http_me(longer)[0] == 401


def test_an_unsigned_token_is_refused(services: Services) -> None:
    new_account(services)
    _, payload, _ = _segments(login(services)["session_token"])

    unsigned = ".".join([_b64({"alg": "none", "typ": "JWT"}), payload, ""])

    assert http_me(unsigned)[0] == 401


def test_garbage_in_the_authorization_header_is_unauthenticated(services: Services) -> None:
    for token in ["x", "a.b.c", "Bearer", "🙂" * 10, "." * 300]:
        status, body = http_me(token)
        assert status == 401
        assert body["error"]["code"] == "UNAUTHENTICATED"


def test_token_issued_while_the_sandbox_clock_is_ahead_is_accepted(services: Services) -> None:
    # The sandbox clock moves every time rule together (/dev/clock); a token it issues must
    # work at once, like one issued by a container whose clock runs a little fast.
    new_account(services)
    services.clock.advance(3600)  # POST /dev/clock {"advance_seconds": 3600}
    token = login(services)["session_token"]

    status, body = http_me(token)

    assert status == 200, body


def test_the_platform_names_the_app_a_cloudbase_login_binds(services: Services) -> None:
    # Over CloudBase the appid is the platform's word: a login that leaves ``app`` out binds the
    # openid for the app the call came from.
    account = new_account(services, name="王五")
    staff.upsert(services.db, account["_id"], "王五", "guard", ["c-1"], services.clock.now())
    code = fresh_code(services, openid="o-staff-openid", app="staff")

    event = {"action": "login", "phone": PHONE, "code": code}
    data = invoke("login", event, "o-staff-openid", "staff")["data"]

    assert services.db["accounts"].find_one({"_id": account["_id"]})["wx"] == {
        "staff": "o-staff-openid"
    }
    assert data["account"]["staff"]["role"] == "guard"
    assert jwt.decode(data["session_token"], options={"verify_signature": False})["app"] == "staff"


def test_a_login_claiming_another_app_than_the_platform_names_is_refused(
    services: Services,
) -> None:
    # The sandbox user who sent {"app": "staff"} from the resident app's openid: binding that
    # openid as the staff app's would sign the person out of the staff app they really use.
    account = new_account(services)
    staff.upsert(services.db, account["_id"], "张三", "guard", ["c-1"], services.clock.now())
    code = fresh_code(services)

    reply = invoke("login", {"action": "login", "phone": PHONE, "code": code, "app": "staff"})

    assert reply["error"]["code"] == "INVALID_ARGUMENT"
    assert reply["error"]["details"] == {"fields": {"app": "须为调用的小程序"}}
    assert services.db["accounts"].find_one({"_id": account["_id"]}).get("wx") == {}
    # The code was not spent: the same code signs in to the app the call really came from.
    assert invoke("login", {"action": "login", "phone": PHONE, "code": code})["ok"]


# ---------------------------------------------------------------------------- one person, two apps

GUARD_PHONE = "13800000005"


@pytest.fixture
def owner_and_guard(services: Services) -> dict[str, Any]:
    """陈静: an account that owns a house and is a guard, as in the demo data."""
    account = new_account(services, GUARD_PHONE, "陈静")
    staff.upsert(services.db, account["_id"], "陈静", "guard", ["c-1"], services.clock.now())
    return account


def test_signing_in_to_the_staff_app_keeps_the_resident_app_signed_in(
    services: Services, owner_and_guard: dict[str, Any]
) -> None:
    # Issue 15.1 as reported: the staff login moved the account's one openid and the resident
    # app then answered UNAUTHENTICATED.
    login(services, GUARD_PHONE, "o-chen-resident")
    staff_login = login(services, GUARD_PHONE, "o-chen-staff", "staff")

    resident_me = me("o-chen-resident")
    staff_me = me("o-chen-staff", "staff")

    assert resident_me["data"]["account_id"] == owner_and_guard["_id"]
    assert staff_me["data"]["account_id"] == owner_and_guard["_id"]
    assert services.db["accounts"].find_one({"_id": owner_and_guard["_id"]})["wx"] == {
        "resident": "o-chen-resident",
        "staff": "o-chen-staff",
    }
    assert staff_login["account"]["staff"]["role"] == "guard"
    # And the other way round: signing in to the resident app again leaves the staff app be.
    login(services, GUARD_PHONE, "o-chen-resident")
    assert me("o-chen-staff", "staff")["ok"]


def test_an_openid_of_one_app_is_nobody_in_the_other(
    services: Services, owner_and_guard: dict[str, Any]
) -> None:
    login(services, GUARD_PHONE, "o-chen-staff", "staff")

    assert me("o-chen-staff", "resident")["error"]["code"] == "UNAUTHENTICATED"


def test_logging_out_of_one_app_keeps_the_other_signed_in(
    services: Services, owner_and_guard: dict[str, Any]
) -> None:
    resident = login(services, GUARD_PHONE, "o-chen-resident")
    on_staff = login(services, GUARD_PHONE, "o-chen-staff", "staff")

    assert invoke("login", {"action": "logout"}, "o-chen-staff", "staff")["ok"]
    assert http("login", {"action": "logout"}, token=on_staff["session_token"])[0] == 200

    assert me("o-chen-staff", "staff")["error"]["code"] == "UNAUTHENTICATED"
    assert me("o-chen-resident")["ok"]
    assert http_me(resident["session_token"])[0] == 200
    assert services.db["accounts"].find_one({"_id": owner_and_guard["_id"]})["wx"] == {
        "resident": "o-chen-resident"
    }


def test_each_app_keeps_its_own_sessions(
    services: Services, owner_and_guard: dict[str, Any]
) -> None:
    # Each app keeps its newest ten sessions: a guard signing in to the staff app on many
    # devices never pushes the resident app's session out.
    # (Sessions opened directly past the first login: the SMS daily cap would stop more logins.)
    resident_token = login(services, GUARD_PHONE, "o-chen-resident")["session_token"]
    staff_tokens = [login(services, GUARD_PHONE, "o-chen-staff", "staff")["session_token"]] + [
        sessions.open_session(services, owner_and_guard["_id"], "staff")[0].token
        for _ in range(account_store.MAX_SESSIONS + 1)
    ]

    assert http_me(resident_token)[0] == 200
    assert http_me(staff_tokens[-1])[0] == 200
    assert http_me(staff_tokens[0])[0] == 401  # the staff app's oldest, past its ten
    stored = services.db["accounts"].find_one({"_id": owner_and_guard["_id"]})
    assert {app: len(kept) for app, kept in stored["sessions_by_app"].items()} == {
        "resident": 1,
        "staff": account_store.MAX_SESSIONS,
    }


def test_staff_rights_come_only_through_the_staff_apps_session(
    services: Services, owner_and_guard: dict[str, Any]
) -> None:
    # Issue 17.7: the same account, signed in to both apps, is a guard only in the staff app.
    # In the resident app it acts as a resident, over CloudBase and over HTTP alike.
    resident = login(services, GUARD_PHONE, "o-chen-resident")
    on_staff = login(services, GUARD_PHONE, "o-chen-staff", "staff")
    verify = {"action": "verify", "token": "not-a-pass"}

    assert resident["account"]["staff"] is None
    assert me("o-chen-resident")["data"]["staff"] is None
    assert invoke("visitor", verify, "o-chen-resident")["error"]["code"] == "FORBIDDEN"
    status, body = http("visitor", verify, token=resident["session_token"])
    assert (status, body["error"]["code"]) == (403, "FORBIDDEN")

    assert me("o-chen-staff", "staff")["data"]["staff"]["role"] == "guard"
    assert invoke("visitor", verify, "o-chen-staff", "staff")["data"]["result"] == "forged"
    status, body = http("visitor", verify, token=on_staff["session_token"])
    assert (status, body["data"]["result"]) == (200, "forged")


def test_a_genuine_token_naming_no_known_app_is_refused(services: Services) -> None:
    new_account(services)
    genuine = login(services)["session_token"]
    claims = jwt.decode(genuine, options={"verify_signature": False})
    secret = services.settings.token_secret.get_secret_value()

    for app in ("admin", None):
        forged = {**claims, "app": app} if app else {k: v for k, v in claims.items() if k != "app"}
        assert http_me(jwt.encode(forged, secret, algorithm="HS256"))[0] == 401

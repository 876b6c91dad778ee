"""The reply envelope, HTTP status codes and every event shape the login function serves."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from conftest import fixed_clock, http, invoke, make_settings

from caiyun.adapters.sms import sandbox_outbox
from caiyun.errors import ERROR_CODES, AppError
from caiyun.sandbox.functions import handler
from caiyun.services import Services, build_services, install_services
from caiyun.stores.accounts import ensure_account
from caiyun.stores.staff import upsert as make_staff

PHONE = "13800001111"
OTHER_PHONE = "13900002222"
FREE_PHONE = "13700003333"
CHINESE = re.compile(r"[\u4e00-\u9fff]")


def new_account(services: Services, phone: str = PHONE) -> dict[str, Any]:
    account, _ = ensure_account(services.db, phone, services.clock.now(), "张三")
    return account


def assert_envelope(envelope: Any) -> None:
    """``{"ok": true, "data": {...}}`` or ``{"ok": false, "error": {code, message[, details]}}``."""
    assert isinstance(envelope, dict)
    if envelope.get("ok") is True:
        assert set(envelope) == {"ok", "data"}
        assert isinstance(envelope["data"], dict)
        return
    assert envelope.get("ok") is False, envelope
    assert set(envelope) == {"ok", "error"}
    error = envelope["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "details"}
    assert error["code"] in ERROR_CODES
    assert CHINESE.search(error["message"]), error
    if "details" in error:
        assert isinstance(error["details"], dict)


def signed_in_token(services: Services, phone: str = PHONE, openid: str = "o-caller") -> str:
    new_account(services, phone)
    assert invoke("login", {"action": "send_code", "phone": phone}, openid=openid)["ok"]
    code = sandbox_outbox(services.db, phone)[0]["code"]
    reply = invoke("login", {"action": "login", "phone": phone, "code": code}, openid=openid)
    assert reply["ok"], reply
    return reply["data"]["session_token"]


# ---------------------------------------------------------------------------- envelope


def test_every_reply_of_a_sign_in_journey_is_an_envelope(services: Services) -> None:
    new_account(services)
    replies = [
        invoke("login", {"action": "check_account", "phone": PHONE}),
        invoke("login", {"action": "check_account", "phone": FREE_PHONE}),
        invoke("login", {"action": "send_code", "phone": FREE_PHONE}),
        invoke("login", {"action": "send_code", "phone": PHONE}),
        invoke("login", {"action": "send_code", "phone": PHONE}),
        invoke("login", {"action": "login", "phone": PHONE, "code": "000000x"}),
        invoke("login", {"action": "me"}),
        invoke("login", {"action": "nope"}),
    ]
    code = sandbox_outbox(services.db, PHONE)[0]["code"]
    replies += [
        invoke(
            "login",
            {"action": "login", "phone": PHONE, "code": code, "app": "staff"},
            "o-staff",
            "staff",
        ),
        invoke("login", {"action": "login", "phone": PHONE, "code": code}),
        invoke("login", {"action": "me"}),
        invoke("login", {"action": "logout"}),
        handler("login")({"Type": "Timer", "TriggerName": "t", "Time": "2026-01-01T00:00:00Z"}, {}),
    ]

    for reply in replies:
        assert_envelope(reply)
    codes = [r["error"]["code"] if not r["ok"] else "OK" for r in replies]
    assert codes == [
        "OK",
        "OK",
        "ACCOUNT_NOT_FOUND",
        "OK",
        "RATE_LIMITED",
        "INVALID_ARGUMENT",
        "UNAUTHENTICATED",
        "UNKNOWN_ACTION",
        "FORBIDDEN",
        "OK",
        "OK",
        "OK",
        "UNKNOWN_ACTION",
    ]


def test_every_error_code_has_a_chinese_message() -> None:
    for code, (status, message) in ERROR_CODES.items():
        assert CHINESE.search(message), code
        assert 400 <= status <= 599, code


def test_http_reply_is_json_with_the_envelope_as_body(services: Services) -> None:
    new_account(services)
    event = {
        "httpMethod": "POST",
        "path": "/api/login",
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"action": "check_account", "phone": PHONE}),
        "isBase64Encoded": False,
        "requestContext": {"sourceIp": "203.0.113.9", "requestId": "r-1"},
    }

    reply = handler("login")(event, {})

    assert reply["statusCode"] == 200
    assert reply["isBase64Encoded"] is False
    assert reply["headers"]["Content-Type"].startswith("application/json")
    assert json.loads(reply["body"]) == {"ok": True, "data": {"exists": True}}
    refused = handler("login")({**event, "body": json.dumps({"action": "me"})}, {})
    assert refused["statusCode"] == 401
    assert "请先登录" in refused["body"]  # UTF-8 JSON, readable in logs and by the client


# ---------------------------------------------------------------------------- HTTP status


def _unknown_action(services: Services) -> tuple[int, Any]:
    return http("login", {"action": "no_such_action"})


def _invalid_argument(services: Services) -> tuple[int, Any]:
    return http("login", {"action": "check_account", "phone": "12345"})


def _unauthenticated(services: Services) -> tuple[int, Any]:
    return http("login", {"action": "me"})


def _forbidden(services: Services) -> tuple[int, Any]:
    signed_in_token(services)
    token = signed_in_token(services, OTHER_PHONE, "o-other")
    return http(
        "login", {"action": "send_code", "phone": PHONE, "purpose": "change_phone_old"}, token
    )


def _account_not_found(services: Services) -> tuple[int, Any]:
    return http("login", {"action": "send_code", "phone": FREE_PHONE})


def _code_invalid(services: Services) -> tuple[int, Any]:
    new_account(services)
    return http("login", {"action": "login", "phone": PHONE, "code": "000000"})


def _conflict(services: Services) -> tuple[int, Any]:
    new_account(services, OTHER_PHONE)
    token = signed_in_token(services)
    return http(
        "login",
        {"action": "send_code", "phone": OTHER_PHONE, "purpose": "change_phone_new"},
        token,
    )


def _rate_limited(services: Services) -> tuple[int, Any]:
    new_account(services)
    assert http("login", {"action": "send_code", "phone": PHONE})[0] == 200
    return http("login", {"action": "send_code", "phone": PHONE})


def _ok(services: Services) -> tuple[int, Any]:
    return http("login", {"action": "check_account", "phone": PHONE})


STATUS_CASES: list[tuple[Callable[[Services], tuple[int, Any]], int, str]] = [
    (_ok, 200, "OK"),
    (_unknown_action, 400, "UNKNOWN_ACTION"),
    (_invalid_argument, 400, "INVALID_ARGUMENT"),
    (_unauthenticated, 401, "UNAUTHENTICATED"),
    (_forbidden, 403, "FORBIDDEN"),
    (_account_not_found, 403, "ACCOUNT_NOT_FOUND"),
    (_code_invalid, 403, "CODE_INVALID"),
    (_conflict, 409, "CONFLICT"),
    (_rate_limited, 429, "RATE_LIMITED"),
]


@pytest.mark.parametrize(
    ("trigger", "status", "code"), STATUS_CASES, ids=[c for _, _, c in STATUS_CASES]
)
def test_http_status_follows_the_code(
    services: Services,
    trigger: Callable[[Services], tuple[int, Any]],
    status: int,
    code: str,
) -> None:
    got_status, body = trigger(services)

    assert_envelope(body)
    assert got_status == status
    assert (body["error"]["code"] if not body["ok"] else "OK") == code


class _BrokenDatabase:
    """A database double that fails on every use, as a lost MongoDB connection would."""

    def __getitem__(self, name: str) -> Any:
        return self

    def __getattr__(self, name: str) -> Any:
        raise ConnectionError("database unreachable")


def test_http_status_is_500_for_an_internal_failure() -> None:
    install_services(build_services(make_settings(), clock=fixed_clock(), db=_BrokenDatabase()))
    try:
        status, body = http("login", {"action": "check_account", "phone": PHONE})
    finally:
        install_services(None)

    assert status == 500
    assert body == {"ok": False, "error": {"code": "INTERNAL", "message": "系统繁忙，请稍后再试"}}


def test_http_status_is_503_when_the_sms_provider_is_unreachable(
    unreachable_sms: Services,
) -> None:
    new_account(unreachable_sms)
    status, body = http("login", {"action": "send_code", "phone": PHONE})

    assert status == 503
    assert_envelope(body)
    assert body["error"]["code"] == "UNAVAILABLE"


# ---------------------------------------------------------------------------- actions


@pytest.mark.parametrize(
    "body",
    [
        {"action": "no_such_action"},
        {"phone": PHONE},
        {"action": None},
        {"action": 1},
        {"action": ["me"]},
        {"action": {"$ne": None}},
        {"action": ""},
        {"action": "__init__"},
        {"action": "ME"},
    ],
    ids=["unknown", "missing", "null", "int", "list", "operator", "empty", "dunder", "case"],
)
def test_unknown_missing_or_non_string_action_is_unknown_action(
    services: Services, body: dict[str, Any]
) -> None:
    status, reply = http("login", body)
    cloudbase = invoke("login", body)

    assert status == 400
    assert reply["error"]["code"] == "UNKNOWN_ACTION"
    assert cloudbase["error"]["code"] == "UNKNOWN_ACTION"
    assert_envelope(reply)
    assert_envelope(cloudbase)


@pytest.mark.parametrize(
    "raw",
    ['{"action": "check_account", "phone": ', "not json", "{'action': 'me'}", "\x00\x01"],
    ids=["truncated", "text", "single-quotes", "binary"],
)
def test_bad_json_body_is_invalid_argument(services: Services, raw: str) -> None:
    status, reply = http("login", None, raw=raw)

    assert status == 400
    assert_envelope(reply)
    assert reply["error"]["code"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("raw", ["[]", '[{"action": "me"}]', '"me"', "42", "null", "true"])
def test_body_that_is_not_a_json_object_is_invalid_argument(services: Services, raw: str) -> None:
    status, reply = http("login", None, raw=raw)

    assert status == 400
    assert_envelope(reply)
    assert reply["error"]["code"] == "INVALID_ARGUMENT"


def test_oversized_http_body_is_invalid_argument(services: Services) -> None:
    raw = json.dumps({"action": "check_account", "phone": PHONE, "pad": "x" * 300_000})

    status, reply = http("login", None, raw=raw)

    assert status == 400
    assert reply["error"]["code"] == "INVALID_ARGUMENT"


def _gateway_event(body: str, **extra: Any) -> dict[str, Any]:
    return {
        "httpMethod": "POST",
        "path": "/api/login",
        "headers": {"content-type": "application/json"},
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {"sourceIp": "203.0.113.9", "requestId": "r-1"},
        **extra,
    }


def test_base64_encoded_body_is_decoded(services: Services) -> None:
    new_account(services)
    payload = json.dumps({"action": "check_account", "phone": PHONE}, ensure_ascii=False)
    event = _gateway_event(base64.b64encode(payload.encode()).decode(), isBase64Encoded=True)

    reply = handler("login")(event, {})

    assert reply["statusCode"] == 200
    assert json.loads(reply["body"]) == {"ok": True, "data": {"exists": True}}


def test_invalid_base64_body_is_invalid_argument(services: Services) -> None:
    reply = handler("login")(_gateway_event("%%% not base64 %%%", isBase64Encoded=True), {})

    assert reply["statusCode"] == 400
    assert json.loads(reply["body"])["error"]["code"] == "INVALID_ARGUMENT"


def test_empty_http_body_is_unknown_action(services: Services) -> None:
    reply = handler("login")(_gateway_event(""), {})

    assert reply["statusCode"] == 400
    assert json.loads(reply["body"])["error"]["code"] == "UNKNOWN_ACTION"


def test_timer_event_to_login_is_unknown_action(services: Services) -> None:
    event = {"Type": "Timer", "TriggerName": "nightly", "Time": "2026-11-24T16:00:00Z"}

    reply = handler("login")(event, {"request_id": "timer-1"})

    assert reply == {"ok": False, "error": {"code": "UNKNOWN_ACTION", "message": "不支持的操作"}}


def test_event_that_is_not_an_object_is_invalid_argument(services: Services) -> None:
    for event in (None, "check_account", ["me"], 42):
        reply = handler("login")(event, {})
        assert_envelope(reply)
        assert reply["error"]["code"] == "INVALID_ARGUMENT"


# ---------------------------------------------------------------------------- event shapes


def _function_url_event(body: str, remote_addr: str, token: str | None = None) -> dict[str, Any]:
    """An SCF function-URL event: API-Gateway-like, without requestContext or isBase64Encoded."""
    headers = {
        "accept": "*/*",
        "content-type": "application/json",
        "content-length": str(len(body.encode())),
        "x-scf-remote-addr": remote_addr,
    }
    if token:
        headers["authorization"] = f"Bearer {token}"
    return {
        "body": body,
        "headers": headers,
        "httpMethod": "POST",
        "path": "/",
        "queryString": {},
    }


def test_function_url_event_is_served(services: Services) -> None:
    new_account(services)
    body = json.dumps({"action": "check_account", "phone": PHONE})

    reply = handler("login")(_function_url_event(body, "198.51.100.7"), {"request_id": "u-1"})

    assert reply["statusCode"] == 200
    assert json.loads(reply["body"]) == {"ok": True, "data": {"exists": True}}


def test_function_url_event_carries_the_session_token(services: Services) -> None:
    token = signed_in_token(services)
    body = json.dumps({"action": "me"})

    with_token = handler("login")(_function_url_event(body, "198.51.100.7", token), {})
    without = handler("login")(_function_url_event(body, "198.51.100.7"), {})

    assert with_token["statusCode"] == 200
    assert json.loads(with_token["body"])["data"]["phone"] == PHONE
    assert without["statusCode"] == 401


def test_function_url_caller_is_limited_by_its_remote_address(services: Services) -> None:
    services.clock.advance(60 - services.clock.now().timestamp() % 60 + 0.05)
    # A phone per ask: each phone has a limit of its own too (issue 17.6).
    bodies = [
        json.dumps({"action": "check_account", "phone": f"1380000{n:04d}"}) for n in range(22)
    ]

    statuses = [
        handler("login")(_function_url_event(body, "198.51.100.7"), {})["statusCode"]
        for body in bodies[:21]
    ]
    elsewhere = handler("login")(_function_url_event(bodies[21], "198.51.100.8"), {})

    assert statuses == [200] * 20 + [429]
    assert elsewhere["statusCode"] == 200


def test_cloudbase_platform_environment_is_preferred_over_user_info(services: Services) -> None:
    account = new_account(services)
    signed_in_token(services, openid="o-bound")
    platform = {"environment": json.dumps({"WX_OPENID": "o-bound", "WX_APPID": "wx-resident"})}

    event = {"action": "me", "userInfo": {"openId": "o-unbound", "appId": "wx-resident"}}
    reply = handler("login")(event, {"request_id": "cb-1", **platform})

    assert reply["ok"], reply
    assert reply["data"]["account_id"] == account["_id"]


def test_older_cloudbase_context_environ_names_the_caller(services: Services) -> None:
    # Older runtimes pass `context.environ` as k=v;k=v, read as the CloudBase node SDK's
    # parseContext reads it: the first "=" ends the key, parts without one are skipped.
    account = new_account(services)
    signed_in_token(services, openid="o-bound")
    environ = "SCF_NAMESPACE=default;WX_OPENID=o-bound;WX_APPID=wx-resident;junk;WX_UNIONID="

    reply = handler("login")({"action": "me"}, {"request_id": "cb-old", "environ": environ})

    assert reply["ok"], reply
    assert reply["data"]["account_id"] == account["_id"]


def test_older_context_environ_with_a_list_value_names_no_caller(services: Services) -> None:
    signed_in_token(services, openid="o-bound")
    environ = "WX_OPENID=o-bound,o-other;WX_APPID=wx-resident"

    reply = handler("login")({"action": "me"}, {"request_id": "cb-list", "environ": environ})

    assert reply["error"]["code"] == "UNAUTHENTICATED"


def test_user_info_is_not_used_when_the_platform_names_another_openid(
    services: Services,
) -> None:
    signed_in_token(services, openid="o-bound")
    platform = {"environment": json.dumps({"WX_OPENID": "o-unbound", "WX_APPID": "wx-resident"})}

    event = {"action": "me", "userInfo": {"openId": "o-bound", "appId": "wx-resident"}}
    reply = handler("login")(event, {"request_id": "cb-2", **platform})

    assert reply["error"]["code"] == "UNAUTHENTICATED"


def test_cloudbase_user_info_alone_identifies_the_caller(services: Services) -> None:
    account = new_account(services)
    signed_in_token(services, openid="o-bound")

    reply = handler("login")({"action": "me", "userInfo": {"openId": "o-bound"}}, {})

    assert reply["data"]["account_id"] == account["_id"]


def test_login_over_cloudbase_platform_environment_binds_that_openid(services: Services) -> None:
    account = new_account(services)
    platform = {"environment": json.dumps({"WX_OPENID": "o-platform", "WX_APPID": "wx-resident"})}
    handler("login")({"action": "send_code", "phone": PHONE}, platform)
    code = sandbox_outbox(services.db, PHONE)[0]["code"]

    reply = handler("login")({"action": "login", "phone": PHONE, "code": code}, platform)

    assert reply["ok"], reply
    assert (
        invoke("login", {"action": "me"}, openid="o-platform")["data"]["account_id"]
        == (account["_id"])
    )


def test_staff_app_login_binds_the_staff_openid(services: Services) -> None:
    account = new_account(services)
    make_staff(services.db, account["_id"], "张三", "admin", None, services.clock.now())
    platform = {"environment": json.dumps({"WX_OPENID": "o-staff", "WX_APPID": "wx-staff"})}
    handler("login")({"action": "send_code", "phone": PHONE}, platform)
    code = sandbox_outbox(services.db, PHONE)[0]["code"]

    reply = handler("login")(
        {"action": "login", "phone": PHONE, "code": code, "app": "staff"}, platform
    )

    assert reply["ok"], reply
    assert reply["data"]["account"]["staff"]["all_communities"] is True
    me = handler("login")({"action": "me"}, platform)
    assert me["data"]["account_id"] == account["_id"]


def test_a_staff_app_sharing_the_resident_apps_environment_is_named_by_its_from_keys(
    services: Services,
) -> None:
    # 资源复用: the staff app calls functions of an environment the resident app owns; the
    # platform names the calling app and its user in WX_FROM_APPID / WX_FROM_OPENID.
    account = new_account(services)
    make_staff(services.db, account["_id"], "张三", "guard", ["c-1"], services.clock.now())
    env = {"WX_OPENID": "", "WX_APPID": "wx-resident", "WX_FROM_APPID": "wx-staff"}
    platform = {"environment": json.dumps({**env, "WX_FROM_OPENID": "o-staff-shared"})}
    handler("login")({"action": "send_code", "phone": PHONE}, platform)
    code = sandbox_outbox(services.db, PHONE)[0]["code"]

    reply = handler("login")({"action": "login", "phone": PHONE, "code": code}, platform)

    assert reply["data"]["account"]["staff"]["role"] == "guard", reply
    assert services.db["accounts"].find_one({"_id": account["_id"]})["wx"] == {
        "staff": "o-staff-shared"
    }
    assert handler("login")({"action": "me"}, platform)["data"]["staff"]["role"] == "guard"


# ------------------------------------------------------------------ the shapes of error details


@pytest.mark.parametrize(
    "details",
    [
        {"fields": ["agreements"]},  # a list where a map of field → reason belongs
        {"fields": {"phone": 1}},
        {"retry_after_s": 0},
        {"retry_after_s": "60"},
        {"retryable": "yes"},
        {"missing": "c1"},
        {"community_ids": ["c1"]},  # a key no client is told about
    ],
)
def test_an_error_detail_of_any_other_shape_is_a_bug_caught_where_it_is_raised(
    details: dict[str, Any],
) -> None:
    with pytest.raises(ValueError):
        AppError("INVALID_ARGUMENT", details=details)


def test_unavailable_says_whether_the_call_may_be_retried_and_by_default_it_may() -> None:
    assert AppError("UNAVAILABLE").details == {"retryable": True}
    assert AppError("UNAVAILABLE", "银行服务暂时不可用").to_envelope()["error"]["details"] == {
        "retryable": True
    }

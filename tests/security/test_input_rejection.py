"""Hostile input to the login function: refused field by field, with nothing written and nothing
leaked (no identity from a forged userInfo, no stack trace, no personal data in the log line)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from conftest import fixed_clock, http, invoke, make_settings

from caiyun.adapters.sms import sandbox_outbox
from caiyun.sandbox.functions import handler
from caiyun.services import Services, build_services, install_services
from caiyun.stores.accounts import ensure_account

PHONE = "13800001111"
OPENID = "o-bound"
CHINESE = re.compile(r"[\u4e00-\u9fff]")

BAD_VALUES: dict[str, Any] = {
    "gt": {"$gt": ""},
    "ne": {"$ne": None},
    "regex": {"$regex": ".*"},
    "list": ["13800001111"],
    "int": 13800001111,
    "bool": True,
    "float": 1.5,
    "oversize": "1" * 5000,
}

# Every field of every login action, with a valid request around it.
FIELDS: list[tuple[str, str, dict[str, Any]]] = [
    ("check_account", "phone", {"phone": PHONE}),
    ("send_code", "phone", {"phone": PHONE, "purpose": "login"}),
    ("send_code", "purpose", {"phone": PHONE, "purpose": "login"}),
    ("login", "phone", {"phone": PHONE, "code": "123456"}),
    ("login", "code", {"phone": PHONE, "code": "123456"}),
    ("login", "app", {"phone": PHONE, "code": "123456", "app": "resident"}),
    ("login", "js_code", {"phone": PHONE, "code": "123456", "js_code": "0a1b2c"}),
]
ACTIONS = {
    "check_account": {"phone": PHONE},
    "send_code": {"phone": PHONE, "purpose": "login"},
    "login": {"phone": PHONE, "code": "123456"},
    "logout": {},
    "me": {},
}


def snapshot(db: Any) -> dict[str, list[str]]:
    """Every collection and every document in it, comparable before and after a call."""
    return {
        name: sorted(repr(sorted(doc.items())) for doc in db[name].find({}))
        for name in sorted(db.list_collection_names())
    }


@dataclass(frozen=True)
class Caller:
    """A signed-in caller: bound to the WeChat user OPENID, and holding a session token."""

    services: Services
    token: str


@pytest.fixture
def bound(services: Services) -> Caller:
    """An account for PHONE, signed in from the WeChat user OPENID."""
    ensure_account(services.db, PHONE, services.clock.now(), "张三")
    assert invoke("login", {"action": "send_code", "phone": PHONE}, openid=OPENID)["ok"]
    code = sandbox_outbox(services.db, PHONE)[0]["code"]
    reply = invoke("login", {"action": "login", "phone": PHONE, "code": code}, openid=OPENID)
    assert reply["ok"], reply
    return Caller(services, reply["data"]["session_token"])


def both_paths(event: dict[str, Any], token: str | None = None) -> list[dict[str, Any]]:
    """The same request as a CloudBase call from OPENID and over HTTP: both must be refused
    with 400; returns the two envelopes."""
    status, body = http("login", event, token=token)
    assert status == 400, body
    return [invoke("login", event, openid=OPENID), body]


# ---------------------------------------------------------------------------- bad fields


@pytest.mark.parametrize("bad", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
@pytest.mark.parametrize(
    ("action", "field", "valid"), FIELDS, ids=[f"{a}.{f}" for a, f, _ in FIELDS]
)
def test_bad_value_in_any_field_is_refused_by_name_and_writes_nothing(
    bound: Caller, action: str, field: str, valid: dict[str, Any], bad: Any
) -> None:
    before = snapshot(bound.services.db)

    replies = both_paths({"action": action, **valid, field: bad})

    for reply in replies:
        assert reply["ok"] is False
        assert reply["error"]["code"] == "INVALID_ARGUMENT"
        assert CHINESE.search(reply["error"]["message"])
        assert set(reply["error"]["details"]["fields"]) == {field}
        assert CHINESE.search(reply["error"]["details"]["fields"][field])
        assert json.dumps(bad)[:40] not in json.dumps(reply)  # the bad value is not echoed
    assert snapshot(bound.services.db) == before


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize(
    "extra",
    [{"extra": 1}, {"$where": "sleep(1000)"}, {"filter": {"$ne": None}}, {"phone ": PHONE}],
    ids=["extra", "where", "filter", "near-name"],
)
def test_unknown_extra_field_is_refused_by_name_and_writes_nothing(
    bound: Caller, action: str, extra: dict[str, Any]
) -> None:
    before = snapshot(bound.services.db)

    replies = both_paths({"action": action, **ACTIONS[action], **extra}, bound.token)

    for reply in replies:
        assert reply["error"]["code"] == "INVALID_ARGUMENT"
        assert set(reply["error"]["details"]["fields"]) == set(extra)
    assert snapshot(bound.services.db) == before


def test_several_bad_fields_are_all_named(bound: Caller) -> None:
    before = snapshot(bound.services.db)

    replies = both_paths(
        {"action": "login", "phone": 13800001111, "code": True, "app": "root", "js_code": ["x"]}
    )

    for reply in replies:
        assert set(reply["error"]["details"]["fields"]) == {"phone", "code", "app", "js_code"}
    assert snapshot(bound.services.db) == before


@pytest.mark.parametrize(
    ("action", "valid", "field"),
    [
        ("check_account", {}, "phone"),
        ("send_code", {}, "phone"),
        ("login", {"phone": PHONE}, "code"),
        ("login", {"code": "123456"}, "phone"),
    ],
)
def test_missing_field_is_named(
    bound: Caller, action: str, valid: dict[str, Any], field: str
) -> None:
    for reply in both_paths({"action": action, **valid}):
        assert reply["error"]["details"]["fields"] == {field: "必填"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phone", "1380000111"),
        ("phone", "23800001111"),
        ("phone", "+8613800001111"),
        ("phone", "13800001111\n"),
        ("phone", "１３８００００１１１１"),
        ("phone", "13٨٠٠٠٠١١١١"),
        ("code", "12345"),
        ("code", "1234567"),
        ("code", "12345a"),
        ("code", "١٢٣٤٥٦"),
        ("js_code", "x" * 129),
        ("js_code", ""),
    ],
)
def test_malformed_strings_are_refused_by_name(bound: Caller, field: str, value: str) -> None:
    before = snapshot(bound.services.db)
    event = {"action": "login", "phone": PHONE, "code": "123456", field: value}

    for reply in both_paths(event):
        assert reply["error"]["code"] == "INVALID_ARGUMENT"
        assert set(reply["error"]["details"]["fields"]) == {field}
    assert snapshot(bound.services.db) == before


# ---------------------------------------------------------------------------- identity


def test_forged_user_info_in_an_http_body_is_ignored(bound: Caller) -> None:
    forged = {"openId": OPENID, "appId": "wx-resident"}

    status, body = http("login", {"action": "me", "userInfo": forged})
    logout_status, _ = http("login", {"action": "logout", "userInfo": forged})

    assert status == 401
    assert body["error"]["code"] == "UNAUTHENTICATED"
    assert logout_status == 401
    assert invoke("login", {"action": "me"}, openid=OPENID)["ok"]  # still bound


def test_forged_user_info_cannot_request_change_phone_codes(bound: Caller) -> None:
    forged = {"openId": OPENID, "appId": "wx-resident"}

    status, body = http(
        "login",
        {"action": "send_code", "phone": PHONE, "purpose": "change_phone_old", "userInfo": forged},
    )

    assert status == 401
    assert body["error"]["code"] == "UNAUTHENTICATED"
    assert len(sandbox_outbox(bound.services.db, PHONE)) == 1  # only the login code


def test_a_mini_program_call_cannot_pose_as_http_to_dodge_the_per_caller_limit(
    services: Services,
) -> None:
    # wx.cloud.callFunction lets the client choose every key of the event; only the platform's
    # context (WX_OPENID) says who is calling. An event dressed up as an API Gateway request is
    # still a mini-program call: it is not served as HTTP, so no sourceIp ever keys a limit.
    platform = {"environment": json.dumps({"WX_OPENID": "o-enumerator", "WX_APPID": "wx-resident"})}
    event = {
        "httpMethod": "POST",
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"action": "check_account", "phone": "13900000001"}),
        "requestContext": {"sourceIp": "198.51.100.7"},
    }

    reply = handler("login")(event, platform)

    assert "statusCode" not in reply
    assert reply["error"]["code"] == "UNKNOWN_ACTION"
    assert services.db["rate_limits"].count_documents({"_id": {"$regex": "198\\.51"}}) == 0


# ---------------------------------------------------------------------------- crashes and logs


class _BrokenDatabase:
    """A database double that fails on every use, echoing the query as drivers do."""

    def __getitem__(self, name: str) -> Any:
        return self

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"OperationFailure on {name}: filter={args[:1]!r} (code 13)")

        return fail


@pytest.fixture
def broken_db() -> Iterator[Services]:
    svc = build_services(make_settings(), clock=fixed_clock(), db=_BrokenDatabase())
    install_services(svc)
    yield svc
    install_services(None)


class _LineCollector(logging.Handler):
    """Keeps each log line the runtime writes (the formatted message is the JSON line)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The structured log lines of the calls made during the test, parsed.

    Read from the ``caiyun`` logger rather than from captured stdout: pytest attaches its own
    handlers to non-propagating loggers, after which the runtime's stdout handler is not
    (re)attached inside a test, and capsys sees nothing.
    """
    logger = logging.getLogger("caiyun")
    collector = _LineCollector()
    level = logger.level
    logger.addHandler(collector)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in collector.lines]
    logger.removeHandler(collector)
    logger.setLevel(level)


def _assert_no_internals(text: str) -> None:
    for leak in ("Traceback", "RuntimeError", "OperationFailure", "filter=", ".py", "line "):
        assert leak not in text


@pytest.mark.parametrize(
    "event",
    [
        {"action": "check_account", "phone": PHONE},
        {"action": "send_code", "phone": PHONE},
        {"action": "login", "phone": PHONE, "code": "123456"},
        {"action": "me"},
    ],
    ids=["check_account", "send_code", "login", "me"],
)
def test_a_crash_answers_internal_without_any_internal_detail(
    broken_db: Services, event: dict[str, Any]
) -> None:
    token = jwt.encode(
        {"iss": "caiyun", "sub": "a-1", "sid": "s-1", "app": "resident", "exp": 4102444800},
        broken_db.settings.token_secret.get_secret_value(),
        algorithm="HS256",
    )  # well signed, so `me` over HTTP goes on to look the session up
    cloudbase = invoke("login", event)
    status, body = http("login", event, token=token)

    assert status == 500
    for reply in (cloudbase, body):
        assert reply == {
            "ok": False,
            "error": {"code": "INTERNAL", "message": "系统繁忙，请稍后再试"},
        }
        _assert_no_internals(json.dumps(reply, ensure_ascii=False))


def _mentions(line: dict[str, Any], secret: str) -> bool:
    return secret in json.dumps(line, ensure_ascii=False)


def test_log_lines_of_send_code_and_login_hold_no_phone_code_or_token(
    services: Services, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    ensure_account(services.db, PHONE, services.clock.now(), "张三")
    invoke("login", {"action": "send_code", "phone": PHONE})
    code = sandbox_outbox(services.db, PHONE)[0]["code"]
    status, body = http("login", {"action": "login", "phone": PHONE, "code": code})
    assert status == 200, body
    token = body["data"]["session_token"]
    http("login", {"action": "me"}, token=token)
    http("login", {"action": "login", "phone": PHONE, "code": code})  # a refused repeat

    lines = log_lines()

    assert [line.get("action") for line in lines] == ["send_code", "login", "me", "login"]
    assert [line["code"] for line in lines] == ["OK", "OK", "OK", "CODE_INVALID"]
    account_id = body["data"]["account"]["account_id"]
    assert lines[2]["account"] == account_id  # who called is logged, by id
    for line in lines:
        for secret in (PHONE, PHONE[3:], code, token, token.split(".")[1]):
            assert not _mentions(line, secret), (secret, line)


def test_log_line_of_a_crash_names_the_exception_but_masks_the_phone(
    broken_db: Services, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    invoke("login", {"action": "send_code", "phone": PHONE})
    http("login", {"action": "check_account", "phone": PHONE})

    lines = log_lines()

    assert len(lines) == 2
    for line in lines:
        assert line["code"] == "INTERNAL"
        assert line["exception"] == "RuntimeError"  # useful to whoever reads the log
        assert not _mentions(line, PHONE)
        assert not _mentions(line, PHONE[3:])


class _LeakySms:
    """An SMS adapter double that fails the way an SDK bug would: echoing its whole request."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    def send(self, phone: str, template: str, params: list[str]) -> None:
        self.codes.append(params[0])
        raise RuntimeError(
            f"SendSms failed: PhoneNumberSet=['+86{phone}'] TemplateParamSet={params!r}"
        )


def test_log_line_of_an_sms_crash_masks_the_phone_and_the_code(
    services: Services, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    ensure_account(services.db, PHONE, services.clock.now(), "张三")
    services.sms = sms = _LeakySms()

    reply = invoke("login", {"action": "send_code", "phone": PHONE})

    assert reply["error"]["code"] == "INTERNAL"
    [line] = log_lines()
    assert line["exception"] == "RuntimeError"
    [code] = sms.codes
    assert not _mentions(line, code), line
    assert not _mentions(line, PHONE[3:]), line

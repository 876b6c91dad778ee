"""Secrets and personal data: never in clear in a log line, an error or a stored document, and a
production profile that would weaken them refuses to start.

The journey (login, bind, real-name, pay, notify, repair, visitor, the timer, and refusals and a
crash on the way) runs once per module through the real ``main_handler`` against a running
FakeIcbc and FakeWeChat; every record of the ``caiyun`` logger (and of the root logger) is kept.
``caiyun.logs`` writes to its own stdout handler and does not propagate, so the test
attaches a handler of its own. What tests/security/test_input_rejection.py already proves for the
login function alone (its log lines, a crash's log line, an SMS sender's crash) is not repeated.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import fixed_clock, http, invoke, make_settings
from pydantic import ValidationError
from pymongo.errors import WriteError

from caiyun import crypto
from caiyun.adapters.icbc_protocol import generate_private_key_pem, public_key_pem
from caiyun.adapters.sms import sandbox_outbox
from caiyun.catalog import open_database
from caiyun.clock import business_date
from caiyun.domain import accounts
from caiyun.domain.owner_import import import_owners
from caiyun.sandbox.environment import SandboxRefused
from caiyun.sandbox.fake_wechat import FakeWeChat
from caiyun.sandbox.functions import function_names, handler
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.sandbox.server import create_server
from caiyun.services import Services, build_services, install_services
from caiyun.settings import (
    _SANDBOX_CODE_KEY,
    _SANDBOX_DATA_KEY,
    _SANDBOX_TOKEN_SECRET,
    Settings,
)
from caiyun.stores import accounts as account_store
from caiyun.stores import staff

GARDEN = {"province": "广东省", "city": "深圳市", "district": "南山区", "name": "彩云花园"}
NOTIFY_URL = "https://caiyun.example.com/icbc/notify"
RESIDENT_APPID, RESIDENT_SECRET = "wx-resident-secrets", "resident-secret-9f8e7d6c5b4a3210"
STAFF_APPID, STAFF_SECRET = "wx-staff-secrets", "staff-secret-0a1b2c3d4e5f6789"
TEMPLATES = {"repair": "tmpl-repair", "payment": "tmpl-pay", "visitor": "tmpl-visitor"}

# Distinctive numbers, so a hit is never a coincidence.
OWNER = SimpleNamespace(
    name="张伟",
    phone="13912876543",
    bank_phone="15987654321",
    openid="o-owner-journey",
    id_number="440305198706132715",  # with its GB 11643 check digit
    card="6222021873659142078",  # Luhn-valid, ICBC Class I
    other_bank_card="6228482937164583024",  # Luhn-valid, another bank
)
VISITOR_PHONE = "13698761234"
STAFF = {
    "admin": ("13711223344", "王经理", "o-staff-admin"),
    "repairman": ("13722334455", "李师傅", "o-staff-fixer"),
    "guard": ("13733445566", "赵保安", "o-staff-guard"),
}


def ok(reply: dict[str, Any]) -> Any:
    assert reply["ok"] is True, reply
    return reply["data"]


class _Records(logging.Handler):
    """Every log record, formatted with its traceback if it has one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name}: {text}")


class _CrashOnInsert:
    """``services.db`` whose ``<collection>.insert_one`` fails once, echoing the document as
    drivers do in a write error."""

    def __init__(self, db: Any, collection: str) -> None:
        self._db, self._collection = db, collection

    def __getitem__(self, name: str) -> Any:
        real = self._db[name]
        if name != self._collection:
            return real
        outer = self

        class Collection:
            def __getattr__(self, attr: str) -> Any:
                if attr != "insert_one":
                    return getattr(real, attr)

                def fail(document: Any, *args: Any, **kwargs: Any) -> Any:
                    outer._collection = ""
                    raise WriteError(f"write failed on {name}: document={document!r}")

                return fail

        return Collection()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@dataclasses.dataclass
class Journey:
    services: Services
    lines: list[str]  # log lines
    errors: list[str]  # every failure envelope and notify answer, as text
    secrets: dict[str, str]  # name -> value that must never be in clear
    codes: dict[str, str]  # name -> SMS code (matched as a whole number)


def _fire_timer() -> dict[str, Any]:
    event = {"Type": "Timer", "TriggerName": "scheduler-timer", "Time": "2026-01-01T00:00:00Z"}
    return handler("scheduler")(event, {"request_id": "timer"})


def _post_notify(body: str) -> dict[str, Any]:
    event = {
        "httpMethod": "POST",
        "path": "/icbc/notify",
        "headers": {"content-type": "application/x-www-form-urlencoded; charset=UTF-8"},
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {"sourceIp": "202.106.0.20", "requestId": "apigw-notify"},
    }
    return handler("icbc_callback")(event, {})


def _run_journey(svc: Services, bank: FakeIcbc, errors: list[str]) -> dict[str, str]:
    """Everything a resident, the staff, ICBC and the timer do in a day; returns what must stay
    secret that only came up on the way (codes, tokens, the wallet number)."""
    db, now = svc.db, svc.clock.now()
    found: dict[str, str] = {}

    staff_openids = {openid for _, _, openid in STAFF.values()}

    def call(function: str, event: dict[str, Any], openid: str | None) -> dict[str, Any]:
        reply = invoke(function, event, openid, "staff" if openid in staff_openids else "resident")
        if not reply["ok"]:
            errors.append(json.dumps(reply, ensure_ascii=False))
        return reply

    def over_http(function: str, event: dict[str, Any], token: str | None = None) -> Any:
        status, body = http(function, event, token=token)
        if status != 200:
            errors.append(json.dumps(body, ensure_ascii=False))
        return body

    report = import_owners(
        svc, GARDEN, [{"building": 3, "unit": 2, "room": 1201, "owner_name": OWNER.name,
                       "owner_phone": OWNER.phone}]
    )  # fmt: skip
    house_id = report.rows[0].house_id
    people = {}
    for role, (phone, name, openid) in STAFF.items():
        account, _ = account_store.ensure_account(db, phone, now, name)
        staff.upsert(db, account["_id"], name, role, [report.community_id], now)
        accounts.bind_openid(db, account["_id"], "staff", openid)
        people[role] = account["_id"]
    admin, fixer, guard = (STAFF[r][2] for r in ("admin", "repairman", "guard"))

    # Login, over CloudBase and over HTTP, with a wrong code on the way.
    ok(call("login", {"action": "check_account", "phone": OWNER.phone}, OWNER.openid))
    ok(call("login", {"action": "send_code", "phone": OWNER.phone}, OWNER.openid))
    found["login code"] = code = sandbox_outbox(db, OWNER.phone)[0]["code"]
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    call("login", {"action": "login", "phone": OWNER.phone, "code": wrong}, OWNER.openid)
    ok(call("login", {"action": "login", "phone": OWNER.phone, "code": code}, OWNER.openid))
    svc.clock.advance(svc.settings.sms_resend_s + 1)
    assert over_http("login", {"action": "send_code", "phone": OWNER.phone})["ok"]
    found["http login code"] = code = sandbox_outbox(db, OWNER.phone)[0]["code"]
    body = over_http("login", {"action": "login", "phone": OWNER.phone, "code": code})
    found["session token"] = token = body["data"]["session_token"]
    assert over_http("login", {"action": "me"}, token)["ok"]
    over_http("bills", {"action": "list"}, token)  # HOUSE_NOT_BOUND, over HTTP
    over_http("login", {"action": "me"}, token[:-4] + "AAAA")  # a tampered token

    # Binding, with a mismatch first.
    bind = {
        "action": "bind",
        "community_id": report.community_id,
        "building": "3栋",
        "unit": "2单元",
        "room": "1201",
        "owner_name": "张三",
        "owner_phone": OWNER.phone,
    }
    call("bind_house", bind, OWNER.openid)
    ok(call("bind_house", {**bind, "owner_name": OWNER.name}, OWNER.openid))
    subscribe = {"action": "subscribe", "template_ids": list(TEMPLATES.values())}
    ok(call("notify", subscribe, OWNER.openid))

    # Real-name verification: another bank's card, a bad ID number, a wrong code, then right.
    start = {
        "action": "realname_start",
        "method": "card",
        "name": OWNER.name,
        "id_number": OWNER.id_number,
        "card_no": OWNER.other_bank_card,
        "bank_phone": OWNER.bank_phone,
        "occupation": 3,
        "id_valid_until": "2031-06-30",
    }
    call("account", start, OWNER.openid)  # NOT_ICBC_CARD
    call("account", {**start, "id_number": "440305198706132716"}, OWNER.openid)  # bad check
    ticket = ok(call("account", {**start, "card_no": OWNER.card}, OWNER.openid))["ticket"]
    found["realname code"] = code = sandbox_outbox(db, OWNER.bank_phone)[0]["code"]
    confirm = {
        "action": "realname_confirm",
        "ticket": ticket,
        "sms_code": f"{(int(code) + 1) % 10**6:06d}",
        "agreements": ["wallet_service", "privacy"],
        "autodebit": False,
    }
    call("account", confirm, OWNER.openid)  # CODE_INVALID
    ok(call("account", {**confirm, "sms_code": code}, OWNER.openid))
    ok(call("account", {"action": "wallet"}, OWNER.openid))

    # Bills, payment and ICBC's notify (twice, and once forged).
    due = (business_date(svc.clock.now()) + timedelta(days=10)).isoformat()
    rows = [
        {"building": 3, "unit": 2, "room": 1201, "period": "2026-11", "item": item,
         "amount_fen": amount, "due_date": due}
        for item, amount in (("物业费", 12000), ("停车费", 5000))
    ]  # fmt: skip
    event = {"action": "import_bills", "community_id": report.community_id, "rows": rows}
    ok(call("admin", event, admin))
    bill_ids = [b["bill_id"] for b in ok(call("bills", {"action": "list"}, OWNER.openid))["items"]]
    pay = {"action": "pay", "bill_ids": bill_ids, "method": "wechat"}
    order = ok(call("bills", pay, OWNER.openid))
    found["wechat pay sign"] = order["icbc"]["request_payment"]["paySign"]
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    forged = {**form, "biz_content": form["biz_content"].replace('"17000"', '"1"')}
    for notify in (form, form, forged):
        errors.append(_post_notify(urlencode(notify))["body"])
    ok(call("bills", {"action": "order", "order_no": order["order_no"]}, OWNER.openid))

    # A repair from report to rating, with a crash on the way that echoes what was written.
    report_event = {
        "action": "create",
        "house_id": house_id,
        "category": "water_electric",
        "description": f"水管漏水，身份证{OWNER.id_number}，电话{OWNER.phone}",
        "contact_phone": OWNER.phone,
    }
    install_services(dataclasses.replace(svc, db=_CrashOnInsert(db, "repairs")))
    assert call("repair", report_event, OWNER.openid)["error"]["code"] == "INTERNAL"
    install_services(svc)
    report_event["description"] = "厨房水管漏水"
    rid = ok(call("repair", report_event, OWNER.openid))["repair_id"]
    dispatch = {"action": "dispatch", "repair_id": rid, "repairman_id": people["repairman"]}
    ok(call("repair", dispatch, admin))
    photo = svc.storage.upload_target(
        f"repair/completion/{people['repairman']}", "done.jpg"
    ).file_id
    ok(call("repair", {"action": "complete", "repair_id": rid, "photos": [photo]}, fixer))
    rate = {"action": "rate", "repair_id": rid, "stars": 5, "comment": "师傅很专业"}
    ok(call("repair", rate, OWNER.openid))
    ok(call("repair", {"action": "detail", "repair_id": rid}, admin))

    # A visitor: registered, shown, admitted, and a forged pass.
    register = {
        "action": "register",
        "house_id": house_id,
        "name": "王芳",
        "phone": VISITOR_PHONE,
        "count": 2,
        "plate": "粤B12345",
    }
    visit = ok(call("visitor", register, OWNER.openid))
    found["visitor pass token"] = visit["pass_token"]
    ok(call("visitor", {"action": "pass", "token": visit["pass_token"]}, None))
    ok(call("visitor", {"action": "verify", "token": visit["pass_token"]}, guard))
    call("visitor", {"action": "verify", "token": visit["pass_token"][:-3] + "AAA"}, guard)
    ok(call("visitor", {"action": "history"}, OWNER.openid))

    # The timer, three days on.
    svc.clock.advance(3 * 24 * 3600 + 1)
    assert _fire_timer()["ok"]
    return found


@pytest.fixture(scope="module")
def journey() -> Iterator[Journey]:
    clock = fixed_clock()
    settings = make_settings()
    base = build_services(settings, clock=clock, db=open_database(settings, clock))
    bank = FakeIcbc(
        base.db,
        clock,
        gateway_private_key=generate_private_key_pem(),
        merchant_private_key=generate_private_key_pem(),
    )
    wechat = FakeWeChat({RESIDENT_APPID: RESIDENT_SECRET, STAFF_APPID: STAFF_SECRET})
    bank.start()
    wechat.start()
    settings = make_settings(
        **bank.settings_overrides(),
        icbc_notify_url=NOTIFY_URL,
        wechat_api_base=wechat.url,
        wechat_appid=RESIDENT_APPID,
        wechat_secret=RESIDENT_SECRET,
        wechat_staff_appid=STAFF_APPID,
        wechat_staff_secret=STAFF_SECRET,
        wechat_templates=TEMPLATES,
    )
    svc = build_services(settings, clock=clock, db=base.db)
    install_services(svc)
    records = _Records()
    loggers = [logging.getLogger("caiyun"), logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(records)
    loggers[0].setLevel(logging.DEBUG)
    loggers[1].setLevel(logging.INFO)  # what a deployment runs at
    errors: list[str] = []
    try:
        found = _run_journey(svc, bank, errors)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(records)
            logger.setLevel(level)
        install_services(None)
        bank.stop()
        wechat.stop()
    phones = {
        "owner phone": OWNER.phone,
        "bank phone": OWNER.bank_phone,
        "visitor phone": VISITOR_PHONE,
        **{f"{role} phone": phone for role, (phone, _, _) in STAFF.items()},
    }
    must_hide = {
        **phones,
        **{f"{name} (last 8)": phone[3:] for name, phone in phones.items()},
        "ID number": OWNER.id_number,
        "ID number (middle)": OWNER.id_number[4:14],
        "card number": OWNER.card,
        "card number (middle)": OWNER.card[4:-4],
        "other bank card": OWNER.other_bank_card,
        "session token": found["session token"],
        "session token (claims)": found["session token"].split(".")[1],
        "visitor pass token": found["visitor pass token"],
        "wechat pay sign": found["wechat pay sign"],
        "icbc aes key": svc.settings.icbc_aes_key.get_secret_value(),
        "token secret": svc.settings.token_secret.get_secret_value(),
        "code hash key": svc.settings.code_hash_key.get_secret_value(),
        "data key": svc.settings.data_key.get_secret_value(),
        "icbc private key": svc.settings.icbc_private_key.get_secret_value().splitlines()[3],
        "wechat secret": RESIDENT_SECRET,
        "wechat staff secret": STAFF_SECRET,
        "wechat access token": "fake-token-",
    }
    codes = {k: v for k, v in found.items() if k.endswith("code")}
    yield Journey(svc, records.lines, errors, must_hide, codes)


def leaks(texts: list[str], journey: Journey) -> list[str]:
    """Every (secret name, text) where a secret shows in clear."""
    found = []
    for text in texts:
        for name, value in journey.secrets.items():
            if value in text:
                found.append(f"{name} in: {text[:300]}")
        for name, code in journey.codes.items():
            if re.search(rf"(?<!\d){code}(?!\d)", text):
                found.append(f"{name} in: {text[:300]}")
    return found


def test_the_journey_was_logged_one_line_per_call_with_a_crash_among_them(
    journey: Journey,
) -> None:
    calls = [json.loads(line.split(": ", 1)[1]) for line in journey.lines if "caiyun:" in line]
    actions = {(c["function"], c.get("action")) for c in calls}
    for expected in (
        ("login", "login"),
        ("bind_house", "bind"),
        ("account", "realname_confirm"),
        ("bills", "pay"),
        ("icbc_callback", None),
        ("repair", "rate"),
        ("visitor", "verify"),
        ("scheduler", "timer"),
    ):
        assert expected in actions, expected
    crash = [c for c in calls if c["code"] == "INTERNAL"]
    assert len(crash) == 1 and crash[0]["exception"] == "WriteError"
    assert len(journey.errors) >= 10  # the refusals and answers checked below


def test_no_log_line_of_the_journey_holds_a_phone_code_token_id_or_card_number(
    journey: Journey,
) -> None:
    assert leaks(journey.lines, journey) == []


def test_no_error_or_notify_answer_of_the_journey_holds_one_either(journey: Journey) -> None:
    assert leaks(journey.errors, journey) == []


def test_even_at_debug_level_no_log_line_holds_the_wechat_secret_or_a_login_code(
    services: Services,
) -> None:
    """Someone troubleshooting turns the root logger to DEBUG: the HTTP library then logs every
    request line, and WeChat takes the app secret and the wx.login code in the query string."""
    records = _Records()
    root = logging.getLogger()
    level = root.level
    with FakeWeChat({RESIDENT_APPID: RESIDENT_SECRET}) as wechat:
        settings = make_settings(
            wechat_api_base=wechat.url, wechat_appid=RESIDENT_APPID, wechat_secret=RESIDENT_SECRET
        )
        svc = build_services(settings, clock=services.clock, db=services.db)
        install_services(svc)
        account_store.ensure_account(svc.db, OWNER.phone, svc.clock.now(), OWNER.name)
        ok(invoke("login", {"action": "send_code", "phone": OWNER.phone}))
        code = sandbox_outbox(svc.db, OWNER.phone)[0]["code"]
        js_code = "0c3Xk1ll2kYq8e4Zz0ml2Gd0Hq1Xk1lL"
        root.addHandler(records)
        root.setLevel(logging.DEBUG)
        try:
            event = {"action": "login", "phone": OWNER.phone, "code": code, "js_code": js_code}
            status, body = http("login", event)
        finally:
            root.removeHandler(records)
            root.setLevel(level)
    assert status == 200, body
    # The HTTP library's request lines (which hold the query string) stay below the level.
    assert logging.getLogger("urllib3").getEffectiveLevel() >= logging.INFO
    shown = [line for line in records.lines if RESIDENT_SECRET in line or js_code in line]
    assert shown == []


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, bytes):
        yield value.decode("latin-1")
    elif value is not None:
        yield str(value)


def test_no_stored_document_in_any_collection_holds_an_id_or_card_number(
    journey: Journey,
) -> None:
    db = journey.services.db
    numbers = {
        "ID number": OWNER.id_number,
        "ID number (lower x)": OWNER.id_number.lower(),
        "ID number (middle)": OWNER.id_number[4:14],
        "card number (middle)": OWNER.card[4:-4],
        "other bank card (middle)": OWNER.other_bank_card[4:-4],
    }
    names = db.list_collection_names()
    assert {"accounts", "realname_tickets", "repairs", "sandbox_icbc_accounts"} <= set(names)
    found = []
    for name in names:
        # The only exception: the repair whose description the resident typed the ID into
        # crashed and was never written, so no collection is exempt.
        for doc in db[name].find({}):
            text = "\n".join(s.replace(" ", "").replace("-", "") for s in _strings(doc))
            found += [f"{what} in {name} {doc['_id']}" for what, v in numbers.items() if v in text]
    assert found == []


def test_the_stored_id_and_card_numbers_are_sealed_with_the_data_key(journey: Journey) -> None:
    svc = journey.services
    account = account_store.by_phone(svc.db, OWNER.phone)
    sealed_id = account["realname"]["id_number"]
    sealed_card = account["wallet"]["card_no"]
    assert crypto.decrypt(svc.settings, sealed_id, "id_number") == OWNER.id_number
    assert crypto.decrypt(svc.settings, sealed_card, "card_no") == OWNER.card
    assert account["realname"]["id_masked"] == "4403**********2715"
    # Bound to its field: a sealed ID number cannot be passed off as a card number.
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        crypto.decrypt(svc.settings, sealed_id, "card_no")
    other = Settings(env="sandbox", data_key=base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(Exception):  # noqa: B017
        crypto.decrypt(other, sealed_card, "card_no")


# ------------------------------------------------------------------------------ production settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CAIYUN_* or MONGODB_URI from the shell: each test says exactly what is set."""
    for name in list(os.environ):
        if name.startswith("CAIYUN_") or name == "MONGODB_URI":
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture(scope="module")
def strong() -> dict[str, Any]:
    """A complete production profile with strong secrets."""
    return {
        "env": "production",
        "MONGODB_URI": "mongodb://caiyun:Zq8vN2xL5pR7tY1w@db.internal:27017/caiyun",
        "token_secret": secrets.token_urlsafe(32),
        "code_hash_key": secrets.token_urlsafe(32),
        "data_key": base64.b64encode(os.urandom(32)).decode(),
        "sms_provider": "tencent",
        "tencent_secret_id": "AKID" + secrets.token_hex(16),
        "tencent_secret_key": secrets.token_hex(16),
        "sms_sdk_app_id": "1400123456",
        "sms_sign_name": "彩云居家",
        "sms_template_code": "1234567",
        "wechat_appid": "wx1234567890abcdef",
        "wechat_secret": secrets.token_hex(16),
        "wechat_staff_appid": "wxfedcba0987654321",
        "wechat_staff_secret": secrets.token_hex(16),
        "icbc_app_id": "10000000000003168888",
        "icbc_private_key": generate_private_key_pem(),
        "icbc_gateway_public_key": public_key_pem(generate_private_key_pem()),
        "icbc_merchant_id": "020001020001234",
        "icbc_notify_url": "https://api.caiyun.example.com/icbc/notify",
        "icbc_aes_key": base64.b64encode(os.urandom(16)).decode(),
        "icbc_mer_prtcl_no": "0200010200012340201",
        "icbc_vendor_id": "CAIYUN0001",
        "icbc_entrust_project_id": "PJ140014011000001234",
        "icbc_entrust_busi_code": "10002",
        "storage_provider": "cos",
        "cos_bucket": "caiyun-1250000000",
        "cos_secret_id": "AKID" + secrets.token_hex(16),
        "cos_secret_key": secrets.token_hex(16),
    }


def refusal(clean_env: pytest.MonkeyPatch, fields: dict[str, Any]) -> str:
    """The message of the ValidationError a production profile is refused with."""
    with pytest.raises(ValidationError) as refused:
        Settings(**fields)
    return str(refused.value)


def test_a_complete_strong_production_profile_is_accepted(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any]
) -> None:
    settings = Settings(**strong)
    assert settings.env == "production" and not settings.is_sandbox
    shown = repr(settings)
    for name in ("token_secret", "code_hash_key", "data_key", "icbc_private_key", "wechat_secret"):
        assert strong[name] not in shown


SECRET_ENV = {
    "MONGODB_URI": "MONGODB_URI",
    "token_secret": "CAIYUN_TOKEN_SECRET",
    "code_hash_key": "CAIYUN_CODE_HASH_KEY",
    "data_key": "CAIYUN_DATA_KEY",
    "tencent_secret_id": "CAIYUN_TENCENT_SECRET_ID",
    "tencent_secret_key": "CAIYUN_TENCENT_SECRET_KEY",
    "wechat_secret": "CAIYUN_WECHAT_SECRET",
    "wechat_staff_secret": "CAIYUN_WECHAT_STAFF_SECRET",
    "icbc_private_key": "CAIYUN_ICBC_PRIVATE_KEY",
    "cos_secret_id": "CAIYUN_COS_SECRET_ID",
    "cos_secret_key": "CAIYUN_COS_SECRET_KEY",
}


@pytest.mark.parametrize("field", list(SECRET_ENV))
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_production_refuses_a_missing_secret_by_name(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any], field: str, how: str
) -> None:
    fields = dict(strong)
    if how == "absent":
        del fields[field]
    else:
        fields[field] = ""
    assert SECRET_ENV[field] in refusal(clean_env, fields)


WEAK = {
    "token_secret": {
        "short": "x" * 31,
        "sandbox default": _SANDBOX_TOKEN_SECRET,
        "sandbox-style": "sandbox-" + "y" * 40,
    },
    "code_hash_key": {
        "short": "z" * 31,
        "sandbox default": _SANDBOX_CODE_KEY,
        "sandbox-style": "sandbox-" + "w" * 40,
    },
    "data_key": {
        "short": base64.b64encode(os.urandom(16)).decode(),
        "sandbox default": _SANDBOX_DATA_KEY,
        "not base64": "this is not base64 at all, not even close!!",
        "too long": base64.b64encode(os.urandom(48)).decode(),
    },
}


@pytest.mark.parametrize(
    ("field", "kind"), [(f, k) for f, kinds in WEAK.items() for k in kinds], ids=str
)
def test_production_refuses_a_weak_or_sandbox_key_by_name(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any], field: str, kind: str
) -> None:
    message = refusal(clean_env, {**strong, field: WEAK[field][kind]})
    assert SECRET_ENV[field] in message
    others = [name for f, name in SECRET_ENV.items() if f != field and f in WEAK]
    assert not any(name in message for name in others), message


def test_production_refuses_one_secret_used_for_two_purposes(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any]
) -> None:
    message = refusal(clean_env, {**strong, "code_hash_key": strong["token_secret"]})
    assert "CAIYUN_TOKEN_SECRET" in message and "CAIYUN_CODE_HASH_KEY" in message


def test_production_refuses_sandbox_sms(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any]
) -> None:
    assert "CAIYUN_SMS_PROVIDER" in refusal(clean_env, {**strong, "sms_provider": "sandbox"})


def test_production_refuses_sandbox_storage(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any]
) -> None:
    # The sandbox storage accepts any sandbox:// id as an uploaded file and uploads nothing;
    # like the sandbox SMS it is a default production must not start with.
    fields = {k: v for k, v in strong.items() if not k.startswith("cos_")}
    fields["storage_provider"] = "sandbox"
    assert "CAIYUN_STORAGE_PROVIDER" in refusal(clean_env, fields)


def test_production_takes_icbcs_1024_bit_gateway_key_as_every_icbc_sample_has_one(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any]
) -> None:
    gateway = public_key_pem(generate_private_key_pem(bits=1024))

    assert Settings(**{**strong, "icbc_gateway_public_key": gateway}).env == "production"


@pytest.mark.parametrize("key", ["", "c2hvcnQ=", "not base64 at all!"])
def test_production_refuses_an_icbc_aes_key_that_is_not_one(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any], key: str
) -> None:
    assert "CAIYUN_ICBC_AES_KEY" in refusal(clean_env, {**strong, "icbc_aes_key": key})


@pytest.mark.parametrize("kind", ["not a key", "1024-bit"])
def test_production_refuses_an_icbc_private_key_that_is_not_a_strong_rsa_key(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any], kind: str
) -> None:
    key = "not-a-pem-key" if kind == "not a key" else generate_private_key_pem(bits=1024)
    assert "CAIYUN_ICBC_PRIVATE_KEY" in refusal(clean_env, {**strong, "icbc_private_key": key})


GUESSABLE = {
    "token_secret": {"one letter": "a" * 32, "a repeated word": "password" * 4},
    "code_hash_key": {"two letters": "ab" * 20, "few symbols": "0123" * 8 + "4"},
    "data_key": {
        "zero bytes": base64.b64encode(bytes(32)).decode(),
        "a repeated block": base64.b64encode(b"0123456789abcdef" * 2).decode(),
    },
    "wechat_secret": {"hex of one digit": "0" * 32},
}


@pytest.mark.parametrize(
    ("field", "kind"), [(f, k) for f, kinds in GUESSABLE.items() for k in kinds], ids=str
)
def test_production_refuses_a_low_entropy_or_repeated_secret_by_name(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any], field: str, kind: str
) -> None:
    message = refusal(clean_env, {**strong, field: GUESSABLE[field][kind]})
    variable = f"CAIYUN_{field.upper()}"
    assert variable in message, message
    assert re.search(r"repeats a shorter pattern|distinct symbols", message), message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("wechat_secret", "x"),
        ("wechat_staff_secret", "not-an-appsecret"),
        ("wechat_appid", "wx123"),
        ("wechat_staff_appid", "appid"),
        ("tencent_secret_id", "AKID"),
        ("tencent_secret_key", "k"),
        ("cos_secret_id", "id"),
        ("cos_secret_key", "key"),
    ],
)
def test_production_refuses_credentials_no_console_issues_by_name(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any], field: str, value: str
) -> None:
    message = refusal(clean_env, {**strong, field: value})
    assert f"CAIYUN_{field.upper()} is not " in message, message


def test_production_refuses_our_own_key_as_icbcs_gateway_key(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any]
) -> None:
    ours = strong["icbc_private_key"]
    message = refusal(clean_env, {**strong, "icbc_gateway_public_key": public_key_pem(ours)})
    assert "CAIYUN_ICBC_GATEWAY_PUBLIC_KEY is our own key's public half" in message


def test_a_refused_production_profile_never_echoes_a_secret_in_its_error(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any]
) -> None:
    """The refusal is what a cold start prints to the function's log: read from the
    environment as in production, one weak key among strong ones."""
    env = {
        "CAIYUN_ENV": "production",
        "MONGODB_URI": strong["MONGODB_URI"],
        **{f"CAIYUN_{k.upper()}": v for k, v in strong.items() if k not in ("env", "MONGODB_URI")},
        "CAIYUN_TOKEN_SECRET": "short-token-secret",
    }
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    assert "CAIYUN_TOKEN_SECRET" in message
    hidden = [v for k, v in env.items() if "SECRET" in k or "KEY" in k or k == "MONGODB_URI"]
    shown = [v for v in hidden if v[-12:] in message or v[:12] in message]
    assert shown == [], message


# ------------------------------------------------------------------------------ /dev routes


def test_the_sandbox_server_refuses_a_validated_production_profile(
    clean_env: pytest.MonkeyPatch, strong: dict[str, Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with pytest.raises(SandboxRefused):
        create_server("127.0.0.1", 0, data_dir, True, settings=Settings(**strong))
    assert not data_dir.exists()  # refused before any database, key or clock file


@pytest.mark.parametrize("value", ["production", " Production "])
def test_the_sandbox_refuses_to_start_under_a_production_environment(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    # `caiyun dev` pins the sandbox profile for itself; CAIYUN_ENV=production in the shell must
    # still stop it before /dev/sms and /dev/clock are served.
    clean_env.setenv("CAIYUN_ENV", value)
    data_dir = tmp_path / "data"
    with pytest.raises(SandboxRefused):
        create_server("127.0.0.1", 0, data_dir, True)
    assert not data_dir.exists()


def test_caiyun_dev_under_a_production_environment_exits_with_the_reason(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from caiyun.cli import main

    clean_env.setenv("CAIYUN_ENV", "production")
    status = main(["dev", "--port", "0", "--data-dir", str(tmp_path / "data")])
    assert status == 1
    assert "the sandbox refuses a production profile" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_no_cloud_function_has_a_dev_action(services: Services) -> None:
    for name in function_names():
        actions = handler(name).actions
        assert not [a for a in actions if re.search(r"dev|sms|clock|outbox|complete_", a)], name
        for action in ("dev/sms", "dev_sms", "sms", "clock", "icbc_complete", "dev"):
            reply = invoke(name, {"action": action, "advance_seconds": 86400})
            if "error" in reply:
                assert reply["error"]["code"] in ("UNKNOWN_ACTION", "UNAUTHENTICATED"), reply


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/dev/sms", ""),
        ("POST", "/dev/clock", '{"advance_seconds": 86400}'),
        ("POST", "/dev/icbc/complete", '{"order_no": "CY1", "result": "success"}'),
    ],
    ids=["sms", "clock", "icbc-complete"],
)
def test_no_cloud_function_serves_a_dev_route_over_http(
    services: Services, method: str, path: str, body: str
) -> None:
    account_store.ensure_account(services.db, OWNER.phone, services.clock.now(), OWNER.name)
    ok(invoke("login", {"action": "send_code", "phone": OWNER.phone}))
    code = sandbox_outbox(services.db, OWNER.phone)[0]["code"]
    offset = services.clock.offset_s
    for name in function_names():
        event = {
            "httpMethod": method,
            "path": path,
            "headers": {"content-type": "application/json"},
            "queryStringParameters": {"phone": OWNER.phone},
            "body": body,
            "isBase64Encoded": False,
            "requestContext": {"sourceIp": "203.0.113.9", "requestId": "dev-probe"},
        }
        reply = handler(name)(event, {})
        assert code not in reply["body"], name
        if reply["statusCode"] == 200:
            answer = json.loads(reply["body"])
            # Only the ICBC notify answers 200 to everything: with a signed failure.
            assert name == "icbc_callback", (name, answer)
            assert answer["response_biz_content"]["return_code"] != 0
    assert services.clock.offset_s == offset


def test_the_sandbox_profile_refuses_to_run_on_a_cloud_function(
    clean_env: pytest.MonkeyPatch,
) -> None:
    # SCF and CloudBase set TENCENTCLOUD_RUNENV: a deploy that forgot CAIYUN_ENV must not
    # start with the sandbox's well-known keys.
    clean_env.setenv("TENCENTCLOUD_RUNENV", "SCF")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "CAIYUN_ENV=production" in str(refused.value)

"""Fixtures shared by every test: fresh services on the embedded engine, and ways to call."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from caiyun.catalog import open_database
from caiyun.clock import SHANGHAI, OffsetClock
from caiyun.sandbox.functions import handler
from caiyun.services import Services, build_services, current_services, install_services
from caiyun.settings import Settings

# worlds.py's asserts report like the tests' own (the pytest_plugins modules' are rewritten too).
pytest.register_assert_rewrite("worlds")

# Shared fixtures: the running sandbox (`sandbox`, `data_dir`) for the journey tests, and the
# ICBC sandbox wired into the services (`keys`, `bank`, `svc`) for the billing tests.
pytest_plugins = ["sandbox_client", "billing"]


# Where every test clock starts, unless a test sets its own: a Wednesday at 10:00 in Shanghai,
# inside the reminder hours, mid-month, mid-week and mid-year. No rule a test proves may depend on
# the hour, weekday or date the suite happens to run at (CI runs at any hour of any day).
TEST_START = datetime(2026, 11, 25, 10, 0, tzinfo=SHANGHAI)


def fixed_clock(start: datetime = TEST_START) -> OffsetClock:
    """A clock that starts at ``start`` (default TEST_START) and then runs at the real pace."""
    return OffsetClock(start=start)


# The two mini-programs' appids in a test's settings, unless the test names its own.
TEST_APPIDS = {"wechat_appid": "wx-resident", "wechat_staff_appid": "wx-staff"}


def make_settings(**overrides: Any) -> Settings:
    """Sandbox settings for a test; MONGODB_URI in the environment selects a real MongoDB."""
    return Settings(env="sandbox", data_dir="", **{**TEST_APPIDS, **overrides})


def fresh_services(settings: Settings) -> Iterator[Services]:
    """Services on ``settings`` with an empty database and a clock the test can move, installed
    for the functions until the test is done: a fixture's body, as ``yield from``."""
    clock = fixed_clock()
    svc = build_services(settings, clock=clock, db=open_database(settings, clock))
    if os.environ.get("MONGODB_URI"):
        svc.db.client.drop_database(svc.db.name)
        from caiyun.catalog import ensure_indexes

        ensure_indexes(svc.db)
    install_services(svc)
    yield svc
    install_services(None)


@pytest.fixture
def services() -> Iterator[Services]:
    """Fresh services with an empty database and a clock the test can move."""
    yield from fresh_services(make_settings())


def invoke(
    function: str,
    event: dict[str, Any],
    openid: str | None = "o-test-openid",
    app: str = "resident",
) -> Any:
    """A CloudBase call, as ``wx.cloud.callFunction`` from a WeChat user with ``openid`` in the
    mini-program ``app`` (the platform names its appid, as the installed settings know it)."""
    if openid is not None:
        settings = current_services(open_database).settings
        appid = settings.wechat_staff_appid if app == "staff" else settings.wechat_appid
        event = {**event, "userInfo": {"openId": openid, "appId": appid}}
    return handler(function)(event, {"request_id": "test"})


def http(
    function: str, body: Any, token: str | None = None, raw: str | None = None
) -> tuple[int, Any]:
    """An API Gateway call ``POST /api/<function>``; returns (status, parsed envelope)."""
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    event = {
        "httpMethod": "POST",
        "path": f"/api/{function}",
        "headers": headers,
        "body": raw if raw is not None else json.dumps(body),
        "isBase64Encoded": False,
        "requestContext": {"sourceIp": "203.0.113.9", "requestId": "test"},
    }
    reply = handler(function)(event, {})
    return reply["statusCode"], json.loads(reply["body"])


@pytest.fixture
def unreachable_sms() -> Iterator[Services]:
    """Services whose SMS goes to Tencent Cloud at a local port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(
        sms_provider="tencent",
        sms_endpoint=f"127.0.0.1:{port}",
        sms_scheme="http",
        tencent_secret_id="AKIDtest",
        tencent_secret_key="test-secret-key",
        sms_sdk_app_id="1400000000",
        sms_sign_name="彩云居家",
        sms_template_code="100001",
    )
    clock = fixed_clock()
    svc = build_services(settings, clock=clock, db=open_database(settings, clock))
    install_services(svc)
    yield svc
    install_services(None)

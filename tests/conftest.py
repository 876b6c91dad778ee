"""Fixtures shared by every test: fresh services on the embedded engine, and ways to call."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from caiyun.clock import OffsetClock
from caiyun.sandbox.functions import handler
from caiyun.services import Services, build_services, install_services
from caiyun.settings import Settings

# The running-sandbox fixtures (`sandbox`, `data_dir`) for the journey tests.
pytest_plugins = ["sandbox_client"]


def make_settings(**overrides: Any) -> Settings:
    """Sandbox settings for a test; MONGODB_URI in the environment selects a real MongoDB."""
    return Settings(env="sandbox", data_dir="", **overrides)


@pytest.fixture
def services() -> Iterator[Services]:
    """Fresh services with an empty database and a clock the test can move."""
    settings = make_settings()
    svc = build_services(settings, clock=OffsetClock())
    if os.environ.get("MONGODB_URI"):
        svc.db.client.drop_database(svc.db.name)
        from caiyun.data.schema import ensure_indexes

        ensure_indexes(svc.db)
    install_services(svc)
    yield svc
    install_services(None)


def invoke(function: str, event: dict[str, Any], openid: str | None = "o-test-openid") -> Any:
    """A CloudBase call, as ``wx.cloud.callFunction`` from a WeChat user with ``openid``."""
    if openid is not None:
        event = {**event, "userInfo": {"openId": openid, "appId": "wx-resident"}}
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

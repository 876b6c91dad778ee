"""Talking to a running `caiyun dev` sandbox over HTTP, as a mini-program developer would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import TEST_START

from caiyun.sandbox.environment import SANDBOX_APPID, SANDBOX_STAFF_APPID
from caiyun.sandbox.server import SandboxServer, create_server

TIMEOUT_S = 10


class Running:
    """A sandbox server serving in a background thread."""

    def __init__(self, data_dir: Path) -> None:
        self.server: SandboxServer = create_server(
            "127.0.0.1", 0, data_dir, seed=True, clock_start=TEST_START
        )
        self.url = self.server.url
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        self.server.shutdown()
        self._thread.join(TIMEOUT_S)


def invoke(
    base: str, function: str, event: Any, openid: str | None = None, **headers: str
) -> tuple[int, Any]:
    """``POST /invoke/<function>``, as ``wx.cloud.callFunction`` from ``openid``."""
    if openid is not None:
        headers["X-WX-OpenID"] = openid
    reply = requests.post(
        f"{base}/invoke/{function}", json=event, headers=headers, timeout=TIMEOUT_S
    )
    return reply.status_code, reply.json()


def api(base: str, function: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    """``POST /api/<function>`` with an optional bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = requests.post(f"{base}/api/{function}", json=body, headers=headers, timeout=TIMEOUT_S)
    return reply.status_code, reply.json()


def latest_code(base: str, phone: str) -> str:
    """The newest verification code in the sandbox outbox for ``phone``."""
    reply = requests.get(f"{base}/dev/sms", params={"phone": phone}, timeout=TIMEOUT_S)
    assert reply.status_code == 200
    items = reply.json()["data"]["items"]
    assert items, f"no SMS for {phone}"
    return items[0]["code"]


def send_code(base: str, phone: str, openid: str | None = None) -> str:
    """Ask for a login code over /invoke and read it from the outbox."""
    status, body = invoke(base, "login", {"action": "send_code", "phone": phone}, openid)
    assert (status, body["ok"]) == (200, True), body
    return latest_code(base, phone)


def advance(base: str, seconds: Any) -> tuple[int, Any]:
    """``POST /dev/clock``."""
    reply = requests.post(f"{base}/dev/clock", json={"advance_seconds": seconds}, timeout=TIMEOUT_S)
    return reply.status_code, reply.json()


def appid_header(app: str) -> dict[str, str]:
    """The header that names the calling mini-program's appid on /invoke (as the platform's
    ``userInfo.appId``); without it the sandbox takes the resident app."""
    return {"X-WX-AppID": SANDBOX_STAFF_APPID if app == "staff" else SANDBOX_APPID}


def login_by_invoke(base: str, phone: str, openid: str, app: str = "resident") -> dict[str, Any]:
    """The whole login of the mini-program ``app`` over /invoke; returns the login data."""
    code = send_code(base, phone, openid)
    event = {"action": "login", "phone": phone, "code": code, "app": app}
    status, body = invoke(base, "login", event, openid, **appid_header(app))
    assert (status, body["ok"]) == (200, True), body
    return body["data"]


def login_by_api(base: str, phone: str, app: str | None = None) -> str:
    """The login over /api (to ``app``, if given); returns the session token."""
    status, body = api(base, "login", {"action": "send_code", "phone": phone})
    assert status == 200, body
    login = {"action": "login", "phone": phone, "code": latest_code(base, phone)}
    if app is not None:
        login["app"] = app
    status, body = api(base, "login", login)
    assert status == 200, body
    return body["data"]["session_token"]


@dataclass
class App:
    """One signed-in user of a mini-program: over /invoke by openid, or over /api by token."""

    base: str
    openid: str | None = None
    token: str | None = None
    appid: str = SANDBOX_APPID

    def call(self, function: str, action: str, **fields: Any) -> tuple[int, dict[str, Any]]:
        event = {"action": action, **fields}
        if self.token is not None:
            return api(self.base, function, event, self.token)
        return invoke(self.base, function, event, self.openid, **{"X-WX-AppID": self.appid})

    def ok(self, function: str, action: str, **fields: Any) -> dict[str, Any]:
        status, body = self.call(function, action, **fields)
        assert (status, body["ok"]) == (200, True), body
        return body["data"]

    def refused(self, function: str, action: str, **fields: Any) -> tuple[int, str]:
        status, body = self.call(function, action, **fields)
        assert body["ok"] is False, body
        return status, body["error"]["code"]


def resident(base: str, phone: str, openid: str) -> App:
    """The resident app, signed in through wx.cloud.callFunction."""
    login_by_invoke(base, phone, openid)
    return App(base, openid=openid)


def staff_by_invoke(base: str, phone: str, openid: str) -> App:
    """The staff app, signed in through wx.cloud.callFunction."""
    data = login_by_invoke(base, phone, openid, app="staff")
    assert data["account"]["staff"] is not None
    return App(base, openid=openid, appid=SANDBOX_STAFF_APPID)


def staff_by_api(base: str, phone: str) -> App:
    """The staff app over the HTTP path: a bearer token from a staff login."""
    return App(base, token=login_by_api(base, phone, app="staff"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh sandbox data directory."""
    return tmp_path / "sandbox-data"


@pytest.fixture
def sandbox(data_dir: Path) -> Iterator[Running]:
    """A seeded sandbox server on a free port."""
    running = Running(data_dir)
    yield running
    running.stop()

"""A fake WeChat server API on loopback, for the tests and for `caiyun dev`.

It speaks the request and reply shapes of the endpoints the back end uses
(``/sns/jscode2session``, ``/cgi-bin/stable_token``, ``/cgi-bin/message/subscribe/send``,
``/tcb/batchdownloadfile``), with WeChat's error codes, and lets a test steer it: fixed openids
for chosen login codes, limited consents, revoked tokens and one-off failures.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from caiyun.sandbox.loopback import LoopbackService

Reply = dict[str, Any]

_TOKEN_TTL_S = 7200
# tcb/batchdownloadfile: at most 50 files per call (wx.cloud.getTempFileURL's documented limit),
# a link valid at most a day.
_TCB_BATCH = 50
_TCB_MAX_AGE_S = 86400


def _error(errcode: int, errmsg: str) -> Reply:
    return {"errcode": errcode, "errmsg": f"{errmsg} rid: {secrets.token_hex(4)}"}


class FakeWeChat(LoopbackService):
    """A fake WeChat server API that knows the given ``appid -> secret`` pairs.

    State a test may read or set: ``sent`` (every accepted subscription message, with the
    ``appid`` that sent it), ``token_issues`` (how many tokens ``stable_token`` handed out),
    ``consents`` (``(touser, template_id) -> consents left``; a pair not listed is unlimited),
    ``cloud_envs`` (CloudBase environment id -> the appid it belongs to; files of other
    environments are refused), ``download_calls`` (the file lists asked for) and
    ``send_latency_s`` (how long each ``subscribe/send`` takes to answer, as WeChat's 50–200 ms
    do, so a bench can show what sending costs; calls in flight at once overlap).
    """

    thread_name = "fake-wechat"

    def __init__(self, apps: dict[str, str]) -> None:
        super().__init__()
        self.apps = dict(apps)
        self.sent: list[dict[str, Any]] = []
        self.token_issues = 0
        self.consents: dict[tuple[str, str], int] = {}
        self._codes: dict[str, tuple[str, str | None]] = {}
        self._used_codes: set[tuple[str, str]] = set()
        self._tokens: dict[str, str] = {}  # token -> appid
        self._failures: list[tuple[int, str | None]] = []
        self.cloud_envs: dict[str, str] = {}
        self.download_calls: list[list[str]] = []
        self.send_latency_s = 0.0
        self._lock = threading.Lock()

    # Steering, for tests and the sandbox.

    def register_code(self, js_code: str, openid: str, unionid: str | None = None) -> None:
        """Make ``js_code`` log in as ``openid`` instead of the openid derived from it."""
        with self._lock:
            self._codes[js_code] = (openid, unionid)

    def fail_next(self, errcode: int, endpoint: str | None = None) -> None:
        """Answer the next call with ``errcode``: of any endpoint, or of the one whose path ends
        with ``endpoint`` (``"jscode2session"``, ``"stable_token"``, ``"subscribe/send"``)."""
        with self._lock:
            self._failures.append((errcode, endpoint))

    def revoke_tokens(self) -> None:
        """Invalidate every access token issued so far."""
        with self._lock:
            self._tokens.clear()

    @staticmethod
    def openid_for(appid: str, js_code: str) -> str:
        """The openid an unregistered login code of this app logs in as."""
        return "o" + hashlib.sha256(f"{appid}:{js_code}".encode()).hexdigest()[:27]

    # Serving.

    # The endpoints.

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Reply | None:
        """One request's JSON reply, or ``None`` for an unknown endpoint."""
        routes = {
            ("GET", "/sns/jscode2session"): self._jscode2session,
            ("POST", "/cgi-bin/stable_token"): self._stable_token,
            ("POST", "/cgi-bin/message/subscribe/send"): self._subscribe_send,
            ("POST", "/tcb/batchdownloadfile"): self._batch_download,
        }
        endpoint = routes.get((method, path))
        if endpoint is None:
            return None
        if endpoint == self._subscribe_send and self.send_latency_s:
            time.sleep(self.send_latency_s)
        with self._lock:
            for i, (errcode, only) in enumerate(self._failures):
                if only is None or path.endswith(only):
                    del self._failures[i]
                    return _error(errcode, "injected failure")
            return endpoint(query, body)

    def _check_app(self, appid: Any, secret: Any) -> Reply | None:
        if appid not in self.apps:
            return _error(40013, "invalid appid")
        if secret != self.apps[appid]:
            return _error(40125, "invalid appsecret")
        return None

    def _jscode2session(self, query: dict[str, str], body: Any) -> Reply:
        appid, js_code = query.get("appid"), query.get("js_code", "")
        refusal = self._check_app(appid, query.get("secret"))
        if refusal is not None:
            return refusal
        assert appid is not None
        if query.get("grant_type") != "authorization_code":
            return _error(40002, "invalid grant_type")
        if not js_code:
            return _error(41008, "missing code")
        if js_code == "risky":
            return _error(40226, "high risk user")
        if (appid, js_code) in self._used_codes:
            return _error(40163, "code been used")
        self._used_codes.add((appid, js_code))
        openid, unionid = self._codes.get(js_code, (self.openid_for(appid, js_code), None))
        reply: Reply = {"openid": openid, "session_key": secrets.token_urlsafe(16)}
        if unionid is not None:
            reply["unionid"] = unionid
        return reply

    def _stable_token(self, query: dict[str, str], body: Any) -> Reply:
        if not isinstance(body, dict):
            return _error(47001, "data format error")
        refusal = self._check_app(body.get("appid"), body.get("secret"))
        if refusal is not None:
            return refusal
        if body.get("grant_type") != "client_credential":
            return _error(40002, "invalid grant_type")
        self.token_issues += 1
        token = f"fake-token-{self.token_issues}-{secrets.token_hex(8)}"
        self._tokens[token] = body["appid"]
        return {"access_token": token, "expires_in": _TOKEN_TTL_S}

    def _subscribe_send(self, query: dict[str, str], body: Any) -> Reply:
        appid = self._tokens.get(query.get("access_token", ""))
        if appid is None:
            return _error(40001, "invalid credential, access_token is invalid or not latest")
        if not isinstance(body, dict):
            return _error(47001, "data format error")
        touser, template_id, data = body.get("touser"), body.get("template_id"), body.get("data")
        well_formed = (
            isinstance(touser, str)
            and touser
            and isinstance(template_id, str)
            and template_id
            and isinstance(data, dict)
            and all(
                isinstance(item, dict) and isinstance(item.get("value"), str)
                for item in data.values()
            )
        )
        if not well_formed:
            return _error(47003, "argument invalid! data invalid")
        consent = (str(touser), str(template_id))
        left = self.consents.get(consent)
        if left is not None:
            if left <= 0:
                return _error(43101, "user refuse to accept the msg")
            self.consents[consent] = left - 1
        self.sent.append({"appid": appid, **body})
        return {"errcode": 0, "errmsg": "ok"}

    def _batch_download(self, query: dict[str, str], body: Any) -> Reply:
        appid = self._tokens.get(query.get("access_token", ""))
        if appid is None:
            return _error(40001, "invalid credential, access_token is invalid or not latest")
        if not isinstance(body, dict):
            return _error(47001, "data format error")
        env, files = body.get("env"), body.get("file_list")
        if not isinstance(env, str) or not isinstance(files, list) or not files:
            return _error(40101, "missing parameter")
        if self.cloud_envs.get(env) != appid:
            return _error(85088, "no cloud env for this app")
        if len(files) > _TCB_BATCH or not all(
            isinstance(f, dict)
            and isinstance(f.get("fileid"), str)
            and isinstance(f.get("max_age"), int)
            and 0 < f["max_age"] <= _TCB_MAX_AGE_S
            for f in files
        ):
            return _error(40097, "invalid parameter")
        self.download_calls.append([f["fileid"] for f in files])
        found = []
        for f in files:
            fileid = f["fileid"]
            env_part, _, path = fileid.removeprefix("cloud://").partition("/")
            if not fileid.startswith(f"cloud://{env}.") or not path:
                found.append(
                    {"fileid": fileid, "download_url": "", "status": -1, "errmsg": "file not exist"}
                )
                continue
            bucket = env_part.partition(".")[2]
            sign = secrets.token_hex(8)
            url = f"https://{bucket}.tcb.qcloud.la/{path}?sign={sign}&t={f['max_age']}"
            found.append({"fileid": fileid, "download_url": url, "status": 0, "errmsg": "ok"})
        return {"errcode": 0, "errmsg": "ok", "file_list": found}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(None)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        self._answer(body)

    def _answer(self, body: Any) -> None:
        fake = cast(FakeWeChat, self.server.fake)  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        reply = fake.handle(self.command, url.path, dict(parse_qsl(url.query)), body)
        payload = json.dumps(reply if reply is not None else {"errmsg": "not found"}).encode()
        self.send_response(200 if reply is not None else 404)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry secrets and codes in their query; keep them off the console.
        pass


FakeWeChat.handler_class = _Handler

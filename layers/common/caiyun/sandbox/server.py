"""`caiyun dev`: every cloud function served on localhost as the platform would call it.

Each route builds the event the platform would send (a CloudBase call, an API Gateway request,
an SCF timer) and hands it to the function's real ``main_handler``; the replies are relayed
unchanged. The ``/dev`` routes steer the sandbox (SMS outbox, clock, ICBC sandbox) and exist only
here: a production profile is refused before anything is served.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from caiyun.adapters.sms import sandbox_outbox
from caiyun.adapters.storage import CONTENT_TYPES, SandboxStorage
from caiyun.clock import iso
from caiyun.errors import ERROR_CODES, AppError, ErrorCode
from caiyun.logs import redact
from caiyun.runtime.events import MAX_BODY_BYTES, parse_http_json
from caiyun.sandbox import icbc as icbc_sandbox
from caiyun.sandbox.environment import (
    Sandbox,
    SandboxRefused,
    open_sandbox,
    production_environment,
)
from caiyun.sandbox.functions import function_names, handler
from caiyun.sandbox.seed import seed_demo
from caiyun.services import Services, install_services
from caiyun.settings import Settings

ICBC_FUNCTION = "icbc_callback"

# Larger over-limit bodies are not read at all; smaller ones are drained so the client sees the
# 413 instead of a connection reset in the middle of its upload.
_DRAIN_LIMIT_BYTES = 8 * MAX_BODY_BYTES
# A PUT to /files carries a whole file (an import of 100,000 bills is a few MB), as to COS.
_MAX_FILE_BYTES = 64 * 1024 * 1024
_PHONE = re.compile(r"1[3-9]\d{9}")
_FUNCTION_NAME = r"(?P<name>[A-Za-z0-9_-]{1,64})"
# Hop-by-hop headers are the server's own business, not part of a function's reply.
_HOP_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "keep-alive"})


@dataclass(frozen=True)
class Reply:
    """One HTTP answer of the sandbox server."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON answer."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Reply(
        status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    )


def error_reply(
    code: ErrorCode, message: str | None = None, status: int | None = None, **headers: str
) -> Reply:
    """A failure envelope; the HTTP status follows the code unless the transport dictates one."""
    error = AppError(code, message)
    return json_reply(status or error.status, error.to_envelope(), headers)


def envelope_status(reply: Any) -> int:
    """The contract's HTTP status for a function's envelope."""
    if isinstance(reply, dict) and reply.get("ok") is False:
        error = reply.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        return ERROR_CODES.get(str(code), ERROR_CODES["INTERNAL"])[0]
    return 200


@dataclass(frozen=True)
class Request:
    """What a route handler sees of one HTTP request."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    client_ip: str
    params: dict[str, str]

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (empty body = ``{}``), or INVALID_ARGUMENT."""
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise AppError("INVALID_ARGUMENT", "请求体不是有效的 JSON") from None
        return parse_http_json(text)


Route = Callable[["SandboxServer", Request], Reply]


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's listen backlog is 5: a burst of clients beyond that (a front end's page
    # load, a load test) had its connections reset before a thread could accept them.
    request_queue_size = 128
    sandbox_server: SandboxServer


class SandboxServer:
    """The running sandbox: an HTTP server in front of the functions and the sandbox services."""

    def __init__(self, sandbox: Sandbox, host: str, port: int, seeded: bool) -> None:
        self.sandbox = sandbox
        self.seeded = seeded
        self._serving = False
        self._closed = False
        self._httpd = _HttpServer((host, port), _Handler)
        self._httpd.sandbox_server = self

    @property
    def services(self) -> Services:
        """The services every function call in this process uses."""
        return self.sandbox.services

    @property
    def url(self) -> str:
        """The base URL the server listens on."""
        host, port = self._httpd.server_address[:2]
        assert isinstance(host, str)  # a TCP server, never a Unix socket
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve requests until :meth:`shutdown`."""
        self._serving = True
        # A short poll keeps shutdown quick; the tests start and stop several servers.
        self._httpd.serve_forever(poll_interval=0.1)

    def shutdown(self) -> None:
        """Stop serving, close the port and the database; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._serving:
            self._httpd.shutdown()
        self._httpd.server_close()
        install_services(None)
        self.sandbox.close()


def create_server(
    host: str,
    port: int,
    data_dir: str | Path,
    seed: bool,
    *,
    settings: Settings | None = None,
    clock_start: datetime | None = None,
) -> SandboxServer:
    """Open the sandbox on ``data_dir``, seed the demo data if asked, and bind ``host:port``.

    ``settings`` is a sandbox profile to start from (tests tune TTLs with it); a production
    profile raises SandboxRefused. ``clock_start`` starts a new data directory's clock at that
    moment. The services are installed for this process: every ``main_handler`` the server
    calls uses them.
    """
    if settings is None and production_environment():
        raise SandboxRefused("生产配置不能启动沙箱 / the sandbox refuses a production profile")
    sandbox = open_sandbox(data_dir, settings, clock_start=clock_start)
    try:
        seeded = False
        if seed:
            seeded = seed_demo(sandbox.services)
        server = SandboxServer(sandbox, host, port, seeded)
    except BaseException:
        sandbox.close()
        raise
    if isinstance(sandbox.services.storage, SandboxStorage):
        sandbox.services.storage.serve_at(server.url)
    install_services(sandbox.services)
    return server


# Routes.


def _function_or_404(name: str) -> Reply | None:
    if name not in function_names():
        return error_reply("NOT_FOUND", f"云函数 {name} 不存在")
    return None


def _context(request_id: str, name: str) -> dict[str, Any]:
    return {"request_id": request_id, "function_name": name}


def _invoke(server: SandboxServer, request: Request) -> Reply:
    name = request.params["name"]
    missing = _function_or_404(name)
    if missing is not None:
        return missing
    event = request.json_object()
    # Only the header plays the platform: a caller cannot claim an identity in the body.
    event.pop("userInfo", None)
    openid = request.headers.get("x-wx-openid")
    if openid:
        appid = request.headers.get("x-wx-appid") or server.services.settings.wechat_appid
        event["userInfo"] = {"openId": openid, "appId": appid}
    reply = handler(name)(event, _context(uuid.uuid4().hex, name))
    return json_reply(envelope_status(reply), reply)


def _gateway_event(request: Request) -> tuple[dict[str, Any], str]:
    """The API Gateway event for this request, and its request id."""
    request_id = uuid.uuid4().hex
    query = dict(parse_qsl(request.query, keep_blank_values=True))
    try:
        body, encoded = request.body.decode("utf-8"), False
    except UnicodeDecodeError:
        body, encoded = base64.b64encode(request.body).decode("ascii"), True
    event = {
        "httpMethod": request.method,
        "path": request.path,
        "headers": dict(request.headers),
        "body": body,
        "isBase64Encoded": encoded,
        "requestContext": {"sourceIp": request.client_ip, "requestId": request_id},
        "queryString": query,
        "queryStringParameters": dict(query),
        "pathParameters": {},
        "headerParameters": {},
    }
    return event, request_id


def _relay_gateway_reply(reply: Any) -> Reply:
    """Hand a function's ``{statusCode, headers, body}`` back to the HTTP caller unchanged."""
    if not isinstance(reply, dict) or not isinstance(reply.get("statusCode"), int):
        raise TypeError("the function did not answer the HTTP event with a gateway reply")
    body = reply.get("body") or ""
    if reply.get("isBase64Encoded"):
        raw = base64.b64decode(body)
    else:
        raw = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
    headers = reply.get("headers") or {}
    kept = {str(k): str(v) for k, v in headers.items() if str(k).lower() not in _HOP_HEADERS}
    return Reply(reply["statusCode"], raw, kept)


def _call_gateway(name: str, request: Request) -> Reply:
    event, request_id = _gateway_event(request)
    return _relay_gateway_reply(handler(name)(event, _context(request_id, name)))


def _api(server: SandboxServer, request: Request) -> Reply:
    name = request.params["name"]
    return _function_or_404(name) or _call_gateway(name, request)


def _icbc_notify(server: SandboxServer, request: Request) -> Reply:
    return _function_or_404(ICBC_FUNCTION) or _call_gateway(ICBC_FUNCTION, request)


def _timer(server: SandboxServer, request: Request) -> Reply:
    name = request.params["name"]
    missing = _function_or_404(name)
    if missing is not None:
        return missing
    now = server.services.clock.now()
    event = {
        "Type": "Timer",
        "TriggerName": f"{name}-timer",
        "Time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Message": "",
    }
    reply = handler(name)(event, _context(uuid.uuid4().hex, name))
    return json_reply(envelope_status(reply), reply)


def _sandbox_file(server: SandboxServer, request: Request) -> tuple[SandboxStorage, str]:
    """The storage and the file id a signed ``/files/<path>`` URL names, or FORBIDDEN."""
    storage = server.services.storage
    path = request.params["path"]
    query = dict(parse_qsl(request.query))
    if not isinstance(storage, SandboxStorage) or not storage.verify(
        request.method, path, query.get("expires", ""), query.get("signature", "")
    ):
        raise AppError("FORBIDDEN", "链接无效或已过期")
    return storage, SandboxStorage.PREFIX + path


def _get_file(server: SandboxServer, request: Request) -> Reply:
    storage, file_id = _sandbox_file(server, request)
    try:
        data = storage.read(file_id)
    except FileNotFoundError:
        return error_reply("NOT_FOUND", "文件不存在")
    content_type = CONTENT_TYPES.get(Path(file_id).suffix.lower(), "application/octet-stream")
    return Reply(200, data, {"Content-Type": content_type, "Cache-Control": "private, max-age=300"})


def _put_file(server: SandboxServer, request: Request) -> Reply:
    storage, file_id = _sandbox_file(server, request)
    storage.put(file_id, request.body)
    return Reply(200, b"", {})


def _dev_sms(server: SandboxServer, request: Request) -> Reply:
    phone = dict(parse_qsl(request.query)).get("phone", "")
    if not _PHONE.fullmatch(phone):
        raise AppError("INVALID_ARGUMENT", details={"fields": {"phone": "手机号格式不正确"}})
    items = sandbox_outbox(server.services.db, phone)
    return json_reply(200, {"ok": True, "data": {"items": items}})


def _dev_clock(server: SandboxServer, request: Request) -> Reply:
    server.sandbox.advance_clock(request.json_object().get("advance_seconds"))
    clock = server.sandbox.clock
    return json_reply(
        200, {"ok": True, "data": {"now": iso(clock.now()), "offset_s": clock.offset_s}}
    )


def _dev_icbc_complete(server: SandboxServer, request: Request) -> Reply:
    payload = request.json_object()
    order_no, result = payload.get("order_no"), payload.get("result")
    bad = {}
    if not isinstance(order_no, str) or not order_no:
        bad["order_no"] = "必填"
    if result not in ("success", "fail"):
        bad["result"] = "须为 success 或 fail"
    if bad:
        raise AppError("INVALID_ARGUMENT", details={"fields": bad})
    outcome: Literal["success", "fail"] = "success" if result == "success" else "fail"
    data = icbc_sandbox.complete(server.services, server.url, str(order_no), outcome)
    return json_reply(200, {"ok": True, "data": data if isinstance(data, dict) else {}})


CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
_CONSOLE_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
}


def _console(server: SandboxServer, request: Request) -> Reply:
    """The property office's console (caiyun/console): static files; it calls /api/<fn>."""
    name = request.params.get("file") or "index.html"
    path = CONSOLE_DIR / name
    if "/" in name or path.suffix not in _CONSOLE_TYPES or not path.is_file():
        return error_reply("NOT_FOUND", "页面不存在")
    return Reply(200, path.read_bytes(), {"Content-Type": _CONSOLE_TYPES[path.suffix]})


def _console_root(server: SandboxServer, request: Request) -> Reply:
    return Reply(301, b"", {"Location": "/console/"})


ROUTES: tuple[tuple[re.Pattern[str], str, Route], ...] = (
    (re.compile(rf"/invoke/{_FUNCTION_NAME}"), "POST", _invoke),
    (re.compile(rf"/api/{_FUNCTION_NAME}"), "POST", _api),
    (re.compile(r"/icbc/notify"), "POST", _icbc_notify),
    (re.compile(rf"/timer/{_FUNCTION_NAME}"), "POST", _timer),
    (re.compile(r"/dev/sms"), "GET", _dev_sms),
    (re.compile(r"/dev/clock"), "POST", _dev_clock),
    (re.compile(r"/dev/icbc/complete"), "POST", _dev_icbc_complete),
    (re.compile(r"/files/(?P<path>[^?#]{1,1024})"), "GET", _get_file),
    (re.compile(r"/files/(?P<path>[^?#]{1,1024})"), "PUT", _put_file),
    (re.compile(r"/console"), "GET", _console_root),
    (re.compile(r"/console/(?P<file>[A-Za-z0-9_.-]{0,64})"), "GET", _console),
)


def _match(path: str, method: str) -> tuple[str, Route, dict[str, str]] | None:
    """The route for ``path`` and ``method``; a path served for other methods only gives the
    first of those (answered 405)."""
    other = None
    for pattern, allowed, route in ROUTES:
        found = pattern.fullmatch(path)
        if found is not None and allowed == method:
            return allowed, route, found.groupdict()
        if found is not None and other is None:
            other = (allowed, route, found.groupdict())
    return other


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    server_version = "caiyun-sandbox"

    def do_GET(self) -> None:
        self._answer(self._serve())

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> Reply:
        try:
            url = urlsplit(self.path)
            matched = _match(unquote(url.path), self.command)
            if matched is None:
                return error_reply("NOT_FOUND", "接口不存在")
            method, route, params = matched
            if self.command != method:
                self._discard_body()
                return error_reply("INVALID_ARGUMENT", "请求方法不支持", 405, Allow=method)
            body = self._read_body()
            if isinstance(body, Reply):
                return body
            request = Request(
                method=self.command,
                path=url.path,
                query=url.query,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                client_ip=self.client_address[0],
                params=params,
            )
            return route(self.server.sandbox_server, request)
        except AppError as error:
            return json_reply(error.status, error.to_envelope())
        except Exception:
            # The developer sees the cause on the console; the caller never sees a stack trace.
            sys.stderr.write(redact(traceback.format_exc(limit=8)))
            return error_reply("INTERNAL")

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        try:
            length = int(raw)
        except ValueError:
            return None
        return length if length >= 0 else None

    def _read_body(self) -> bytes | Reply:
        length = self._content_length()
        if length is None:
            self.close_connection = True
            return error_reply("INVALID_ARGUMENT", "Content-Length 无效")
        if length > (_MAX_FILE_BYTES if self.command == "PUT" else MAX_BODY_BYTES):
            self._discard_body()
            return error_reply("INVALID_ARGUMENT", "请求体过大", 413)
        return self.rfile.read(length)

    def _discard_body(self) -> None:
        length = self._content_length()
        if length is None or length > _DRAIN_LIMIT_BYTES:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 64 * 1024))
            if not chunk:
                break
            length -= len(chunk)

    def _answer(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry phones in /dev/sms queries: mask them like every other log line.
        sys.stderr.write(f"[sandbox] {redact(format % args)}\n")

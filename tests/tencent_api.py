"""A local Tencent Cloud API 3.0 endpoint that checks TC3-HMAC-SHA256 signatures.

The real SDK clients (tencentcloud-sdk-python: SMS, SSM) are pointed at it over plain HTTP.
It verifies each request's signature from the published algorithm, independently of the SDK,
for the credentials it was given (and, for temporary credentials, the session token the SDK
must send as X-TC-Token), and refuses a bad one with AuthFailure as the real API does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Reply = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def tc3_signature(
    secret_key: str, headers: dict[str, str], signed: list[str], body: bytes, ts: str, scope: str
) -> str:
    """TC3-HMAC-SHA256, computed independently of the SDK from the published algorithm."""
    canonical_headers = "".join(f"{h}:{headers[h].strip().lower()}\n" for h in signed)
    canonical_request = "\n".join(
        ["POST", "/", "", canonical_headers, ";".join(signed), hashlib.sha256(body).hexdigest()]
    )
    string_to_sign = "\n".join(
        ["TC3-HMAC-SHA256", ts, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    date, service, _ = scope.split("/")
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


class TencentApiStub(ThreadingHTTPServer):
    """One service's API 3.0 endpoint: checks the signature, answers ``reply``.

    ``reply`` is the ``Response`` to send, or a function of the request record (with ``json``
    and ``headers``) that returns it.
    """

    daemon_threads = True

    def __init__(
        self, service: str, secret_id: str, secret_key: str, token: str | None = None
    ) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.service, self.secret_id, self.secret_key, self.token = (
            service,
            secret_id,
            secret_key,
            token,
        )
        self.requests: list[dict[str, Any]] = []
        self.reply: Reply = {}
        self.content_type = "application/json"

    @property
    def port(self) -> int:
        return self.server_address[1]

    def signature_valid(self, headers: dict[str, str], body: bytes) -> bool:
        """Whether the request is signed by this stub's credentials (and carries its token)."""
        auth = headers.get("authorization", "")
        algorithm, _, rest = auth.partition(" ")
        if algorithm != "TC3-HMAC-SHA256":
            return False
        if self.token is not None and headers.get("x-tc-token") != self.token:
            return False
        fields = dict(part.strip().split("=", 1) for part in rest.split(","))
        secret_id, date, service, terminator = fields["Credential"].split("/")
        ts = headers["x-tc-timestamp"]
        utc_date = datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%d")
        if (secret_id, date, service, terminator) != (
            self.secret_id,
            utc_date,
            self.service,
            "tc3_request",
        ):
            return False
        signed = fields["SignedHeaders"].split(";")
        scope = f"{date}/{self.service}/tc3_request"
        expected = tc3_signature(self.secret_key, headers, signed, body, ts, scope)
        return hmac.compare_digest(expected, fields["Signature"])


class _StubHandler(BaseHTTPRequestHandler):
    server: TencentApiStub

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {
            "path": self.path,
            "headers": headers,
            "json": json.loads(body),
            "signature_valid": self.server.signature_valid(headers, body),
        }
        self.server.requests.append(record)
        if record["signature_valid"]:
            reply = self.server.reply
            response = dict(reply(record) if callable(reply) else reply)
        else:
            error = {"Code": "AuthFailure.SignatureFailure", "Message": "signature mismatch"}
            response = {"Error": error}
        response["RequestId"] = f"req-{len(self.server.requests)}"
        out = json.dumps({"Response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def running_stub(
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    secret_id: str,
    secret_key: str,
    token: str | None = None,
) -> Iterator[TencentApiStub]:
    """A started stub (no proxy in the way), stopped on exit."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = TencentApiStub(service, secret_id, secret_key, token)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

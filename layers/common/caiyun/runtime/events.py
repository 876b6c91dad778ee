"""Recognising the shape of an event: CloudBase call, HTTP (API Gateway or function URL), timer."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from caiyun.errors import AppError

EventKind = Literal["cloudbase", "http", "timer"]

# An HTTP request body larger than this is refused before parsing (the platform bounds
# CloudBase payloads itself).
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Invocation:
    """What one call of a function is, whatever shape it arrived in."""

    kind: EventKind
    request_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    openid: str | None = None
    appid: str | None = None
    bearer: str | None = None
    source_ip: str | None = None
    path: str | None = None
    method: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: str = ""
    timer_name: str | None = None

    @property
    def action(self) -> Any:
        """The requested action name as sent (not yet validated)."""
        return self.payload.get("action")


def _context_dict(context: Any) -> dict[str, Any]:
    if isinstance(context, dict):
        return context
    return {}


def _platform_environment(context: dict[str, Any]) -> dict[str, Any]:
    # SCF hands the per-invocation environment as a JSON string; CloudBase puts the caller's
    # WX_OPENID/WX_APPID there. Reading it per call (not os.environ) keeps a warm container from
    # leaking one caller's identity into the next call.
    env = context.get("environment")
    if isinstance(env, str):
        try:
            env = json.loads(env)
        except ValueError:
            env = None
    if isinstance(env, dict):
        return env
    environ = context.get("environ")
    return _older_environ(environ) if isinstance(environ, str) else {}


def _older_environ(environ: str) -> dict[str, Any]:
    """Older CloudBase runtimes' ``context.environ``: ``k=v;k=v``, read as the CloudBase node
    SDK's ``parseContext`` reads it (TencentCloudBase/node-sdk, lib/cloudbase.js): split on
    ``;``, a key ends at the first ``=``, parts without ``=`` are skipped, and a value with a
    comma is a list (so it is no openid or appid here)."""
    parsed: dict[str, Any] = {}
    for part in environ.split(";"):
        key, equals, value = part.partition("=")
        if equals:
            parsed[key] = value.split(",") if "," in value else value
    return parsed


def _request_id(event: dict[str, Any], context: dict[str, Any]) -> str:
    for candidate in (
        context.get("request_id"),
        (event.get("requestContext") or {}).get("requestId")
        if isinstance(event.get("requestContext"), dict)
        else None,
    ):
        if isinstance(candidate, str) and 0 < len(candidate) <= 128:
            return candidate
    return uuid.uuid4().hex


def _lower_headers(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    return {str(k).lower(): str(v) for k, v in raw.items() if isinstance(v, str | int)}


def _http_body(event: dict[str, Any]) -> str:
    body = event.get("body") or ""
    if not isinstance(body, str):
        # Some gateways hand an already-parsed JSON body.
        return json.dumps(body, ensure_ascii=False)
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AppError("INVALID_ARGUMENT", "请求体编码无效") from exc
    return body


def _bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _has_caller(event: dict[str, Any], context: dict[str, Any]) -> bool:
    # A mini-program's callFunction data becomes the event, so it can claim {"Type": "Timer"}
    # too; only the platform's timer comes with no caller at all.
    user_info = event.get("userInfo")
    env = _platform_environment(context)
    return bool(
        env.get("WX_OPENID")
        or env.get("WX_FROM_OPENID")
        or (isinstance(user_info, dict) and user_info.get("openId"))
    )


def _platform_caller(env: dict[str, Any], user_info: dict[str, Any]) -> tuple[Any, Any]:
    # A mini-program calling an environment another mini-program of the company owns (资源复用,
    # how the staff app can share the resident app's functions) is named by WX_FROM_APPID and
    # WX_FROM_OPENID: getWXContext reports them as FROM_APPID/FROM_OPENID "跨账号调用时"
    # (wx-server-sdk 4.0.2 getWXContext strips the WX_ prefix of WX_CONTEXT_KEYS).
    if env.get("WX_FROM_APPID"):
        return env.get("WX_FROM_OPENID"), env["WX_FROM_APPID"]
    openid = env.get("WX_OPENID") or user_info.get("openId")
    return openid, env.get("WX_APPID") or user_info.get("appId")


def parse_http_json(raw_body: str) -> dict[str, Any]:
    """The JSON object an HTTP caller sent, or INVALID_ARGUMENT."""
    if len(raw_body.encode("utf-8")) > MAX_BODY_BYTES:
        raise AppError("INVALID_ARGUMENT", "请求体过大")
    if not raw_body.strip():
        return {}
    try:
        payload = json.loads(raw_body)
    except (ValueError, RecursionError):
        # RecursionError: a small body of a thousand nested brackets.
        raise AppError("INVALID_ARGUMENT", "请求体不是有效的 JSON") from None
    if not isinstance(payload, dict):
        raise AppError("INVALID_ARGUMENT", "请求体必须是 JSON 对象")
    return payload


def parse_event(event: Any, context: Any) -> Invocation:
    """Turn a platform event into an :class:`Invocation`.

    The body of an HTTP event is kept raw; the caller decides whether it is JSON (the API) or a
    form (the ICBC notify). A ``userInfo`` in an HTTP body is dropped later with the rest of the
    payload's reserved keys: over HTTP identity comes only from the bearer token.
    """
    ctx = _context_dict(context)
    if not isinstance(event, dict):
        raise AppError("INVALID_ARGUMENT", "事件格式无效")
    request_id = _request_id(event, ctx)

    if event.get("Type") == "Timer" and not _has_caller(event, ctx):
        name = event.get("TriggerName")
        return Invocation(
            kind="timer", request_id=request_id, timer_name=name if isinstance(name, str) else None
        )

    # The platform's caller wins: a mini-program's callFunction data could carry httpMethod too.
    if "httpMethod" in event and not _has_caller(event, ctx):
        headers = _lower_headers(event.get("headers"))
        request_context = event.get("requestContext")
        source_ip = None
        if isinstance(request_context, dict) and isinstance(request_context.get("sourceIp"), str):
            source_ip = request_context["sourceIp"]
        source_ip = source_ip or headers.get("x-scf-remote-addr")
        return Invocation(
            kind="http",
            request_id=request_id,
            bearer=_bearer(headers),
            source_ip=source_ip,
            path=event.get("path") if isinstance(event.get("path"), str) else None,
            method=str(event.get("httpMethod")).upper(),
            headers=headers,
            raw_body=_http_body(event),
        )

    env = _platform_environment(ctx)
    user_info = event.get("userInfo")
    user_info = user_info if isinstance(user_info, dict) else {}
    openid, appid = _platform_caller(env, user_info)
    payload = {k: v for k, v in event.items() if k not in ("userInfo", "tcbContext")}
    return Invocation(
        kind="cloudbase",
        request_id=request_id,
        payload=payload,
        openid=openid if isinstance(openid, str) and openid else None,
        appid=appid if isinstance(appid, str) and appid else None,
    )

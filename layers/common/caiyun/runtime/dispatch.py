"""A cloud function as a table of actions, and the handler that serves every event shape."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymongo.errors import ConnectionFailure

from caiyun.catalog import open_database
from caiyun.clock import iso
from caiyun.domain import accounts, sessions
from caiyun.domain.idempotency import Key
from caiyun.errors import AppError, ErrorCode, SettingsUnavailable
from caiyun.logs import log_call
from caiyun.runtime.events import Invocation, parse_event, parse_http_json
from caiyun.runtime.policies import Policy
from caiyun.services import Services, current_services
from caiyun.stores.accounts import STAFF_JOINED, Account
from caiyun.stores.staff import StaffRecord
from caiyun.validation import validate

if TYPE_CHECKING:
    from pydantic import BaseModel

    from caiyun.labels import App

_UNSET = object()
_NOT_CONFIGURED = "服务配置未完成，暂时无法使用，请联系物业"


class Call:
    """One call in progress: the services, the invocation and the caller behind it."""

    def __init__(self, services: Services, invocation: Invocation) -> None:
        self.services = services
        self.invocation = invocation
        # Extra fields for this call's log line (an HTTP handler's outcome, say).
        self.log_fields: dict[str, Any] = {}
        self._account: Any = _UNSET
        self._app: App | None = None

    def _resolve(self) -> None:
        # One lookup answers who the caller is, in which app, and whether they are staff there.
        inv = self.invocation
        app: App | None = None
        account: Account | None = None
        if inv.kind == "cloudbase" and inv.openid:
            app = accounts.app_for_appid(self.services.settings, inv.appid)
            account = accounts.caller_by_openid(self.services.db, app, inv.openid)
        elif inv.kind == "http" and inv.bearer:
            app, account = sessions.caller_for_token(self.services, inv.bearer)
        self._app, self._account = app, account

    @property
    def platform_app(self) -> App | None:
        """The mini-program the platform says this call comes from (CloudBase's appid), or None
        off the platform (HTTP, timer)."""
        if self.invocation.kind != "cloudbase":
            return None
        return accounts.app_for_appid(self.services.settings, self.invocation.appid)

    @property
    def app(self) -> App | None:
        """The mini-program the caller acts in: the platform's over CloudBase, the session's
        over HTTP; None for an anonymous caller."""
        if self._account is _UNSET:
            self._resolve()
        return self._app if self._account is not None else None

    def require_app(self) -> App:
        """The mini-program a signed-in caller acts in, or UNAUTHENTICATED."""
        app = self.app
        if app is None:
            raise AppError("UNAUTHENTICATED")
        return app

    @property
    def account(self) -> Account | None:
        """The caller's account document, resolved on first use (None when anonymous)."""
        if self._account is _UNSET:
            self._resolve()
        return self._account

    def require_account(self) -> Account:
        """The caller's account, or UNAUTHENTICATED."""
        account = self.account
        if account is None:
            raise AppError("UNAUTHENTICATED")
        return account

    @property
    def staff(self) -> StaffRecord | None:
        """The caller's staff record (role and communities), if the caller is staff in the app
        it calls from (the lookup joined it into the account)."""
        account = self.account
        return None if account is None else account.get(STAFF_JOINED)

    def require_staff(self, *roles: str) -> StaffRecord:
        """The caller's staff record if it has one of ``roles``; else FORBIDDEN (a staff member
        calling from the resident app has no staff record there)."""
        self.require_account()
        record = self.staff
        if record is None or record["role"] not in roles:
            raise AppError("FORBIDDEN")
        return record

    def wechat_user(self) -> tuple[App, str] | None:
        """The WeChat user making this call, as (mini-program, openid), when known: the openid
        the account holds for the app the call is made in (over CloudBase, the caller's own)."""
        account = self.require_account()
        app = self.app
        if app is None:
            return None
        openid = account.get("wx", {}).get(app)
        return (app, openid) if openid else None

    @property
    def known_account_id(self) -> str | None:
        """The caller's account id if it was resolved during this call (for the log line)."""
        if self._account is _UNSET or self._account is None:
            return None
        return self._account["_id"]

    @property
    def rate_key(self) -> str:
        """Who the caller is for per-caller rate limits: openid, else source address."""
        inv = self.invocation
        if inv.openid:
            return f"openid:{inv.openid}"
        if inv.source_ip:
            return f"ip:{inv.source_ip}"
        return "anonymous"


# A handler takes the call and its request, and the caller its policy checked when it names a
# third parameter (see Action).
Handler = Callable[..., "BaseModel | Mapping[str, Any] | None"]
HttpResponse = tuple[int, dict[str, str], str]


@dataclass(frozen=True)
class Action:
    """One row of a function's action table: who may call it (``allow``), its handler and the
    error codes it may answer beyond the common ones.

    The request and reply models are the handler's own annotations, read once when the row is
    made, as FastAPI reads a path operation's signature and Powertools' event handler its
    route's: the request is the type of the handler's second parameter, the reply its return
    type when that is a model (a handler returning a plain mapping has none). Declared once, in
    the handler; a function's table is built on its first dispatch, so reading them imports the
    contract module then, not at cold start. A handler with a third parameter is handed the
    caller ``allow`` checked (as FastAPI hands a dependency's result), so it never checks the
    role again.

    A create that is safe to retry declares it here, once: ``once`` names its idempotency scope
    (as Powertools' ``@idempotent`` names its key), its request carries ``request_id``, and its
    handler takes a parameter ``once``, handed the request's :class:`Key` (None when the app
    sent no ``request_id``); the domain claims the key where its rules allow (after the checks
    that refuse without spending the caller's daily limit).
    """

    allow: Policy
    run: Handler
    errors: tuple[ErrorCode, ...] = ()
    once: str | None = None
    request: type[BaseModel] = field(init=False)
    reply: type[BaseModel] | None = field(init=False)
    takes_caller: bool = field(init=False)

    def __post_init__(self) -> None:
        handler = _unwrapped(self.run)
        request, reply = _models_of(handler)
        object.__setattr__(self, "request", request)
        object.__setattr__(self, "reply", reply)
        params = [k for k in handler.__annotations__ if k != "return"]
        object.__setattr__(self, "takes_caller", len(params) >= 3 and params[2] != "once")
        name = handler.__qualname__
        if (self.once is not None) != ("once" in params):
            raise TypeError(f"{name}: an action declaring `once` takes `once`, and only then")
        if self.once is not None and "request_id" not in request.model_fields:
            raise TypeError(f"{name}: an idempotent action's request carries request_id")


def _unwrapped(handler: Handler) -> Handler:
    # A handler wrapped with functools.wraps (a timer, a tracer) keeps the signature of the one
    # it wraps; its annotations name models of that handler's module.
    while hasattr(handler, "__wrapped__"):
        handler = handler.__wrapped__
    return handler


def _models_of(handler: Handler) -> tuple[type[BaseModel], type[BaseModel] | None]:
    from pydantic import BaseModel

    # The annotations are strings (``from __future__ import annotations``): evaluated in the
    # handler's module, where ``api`` is its contract module.
    names = handler.__globals__
    annotations = handler.__annotations__
    params = [k for k in annotations if k != "return"]
    request = eval(annotations[params[1]], names) if len(params) > 1 else None
    if not (isinstance(request, type) and issubclass(request, BaseModel)):
        raise TypeError(f"{handler.__qualname__}: its second parameter is not a request model")
    try:
        reply = eval(annotations.get("return", "None"), names)
    except NameError:
        reply = None  # a plain mapping, annotated with names only the type checker sees
    is_model = isinstance(reply, type) and issubclass(reply, BaseModel)
    return request, reply if is_model else None


def _data(result: BaseModel | Mapping[str, Any] | None) -> Any:
    if result is None:
        return {}
    if isinstance(result, Mapping):
        return dict(result)
    return result.model_dump(mode="json")


def _http_reply(status: int, envelope: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json; charset=utf-8"},
        "body": json.dumps(envelope, ensure_ascii=False),
        "isBase64Encoded": False,
    }


class CloudFunction:
    """The ``main_handler`` of one cloud function, serving its action table.

    ``actions`` is the table, or a function returning it: a function's index builds its table
    in a function so that the contract models its rows name are imported on the first dispatch,
    not while the container starts. ``timer`` serves the SCF timer event; ``http`` takes over
    every HTTP event with a raw handler (the ICBC notify speaks forms, not the JSON API).
    """

    def __init__(
        self,
        name: str,
        actions: Mapping[str, Action] | Callable[[], Mapping[str, Action]],
        *,
        timer: Callable[[Call], Mapping[str, Any]] | None = None,
        http: Callable[[Call], HttpResponse] | None = None,
    ) -> None:
        self.name = name
        self._table = actions
        self._actions: dict[str, Action] | None = None
        self.timer = timer
        self.http = http

    @property
    def actions(self) -> dict[str, Action]:
        """The action table by action name, built on first use."""
        if self._actions is None:
            # Two threads racing here build equal tables; either may win.
            table = self._table
            self._actions = dict(table() if callable(table) else table)
        return self._actions

    def __call__(self, event: Any, context: Any = None) -> dict[str, Any]:
        started = time.perf_counter()
        log: dict[str, Any] = {"function": self.name}
        invocation: Invocation | None = None
        call: Call | None = None
        status = 200
        try:
            invocation = parse_event(event, context)
            log.update(request_id=invocation.request_id, via=invocation.kind)
            call = Call(current_services(open_database), invocation)
            if invocation.kind == "http" and self.http is not None:
                status, headers, body = self.http(call)
                log.update(call.log_fields, code="OK" if status < 400 else f"HTTP_{status}")
                return {
                    "statusCode": status,
                    "headers": headers,
                    "body": body,
                    "isBase64Encoded": False,
                }
            envelope = {"ok": True, "data": _data(self._dispatch(call, log))}
            log["code"] = "OK"
        except AppError as refusal:
            envelope, status = refusal.to_envelope(), refusal.status
            log["code"] = refusal.code
        except SettingsUnavailable as exc:
            # Deployed without its settings (or with refused ones): say so in the log, by name,
            # and answer like any other refusal, never with a bare platform 500.
            error = AppError("UNAVAILABLE", _NOT_CONFIGURED, details={"retryable": False})
            envelope, status = error.to_envelope(), error.status
            log.update(code="UNAVAILABLE", settings_problems=exc.problems)
        except ConnectionFailure as exc:
            # The database is failing over or out of reach: worth a retry, not a crash report.
            error = AppError("UNAVAILABLE", details={"retryable": True})
            envelope, status = error.to_envelope(), error.status
            log.update(code="UNAVAILABLE", exception=type(exc).__name__, error=str(exc))
        except Exception as exc:
            error = AppError("INTERNAL")
            envelope, status = error.to_envelope(), error.status
            log.update(
                code="INTERNAL",
                exception=type(exc).__name__,
                error=f"{exc}\n{traceback.format_exc(limit=8)}",
            )
        finally:
            if call is not None and call.known_account_id:
                log["account"] = call.known_account_id
            log.update(status=status, ms=round((time.perf_counter() - started) * 1000, 2))
            if call is not None:
                log["ts"] = iso(call.services.clock.now())
            log_call(log)
        if (invocation is not None and invocation.kind == "http") or (
            invocation is None and isinstance(event, dict) and "httpMethod" in event
        ):
            return _http_reply(status, envelope)
        return envelope

    def _dispatch(self, call: Call, log: dict[str, Any]) -> Any:
        invocation = call.invocation
        if invocation.kind == "timer":
            if self.timer is None:
                raise AppError("UNKNOWN_ACTION")
            log["action"] = "timer"
            return self.timer(call)
        if invocation.kind == "http":
            payload = parse_http_json(invocation.raw_body)
            payload.pop("userInfo", None)  # identity over HTTP comes only from the token
        else:
            payload = dict(invocation.payload)
        action_name = payload.pop("action", None)
        action = self.actions.get(action_name) if isinstance(action_name, str) else None
        if action is None:
            raise AppError("UNKNOWN_ACTION")
        log["action"] = action_name
        caller = action.allow(call)
        request = validate(action.request, payload)
        args = (call, request, caller) if action.takes_caller else (call, request)
        if action.once is None:
            return action.run(*args)
        request_id = getattr(request, "request_id", None)
        caller_id = call.require_account()["_id"]
        key = None if request_id is None else Key(action.once, caller_id, request_id)
        return action.run(*args, once=key)

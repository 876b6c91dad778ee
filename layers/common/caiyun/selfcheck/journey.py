"""The self-check's machinery: a journey calls the functions' handlers as the platform would,
one timed step at a time, and the report is the pass/fail table `caiyun selfcheck` prints."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Check:
    """One row of the table: what was checked, and the refusal or server error if it failed."""

    function: str
    step: str
    ok: bool = True
    detail: str = ""
    ms: float = 0.0


@dataclass
class Report:
    """Every check, and where they ran."""

    where: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(check.ok for check in self.checks)

    def table(self) -> str:
        """The pass/fail table the command prints."""
        width = max(len(f"{c.function}.{c.step}") for c in self.checks) if self.checks else 10
        lines = [f"自检 / self-check: {self.where}", ""]
        for check in self.checks:
            mark = "通过 PASS" if check.ok else "失败 FAIL"
            line = f"{mark}  {f'{check.function}.{check.step}':<{width}}  {check.ms:7.1f} ms"
            lines.append(line + (f"  {check.detail}" if check.detail else ""))
        failed = sum(not c.ok for c in self.checks)
        lines += ["", f"{len(self.checks) - failed} 通过 passed, {failed} 失败 failed"]
        return "\n".join(lines)


@dataclass(frozen=True)
class WeChatUser:
    """A WeChat user in one of the two mini-programs: the same person has another openid in
    each, and staff rights come only through the staff app."""

    openid: str
    app: str


class StepFailed(Exception):
    """A step's answer was not what the journey needs; the message says what came back."""


class _LastLogLine(logging.Handler):
    """Keeps the function's log line of the latest call: it names a server error."""

    def __init__(self) -> None:
        super().__init__()
        self.line: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.line = json.loads(record.getMessage())
        except ValueError:
            self.line = {}


class Journey:
    """Calls the functions' handlers as the platform would, recording one check per step."""

    def __init__(self, report: Report, services: Any) -> None:
        self.report, self.services = report, services
        self._log = _LastLogLine()

    @contextmanager
    def step(self, function: str, step: str) -> Iterator[None]:
        """Time one step; an exception fails it (the journey goes on with the next function)."""
        check = Check(function, step)
        started = time.perf_counter()
        try:
            yield
        except StepFailed as exc:
            check.ok, check.detail = False, str(exc)
        except Exception as exc:
            check.ok, check.detail = False, f"{type(exc).__name__}: {_first_line(exc)}"
        finally:
            check.ms = (time.perf_counter() - started) * 1000
            self.report.checks.append(check)
        if not check.ok:
            raise JourneyStopped

    def call(self, function: str, payload: dict[str, Any], who: WeChatUser | None = None) -> Any:
        """One call of a function as ``who``'s mini-program makes it (the platform names the
        app's appid, as the settings know it); the data of an ok answer."""
        from caiyun.sandbox.functions import handler

        event = dict(payload)
        if who is not None:
            settings = self.services.settings
            appid = settings.wechat_staff_appid if who.app == "staff" else settings.wechat_appid
            event["userInfo"] = {"openId": who.openid, "appId": appid}
        return self._answer(handler(function)(event, self._context(function)))

    def http(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        """One call through the function URL; the raw HTTP answer."""
        from caiyun.sandbox.functions import handler

        reply = handler(function)(event, self._context(function))
        if reply.get("statusCode") != 200:
            raise StepFailed(f"HTTP {reply.get('statusCode')}: {self._server_error()}")
        return reply

    def timer(self, function: str) -> Any:
        """One firing of a function's timer trigger, as SCF sends it; the data of its answer."""
        from caiyun.sandbox.functions import handler

        event = {"Type": "Timer", "TriggerName": "selfcheck", "Time": "", "Message": ""}
        return self._answer(handler(function)(event, self._context(function)))

    def _context(self, function: str) -> dict[str, Any]:
        return {"request_id": uuid.uuid4().hex, "function_name": function}

    def _answer(self, envelope: Any) -> Any:
        if isinstance(envelope, dict) and envelope.get("ok") is True:
            return envelope["data"]
        error = envelope.get("error", {}) if isinstance(envelope, dict) else {}
        raise StepFailed(f"{error.get('code')}: {error.get('message')} {self._server_error()}")

    def _server_error(self) -> str:
        # The function's own log line names the exception (a database command's error, say).
        line = self._log.line
        if not line.get("error"):
            return ""
        return f"[{line.get('exception')}: {str(line['error']).splitlines()[0][:300]}]"

    @contextmanager
    def listening(self) -> Iterator[None]:
        """Collect the functions' log lines while the journey runs, instead of printing them:
        the table is the output."""
        from caiyun import logs

        # Let the runtime add its stdout handler now, so that it is set aside below.
        logs._ensure_handler()
        logger = logging.getLogger("caiyun")
        kept = logger.handlers[:]
        logger.handlers = [self._log]
        try:
            yield
        finally:
            logger.handlers = kept


class JourneyStopped(Exception):
    """The rest of this function's journey depends on the step that failed."""


def _first_line(exc: BaseException) -> str:
    from caiyun.logs import redact

    details = getattr(exc, "details", None)
    if isinstance(details, dict) and details.get("errmsg"):
        return redact(f"{details.get('codeName') or details.get('code')}: {details['errmsg']}")
    text = str(exc).splitlines()[0] if str(exc) else ""
    return redact(text.split(", full error:", 1)[0])[:300]

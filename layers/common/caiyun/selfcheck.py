"""`caiyun selfcheck`: every function's read and write path, once, on a real database.

Run after the first deploy against the production MongoDB (``MONGODB_URI``), or on the embedded
engine in a ``--data-dir``. It works in a throwaway database it creates and drops
(``caiyun_selfcheck_<random>``; on the embedded engine a fresh folder inside the data
directory), so nothing of the real data is read or changed: it ensures the indexes, loads the
demo data set, then walks a short journey per function through the real ``main_handler`` of
each, as the mini-programs and the timer call them, with the sandbox's fake WeChat, SMS and
ICBC. What runs on the database is therefore exactly what production runs: aggregation
stages, pipeline updates, partial unique indexes.

Asked with ``--live``, it also calls the real outside services with the deploy's own settings:
``sms`` texts a code to ``--phone``, ``wechat`` fetches each mini-program's access token,
``icbc`` queries an order that does not exist and checks ICBC's signed answer.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

LIVE_SERVICES = ("sms", "wechat", "icbc")
_OWNER = "13800000001"  # 张伟 in the demo data: bound to a house in each community
_ADMIN, _REPAIRMAN, _GUARD = "13900000001", "13900000003", "13900000004"
# 张伟's real-name details for the local bank: an ID number with its GB 11643 check digit and
# an ICBC Class I card (6222…) with its Luhn digit.
_OWNER_NAME, _OWNER_ID, _OWNER_CARD = "张伟", "440305199001010130", "622202000012345994"
_BANK_PHONE = "13700000098"


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


def _sms_code(services: Any, phone: str) -> str:
    from caiyun.adapters.sms import sandbox_outbox

    sent = sandbox_outbox(services.db, phone, limit=1)
    if not sent or not sent[0]["code"]:
        raise StepFailed("no code reached the sandbox outbox")
    return str(sent[0]["code"])


def _sign_in(journey: Journey, phone: str, who: WeChatUser) -> None:
    journey.call("login", {"action": "send_code", "phone": phone, "purpose": "login"}, who)
    code = _sms_code(journey.services, phone)
    event = {"action": "login", "phone": phone, "code": code, "app": who.app}
    journey.call("login", event, who)


def _run(steps: Callable[[], None]) -> None:
    # A failed step ends its function's journey; the next function's starts afresh.
    with suppress(JourneyStopped):
        steps()


def walk(journey: Journey) -> None:
    """Every function's journey on the demo data set, in an order the later ones build on."""
    services = journey.services
    owner = WeChatUser("o-sc-owner", "resident")
    admin = WeChatUser("o-sc-admin", "staff")
    repairman = WeChatUser("o-sc-repair", "staff")
    guard = WeChatUser("o-sc-guard", "staff")
    state: dict[str, Any] = {}
    j = journey

    def login() -> None:
        with j.step("login", "check_account"):
            if not j.call("login", {"action": "check_account", "phone": _OWNER}, owner)["exists"]:
                raise StepFailed("the demo owner is missing")
        with j.step("login", "send_code + login"):
            _sign_in(j, _OWNER, owner)
        with j.step("login", "staff sign-in"):
            for phone, who in ((_ADMIN, admin), (_REPAIRMAN, repairman), (_GUARD, guard)):
                _sign_in(j, phone, who)
        with j.step("login", "me"):
            j.call("login", {"action": "me"}, owner)

    def account() -> None:
        with j.step("account", "profile"):
            j.call("account", {"action": "profile"}, owner)
        with j.step("account", "update_profile"):
            j.call("account", {"action": "update_profile", "nickname": "自检"}, owner)
        with j.step("account", "realname_start + realname_confirm (ICBC card)"):
            start = {
                "action": "realname_start",
                "method": "card",
                "name": _OWNER_NAME,
                "id_number": _OWNER_ID,
                "card_no": _OWNER_CARD,
                "bank_phone": _BANK_PHONE,
                "occupation": 3,
                "id_valid_until": "long_term",
            }
            ticket = j.call("account", start, owner)["ticket"]
            confirm = {
                "action": "realname_confirm",
                "ticket": ticket,
                "sms_code": _sms_code(services, _BANK_PHONE),
                "agreements": ["wallet_service", "privacy"],
                "autodebit": False,
            }
            j.call("account", confirm, owner)
        with j.step("account", "wallet"):
            j.call("account", {"action": "wallet"}, owner)

    def bind_house() -> None:
        from caiyun.sandbox.seed import CAIYUN_GARDEN

        with j.step("bind_house", "communities + house_tree"):
            items = j.call("bind_house", {"action": "communities"}, owner)["items"]
            garden = next(c for c in items if c["name"] == CAIYUN_GARDEN)
            state["community_id"] = garden["community_id"]
            tree = {"action": "house_tree", "community_id": garden["community_id"]}
            j.call("bind_house", tree, owner)
        with j.step("bind_house", "my_houses + members"):
            houses = j.call("bind_house", {"action": "my_houses"}, owner)["items"]
            mine = next(h for h in houses if h["community_id"] == state["community_id"])
            state["house_id"] = mine["house_id"]
            j.call("bind_house", {"action": "members", "house_id": mine["house_id"]}, owner)

    def bills() -> None:
        with j.step("bills", "list"):
            listed = j.call("bills", {"action": "list", "status": "unpaid"}, owner)["items"]
            state["bill_id"] = listed[0]["bill_id"]
        with j.step("bills", "staff_summary + staff_list"):
            summary = {"action": "staff_summary", "community_id": state["community_id"]}
            j.call("bills", summary, admin)
            unpaid = {
                "action": "staff_list",
                "community_id": state["community_id"],
                "status": "unpaid",
            }
            j.call("bills", unpaid, admin)
        with j.step("bills", "pay (WeChat Pay through ICBC)"):
            paying = {"action": "pay", "bill_ids": [state["bill_id"]], "method": "wechat"}
            state["order_no"] = j.call("bills", paying, owner)["order_no"]

    def icbc_callback() -> None:
        from caiyun.sandbox.icbc import running_fake

        with j.step("icbc_callback", "signed notify through the function URL"):
            fake = running_fake(services.icbc.settings.icbc_gateway)
            if fake is None:
                raise StepFailed("the local ICBC is not running in this process")
            url = services.settings.icbc_notify_url
            form = fake.notify_form(fake.settle(state["order_no"], "success"), url)
            j.http(
                "icbc_callback",
                {
                    "httpMethod": "POST",
                    "path": urlsplit(url).path or "/",
                    "headers": {"content-type": "application/x-www-form-urlencoded"},
                    "body": urlencode(form),
                },
            )
        with j.step("bills", "order is paid"):
            order = j.call("bills", {"action": "order", "order_no": state["order_no"]}, owner)
            if order["status"] != "paid":
                raise StepFailed(f"order is {order['status']}")

    def repair() -> None:
        with j.step("repair", "categories + upload_url + create"):
            category = j.call("repair", {"action": "categories"}, owner)["items"][0]
            target = {"action": "upload_url", "purpose": "report", "filename": "a.jpg"}
            image = j.call("repair", target, owner)["file_id"]
            created = j.call(
                "repair",
                {
                    "action": "create",
                    "house_id": state["house_id"],
                    "category": category["code"],
                    "description": "自检：厨房水龙头漏水",
                    "contact_phone": _OWNER,
                    "images": [image],
                },
                owner,
            )
            state["repair_id"] = created["repair_id"]
        with j.step("repair", "staff_list + repairmen + dispatch"):
            j.call("repair", {"action": "staff_list", "status": "pending"}, admin)
            picker = {"action": "repairmen", "community_id": state["community_id"]}
            men = j.call("repair", picker, admin)["items"]
            man = next(m for m in men if m["phone"].endswith(_REPAIRMAN[-4:]))
            dispatch = {
                "action": "dispatch",
                "repair_id": state["repair_id"],
                "repairman_id": man["account_id"],
            }
            j.call("repair", dispatch, admin)
        with j.step("repair", "assigned + complete + rate"):
            j.call("repair", {"action": "assigned"}, repairman)
            photo_target = {"action": "upload_url", "purpose": "completion", "filename": "b.jpg"}
            photo = j.call("repair", photo_target, repairman)["file_id"]
            done = {"action": "complete", "repair_id": state["repair_id"], "photos": [photo]}
            j.call("repair", done, repairman)
            rate = {"action": "rate", "repair_id": state["repair_id"], "stars": 5, "comment": "好"}
            j.call("repair", rate, owner)
        with j.step("repair", "my_list + detail"):
            j.call("repair", {"action": "my_list"}, owner)
            j.call("repair", {"action": "detail", "repair_id": state["repair_id"]}, owner)

    def complaint() -> None:
        with j.step("complaint", "types + create"):
            kind = j.call("complaint", {"action": "types"}, owner)["items"][0]["code"]
            filed = j.call(
                "complaint",
                {
                    "action": "create",
                    "house_id": state["house_id"],
                    "kind": "complaint",
                    "type": kind,
                    "contact_phone": _OWNER,
                    "content": "自检：楼道灯不亮",
                    "images": [],
                },
                owner,
            )
            state["complaint_id"] = filed["complaint_id"]
        with j.step("complaint", "staff_list + reply + detail"):
            j.call("complaint", {"action": "staff_list", "status": "submitted"}, admin)
            answer = {
                "action": "reply",
                "complaint_id": state["complaint_id"],
                "reply": "已处理",
                "status": "resolved",
            }
            j.call("complaint", answer, admin)
            j.call("complaint", {"action": "detail", "complaint_id": state["complaint_id"]}, owner)

    def visitor() -> None:
        with j.step("visitor", "register + pass"):
            issued = j.call(
                "visitor",
                {
                    "action": "register",
                    "house_id": state["house_id"],
                    "name": "王小明",
                    "phone": "13600000000",
                    "count": 1,
                },
                owner,
            )
            state["pass_token"] = issued["pass_token"]
            j.call("visitor", {"action": "pass", "token": issued["pass_token"]})
        with j.step("visitor", "verify + history"):
            j.call("visitor", {"action": "verify", "token": state["pass_token"]}, guard)
            j.call("visitor", {"action": "history"}, owner)

    def notify() -> None:
        with j.step("notify", "publish_notice + notices + notice_detail"):
            notice = {
                "action": "publish_notice",
                "community_id": state["community_id"],
                "title": "自检通知",
                "content": "这是一条自检通知。",
            }
            published = j.call("notify", notice, admin)
            j.call("notify", {"action": "notices"}, owner)
            detail = {"action": "notice_detail", "notice_id": published["notice_id"]}
            j.call("notify", detail, owner)
        with j.step("notify", "remind_unpaid + messages + mark_read"):
            remind = {"action": "remind_unpaid", "community_id": state["community_id"]}
            j.call("notify", remind, admin)
            j.call("notify", {"action": "messages"}, owner)
            j.call("notify", {"action": "mark_read"}, owner)

    def admin_function() -> None:
        with j.step("admin", "list_staff + add_staff"):
            j.call("admin", {"action": "list_staff"}, admin)
            staff = {
                "action": "add_staff",
                "phone": "13700000099",
                "name": "自检门岗",
                "role": "guard",
                "community_ids": [state["community_id"]],
            }
            j.call("admin", staff, admin)
        with j.step("admin", "import_bills"):
            houses = j.call("bind_house", {"action": "my_houses"}, owner)["items"]
            mine = next(h for h in houses if h["house_id"] == state["house_id"])
            building, unit, room = mine["label"].split("-")
            row = {
                "building": building,
                "unit": unit,
                "room": room,
                "period": "2099-01",
                "item": "自检费",
                "amount_fen": 100,
                "due_date": "2099-01-31",
            }
            imported = {
                "action": "import_bills",
                "community_id": state["community_id"],
                "rows": [row],
            }
            report = j.call("admin", imported, admin)
            if any(r.get("status") == "error" for r in report.get("rows", [])):
                raise StepFailed(f"import refused the row: {report['rows']}")

    def scheduler() -> None:
        from caiyun.sandbox.functions import handler

        with j.step("scheduler", "timer"):
            event = {"Type": "Timer", "TriggerName": "selfcheck", "Time": "", "Message": ""}
            j._answer(handler("scheduler")(event, j._context("scheduler")))

    for steps in (
        login,
        account,
        bind_house,
        bills,
        icbc_callback,
        repair,
        complaint,
        visitor,
        notify,
        admin_function,
        scheduler,
    ):
        _run(steps)


def live_checks(report: Report, services: Any, live: set[str], phone: str | None) -> None:
    """The real outside services, called with the deploy's own settings."""
    journey = Journey(report, services)
    if "sms" in live:
        with _kept(journey.step("live", f"sms: a code texted to {phone}")):
            if not phone:
                raise StepFailed("--phone is required with --live sms")
            services.sms.send(phone, "code", ["000000", "5"])
    if "wechat" in live:
        for app in ("resident", "staff"):
            with _kept(journey.step("live", f"wechat: {app} access token")):
                services.wechat.access_token(app)
    if "icbc" in live:
        with _kept(journey.step("live", "icbc: signed answer to an order query")):
            services.icbc.query_payment("SELFCHECK" + uuid.uuid4().hex[:12].upper())


@contextmanager
def _kept(step: Any) -> Iterator[None]:
    # A failed live check does not stop the others.
    try:
        with step:
            yield
    except JourneyStopped:
        pass


def check_database(db: Any, services_for: Callable[[Any], Any], where: str) -> Report:
    """Indexes, demo data and every journey on ``db`` (a fresh, empty database)."""
    from caiyun.catalog import ensure_indexes
    from caiyun.sandbox.seed import seed_demo
    from caiyun.services import install_services

    report = Report(where)
    journey = Journey(report, None)
    try:
        with journey.step("database", "ensure_indexes"):
            ensure_indexes(db)
        services = services_for(db)
        journey.services = services
        with journey.step("database", "demo data (owners, houses, bills, staff)"):
            seed_demo(services)
    except JourneyStopped:
        return report
    install_services(services)
    try:
        with journey.listening():
            walk(journey)
    finally:
        install_services(None)
    return report


def throwaway_name() -> str:
    """A database name no deployment uses."""
    return f"caiyun_selfcheck_{uuid.uuid4().hex[:12]}"


def embedded_scratch(data_dir: Path) -> Path:
    """A fresh folder for the throwaway embedded database inside ``data_dir``."""
    scratch = data_dir / throwaway_name()
    scratch.mkdir(parents=True)
    return scratch


def drop_embedded(scratch: Path) -> None:
    """Remove the throwaway embedded database."""
    shutil.rmtree(scratch, ignore_errors=True)

"""The self-check's journeys: one short journey per function on the demo data set, through the
real ``main_handler`` of each, in an order the later ones build on (a bill is paid before the
ICBC notify settles it, a repair is filed before it is dispatched)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any
from urllib.parse import urlencode, urlsplit

from caiyun.selfcheck.journey import Journey, JourneyStopped, StepFailed, WeChatUser

_OWNER = "13800000001"  # 张伟 in the demo data: bound to a house in each community
_ADMIN, _REPAIRMAN, _GUARD = "13900000001", "13900000003", "13900000004"
# 张伟's real-name details for the local bank: an ID number with its GB 11643 check digit and
# an ICBC Class I card (6222…) with its Luhn digit.
_OWNER_NAME, _OWNER_ID, _OWNER_CARD = "张伟", "440305199001010130", "622202000012345994"
_BANK_PHONE = "13700000098"


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
        with j.step("scheduler", "timer"):
            j.timer("scheduler")

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

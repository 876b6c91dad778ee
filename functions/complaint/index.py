"""complaint: residents file complaints and suggestions (投诉建议); admins answer and resolve them.

A complaint goes ``submitted`` 已提交 → ``processing`` 处理中 → ``resolved`` 已解决 and never
back; each reply may move it forward (``submitted`` straight to ``resolved`` is allowed), and a
resolved one takes no more replies (``CONFLICT``), as does one that already has 50. Every reply is
kept with the staff member's name and time and shown to the resident, who is told in the inbox
and, with a consent for the ``complaint`` template, on WeChat.

``images`` are file ids of this deployment's storage, uploaded first. ``my_list`` and
``detail`` are for the reporter, and for the owner of the complaint's house (``mine`` false:
filed by family or a tenant, shown read-only with the contact phone masked); ``detail`` is also
for the admins of the complaint's community; to anyone else a complaint does not exist
(``NOT_FOUND``). ``staff_list`` masks the contact phone; ``detail`` shows it to the admin in full
so they can call back. Lists are newest first, with ``counts`` by status for the tabs;
``staff_list`` narrows by ``kind`` (投诉/建议) and ``type`` too. A new complaint or suggestion is
told to the admins of its community (inbox, and the staff app's ``complaint_filed`` subscription
message where they consented).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caiyun.domain import complaints
from caiyun.runtime import (
    Account,
    Action,
    Call,
    CloudFunction,
    Key,
    StaffRecord,
    admin_only,
    lazy_import,
    page_reply,
    signed_in,
)

# The type checker reads the modules themselves; at run time they load on first use.
if TYPE_CHECKING:
    from caiyun.contract import common
    from caiyun.contract import complaint as api
else:
    api = lazy_import("caiyun.contract.complaint")
    common = lazy_import("caiyun.contract.common")


def types(call: Call, req: common.Empty) -> api.TypesReply:
    return api.TypesReply.model_validate({"items": complaints.types(call.services)})


def create(call: Call, req: api.Create, account: Account, once: Key | None) -> api.Detail:
    filed = complaints.create(
        call.services,
        account,
        req.model_dump(exclude={"request_id"}),
        once,
    )
    return api.Detail.model_validate(filed)


def my_list(call: Call, req: api.MyList, account: Account) -> api.MyPage:
    items, total, counts = complaints.my_list(
        call.services, account, req.status, req.page, req.page_size
    )
    return page_reply(api.MyPage, req, items, total, counts=counts)


def detail(call: Call, req: api.DetailRequest, account: Account) -> api.Detail:
    found = complaints.detail(call.services, account, req.complaint_id)
    return api.Detail.model_validate(found)


def staff_list(call: Call, req: api.StaffList, staff: StaffRecord) -> api.Page:
    items, total, counts = complaints.staff_list(
        call.services,
        staff,
        req.community_id,
        req.model_dump(include={"status", "kind", "type"}),
        req.page,
        req.page_size,
    )
    return page_reply(api.Page, req, items, total, counts=counts)


def reply(call: Call, req: api.ReplyRequest, staff: StaffRecord) -> api.Detail:
    answered = complaints.reply(
        call.services, staff, complaint_id=req.complaint_id, text=req.reply, status=req.status
    )
    return api.Detail.model_validate(answered)


def actions() -> dict[str, Action]:
    return {
        "types": Action(signed_in, types),
        "create": Action(
            signed_in,
            create,
            ("HOUSE_NOT_BOUND", "FORBIDDEN", "NOT_FOUND", "CONFLICT", "RATE_LIMITED"),
            once="complaint.create",
        ),
        "my_list": Action(signed_in, my_list),
        "detail": Action(signed_in, detail, ("NOT_FOUND",)),
        "staff_list": Action(admin_only, staff_list, ("FORBIDDEN",)),
        "reply": Action(admin_only, reply, ("NOT_FOUND", "FORBIDDEN", "CONFLICT")),
    }


main_handler = CloudFunction("complaint", actions)

"""visitor: residents register visitors and share a pass; guards verify it at the gate.

``pass_token`` is opaque and signed: it cannot be forged or altered. A pass admits the whole
party once, from registration until the end of its ``visit_date`` (Asia/Shanghai; today by
default, at most 7 days ahead): the first ``verify`` by a guard or admin of the pass's community
answers ``valid`` and records the entry (who, when) and tells the host; later scans answer
``used``, so a forwarded screenshot cannot admit a second party. A pass past its day answers
``expired`` and a forged or altered one ``forged`` (``visitor`` is then null). Staff of another
community get ``FORBIDDEN`` and nothing is recorded.

``pass`` is for anyone holding the token (no sign-in needed): it shows the visit, the community
and the house label, the plate partly masked, and nothing about the host; a forged token is
``NOT_FOUND``. ``share_path`` is the page to share, with the token in its query.

``history`` (访客记录) lists the caller's registrations with the visitor's name, phone, party
size, plate and registration time, the phone and plate in full as the caller typed them, and,
to the owner of a house, every visit to it (``mine`` false: registered by family or a tenant;
phone and plate masked). ``detail`` shows one of them, and to the person who registered it the
pass again while it is valid (``pass_token``, ``qr_png_base64``, ``share_path``) so it can be
shared once more. At most 50 registrations per account per day.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caiyun.domain import visitors
from caiyun.runtime import (
    Account,
    Action,
    Call,
    CloudFunction,
    Key,
    StaffRecord,
    anyone,
    lazy_import,
    page_reply,
    signed_in,
    staff_role,
)

# The type checker reads the modules themselves; at run time they load on first use.
if TYPE_CHECKING:
    from caiyun.contract import visitor as api
else:
    api = lazy_import("caiyun.contract.visitor")


def register(
    call: Call, req: api.Register, account: Account, once: Key | None
) -> api.RegisterReply:
    issued = visitors.register(
        call.services,
        account,
        req.house_id,
        req.model_dump(include={"name", "phone", "count", "plate"}),
        req.visit_date,
        once,
    )
    return api.RegisterReply.model_validate(issued)


def show_pass(call: Call, req: api.PassRequest) -> api.PassView:
    return api.PassView.model_validate(visitors.pass_view(call.services, req.token))


def verify(call: Call, req: api.PassRequest, staff: StaffRecord) -> api.VerifyReply:
    checked = visitors.verify(call.services, staff, req.token)
    return api.VerifyReply.model_validate(checked)


def history(call: Call, req: api.History, account: Account) -> api.HistoryPage:
    items, total = visitors.history(call.services, account, req.page, req.page_size)
    return page_reply(api.HistoryPage, req, items, total)


def detail(call: Call, req: api.VisitorRef, account: Account) -> api.VisitorDetail:
    found = visitors.detail(call.services, account, req.visitor_id)
    return api.VisitorDetail.model_validate(found)


def actions() -> dict[str, Action]:
    return {
        "register": Action(
            signed_in,
            register,
            ("HOUSE_NOT_BOUND", "FORBIDDEN", "NOT_FOUND", "RATE_LIMITED", "CONFLICT"),
            once="visitor.register",
        ),
        "pass": Action(anyone, show_pass, ("NOT_FOUND",)),
        "verify": Action(staff_role("guard", "admin"), verify, ("FORBIDDEN",)),
        "history": Action(signed_in, history),
        "detail": Action(signed_in, detail, ("NOT_FOUND",)),
    }


main_handler = CloudFunction("visitor", actions)

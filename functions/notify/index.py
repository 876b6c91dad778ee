"""notify: community notices, the in-app inbox and WeChat subscription consents.

``notices`` returns one group per community where the caller holds a house, each with a page
of its notices (newest first: title, publish time, ``read``), its ``total`` and its ``unread``
count; ``community_id`` narrows it to one community, and ``page`` pages through every notice of
it. ``notice_detail`` is for residents and staff of the notice's community, and marks the notice
read for the caller; to anyone else it does not exist (``NOT_FOUND``). ``publish_notice`` also
puts a message in the inbox of every account bound to a house of the community (once per
account).

``remind_unpaid`` sends 催交通知 for each unpaid house to everyone who may pay it (owner,
family, and tenants unless ``CAIYUN_REMINDER_INCLUDE_TENANTS`` is off): each (house, account)
at most once per reminder window, one message per account listing each house and its amount.

The inbox keeps every message, whether or not it was also pushed on WeChat. ``subscribe``
records the one-time consents the user accepted in ``wx.requestSubscribeMessage`` (one per
template per call; only this deployment's template ids); each consent allows one WeChat message,
to the WeChat user who gave it, while that user is still signed in to the account.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caiyun.domain import messaging, notices, reminders
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
    from caiyun.contract import notify as api
else:
    api = lazy_import("caiyun.contract.notify")


def list_notices(call: Call, req: api.Notices, account: Account) -> api.NoticesReply:
    groups = notices.for_resident(call.services, account, req.community_id, req.page, req.page_size)
    return api.NoticesReply.model_validate({"groups": groups})


def notice_detail(call: Call, req: api.NoticeDetailRequest, account: Account) -> api.NoticeDetail:
    found = notices.detail(call.services, account, req.notice_id)
    return api.NoticeDetail.model_validate(found)


def publish_notice(
    call: Call, req: api.PublishNotice, staff: StaffRecord, once: Key | None
) -> api.NoticeDetail:
    published = notices.publish(
        call.services,
        staff,
        community_id=req.community_id,
        title=req.title,
        content=req.content,
        once=once,
    )
    return api.NoticeDetail.model_validate(published)


def messages(call: Call, req: api.Messages, account: Account) -> api.MessagesPage:
    items, total, unread = messaging.inbox(
        call.services,
        account["_id"],
        call.app or "resident",
        req.unread_only,
        req.page,
        req.page_size,
    )
    return page_reply(
        api.MessagesPage, req, [messaging.view(m) for m in items], total, unread=unread
    )


def mark_read(call: Call, req: api.MarkRead, account: Account) -> api.MarkReadReply:
    marked = messaging.mark_read(
        call.services, account["_id"], call.app or "resident", req.message_ids
    )
    return api.MarkReadReply(marked=marked)


def subscribe(call: Call, req: api.Subscribe, account: Account) -> api.SubscribeReply:
    left = messaging.add_consents(
        call.services, account["_id"], req.template_ids, call.wechat_user()
    )
    return api.SubscribeReply(remaining=left)


def remind_unpaid(call: Call, req: api.RemindUnpaid, staff: StaffRecord) -> api.RemindReply:
    counts = reminders.remind_community(call.services, staff, req.community_id, req.house_ids)
    return api.RemindReply.model_validate(counts)


def actions() -> dict[str, Action]:
    return {
        "notices": Action(signed_in, list_notices, ("FORBIDDEN",)),
        "notice_detail": Action(signed_in, notice_detail, ("NOT_FOUND",)),
        "publish_notice": Action(
            admin_only,
            publish_notice,
            ("FORBIDDEN", "NOT_FOUND", "CONFLICT", "RATE_LIMITED"),
            once="notice.publish",
        ),
        "messages": Action(signed_in, messages),
        "mark_read": Action(signed_in, mark_read),
        "subscribe": Action(signed_in, subscribe),
        "remind_unpaid": Action(admin_only, remind_unpaid, ("FORBIDDEN",)),
    }


main_handler = CloudFunction("notify", actions)

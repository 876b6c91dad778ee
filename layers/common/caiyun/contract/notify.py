"""The notify function: community notices, the in-app inbox and WeChat subscription consents."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictStr, StringConstraints

from caiyun.contract.common import ObjectKey, Page, PageRequest, Reply, Request
from caiyun.labels import MessageKind

Title = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Content = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)
]
TemplateId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]


class Notices(PageRequest):
    """The caller's notices by community. Without ``community_id``: one group per community
    where the caller holds a house, each with page ``page`` of its notices (the first page of
    every group in one call). With it: that community's group alone, to page through every one
    of its notices (a community where the caller holds no house, and does not staff, is
    ``FORBIDDEN``)."""

    community_id: ObjectKey | None = None


class NoticeItem(Reply):
    """A notice as the list shows it: its title and when it was published."""

    notice_id: str
    title: str
    published_at: str
    read: bool


class NoticeGroup(Reply):
    """A page of a community's notices, newest first, with how many it has in all and how many
    of them the caller has not read (``notice_detail`` marks a notice read)."""

    community_id: str
    community_name: str
    total: int
    unread: int
    page: int
    page_size: int
    items: list[NoticeItem]


class NoticesReply(Reply):
    groups: list[NoticeGroup]


class NoticeDetailRequest(Request):
    notice_id: ObjectKey


class NoticeDetail(Reply):
    notice_id: str
    community_id: str
    community_name: str
    title: str
    content: str
    published_at: str


class PublishNotice(Request):
    community_id: ObjectKey
    title: Title
    content: Content
    request_id: ObjectKey | None = None


class Messages(PageRequest):
    """The inbox of the app you call from: a staff member's work (new repairs and complaints,
    dispatches) is in the staff app's, their own bills and repairs in the resident app's."""

    unread_only: StrictBool = False


class Message(Reply):
    """One inbox message; ``page`` is the page it opens (see the deep links in the README)."""

    message_id: str
    kind: MessageKind
    kind_name: str
    title: str
    body: str
    page: str
    created_at: str
    read: bool


class MessagesPage(Page[Message]):
    unread: int


class MarkRead(Request):
    """Mark these messages read; without ``message_ids``, every message of the caller's inbox
    in the app called from."""

    message_ids: Annotated[list[ObjectKey], Field(min_length=1, max_length=100)] | None = None


class MarkReadReply(Reply):
    marked: int


class Subscribe(Request):
    """The template ids the user accepted in ``wx.requestSubscribeMessage``."""

    template_ids: Annotated[list[TemplateId], Field(min_length=1, max_length=20)]


class SubscribeReply(Reply):
    remaining: dict[str, int]


class RemindUnpaid(Request):
    """催交通知 for each unpaid house of the community (or the listed houses), to everyone who
    may pay it: its owner and family, and its tenants unless the deployment turns that off. Each
    (house, account) is reminded at most once per reminder window; each account gets one
    message listing each of its houses and what it owes."""

    community_id: ObjectKey
    house_ids: Annotated[list[ObjectKey], Field(min_length=1, max_length=1000)] | None = None


class RemindReply(Reply):
    """What the reminder did: ``houses_unpaid`` = ``houses_reminded`` (at least one payer told
    now) + ``houses_skipped`` (every payer already told about it in this window) +
    ``houses_unbound`` (nobody who may pay is bound in the app yet); ``accounts_notified``
    accounts got a message."""

    houses_unpaid: int
    houses_reminded: int
    houses_skipped: int
    houses_unbound: int
    accounts_notified: int

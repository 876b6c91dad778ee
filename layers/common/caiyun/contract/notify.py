"""The notify function: community notices, the in-app inbox and WeChat subscription consents."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictStr, StringConstraints

from caiyun.contract.common import ObjectKey, PageRequest, Reply, Request

Title = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Content = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)
]
TemplateId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]


class NoticeItem(Reply):
    """A notice as the list shows it: its title and when it was published."""

    notice_id: str
    title: str
    published_at: str


class NoticeGroup(Reply):
    """A community's newest notices (at most 20) and how many it has in all."""

    community_id: str
    community_name: str
    total: int
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
    unread_only: StrictBool = False


MessageKind = Literal[
    "bill",
    "payment",
    "reminder",
    "repair",
    "repair_filed",
    "complaint",
    "complaint_filed",
    "notice",
    "visitor",
]


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


class MessagesPage(Reply):
    items: list[Message]
    total: int
    page: int
    page_size: int
    unread: int


class MarkRead(Request):
    """Mark these messages read; without ``message_ids``, every message of the caller."""

    message_ids: Annotated[list[ObjectKey], Field(min_length=1, max_length=100)] | None = None


class MarkReadReply(Reply):
    marked: int


class Subscribe(Request):
    """The template ids the user accepted in ``wx.requestSubscribeMessage``."""

    template_ids: Annotated[list[TemplateId], Field(min_length=1, max_length=20)]


class SubscribeReply(Reply):
    remaining: dict[str, int]


class RemindUnpaid(Request):
    """催交通知 to every account bound to each unpaid house of the community (or the listed
    houses). A house already reminded within the reminder window is skipped."""

    community_id: ObjectKey
    house_ids: Annotated[list[ObjectKey], Field(min_length=1, max_length=1000)] | None = None


class RemindReply(Reply):
    houses_unpaid: int
    houses_reminded: int
    houses_skipped: int
    accounts_notified: int

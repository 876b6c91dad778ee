"""The complaint function: complaints and suggestions (投诉建议) and the property's replies."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictStr, StringConstraints

from caiyun.contract.common import (
    ImageRef,
    ObjectKey,
    Option,
    OptionCode,
    PageRequest,
    Phone,
    Reply,
    Request,
)
from caiyun.contract.common import (
    Page as Paged,
)

Kind = Literal["complaint", "suggestion"]
Status = Literal["submitted", "processing", "resolved"]

# A file id of this deployment's storage; its form is checked against the storage in use.
FileId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=1100)]
Text = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]

# WeChat's image picker hands over at most nine pictures.
MAX_IMAGES = 9


class TypesReply(Reply):
    """The complaint types in force (``login.config`` has them too)."""

    items: list[Option]


class Create(Request):
    """A complaint or suggestion about one of the caller's houses. ``type`` is a code of the
    complaint types in force (``types``, ``login.config``)."""

    house_id: ObjectKey
    kind: Kind
    type: OptionCode
    contact_phone: Phone
    content: Text
    images: Annotated[list[FileId], Field(max_length=MAX_IMAGES, default_factory=list)]
    request_id: ObjectKey | None = None


class StaffReply(Reply):
    """One answer from the property, as the resident sees it."""

    staff_name: str
    text: str
    status: Status
    status_name: str
    replied_at: str


class Item(Reply):
    """A complaint or suggestion as lists show it; ``contact_phone`` is masked in ``staff_list``."""

    complaint_id: str
    community_id: str
    community_name: str
    house_id: str
    house_label: str
    kind: Kind
    kind_name: str
    type: str
    type_name: str
    content: str
    contact_phone: str
    status: Status
    status_name: str
    reply_count: int
    created_at: str
    updated_at: str


class Detail(Item):
    """A complaint with its images and replies. ``mine``: the caller filed it; the owner of the
    house reading another member's complaint sees its contact phone masked."""

    mine: bool
    images: list[ImageRef]
    replies: list[StaffReply]
    resolved_at: str | None


class MyList(PageRequest):
    """The caller's own complaints, newest first; ``counts`` has every status (the tabs)."""

    status: Status | None = None


class Page(Paged[Item]):
    counts: dict[Status, int]


class MyItem(Item):
    """A complaint in the resident's list: ``mine`` false for one filed by family or a tenant
    of a house the caller owns (shown read-only, its contact phone masked)."""

    mine: bool


class MyPage(Paged[MyItem]):
    counts: dict[Status, int]


class DetailRequest(Request):
    complaint_id: ObjectKey


class StaffList(PageRequest):
    """Complaints of one community, or of every community the admin covers, newest first,
    narrowed to a kind (投诉/建议) and a type if given. ``counts`` has every status under the
    same scope and narrowing (the tabs); ``status`` then picks the page's tab."""

    community_id: ObjectKey | None = None
    status: Status | None = None
    kind: Kind | None = None
    type: OptionCode | None = None


class ReplyRequest(Request):
    """Answer a complaint and move it on; it never goes back to ``submitted``."""

    complaint_id: ObjectKey
    reply: Text
    status: Literal["processing", "resolved"]

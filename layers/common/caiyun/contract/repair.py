"""The repair function: residents report and rate repairs, admins dispatch, repairmen finish.

A repair goes ``pending`` 待处理 → ``dispatched`` 待上门 → ``awaiting_rating`` 待评价 →
``completed`` 已完成, or ``pending`` → ``cancelled`` 已取消. One left unrated for three days is
completed by the scheduler and shows ``auto_closed: true``.

Files (report images, completion photos) are file ids of this deployment's storage: upload
first (``upload_url`` says where), then pass the ids.

Phones: lists mask other people's phones. ``detail`` shows the phones the people working on a
repair need to call each other: the resident sees the assigned repairman's, the repairman and
admins see the contact phone the resident gave for this repair.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, StrictStr, StringConstraints

from caiyun.contract.common import (
    ImageRef,
    ObjectKey,
    Option,
    OptionCode,
    Page,
    PageRequest,
    Phone,
    Reply,
    Request,
)

RepairStatus = Literal["pending", "dispatched", "awaiting_rating", "completed", "cancelled"]
FileId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=1100)]
Description = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)
]
Note = Annotated[StrictStr, StringConstraints(strip_whitespace=True, max_length=500)]

MAX_IMAGES = 9


class CategoriesReply(Reply):
    """The repair categories in force (``login.config`` has them too)."""

    items: list[Option]


class UploadUrl(Request):
    """Where to upload one image: ``report`` for a resident's report, ``completion`` for a
    repairman's photo. CloudBase: call ``wx.cloud.uploadFile({cloudPath: path})`` and use its
    fileID. COS: PUT the bytes to ``url`` with ``headers`` and use ``file_id``. Sandbox: use
    ``file_id`` as it is; PUT the bytes to ``url`` first to see the picture in replies."""

    purpose: Literal["report", "completion"]
    filename: Annotated[StrictStr, StringConstraints(min_length=1, max_length=255)]


class Create(Request):
    """Report a repair for a house the caller lives in (any role). ``category`` is a code of
    the repair categories in force (``categories``, ``login.config``)."""

    house_id: ObjectKey
    category: OptionCode
    description: Description
    contact_phone: Phone
    images: Annotated[list[FileId], Field(max_length=MAX_IMAGES, default_factory=list)]
    request_id: ObjectKey | None = None


class MyList(PageRequest):
    """The caller's own repairs, newest first; ``counts`` has every status (the 我的报修 tabs)."""

    status: RepairStatus | None = None


class RepairRef(Request):
    repair_id: ObjectKey


class Rate(Request):
    repair_id: ObjectKey
    stars: Annotated[StrictInt, Field(ge=1, le=5)]
    comment: Note = ""


class StaffList(PageRequest):
    """Repairs of one community, or of every community the admin covers, newest first;
    ``counts`` has every status within the same scope (the tabs)."""

    community_id: ObjectKey | None = None
    status: RepairStatus | None = None


class Repairmen(Request):
    community_id: ObjectKey


class Dispatch(Request):
    repair_id: ObjectKey
    repairman_id: ObjectKey


class Assigned(PageRequest):
    """The repairs assigned to the caller, newest first; ``counts`` has every status."""

    status: RepairStatus | None = None


class Complete(Request):
    repair_id: ObjectKey
    photos: Annotated[list[FileId], Field(min_length=1, max_length=MAX_IMAGES)]
    note: Note = ""


class RepairSummary(Reply):
    """A repair as lists show it (no phones, no timeline); ``auto_closed`` is true for one
    the timer completed because it was not rated in time."""

    repair_id: str
    community_id: str
    community_name: str
    house_id: str
    house_label: str
    category: str
    category_name: str
    description: str
    status: RepairStatus
    status_name: str
    auto_closed: bool
    created_at: str
    updated_at: str


class StaffRepairItem(RepairSummary):
    """A repair as the staff lists show it: the contact phone masked (``detail`` has it in
    full), the repairman it is assigned to."""

    contact_phone: str
    repairman_id: str | None
    repairman_name: str | None


class MyRepairItem(RepairSummary):
    """A repair in the resident's list: ``mine`` false for one filed by family or a tenant of a
    house the caller owns (the owner sees it, read-only)."""

    mine: bool


class RepairPage(Page[MyRepairItem]):
    counts: dict[RepairStatus, int]


class StaffRepairPage(Page[StaffRepairItem]):
    counts: dict[RepairStatus, int]


class TimelineEntry(Reply):
    """One step of a repair's progress: what happened, the state it left, who did it, when."""

    event: Literal[
        "created", "dispatched", "redispatched", "work_done", "rated", "auto_closed", "cancelled"
    ]
    event_name: str
    status: RepairStatus
    status_name: str
    actor_role: Literal["resident", "admin", "repairman", "system"]
    actor_role_name: str
    at: str
    note: str | None


class Person(Reply):
    """The repairman sent to the repair; the reporter sees his phone to call him."""

    account_id: str
    name: str
    phone: str | None


class Completion(Reply):
    """What the repairman reported when the work was done: photos and a note."""

    photos: list[ImageRef]
    note: str
    at: str


class Rating(Reply):
    """The reporter's rating of the finished work (1–5 stars)."""

    stars: int
    comment: str
    at: str


class RepairDetail(RepairSummary):
    """Everything about a repair. ``mine``: the caller reported it (only the reporter cancels
    or rates); the owner of the house reading another member's repair sees its contact phone
    masked."""

    mine: bool
    contact_phone: str
    images: list[ImageRef]
    timeline: list[TimelineEntry]
    repairman: Person | None
    completion: Completion | None
    rating: Rating | None
    auto_close_at: str | None


class RepairmanItem(Reply):
    """A repairman who covers the community, with how many repairs he has to visit now."""

    account_id: str
    name: str
    phone: str | None
    open_repairs: int


class RepairmenReply(Reply):
    community_id: str
    items: list[RepairmanItem]

"""The visitor function: residents register visitors; guards check their passes at the gate."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictInt, StrictStr, StringConstraints

from caiyun.contract.bind_house import PersonName
from caiyun.contract.common import ObjectKey, Page, PageRequest, Phone, Reply, Request

# Province abbreviation, issuing-office letter (never I or O), then the serial: five characters
# on a regular plate, six on a new-energy one (D/F-style letter first on small cars, last on
# large ones; the 2022 series also uses A–K for that letter).
_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_PLATE = re.compile(
    rf"[{_PROVINCES}][A-HJ-NP-Z]"
    r"(?:[A-HJ-NP-Z0-9]{4}[A-HJ-NP-Z0-9挂学警港澳]"
    r"|[A-HJK][A-HJ-NP-Z0-9][0-9]{4}"
    r"|[0-9]{5}[A-HJK])"
)


def _plate(value: str) -> str:
    # People type plates as "粤B·12345" or "粤b 12345"; keep one canonical form.
    plate = re.sub(r"[\s·.\-]", "", value).upper()
    if not _PLATE.fullmatch(plate):
        raise ValueError("车牌号格式不正确")
    return plate


def _visit_date(value: str) -> str:
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("日期格式应为 YYYY-MM-DD") from None
    return value


Plate = Annotated[StrictStr, StringConstraints(max_length=16), AfterValidator(_plate)]
VisitDate = Annotated[
    StrictStr,
    StringConstraints(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"),
    AfterValidator(_visit_date),
]
# A pass token: bounded here, checked by its signature in the domain.
PassToken = Annotated[StrictStr, StringConstraints(min_length=1, max_length=256)]
PassStatus = Literal["valid", "used", "expired"]


class Register(Request):
    """Register a visitor to one of the caller's houses, for today or a day in the next week."""

    house_id: ObjectKey
    name: PersonName
    phone: Phone
    count: Annotated[StrictInt, Field(ge=1, le=20)]
    plate: Plate | None = None
    visit_date: VisitDate | None = None
    request_id: ObjectKey | None = None


class RegisterReply(Reply):
    visitor_id: str
    pass_token: str
    qr_png_base64: str
    share_path: str
    visit_date: str
    valid_until: str


class PassRequest(Request):
    """A pass token, as scanned from the QR code or taken from ``share_path``."""

    token: PassToken


class PassView(Reply):
    """What the visitor's shared page shows: nothing about the host beyond the house."""

    status: PassStatus
    status_name: str
    visitor_name: str
    count: int
    plate: str | None
    visit_date: str
    valid_until: str
    community_name: str
    house_label: str


class GateVisitor(Reply):
    """What the guard sees of a genuine pass."""

    visitor_id: str
    visitor_name: str
    count: int
    plate: str | None
    visit_date: str
    valid_until: str
    community_name: str
    house_label: str
    entered_at: str | None


class VerifyReply(Reply):
    """The guard's answer. ``visitor`` is absent for a forged pass."""

    result: Literal["valid", "used", "expired", "forged"]
    result_name: str
    visitor: GateVisitor | None


class History(PageRequest):
    """The caller's registrations, newest first."""


class HistoryItem(Reply):
    """A registration in 访客记录. ``mine``: the caller registered it (phone and plate in
    full); false for a visit family or a tenant registered to a house the caller owns (phone
    and plate masked). ``entered_at`` once a guard admitted them."""

    visitor_id: str
    house_id: str
    house_label: str
    name: str
    phone: str
    count: int
    plate: str | None
    visit_date: str
    registered_at: str
    status: PassStatus
    status_name: str
    entered_at: str | None
    mine: bool


class VisitorRef(Request):
    visitor_id: ObjectKey


class VisitorDetail(HistoryItem):
    """One registration. To the person who registered it, while the pass is ``valid``, the pass
    again (the same token, its QR code and the page to share), to share it once more; otherwise
    those three are null."""

    valid_until: str
    pass_token: str | None
    qr_png_base64: str | None
    share_path: str | None


class HistoryPage(Page[HistoryItem]):
    pass

"""Types shared by every function's request and reply models."""

from __future__ import annotations

import re
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
)

from caiyun.checksums import luhn_valid, resident_id_valid

PHONE_PATTERN = r"^1[3-9][0-9]{9}$"

# Strict types: a mini-program sending 123 where "123" is expected has a bug we want to see, and
# a dict where a string is expected ({"$gt": ""}) must never reach a query.
Phone = Annotated[StrictStr, StringConstraints(pattern=PHONE_PATTERN)]
SmsCode = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9]{6}$")]
ObjectKey = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]
# A code of a configurable option list (repair categories, complaint types): checked against the
# configuration in force when the request is served.
OptionCode = Annotated[StrictStr, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
ShortText = Annotated[StrictStr, StringConstraints(strip_whitespace=True, max_length=64)]
LongText = Annotated[StrictStr, StringConstraints(strip_whitespace=True, max_length=2000)]


def _resident_id(value: str) -> str:
    value = value.upper()
    if not re.fullmatch(r"[0-9]{17}[0-9X]", value):
        raise ValueError("身份证号码格式不正确")
    if not resident_id_valid(value):
        raise ValueError("身份证号码校验位不正确")
    return value


def _luhn(value: str) -> str:
    if not re.fullmatch(r"[0-9]{12,19}", value):
        raise ValueError("银行卡号格式不正确")
    if not luhn_valid(value):
        raise ValueError("银行卡号校验不通过")
    return value


IdNumber = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, max_length=18), AfterValidator(_resident_id)
]
CardNo = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, max_length=19), AfterValidator(_luhn)
]
Money = Annotated[StrictInt, Field(ge=1, le=100_000_000)]
Flag = StrictBool
Count = StrictInt


class Request(BaseModel):
    """Base of every request: unknown fields are refused, strings are bounded."""

    # defer_build: a model's validator is built on its first use, not when a function is
    # imported, so a cold start pays only for the actions it serves.
    model_config = ConfigDict(extra="forbid", str_max_length=2000, frozen=True, defer_build=True)


class Reply(BaseModel):
    """Base of every reply model."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


ItemT = TypeVar("ItemT")


class Page(Reply, Generic[ItemT]):
    # A page of a list: what every paged reply starts with. No docstring on purpose: the API
    # reference shows each reply's own.
    items: list[ItemT]
    total: int
    page: int
    page_size: int


class Empty(Request):
    """An action that takes no fields."""


class PageRequest(Request):
    """Paging for list actions."""

    page: Annotated[StrictInt, Field(ge=1, le=100_000)] = 1
    page_size: Annotated[StrictInt, Field(ge=1, le=100)] = 20


class Option(Reply):
    """One entry of an option list: a code and its label."""

    code: str
    name: str


class ImageRef(Reply):
    """A stored image: its file id (what actions take) and a URL an ``<image>`` can show now.

    ``url`` is short-lived (``display_url_ttl_s``, an hour by default): ask for the record again
    rather than keeping it. It is null when the storage cannot sign one at the moment (CloudBase
    through WeChat's API, which may be down); the file id stays valid.
    """

    file_id: str
    url: str | None


class UploadUrlReply(Reply):
    """Where to upload one file. CloudBase: ``wx.cloud.uploadFile({cloudPath: path})`` and use
    its fileID. COS: PUT the bytes to ``url`` with ``headers`` and use ``file_id``. Sandbox:
    use ``file_id`` as it is; PUT the bytes to ``url`` first to see the picture in replies."""

    provider: Literal["sandbox", "cloudbase", "cos"]
    path: str
    file_id: str | None
    url: str | None
    method: str | None
    headers: dict[str, str]
    expires_in_s: int | None

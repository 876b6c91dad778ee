"""Types shared by every function's request and reply models."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
)

PHONE_PATTERN = r"^1[3-9]\d{9}$"

# Strict types: a mini-program sending 123 where "123" is expected has a bug we want to see, and
# a dict where a string is expected ({"$gt": ""}) must never reach a query.
Phone = Annotated[StrictStr, StringConstraints(pattern=PHONE_PATTERN)]
SmsCode = Annotated[StrictStr, StringConstraints(pattern=r"^\d{6}$")]
ObjectKey = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]
ShortText = Annotated[StrictStr, StringConstraints(strip_whitespace=True, max_length=64)]
LongText = Annotated[StrictStr, StringConstraints(strip_whitespace=True, max_length=2000)]
Flag = StrictBool
Count = StrictInt


class Request(BaseModel):
    """Base of every request: unknown fields are refused, strings are bounded."""

    model_config = ConfigDict(extra="forbid", str_max_length=2000, frozen=True)


class Reply(BaseModel):
    """Base of every reply model."""

    model_config = ConfigDict(extra="forbid")


class Empty(Request):
    """An action that takes no fields."""


class PageRequest(Request):
    """Paging for list actions."""

    page: Annotated[StrictInt, Field(ge=1, le=100_000)] = 1
    page_size: Annotated[StrictInt, Field(ge=1, le=100)] = 20


def mask_phone(phone: str | None) -> str | None:
    """``13800000000`` → ``138****0000``: how another person's phone is shown."""
    if not phone or len(phone) != 11:
        return phone
    return f"{phone[:3]}****{phone[-4:]}"

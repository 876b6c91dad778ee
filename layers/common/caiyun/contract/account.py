"""The account function's 我的 page: profile, nickname and avatar, and changing the phone.

The real-name and wallet actions of the same function are in ``caiyun.contract.wallet``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import StrictStr, StringConstraints, model_validator

from caiyun.contract.common import Phone, Reply, Request, SmsCode
from caiyun.contract.wallet import WalletSummary

Nickname = Annotated[
    StrictStr,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=32, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
# A file id of this deployment's storage, or the https URL of a WeChat avatar; the domain
# checks which.
Avatar = Annotated[StrictStr, StringConstraints(min_length=1, max_length=1100)]


class Profile(Reply):
    """``avatar`` is what was set (a file id or a WeChat avatar URL); ``avatar_url`` is what an
    ``<image>`` shows: the WeChat URL as it is, or a short-lived URL of the stored file."""

    account_id: str
    phone: str
    name: str | None
    nickname: str | None
    avatar: str | None
    avatar_url: str | None
    realname_verified: bool
    wallet: WalletSummary | None


class UpdateProfile(Request):
    """Set the nickname and/or avatar the user chose in the WeChat authorisation."""

    nickname: Nickname | None = None
    avatar: Avatar | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> UpdateProfile:
        if self.nickname is None and self.avatar is None:
            raise ValueError("请填写昵称或头像")
        return self


class ChangePhone(Request):
    """Move the account to a new phone: ``old_code`` was sent to the current phone (purpose
    ``change_phone_old``), ``new_code`` to the new one (``change_phone_new``)."""

    old_code: SmsCode
    new_phone: Phone
    new_code: SmsCode


class UploadUrl(Request):
    """Where to upload an avatar or a complaint image (repairs have ``repair.upload_url``)."""

    purpose: Literal["avatar", "complaint"]
    filename: Annotated[StrictStr, StringConstraints(min_length=1, max_length=255)]

"""The 我的 page: what an account shows of itself, its nickname and avatar, and its phone."""

from __future__ import annotations

import re
from typing import Any

from caiyun.domain import accounts, realname, sms_codes
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores.accounts import Account

# Avatars WeChat hands out (wx.getUserProfile's avatarUrl) live on qlogo.cn. Spelt out in full
# so that no userinfo, port or backslash trick can make a browser fetch another host.
_WECHAT_AVATAR = re.compile(r"^https://(?:[a-z0-9-]+\.)*qlogo\.cn/[A-Za-z0-9._~%/+=&?-]*$")


def avatar_url(services: Services, account: Account) -> str | None:
    """What an ``<image>`` shows for the account's avatar: a WeChat avatar URL as it is, a
    stored file by a short-lived display URL."""
    avatar = account.get("avatar")
    if not avatar or _WECHAT_AVATAR.match(avatar):
        return avatar
    return services.storage.display_urls([avatar]).get(avatar)


def profile(services: Services, account: Account) -> dict[str, Any]:
    """The account as its 我的 page shows it, with the wallet summary once there is a wallet."""
    return {
        **accounts.identity(account, avatar_url(services, account)),
        "wallet": realname.wallet_summary(account),
    }


def update_profile(
    services: Services, account: Account, nickname: str | None, avatar: str | None
) -> dict[str, Any]:
    """Set the nickname and/or avatar; the avatar is a file id of this deployment's storage or
    a WeChat avatar URL. Returns the profile."""
    changes: dict[str, Any] = {"profile_updated_at": services.clock.now()}
    if nickname is not None:
        changes["nickname"] = nickname
    if avatar is not None:
        uploaded = services.storage.owns(avatar) and f"/{account['_id']}/" in avatar
        if not (_WECHAT_AVATAR.match(avatar) or uploaded):
            raise AppError(
                "INVALID_ARGUMENT",
                "头像须为上传的图片或微信头像",
                {"fields": {"avatar": "不是本应用上传的文件或微信头像"}},
            )
        changes["avatar"] = avatar
    updated = account_store.set_profile(services.db, account["_id"], changes)
    return profile(services, updated)


def change_phone(
    services: Services, account: Account, *, old_code: str, new_phone: str, new_code: str
) -> dict[str, Any]:
    """Move the account to ``new_phone`` once both numbers prove themselves by SMS code.

    The new number must be free: checked first so no code is spent on a hopeless change, and
    decided finally by the unique phone index, so of two accounts racing for one number exactly
    one gets it (the other: CONFLICT). Returns the profile.
    """
    db = services.db
    if new_phone == account["phone"]:
        raise AppError(
            "INVALID_ARGUMENT", "新手机号与当前手机号相同", {"fields": {"new_phone": "与当前相同"}}
        )
    if account_store.by_phone(db, new_phone) is not None:
        raise AppError("CONFLICT", "该手机号已被其他账号使用")
    # Both codes are checked before either is spent, so a mistyped new code can be retyped
    # without asking for a new code on the old phone.
    old_id = sms_codes.check(services, account["phone"], "change_phone_old", old_code)
    new_id = sms_codes.check(services, new_phone, "change_phone_new", new_code)
    sms_codes.spend(services, old_id)
    sms_codes.spend(services, new_id)
    try:
        updated = account_store.move_phone(
            db, account["_id"], old=account["phone"], new=new_phone, now=services.clock.now()
        )
    except account_store.PhoneTaken:
        raise AppError("CONFLICT", "该手机号已被其他账号使用") from None
    if updated is None:
        # Another change of this account's phone won the race.
        raise AppError("CONFLICT", "手机号已变更，请刷新后重试")
    return profile(services, updated)

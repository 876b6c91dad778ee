"""account: the 我的 page: profile, nickname and avatar, and changing the phone number.

``profile.wallet`` is null until the account has finished real-name verification.
``update_profile.avatar`` is a file id of this deployment's storage or a WeChat avatar URL
(``https://…qlogo.cn/…``). ``change_phone`` needs a code sent by ``login.send_code`` with purpose
``change_phone_old`` to the current phone and one with ``change_phone_new`` to the new phone;
a new phone already in use is ``CONFLICT`` (and no code is spent). Sign-in then uses the new
phone; the account, its houses and its sessions stay as they are.
"""

from __future__ import annotations

from caiyun.contract import account as api
from caiyun.contract.common import Empty
from caiyun.domain import profiles
from caiyun.runtime import Action, Call, CloudFunction, signed_in


def profile(call: Call, req: Empty) -> api.Profile:
    return api.Profile.model_validate(profiles.profile(call.require_account()))


def update_profile(call: Call, req: api.UpdateProfile) -> api.Profile:
    updated = profiles.update_profile(
        call.services, call.require_account(), req.nickname, req.avatar
    )
    return api.Profile.model_validate(updated)


def change_phone(call: Call, req: api.ChangePhone) -> api.Profile:
    changed = profiles.change_phone(
        call.services, call.require_account(), req.old_code, req.new_phone, req.new_code
    )
    return api.Profile.model_validate(changed)


main_handler = CloudFunction(
    "account",
    {
        "profile": Action(Empty, signed_in, profile, api.Profile),
        "update_profile": Action(api.UpdateProfile, signed_in, update_profile, api.Profile),
        "change_phone": Action(
            api.ChangePhone,
            signed_in,
            change_phone,
            api.Profile,
            ("CODE_INVALID", "CONFLICT"),
        ),
    },
)

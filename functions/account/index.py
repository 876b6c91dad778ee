"""account: the 我的 page (profile, nickname and avatar, phone number)."""

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

"""How much one account (and one house) may create in a business day.

Every create action takes its units here before its first write: one conditional upsert per
counter, all in one command (:func:`caiyun.domain.rate_limits.take_all`), so two callers at the
limit cannot both pass. Past a limit the answer is RATE_LIMITED with ``retry_after_s`` until the
Asia/Shanghai day ends. Each limit is a setting, ``<action>_per_account_per_day`` and, where the
action belongs to a house, ``<action>_per_house_per_day``.
"""

from __future__ import annotations

from typing import Literal

from caiyun.clock import business_date, end_of_business_day
from caiyun.domain import rate_limits
from caiyun.errors import AppError
from caiyun.services import Services

Action = Literal[
    "repairs", "complaints", "uploads", "member_adds", "visitors", "notices", "staff_adds"
]

# What the caller is told, per action (the retry time is in details.retry_after_s).
_REFUSALS: dict[Action, str] = {
    "repairs": "今日报修次数已达上限，请明天再试",
    "complaints": "今日投诉建议次数已达上限，请明天再试",
    "uploads": "今日上传次数已达上限，请明天再试",
    "member_adds": "今日添加成员次数已达上限，请明天再试",
    "visitors": "今日访客登记次数已达上限，请明天再试",
    "notices": "今日发布公告次数已达上限，请明天再试",
    "staff_adds": "今日添加工作人员次数已达上限，请明天再试",
}


def take_daily(
    services: Services, action: Action, account_id: str, house_id: str | None = None
) -> None:
    """Take today's unit of ``action`` for ``account_id`` (and ``house_id``) in one command;
    RATE_LIMITED with ``retry_after_s`` (the end of the day) past either limit."""
    settings, now = services.settings, services.clock.now()
    day = business_date(now).isoformat()
    end = end_of_business_day(business_date(now))
    owners = [("account", account_id)] + ([("house", house_id)] if house_id is not None else [])
    hits = [
        rate_limits.Hits(
            f"create:{action}:{kind}:{owner}:{day}",
            getattr(settings, f"{action}_per_{kind}_per_day"),
            end,
        )
        for kind, owner in owners
    ]
    try:
        rate_limits.take_all(services.db, hits, now)
    except AppError as refused:
        raise AppError("RATE_LIMITED", _REFUSALS[action], refused.details) from None

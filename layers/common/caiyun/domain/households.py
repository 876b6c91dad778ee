"""Binding a house and managing who else lives there."""

from __future__ import annotations

from typing import Any

from caiyun.crypto import mask_phone
from caiyun.domain import accounts, communities, houses, memberships, rate_limits, staff
from caiyun.errors import AppError
from caiyun.services import Services

_BIND_TRIES_PER_HOUR = 10


def bind_owner(
    services: Services,
    account: dict[str, Any],
    community_id: str,
    address: tuple[str, str, str],
    owner_name: str,
    owner_phone: str,
) -> dict[str, Any]:
    """Bind the caller as owner of a house whose imported record names them.

    A mismatch answers OWNER_MISMATCH without saying which detail was wrong; tries are limited
    per account so the owner's name cannot be guessed.
    """
    db, now = services.db, services.clock.now()
    if owner_phone != account["phone"]:
        raise AppError(
            "INVALID_ARGUMENT",
            "请填写本人登录使用的手机号",
            {"fields": {"owner_phone": "须为本人登录手机号"}},
        )
    rate_limits.limit_per_window(db, f"bind:{account['_id']}", _BIND_TRIES_PER_HOUR, 3600, now)
    house = houses.by_address(db, community_id, *address)
    if house is None:
        raise AppError("NOT_FOUND", "未找到该房屋")
    if house.get("owner_name") != owner_name or house.get("owner_phone") != owner_phone:
        raise AppError("OWNER_MISMATCH")
    membership, _ = memberships.add(db, house, account["_id"], "owner", now, account["_id"])
    if membership["role"] != "owner":
        # Someone added the owner as family first; the imported record says they own it.
        db[memberships.MEMBERSHIPS].update_one(
            {"_id": membership["_id"]}, {"$set": {"role": "owner"}}
        )
    return house


def my_houses(services: Services, account: dict[str, Any]) -> list[dict[str, Any]]:
    """The caller's houses with community, label, role and whether they manage members."""
    db = services.db
    links = memberships.of_account(db, account["_id"])
    found = houses.many(db, [m["house_id"] for m in links])
    names = communities.names(db, sorted({m["community_id"] for m in links}))
    return [
        {
            "house_id": m["house_id"],
            "community_id": m["community_id"],
            "community_name": names.get(m["community_id"], ""),
            "label": houses.label(found[m["house_id"]]),
            "role": m["role"],
            "can_manage_members": m["role"] == "owner",
        }
        for m in links
        if m["house_id"] in found
    ]


def _managed_house(services: Services, account: dict[str, Any], house_id: str) -> dict[str, Any]:
    house = houses.get(services.db, house_id)
    if house is None:
        raise AppError("NOT_FOUND", "未找到该房屋")
    if memberships.role_on(services.db, account["_id"], house_id) == "owner":
        return house
    if staff.is_admin_of(staff.of_account(services.db, account), house["community_id"]):
        return house
    raise AppError("FORBIDDEN", "只有业主或物业管理员可以管理房屋成员")


def members(services: Services, account: dict[str, Any], house_id: str) -> list[dict[str, Any]]:
    """The members of a house; phones of people other than the caller are masked."""
    _managed_house(services, account, house_id)
    db = services.db
    links = memberships.of_house(db, house_id)
    people = {
        a["_id"]: a
        for a in db[accounts.ACCOUNTS].find(
            {"_id": {"$in": [m["account_id"] for m in links]}}, {"phone": 1, "name": 1}
        )
    }
    result = []
    for m in links:
        person = people.get(m["account_id"], {})
        phone = person.get("phone")
        result.append(
            {
                "account_id": m["account_id"],
                "name": person.get("name"),
                "phone": phone if m["account_id"] == account["_id"] else mask_phone(phone),
                "role": m["role"],
                "is_me": m["account_id"] == account["_id"],
            }
        )
    return result


def add_member(
    services: Services,
    account: dict[str, Any],
    house_id: str,
    name: str,
    phone: str,
    role: memberships.ResidentRole,
) -> dict[str, Any]:
    """Add family or a tenant; their account is created so they can log in by phone."""
    house = _managed_house(services, account, house_id)
    db, now = services.db, services.clock.now()
    person, _ = accounts.ensure_account(db, phone, now, name)
    membership, created = memberships.add(db, house, person["_id"], role, now, account["_id"])
    if not created:
        raise AppError("CONFLICT", "该手机号已是此房屋成员")
    return {
        "account_id": person["_id"],
        "name": person.get("name") or name,
        "phone": mask_phone(phone),
        "role": membership["role"],
        "is_me": False,
    }


def remove_member(
    services: Services, account: dict[str, Any], house_id: str, member_id: str
) -> None:
    """Remove family or a tenant; they lose the house at once. Owners change by import."""
    _managed_house(services, account, house_id)
    role = memberships.role_on(services.db, member_id, house_id)
    if role is None:
        raise AppError("NOT_FOUND", "该成员不在此房屋")
    if role == "owner":
        raise AppError("CONFLICT", "业主不能被移除，如需变更请联系物业")
    if not memberships.remove(services.db, house_id, member_id, ("family", "tenant")):
        raise AppError("NOT_FOUND", "该成员不在此房屋")

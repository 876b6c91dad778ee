"""Binding a house and managing who else lives there."""

from __future__ import annotations

from typing import Any

from caiyun import labels
from caiyun.crypto import mask_phone
from caiyun.domain import create_limits, houses, memberships, rate_limits, staff
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import houses as house_store
from caiyun.stores import memberships as membership_store
from caiyun.stores.accounts import Account
from caiyun.stores.communities import COMMUNITIES
from caiyun.stores.houses import HOUSES


def _bind_tries(
    services: Services, account_id: str, community_id: str, address: tuple[str, str, str]
) -> list[rate_limits.Hits]:
    """One binding attempt counted against the caller and against the house it names.

    Taken before the attempt is judged, in one conditional write each, so however many
    attempts race only as many as the limits allow are ever judged; a right one gives its
    hits back. A house is named by its exact address (a different spelling finds no house and
    counts against the caller only).
    """
    settings, now = services.settings, services.clock.now()
    hits = [
        rate_limits.per_window(
            f"bind-wrong:account:{account_id}", settings.bind_wrong_per_account_per_hour, 3600, now
        ),
        rate_limits.per_window(
            f"bind-wrong:house:{community_id}:{'/'.join(address)}",
            settings.bind_wrong_per_house_per_day,
            86400,
            now,
        ),
    ]
    try:
        rate_limits.take_all(services.db, hits, now)
    except AppError as refused:
        raise AppError(
            "RATE_LIMITED", "房屋绑定尝试次数过多，请稍后再试", refused.details
        ) from None
    return hits


def bind_owner(
    services: Services,
    account: Account,
    community_id: str,
    address: tuple[str, str, str],
    owner_name: str,
    owner_phone: str,
) -> list[dict[str, Any]]:
    """Bind the caller as owner of a house whose imported record names them; returns the
    caller's houses afterwards (as :func:`my_houses`).

    A mismatch answers OWNER_MISMATCH without saying which detail was wrong. Wrong attempts
    (a mismatch, or an address with no house) are limited per account and per house, so the
    owner's name cannot be guessed from one account or from many: past either limit the answer
    is RATE_LIMITED with ``retry_after_s``, right details included, until the window ends.
    """
    db, now = services.db, services.clock.now()
    if owner_phone != account["phone"]:
        raise AppError(
            "INVALID_ARGUMENT",
            "请填写本人登录使用的手机号",
            {"fields": {"owner_phone": "须为本人登录手机号"}},
        )
    tries = _bind_tries(services, account["_id"], community_id, address)
    found = list(
        db[HOUSES].aggregate(
            [
                {"$match": house_store.at_address(community_id, *address)},
                {"$limit": 1},
                {
                    "$lookup": {
                        "from": COMMUNITIES,
                        "localField": "community_id",
                        "foreignField": "_id",
                        "as": "_community",
                    }
                },
                *_with_my_houses(account["_id"]),
            ]
        )
    )
    if not found:
        raise AppError("NOT_FOUND", "未找到该房屋")
    house = found[0]
    if house.get("owner_name") != owner_name or house.get("owner_phone") != owner_phone:
        raise AppError("OWNER_MISMATCH")
    rate_limits.undo_hits(db, tries)
    membership, _ = membership_store.add(db, house, account["_id"], "owner", now, account["_id"])
    if membership["role"] != "owner":
        # Someone added the owner as family first; the imported record says they own it.
        membership_store.make_owner(db, membership["_id"])
    # The reply is the caller's houses as read with the house (one command), plus this one.
    links = [m for m in house["_links"] if m["house_id"] != house["_id"]]
    links.append({**membership, "role": "owner"})
    return _houses_view(
        links, [*house["_houses"], house], [*house["_communities"], *house["_community"]]
    )


def _with_my_houses(account_id: str) -> list[dict[str, Any]]:
    # Stages that join to any one document the account's memberships (``_links``) with their
    # houses (``_houses``) and community names (``_communities``): the caller's houses in the
    # same command as whatever else the call reads.
    return [
        {"$set": {"_me": {"$literal": account_id}}},
        {
            "$lookup": {
                "from": membership_store.MEMBERSHIPS,
                "localField": "_me",
                "foreignField": "account_id",
                "as": "_links",
            }
        },
        {"$set": {"_house_ids": "$_links.house_id", "_community_ids": "$_links.community_id"}},
        {
            "$lookup": {
                "from": HOUSES,
                "localField": "_house_ids",
                "foreignField": "_id",
                "as": "_houses",
            }
        },
        {
            "$lookup": {
                "from": COMMUNITIES,
                "localField": "_community_ids",
                "foreignField": "_id",
                "as": "_communities",
            }
        },
        {"$project": {"_me": 0, "_house_ids": 0, "_community_ids": 0}},
    ]


def _houses_view(
    links: list[dict[str, Any]],
    found_houses: list[dict[str, Any]],
    found_communities: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    found = {h["_id"]: h for h in found_houses}
    names = {c["_id"]: c["name"] for c in found_communities}
    return [
        {
            "house_id": m["house_id"],
            "community_id": m["community_id"],
            "community_name": names.get(m["community_id"], ""),
            "label": houses.label(found[m["house_id"]]),
            "role": m["role"],
            "role_name": labels.name("resident_role", m["role"]),
            "can_manage_members": m["role"] == "owner",
        }
        for m in sorted(links, key=lambda m: m["_id"])
        if m["house_id"] in found
    ]


def my_houses(services: Services, account: Account) -> list[dict[str, Any]]:
    """The caller's houses with community, label, role and whether they manage members."""
    rows = list(
        services.db[account_store.ACCOUNTS].aggregate(
            [
                {"$match": {"_id": account["_id"]}},
                {"$project": {"_id": 1}},
                *_with_my_houses(account["_id"]),
            ]
        )
    )
    if not rows:
        return []
    return _houses_view(rows[0]["_links"], rows[0]["_houses"], rows[0]["_communities"])


def _managed_house(
    services: Services, account: Account, house_id: str, people: bool = False
) -> dict[str, Any]:
    # The house with its members (``_members``, owner first) and, if ``people``, their names
    # and phones (``_people``), in one command; the caller's role comes from the members.
    stages: list[dict[str, Any]] = [
        {"$match": {"_id": house_id}},
        {
            "$lookup": {
                "from": membership_store.MEMBERSHIPS,
                "localField": "_id",
                "foreignField": "house_id",
                "as": "_members",
            }
        },
    ]
    if people:
        stages += [
            {"$set": {"_member_ids": "$_members.account_id"}},
            {
                "$lookup": {
                    "from": account_store.ACCOUNTS,
                    "localField": "_member_ids",
                    "foreignField": "_id",
                    "as": "_people",
                }
            },
        ]
    stages.append(
        {
            "$project": {
                "community_id": 1,
                "_members": 1,
                "_people._id": 1,
                "_people.phone": 1,
                "_people.name": 1,
            }
        }
    )
    found = list(services.db[HOUSES].aggregate(stages))
    if not found:
        raise AppError("NOT_FOUND", "未找到该房屋")
    house = found[0]
    house["_members"] = memberships.owner_first(house["_members"])
    mine = next((m for m in house["_members"] if m["account_id"] == account["_id"]), None)
    if mine is not None and mine["role"] == "owner":
        return house
    if staff.is_admin_of(staff.of_account(services.db, account), house["community_id"]):
        return house
    raise AppError("FORBIDDEN", "只有业主或物业管理员可以管理房屋成员")


def members(services: Services, account: Account, house_id: str) -> list[dict[str, Any]]:
    """The members of a house; phones of people other than the caller are masked."""
    house = _managed_house(services, account, house_id, people=True)
    people = {a["_id"]: a for a in house.get("_people", [])}
    result = []
    for m in house["_members"]:
        person = people.get(m["account_id"], {})
        phone = person.get("phone")
        result.append(
            {
                "account_id": m["account_id"],
                "name": person.get("name"),
                "phone": phone if m["account_id"] == account["_id"] else mask_phone(phone),
                "role": m["role"],
                "role_name": labels.name("resident_role", m["role"]),
                "is_me": m["account_id"] == account["_id"],
            }
        )
    return result


def add_member(
    services: Services,
    account: Account,
    *,
    house_id: str,
    name: str,
    phone: str,
    role: membership_store.ResidentRole,
) -> dict[str, Any]:
    """Add family or a tenant; their account is created so they can log in by phone."""
    house = _managed_house(services, account, house_id)
    db, now = services.db, services.clock.now()
    # Before the first write: the account a new phone gets is itself a record created.
    create_limits.take_daily(services, "member_adds", account["_id"], house_id)
    person, _ = account_store.ensure_account(db, phone, now, name)
    membership, created = membership_store.add(db, house, person["_id"], role, now, account["_id"])
    if not created:
        raise AppError("CONFLICT", "该手机号已是此房屋成员")
    return {
        "account_id": person["_id"],
        "name": person.get("name") or name,
        "phone": mask_phone(phone),
        "role": membership["role"],
        "role_name": labels.name("resident_role", membership["role"]),
        "is_me": False,
    }


def remove_member(services: Services, account: Account, house_id: str, member_id: str) -> None:
    """Remove family or a tenant; they lose the house at once. Owners change by import."""
    house = _managed_house(services, account, house_id)
    role = next((m["role"] for m in house["_members"] if m["account_id"] == member_id), None)
    if role is None:
        raise AppError("NOT_FOUND", "该成员不在此房屋")
    if role == "owner":
        raise AppError("CONFLICT", "业主不能被移除，如需变更请联系物业")
    # Conditional on the role, so a member made owner since the read above stays.
    if not membership_store.remove(services.db, house_id, member_id, ("family", "tenant")):
        raise AppError("NOT_FOUND", "该成员不在此房屋")

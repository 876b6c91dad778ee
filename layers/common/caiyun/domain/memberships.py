"""Who lives where: an account's role (owner, family, tenant) on a house."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pymongo import IndexModel
from pymongo.errors import DuplicateKeyError

from caiyun.data.schema import declare
from caiyun.domain import communities, houses
from caiyun.errors import AppError
from caiyun.ids import new_id

ResidentRole = Literal["owner", "family", "tenant"]

MEMBERSHIPS = declare(
    "memberships",
    IndexModel([("house_id", 1), ("account_id", 1)], unique=True),
    IndexModel([("account_id", 1), ("community_id", 1)]),
    IndexModel([("house_id", 1), ("role", 1)]),
)


def of_account(db: Any, account_id: str) -> list[dict[str, Any]]:
    """Every house membership of an account, oldest first."""
    return list(db[MEMBERSHIPS].find({"account_id": account_id}).sort("_id", 1))


def of_house(db: Any, house_id: str) -> list[dict[str, Any]]:
    """Every member of a house, owner first, then by when they joined."""
    members = list(db[MEMBERSHIPS].find({"house_id": house_id}).sort("_id", 1))
    return sorted(members, key=lambda m: m["role"] != "owner")


def role_on(db: Any, account_id: str, house_id: str) -> ResidentRole | None:
    """The account's role on the house, if it is a member."""
    doc = db[MEMBERSHIPS].find_one({"house_id": house_id, "account_id": account_id}, {"role": 1})
    return None if doc is None else doc["role"]


def require_member(db: Any, account_id: str, house_id: str) -> dict[str, Any]:
    """The account's membership of the house, for actions only a member may take.

    HOUSE_NOT_BOUND when the account holds no house at all (the app then offers binding);
    FORBIDDEN when it holds others but not this one, whether or not the house exists.
    """
    membership = db[MEMBERSHIPS].find_one({"house_id": house_id, "account_id": account_id})
    if membership is not None:
        return membership
    if db[MEMBERSHIPS].find_one({"account_id": account_id}, {"_id": 1}) is None:
        raise AppError("HOUSE_NOT_BOUND")
    raise AppError("FORBIDDEN", "您不是该房屋的成员")


def require_home(
    db: Any, account_id: str, house_id: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The house the account is a member of, and its community, in one read.

    Refuses as :func:`require_member` does; NOT_FOUND if the house itself is gone.
    """
    rows = list(
        db[MEMBERSHIPS].aggregate(
            [
                {"$match": {"house_id": house_id, "account_id": account_id}},
                {"$limit": 1},
                {
                    "$lookup": {
                        "from": houses.HOUSES,
                        "localField": "house_id",
                        "foreignField": "_id",
                        "as": "house",
                    }
                },
                {
                    "$lookup": {
                        "from": communities.COMMUNITIES,
                        "localField": "community_id",
                        "foreignField": "_id",
                        "as": "community",
                    }
                },
            ]
        )
    )
    if rows:
        found, joined = rows[0]["house"], rows[0]["community"]
        house = found[0] if found else None
        community = joined[0] if joined else None
    else:
        # Not a member: require_member says which refusal (or finds one just added).
        require_member(db, account_id, house_id)
        house = houses.get(db, house_id)
        community = communities.get(db, house["community_id"]) if house else None
    if house is None:
        raise AppError("NOT_FOUND", "未找到该房屋")
    return house, community


def add(
    db: Any,
    house: dict[str, Any],
    account_id: str,
    role: ResidentRole,
    now: datetime,
    added_by: str,
) -> tuple[dict[str, Any], bool]:
    """Make the account a member of the house; returns (membership, created).

    The unique house+account index decides a race: an existing membership is returned as is.
    """
    doc = {
        "_id": new_id(),
        "house_id": house["_id"],
        "community_id": house["community_id"],
        "account_id": account_id,
        "role": role,
        "added_by": added_by,
        "created_at": now,
    }
    try:
        db[MEMBERSHIPS].insert_one(doc)
        return doc, True
    except DuplicateKeyError:
        existing = db[MEMBERSHIPS].find_one({"house_id": house["_id"], "account_id": account_id})
        return existing, False


def remove(db: Any, house_id: str, account_id: str, roles: tuple[str, ...]) -> bool:
    """Remove a member holding one of ``roles``; False if there was none."""
    result = db[MEMBERSHIPS].delete_one(
        {"house_id": house_id, "account_id": account_id, "role": {"$in": list(roles)}}
    )
    return result.deleted_count == 1


def remove_all_except(db: Any, house_id: str, account_id: str) -> int:
    """Drop every membership of a house but this account's (the house changed owner)."""
    return (
        db[MEMBERSHIPS]
        .delete_many({"house_id": house_id, "account_id": {"$ne": account_id}})
        .deleted_count
    )

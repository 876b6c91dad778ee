"""Who lives where: an account's role (owner, family, tenant) on a house."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal

from pymongo import IndexModel
from pymongo.errors import DuplicateKeyError

from caiyun.data.schema import declare
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.stores.communities import COMMUNITIES
from caiyun.stores.houses import HOUSES

ResidentRole = Literal["owner", "family", "tenant"]

MEMBERSHIPS = declare(
    "memberships",
    IndexModel([("house_id", 1), ("account_id", 1)], unique=True),
    IndexModel([("account_id", 1), ("community_id", 1)]),
    IndexModel([("house_id", 1), ("role", 1)]),
    # Everyone bound in a community, one account after the other (a notice's delivery).
    IndexModel([("community_id", 1), ("account_id", 1)]),
)


# The key under which a resident caller's account carries the ids of the houses it owns
# (caiyun.domain.accounts joins them into the caller's lookup).
OWNED_JOINED = "_owned_house_ids"


def of_account(db: Any, account_id: str) -> list[dict[str, Any]]:
    """Every house membership of an account, oldest first."""
    return list(db[MEMBERSHIPS].find({"account_id": account_id}).sort("_id", 1))


def filed_or_owned(db: Any, account: dict[str, Any], filer_field: str) -> dict[str, Any]:
    """The filter for records a resident may list: those they filed (``filer_field`` names
    them), and those filed by anyone for a house they own (an owner sees every repair,
    complaint and visitor of their houses). The owned houses come with a resident caller's
    lookup; otherwise they are read."""
    account_id = account["_id"]
    owned = account.get(OWNED_JOINED)
    if owned is None:
        found = db[MEMBERSHIPS].find({"account_id": account_id, "role": "owner"}, {"house_id": 1})
        owned = [m["house_id"] for m in found]
    mine = {filer_field: account_id}
    return {"$or": [mine, {"house_id": {"$in": owned}}]} if owned else mine


def communities_of(
    db: Any, account_id: str, community_id: str | None, then: list[dict[str, Any]]
) -> Any:
    """One row per community where the account holds a house (or just ``community_id``, if it
    does), shaped ``{_id, since, community: [{name}]}`` in the order the account first joined
    each, run on through the stages ``then``. One command."""
    mine: dict[str, Any] = {"account_id": account_id}
    if community_id is not None:
        mine["community_id"] = community_id
    return db[MEMBERSHIPS].aggregate(
        [
            {"$match": mine},
            {"$group": {"_id": "$community_id", "since": {"$min": "$_id"}}},
            {
                "$lookup": {
                    "from": COMMUNITIES,
                    "localField": "_id",
                    "foreignField": "_id",
                    "as": "community",
                }
            },
            *then,
        ]
    )


def bound_in(db: Any, community_id: str, after: str) -> Iterator[str]:
    """The account ids bound to a house of the community, past ``after``, in id order: an
    account bound to several houses there comes once after another (a caller skips the
    repeats without holding every id seen)."""
    bound = {"community_id": community_id, "account_id": {"$gt": after}}
    links = db[MEMBERSHIPS].find(bound, {"account_id": 1, "_id": 0}).sort("account_id", 1)
    return (link["account_id"] for link in links)


def owns(db: Any, account_id: str, house_id: str) -> bool:
    """Whether the account is the owner of the house."""
    found = db[MEMBERSHIPS].find_one(
        {"house_id": house_id, "account_id": account_id, "role": "owner"}, {"_id": 1}
    )
    return found is not None


def owner_first(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Members of a house, owner first, then by when they joined."""
    return sorted(members, key=lambda m: (m["role"] != "owner", m["_id"]))


def _not_member(db: Any, account_id: str) -> AppError:
    if db[MEMBERSHIPS].find_one({"account_id": account_id}, {"_id": 1}) is None:
        return AppError("HOUSE_NOT_BOUND")
    return AppError("FORBIDDEN", "您不是该房屋的成员")


def require_member_house(
    db: Any, account_id: str, house_id: str, also: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """(membership, house, community) for a member acting on one of their houses, in one
    aggregate (membership, house and community would otherwise be three round trips).

    HOUSE_NOT_BOUND when the account holds no house at all (the app then offers binding);
    FORBIDDEN when it holds others but not this one, whether or not the house exists (the
    refusal reads again); NOT_FOUND when the house itself is gone. ``also`` are further stages
    run on the membership in the same command (what they add stays on the membership).
    """
    rows = list(
        db[MEMBERSHIPS].aggregate(
            [
                {"$match": {"house_id": house_id, "account_id": account_id}},
                {"$limit": 1},
                {
                    "$lookup": {
                        "from": HOUSES,
                        "localField": "house_id",
                        "foreignField": "_id",
                        "as": "_house",
                    }
                },
                {
                    "$lookup": {
                        "from": COMMUNITIES,
                        "localField": "community_id",
                        "foreignField": "_id",
                        "as": "_community",
                    }
                },
                *(also or []),
            ]
        )
    )
    if not rows:
        raise _not_member(db, account_id)
    membership = rows[0]
    house, community = membership.pop("_house"), membership.pop("_community")
    if not house:
        raise AppError("NOT_FOUND", "未找到该房屋")
    return membership, house[0], community[0] if community else None


def add(
    db: Any,
    house: Mapping[str, Any],
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


def remove_all_except_owners(db: Any, owners: dict[str, str]) -> int:
    """Drop every membership of each house but its new owner's (``owners``: house id → the
    owner's account id), in one command."""
    if not owners:
        return 0
    gone = [{"house_id": h, "account_id": {"$ne": a}} for h, a in owners.items()]
    return db[MEMBERSHIPS].delete_many({"$or": gone}).deleted_count

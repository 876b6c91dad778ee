"""The memberships collection (住户关系): who lives where, as an account's role (owner, family,
tenant) on a house; its indexes, its queries and its writes.

A membership copies its house's community, so everyone bound in a community is one index range
away (a notice's delivery, a community's reminder).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal, TypedDict

from pymongo import IndexModel
from pymongo.errors import DuplicateKeyError

from caiyun.data.schema import declare
from caiyun.ids import new_id
from caiyun.stores.communities import COMMUNITIES, Community
from caiyun.stores.houses import HOUSES, House

ResidentRole = Literal["owner", "family", "tenant"]

MEMBERSHIPS = declare(
    "memberships",
    IndexModel([("house_id", 1), ("account_id", 1)], unique=True),
    IndexModel([("account_id", 1), ("community_id", 1)]),
    IndexModel([("house_id", 1), ("role", 1)]),
    # Everyone bound in a community, one account after the other (a notice's delivery).
    IndexModel([("community_id", 1), ("account_id", 1)]),
)


class Membership(TypedDict):
    """An account's role on a house, and who bound it there when."""

    _id: str
    house_id: str
    community_id: str
    account_id: str
    role: ResidentRole
    added_by: str
    created_at: datetime


def of_account(db: Any, account_id: str) -> list[Membership]:
    """Every house membership of an account, oldest first."""
    return list(db[MEMBERSHIPS].find({"account_id": account_id}).sort("_id", 1))


def owned_house_ids(db: Any, account_id: str) -> list[str]:
    """The ids of the houses the account owns."""
    found = db[MEMBERSHIPS].find({"account_id": account_id, "role": "owner"}, {"house_id": 1})
    return [m["house_id"] for m in found]


def holds_any(db: Any, account_id: str) -> bool:
    """Whether the account is bound to any house at all."""
    return db[MEMBERSHIPS].find_one({"account_id": account_id}, {"_id": 1}) is not None


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


def accounts_holding(db: Any, house_ids: list[str], roles: list[str]) -> dict[str, list[str]]:
    """For each of these houses that has any, the ids of the accounts holding one of
    ``roles`` on it. One command."""
    links = db[MEMBERSHIPS].find(
        {"house_id": {"$in": house_ids}, "role": {"$in": roles}}, {"house_id": 1, "account_id": 1}
    )
    held: dict[str, list[str]] = {}
    for link in links:
        held.setdefault(link["house_id"], []).append(link["account_id"])
    return held


def bound_house_count(db: Any, community_id: str) -> int:
    """How many houses of the community have anyone bound to them."""
    counted = list(
        db[MEMBERSHIPS].aggregate(
            [
                {"$match": {"community_id": community_id}},
                {"$group": {"_id": "$house_id"}},
                {"$count": "n"},
            ]
        )
    )
    return int(counted[0]["n"]) if counted else 0


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


def with_house(
    db: Any, account_id: str, house_id: str, also: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], House | None, Community | None] | None:
    """(membership, house, community) of the account on this house, in one aggregate
    (membership, house and community would otherwise be three round trips); None when the
    account is no member of it, a None house when the house is gone. ``also`` are further
    stages run on the membership in the same command (what they add stays on it, so it is
    more than a :class:`Membership`)."""
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
        return None
    membership = rows[0]
    house, community = membership.pop("_house"), membership.pop("_community")
    return membership, house[0] if house else None, community[0] if community else None


def add(
    db: Any,
    house: Mapping[str, Any],
    account_id: str,
    role: ResidentRole,
    now: datetime,
    added_by: str,
) -> tuple[Membership, bool]:
    """Make the account a member of the house; returns (membership, created).

    The unique house+account index decides a race: an existing membership is returned as is.
    """
    doc: Membership = {
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


def make_owner(db: Any, membership_id: str) -> None:
    """Turn this membership into the house's ownership."""
    db[MEMBERSHIPS].update_one({"_id": membership_id}, {"$set": {"role": "owner"}})


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

"""The staff collection (工作人员): the record, its indexes, its reads and its guarded writes.

A staff record is keyed by its account's id (one record per person). A record with
``all_communities`` (a company-wide admin) covers every community, including ones imported
later. A scoped record keeps its communities' names (``community_names``, id → name; a
community's name never changes), so the staff app is told them without another read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypedDict

from pymongo import IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from caiyun.data.schema import declare
from caiyun.stores.communities import names

StaffRole = Literal["admin", "repairman", "guard"]
STAFF_ROLES: tuple[StaffRole, ...] = ("admin", "repairman", "guard")

STAFF = declare(
    "staff",
    IndexModel([("community_ids", 1), ("role", 1)]),
    IndexModel("role"),
    IndexModel("all_communities"),
)


class StaffRecord(TypedDict):
    """A person's staff role and the communities it covers (none listed when company-wide)."""

    _id: str
    name: str
    role: StaffRole
    community_ids: list[str]
    community_names: dict[str, str]
    all_communities: bool
    created_at: datetime
    updated_at: datetime


def get(db: Any, account_id: str) -> StaffRecord | None:
    """The staff record of an account, if it has one."""
    return db[STAFF].find_one({"_id": account_id})


def upsert(
    db: Any,
    account_id: str,
    name: str,
    role: StaffRole,
    community_ids: list[str] | None,
    now: datetime,
) -> StaffRecord:
    """Make the account staff with this role and scope (``None`` scope = every community)."""
    return db[STAFF].find_one_and_update(
        {"_id": account_id},
        {
            "$set": {
                "name": name,
                "role": role,
                "community_ids": sorted(set(community_ids or [])),
                "community_names": names(db, community_ids) if community_ids else {},
                "all_communities": community_ids is None,
                "updated_at": now,
            },
            "$setOnInsert": {"created_at": now},
        },
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )


def change_where(
    db: Any,
    account_id: str,
    allowed: dict[str, Any],
    name: str,
    role: StaffRole,
    community_names: dict[str, str],
    now: datetime,
) -> StaffRecord | None:
    """Set the record as :func:`upsert` does (scoped to the communities of
    ``community_names``, id → name) if there is none or the one there matches the filter
    ``allowed``; None, writing nothing, when it does not.

    The check and the write are one conditional upsert, so a change racing another cannot
    land on a record the caller may no longer change.
    """
    try:
        return db[STAFF].find_one_and_update(
            {"_id": account_id, **allowed},
            {
                "$set": {
                    "name": name,
                    "role": role,
                    "community_ids": sorted(community_names),
                    "community_names": community_names,
                    "all_communities": False,
                    "updated_at": now,
                },
                "$setOnInsert": {"created_at": now},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:
        # A record exists that ``allowed`` does not match, so the upsert tried a second one.
        return None


def remove_as_seen(db: Any, seen: StaffRecord) -> bool:
    """Remove the record if its role and scope are still what the caller checked; False,
    removing nothing, when anything the checks relied on changed in between."""
    as_seen = {
        "_id": seen["_id"],
        "role": seen["role"],
        "community_ids": seen.get("community_ids", []),
        "all_communities": bool(seen.get("all_communities")),
    }
    return db[STAFF].delete_one(as_seen).deleted_count == 1

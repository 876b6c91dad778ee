"""Property staff: admins, repairmen and guards, each scoped to communities.

A staff record with ``all_communities`` (a company-wide admin) covers every community,
including ones imported later. A scoped record keeps its communities' names
(``community_names``, id → name; a community's name never changes), so the staff app is
told them without another read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pymongo import IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from caiyun.data.schema import declare
from caiyun.domain.messaging import consents_joined, spendable_of
from caiyun.errors import AppError
from caiyun.stores.communities import names

StaffRole = Literal["admin", "repairman", "guard"]
STAFF_ROLES: tuple[StaffRole, ...] = ("admin", "repairman", "guard")

# The key under which a caller's account carries its staff record, joined in by the lookup
# in ``accounts.caller_by_openid``.
STAFF_JOINED = "_staff_record"
STAFF = declare(
    "staff",
    IndexModel([("community_ids", 1), ("role", 1)]),
    IndexModel("role"),
    IndexModel("all_communities"),
)


def get(db: Any, account_id: str) -> dict[str, Any] | None:
    """The staff record of an account, if it has one."""
    return db[STAFF].find_one({"_id": account_id})


def of_account(db: Any, account: dict[str, Any]) -> dict[str, Any] | None:
    """The staff record of an account; a caller's account already carries it (no read)."""
    if STAFF_JOINED in account:
        return account[STAFF_JOINED]
    return get(db, account["_id"])


def is_admin_of(record: dict[str, Any] | None, community_id: str) -> bool:
    """Whether this staff record is an admin covering that community."""
    return record is not None and record["role"] == "admin" and covers(record, community_id)


def covers(staff: dict[str, Any] | None, community_id: str) -> bool:
    """Whether this staff record may act on that community."""
    if staff is None:
        return False
    return bool(staff.get("all_communities")) or community_id in staff.get("community_ids", [])


def admins_joined() -> list[dict[str, Any]]:
    """Aggregate stages that join, to a document with a ``community_id``, the staff records
    that may cover it (of the community, and company-wide ones) and their subscription
    consents; :func:`admins_of` reads the admins among them and the consents they have left.
    Every join is served by an index and brings back a handful of records.
    """
    return [
        {
            "$lookup": {
                "from": STAFF,
                "localField": "community_id",
                "foreignField": "community_ids",
                "as": "_staff_here",
            }
        },
        {"$set": {"_every": {"$literal": True}}},
        {
            "$lookup": {
                "from": STAFF,
                "localField": "_every",
                "foreignField": "all_communities",
                "as": "_staff_everywhere",
            }
        },
        {"$set": {"_staff_ids": {"$concatArrays": ["$_staff_here._id", "$_staff_everywhere._id"]}}},
        *consents_joined("_staff_ids"),
    ]


def admins_of(doc: dict[str, Any]) -> tuple[list[str], set[str]]:
    """The account ids of the admins covering the community of a document that went through
    :func:`admins_joined`, and the ids of the consents they have left for
    ``messaging.deliver_many`` (the joined fields are taken off the document)."""
    doc.pop("_every", None)
    doc.pop("_staff_ids", None)
    found = [*doc.pop("_staff_here", []), *doc.pop("_staff_everywhere", [])]
    admin_ids = list(dict.fromkeys(r["_id"] for r in found if r["role"] == "admin"))
    return admin_ids, spendable_of(doc)


def scope_query(record: dict[str, Any]) -> dict[str, Any]:
    """The filter that limits a query to the communities this staff record covers (none for a
    company-wide one), so a conditional write can check the scope itself."""
    if record.get("all_communities"):
        return {}
    return {"community_id": {"$in": record.get("community_ids", [])}}


def upsert(
    db: Any,
    account_id: str,
    name: str,
    role: StaffRole,
    community_ids: list[str] | None,
    now: datetime,
) -> dict[str, Any]:
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


def _as_seen(seen: dict[str, Any]) -> dict[str, Any]:
    # The fields the checks were made on; a write conditional on them fails if anything the
    # checks relied on changed in between.
    return {
        "_id": seen["_id"],
        "role": seen["role"],
        "community_ids": seen.get("community_ids", []),
        "all_communities": bool(seen.get("all_communities")),
    }


def change_where(
    db: Any,
    account_id: str,
    allowed: dict[str, Any],
    name: str,
    role: StaffRole,
    community_names: dict[str, str],
    now: datetime,
) -> dict[str, Any] | None:
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


def remove_checked(db: Any, seen: dict[str, Any]) -> None:
    """Remove the record if it is still what the caller checked; CONFLICT otherwise."""
    if db[STAFF].delete_one(_as_seen(seen)).deleted_count != 1:
        raise AppError("CONFLICT", "该工作人员刚被修改，请刷新后重试")


def require_scope(record: dict[str, Any], community_id: str) -> None:
    """FORBIDDEN unless this staff member may act on the community."""
    if not covers(record, community_id):
        raise AppError("FORBIDDEN", "不在您负责的小区范围内")

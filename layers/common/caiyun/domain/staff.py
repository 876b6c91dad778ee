"""Property staff: admins, repairmen and guards, each scoped to communities.

A staff record with ``all_communities`` (a company-wide admin) covers every community,
including ones imported later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pymongo import IndexModel, ReturnDocument

from caiyun.data.schema import declare
from caiyun.errors import AppError

StaffRole = Literal["admin", "repairman", "guard"]
STAFF_ROLES: tuple[StaffRole, ...] = ("admin", "repairman", "guard")

STAFF = declare("staff", IndexModel([("community_ids", 1), ("role", 1)]), IndexModel("role"))


def get(db: Any, account_id: str) -> dict[str, Any] | None:
    """The staff record of an account, if it has one."""
    return db[STAFF].find_one({"_id": account_id})


def covers(staff: dict[str, Any] | None, community_id: str) -> bool:
    """Whether this staff record may act on that community."""
    if staff is None:
        return False
    return bool(staff.get("all_communities")) or community_id in staff.get("community_ids", [])


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
                "all_communities": community_ids is None,
                "updated_at": now,
            },
            "$setOnInsert": {"created_at": now},
        },
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )


def remove(db: Any, account_id: str) -> bool:
    """Take away the account's staff role; False if it had none."""
    return db[STAFF].delete_one({"_id": account_id}).deleted_count == 1


def require_scope(record: dict[str, Any], community_id: str) -> None:
    """FORBIDDEN unless this staff member may act on the community."""
    if not covers(record, community_id):
        raise AppError("FORBIDDEN", "不在您负责的小区范围内")

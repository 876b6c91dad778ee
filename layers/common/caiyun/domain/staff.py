"""Property staff's rules: which communities a staff record covers, who admins a community
and is told of its news, and the scope a staff member's query or write is limited to.

The record itself (admins, repairmen and guards, each scoped to communities or company-wide)
is kept by ``caiyun.stores.staff``.
"""

from __future__ import annotations

from typing import Any

from caiyun.domain.messaging import consents_joined, spendable_of
from caiyun.errors import AppError
from caiyun.stores import staff as store
from caiyun.stores.accounts import STAFF_JOINED, Account
from caiyun.stores.staff import STAFF, StaffRecord


def of_account(db: Any, account: Account) -> StaffRecord | None:
    """The staff record of an account; a caller's account already carries it (no read)."""
    if STAFF_JOINED in account:
        return account[STAFF_JOINED]
    return store.get(db, account["_id"])


def is_admin_of(record: StaffRecord | None, community_id: str) -> bool:
    """Whether this staff record is an admin covering that community."""
    return record is not None and record["role"] == "admin" and covers(record, community_id)


def covers(staff: StaffRecord | None, community_id: str) -> bool:
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


def scope_query(record: StaffRecord) -> dict[str, Any]:
    """The filter that limits a query to the communities this staff record covers (none for a
    company-wide one), so a conditional write can check the scope itself."""
    if record.get("all_communities"):
        return {}
    return {"community_id": {"$in": record.get("community_ids", [])}}


def remove_checked(db: Any, seen: StaffRecord) -> None:
    """Remove the record if it is still what the caller checked; CONFLICT otherwise."""
    if not store.remove_as_seen(db, seen):
        raise AppError("CONFLICT", "该工作人员刚被修改，请刷新后重试")


def require_scope(record: StaffRecord, community_id: str) -> None:
    """FORBIDDEN unless this staff member may act on the community."""
    if not covers(record, community_id):
        raise AppError("FORBIDDEN", "不在您负责的小区范围内")

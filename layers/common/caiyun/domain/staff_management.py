"""Managing staff (维修员、门岗、管理员) within an admin's own communities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caiyun import labels
from caiyun.crypto import mask_phone
from caiyun.data import paging
from caiyun.domain import create_limits, staff
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import communities as community_store
from caiyun.stores import staff as staff_store
from caiyun.stores.staff import StaffRecord


def _within_scope(admin: StaffRecord, target: StaffRecord) -> bool:
    if admin.get("all_communities"):
        return True
    if target.get("all_communities"):
        return False
    return set(target.get("community_ids", [])) <= set(admin.get("community_ids", []))


def add_staff(
    services: Services,
    admin: StaffRecord,
    phone: str,
    name: str,
    role: staff_store.StaffRole,
    community_ids: list[str],
) -> dict[str, Any]:
    """Make the person at ``phone`` staff of the given communities (creating their account).

    An admin grants only communities they cover; only a company-wide admin appoints admins.
    """
    db, now = services.db, services.clock.now()
    for community_id in community_ids:
        staff.require_scope(admin, community_id)
    known = community_store.names(db, community_ids)
    missing = [c for c in community_ids if c not in known]
    if missing:
        raise AppError("NOT_FOUND", "小区不存在", {"missing": missing})
    if role == "admin" and not admin.get("all_communities"):
        raise AppError("FORBIDDEN", "只有总部管理员可以任命小区管理员")
    create_limits.take_daily(services, "staff_adds", admin["_id"])
    account, _ = account_store.ensure_account(db, phone, now, name)
    record = staff_store.change_where(
        db, account["_id"], _changeable_by(admin), name, role, known, now
    )
    if record is None:
        existing = staff_store.get(db, account["_id"])
        if existing is not None and not _within_scope(admin, existing):
            raise AppError("CONFLICT", "该手机号已是其他小区的工作人员")
        if existing is not None and existing["role"] == "admin":
            # Changing an admin's role would let one community admin demote another.
            raise AppError("FORBIDDEN", "只有总部管理员可以调整管理员")
        raise AppError("CONFLICT", "该工作人员刚被修改，请刷新后重试")
    return view(record, phone)


def _changeable_by(admin: StaffRecord) -> dict[str, Any]:
    # :func:`_within_scope` and "only a company-wide admin changes an admin" as a filter on the
    # existing record, so the staff write checks them atomically instead of after a read.
    if admin.get("all_communities"):
        return {}
    return {
        "all_communities": {"$ne": True},
        "role": {"$ne": "admin"},
        "community_ids": {"$not": {"$elemMatch": {"$nin": admin.get("community_ids", [])}}},
    }


def view(record: Mapping[str, Any], phone: str | None) -> dict[str, Any]:
    """A staff record as the staff app lists it."""
    return {
        "account_id": record["_id"],
        "name": record["name"],
        "phone": mask_phone(phone),
        "role": record["role"],
        "role_name": labels.name("staff_role", record["role"]),
        "community_ids": record.get("community_ids", []),
        "all_communities": bool(record.get("all_communities")),
    }


def list_staff(
    services: Services, admin: StaffRecord, role: str | None, page: int, page_size: int
) -> tuple[list[dict[str, Any]], int]:
    """Staff whose communities overlap the admin's (all staff for a company-wide admin)."""
    query: dict[str, Any] = {}
    if role:
        query["role"] = role
    if not admin.get("all_communities"):
        query["community_ids"] = {"$in": admin.get("community_ids", [])}
    phone: list[dict[str, Any]] = [
        {
            "$lookup": {
                "from": account_store.ACCOUNTS,
                "localField": "_id",
                "foreignField": "_id",
                "as": "_account",
            }
        },
        {"$set": {"_phone": {"$arrayElemAt": ["$_account.phone", 0]}}},
        {"$project": {"_account": 0}},
    ]
    records, total, _ = paging.page(
        services.db[staff_store.STAFF], query, [("_id", 1)], page, page_size, item_stages=phone
    )
    return [view(r, r.get("_phone")) for r in records], total


def remove_staff(services: Services, admin: StaffRecord, account_id: str) -> None:
    """Take the staff role away from someone within the admin's scope (never oneself)."""
    if account_id == admin["_id"]:
        raise AppError("CONFLICT", "不能移除自己")
    target = staff_store.get(services.db, account_id)
    if target is None:
        raise AppError("NOT_FOUND", "该工作人员不存在")
    if not _within_scope(admin, target) or (
        target["role"] == "admin" and not admin.get("all_communities")
    ):
        raise AppError("FORBIDDEN", "无权移除该工作人员")
    staff.remove_checked(services.db, target)

"""A community at a glance for the property office: its houses and how many are bound."""

from __future__ import annotations

from typing import Any

from caiyun.domain import staff
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores import communities as community_store
from caiyun.stores import houses as house_store
from caiyun.stores import memberships as membership_store
from caiyun.stores.staff import StaffRecord


def community_overview(services: Services, admin: StaffRecord, community_id: str) -> dict[str, Any]:
    """How many houses the community has and how many have someone bound in the app (by the
    community index of each collection). FORBIDDEN outside the admin's scope (checked first,
    so other communities' existence stays hidden), NOT_FOUND for no such community."""
    staff.require_scope(admin, community_id)
    db = services.db
    community = community_store.get(db, community_id)
    if community is None:
        raise AppError("NOT_FOUND", "小区不存在")
    bound = membership_store.bound_house_count(db, community_id)
    return {
        "community_id": community_id,
        "community_name": community["name"],
        "houses": house_store.count_in(db, community_id),
        "bound_houses": bound,
    }

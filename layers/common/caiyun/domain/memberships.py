"""Memberships' rules: what a resident may list (their own filings and all of their houses'),
who a house's members are in what order, and the refusals of a member acting on a house.

The record (an account's role on a house) is kept by ``caiyun.stores.memberships``.
"""

from __future__ import annotations

from typing import Any

from caiyun.errors import AppError
from caiyun.stores import memberships as store
from caiyun.stores.accounts import OWNED_JOINED, Account
from caiyun.stores.communities import Community
from caiyun.stores.houses import House


def filed_or_owned(db: Any, account: Account, filer_field: str) -> dict[str, Any]:
    """The filter for records a resident may list: those they filed (``filer_field`` names
    them), and those filed by anyone for a house they own (an owner sees every repair,
    complaint and visitor of their houses). The owned houses come with a resident caller's
    lookup; otherwise they are read."""
    account_id = account["_id"]
    owned = account.get(OWNED_JOINED)
    if owned is None:
        owned = store.owned_house_ids(db, account_id)
    mine = {filer_field: account_id}
    return {"$or": [mine, {"house_id": {"$in": owned}}]} if owned else mine


def owner_first(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Members of a house, owner first, then by when they joined."""
    return sorted(members, key=lambda m: (m["role"] != "owner", m["_id"]))


def require_member_house(
    db: Any, account_id: str, house_id: str, also: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], House, Community | None]:
    """(membership, house, community) for a member acting on one of their houses, in one
    command (``also``: further stages run on the membership in it).

    HOUSE_NOT_BOUND when the account holds no house at all (the app then offers binding);
    FORBIDDEN when it holds others but not this one, whether or not the house exists (the
    refusal reads again); NOT_FOUND when the house itself is gone.
    """
    found = store.with_house(db, account_id, house_id, also)
    if found is None:
        if not store.holds_any(db, account_id):
            raise AppError("HOUSE_NOT_BOUND")
        raise AppError("FORBIDDEN", "您不是该房屋的成员")
    membership, house, community = found
    if house is None:
        raise AppError("NOT_FOUND", "未找到该房屋")
    return membership, house, community

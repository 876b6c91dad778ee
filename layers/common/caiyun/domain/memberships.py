"""Who lives where: an account's role (owner, family, tenant) on a house."""

from __future__ import annotations

from typing import Any, Literal

from pymongo import IndexModel

from caiyun.data.schema import declare

ResidentRole = Literal["owner", "family", "tenant"]

MEMBERSHIPS = declare(
    "memberships",
    IndexModel([("house_id", 1), ("account_id", 1)], unique=True),
    IndexModel([("account_id", 1), ("community_id", 1)]),
    IndexModel([("community_id", 1), ("role", 1)]),
)


def of_account(db: Any, account_id: str) -> list[dict[str, Any]]:
    """Every house membership of an account, oldest first."""
    return list(db[MEMBERSHIPS].find({"account_id": account_id}).sort("_id", 1))

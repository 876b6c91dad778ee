"""Houses (房屋) as people see them: a house's label, what a record about it copies, and the
building → unit → room tree of a community. The record is :mod:`caiyun.stores.houses`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caiyun.errors import AppError
from caiyun.stores import communities as community_store
from caiyun.stores import houses as store
from caiyun.stores.places import Place


def label(house: Mapping[str, Any]) -> str:
    """How a house is named to people: ``3栋-2单元-1201``."""
    return f"{house['building']}-{house['unit']}-{house['room']}"


def where(house: Mapping[str, Any], community: Mapping[str, Any] | None) -> Place:
    """The fields a record about this house keeps so it can be listed and shown without
    reading the house or its community again."""
    return {
        "community_id": house["community_id"],
        "community_name": (community or {}).get("name", ""),
        "house_id": house["_id"],
        "house_label": label(house),
    }


def tree(db: Any, community_id: str) -> list[dict[str, Any]]:
    """Buildings → units → rooms of a community, for the picker; no owner data.

    NOT_FOUND for a community that does not exist (an empty one has an empty tree).
    """
    found = store.addresses_of(db, community_id)
    # A house exists only in an existing community, so the community is read only when the
    # tree is empty (an empty community has an empty tree, an unknown one is NOT_FOUND).
    if not found and community_store.get(db, community_id) is None:
        raise AppError("NOT_FOUND", "小区不存在")
    buildings: dict[str, dict[str, list[dict[str, str]]]] = {}
    for house in found:
        units = buildings.setdefault(house["building"], {})
        units.setdefault(house["unit"], []).append(
            {"room": house["room"], "house_id": house["_id"]}
        )
    return [
        {"building": b, "units": [{"unit": u, "rooms": rooms} for u, rooms in units.items()]}
        for b, units in buildings.items()
    ]

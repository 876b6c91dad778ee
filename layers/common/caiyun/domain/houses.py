"""Houses (房屋): building → unit → room within a community, with the imported owner record."""

from __future__ import annotations

from typing import Any

from pymongo import IndexModel

from caiyun.data.schema import declare
from caiyun.errors import AppError
from caiyun.stores import communities as community_store
from caiyun.stores.places import Place

HOUSES = declare(
    "houses",
    IndexModel([("community_id", 1), ("building", 1), ("unit", 1), ("room", 1)], unique=True),
)


def label(house: dict[str, Any]) -> str:
    """How a house is named to people: ``3栋-2单元-1201``."""
    return f"{house['building']}-{house['unit']}-{house['room']}"


def where(house: dict[str, Any], community: dict[str, Any] | None) -> Place:
    """The fields a record about this house keeps so it can be listed and shown without
    reading the house or its community again."""
    return {
        "community_id": house["community_id"],
        "community_name": (community or {}).get("name", ""),
        "house_id": house["_id"],
        "house_label": label(house),
    }


def get(db: Any, house_id: str) -> dict[str, Any] | None:
    """The house with this id."""
    return db[HOUSES].find_one({"_id": house_id})


def by_address(
    db: Any, community_id: str, *, building: str, unit: str, room: str
) -> dict[str, Any] | None:
    """The house at this address."""
    return db[HOUSES].find_one(at_address(community_id, building, unit, room))


def at_address(community_id: str, building: str, unit: str, room: str) -> dict[str, str]:
    """The filter for the house at this address (the unique address index serves it)."""
    return {"community_id": community_id, "building": building, "unit": unit, "room": room}


def tree(db: Any, community_id: str) -> list[dict[str, Any]]:
    """Buildings → units → rooms of a community, for the picker; no owner data.

    NOT_FOUND for a community that does not exist (an empty one has an empty tree).
    """
    found = list(
        db[HOUSES]
        .find({"community_id": community_id}, {"building": 1, "unit": 1, "room": 1})
        .sort([("building", 1), ("unit", 1), ("room", 1)])
    )
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

"""The houses collection (房屋): the record, its unique address index, its queries and the owner
import's writes.

A house is keyed by its address (community, building, unit, room: the unique index), so two
imports naming the same house make one; the imported owner (name and phone) is kept on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypedDict

from pymongo import IndexModel, UpdateOne

from caiyun.data.inserts import insert_new
from caiyun.data.schema import declare

HOUSES = declare(
    "houses",
    IndexModel([("community_id", 1), ("building", 1), ("unit", 1), ("room", 1)], unique=True),
)

# building, unit, room
Address = tuple[str, str, str]


class HouseAddress(TypedDict):
    """Where a house is: its unique key."""

    community_id: str
    building: str
    unit: str
    room: str


class House(HouseAddress):
    """A house of a community, with the owner the company's record names."""

    _id: str
    owner_name: str
    owner_phone: str
    created_at: datetime
    updated_at: datetime


def at_address(community_id: str, building: str, unit: str, room: str) -> HouseAddress:
    """The filter for the house at this address (the unique address index serves it)."""
    return {"community_id": community_id, "building": building, "unit": unit, "room": room}


def get(db: Any, house_id: str) -> House | None:
    """The house with this id."""
    return db[HOUSES].find_one({"_id": house_id})


def by_address(db: Any, community_id: str, *, building: str, unit: str, room: str) -> House | None:
    """The house at this address."""
    return db[HOUSES].find_one(at_address(community_id, building, unit, room))


def ids_after(db: Any, after: str, limit: int) -> list[str]:
    """At most ``limit`` house ids past ``after``, in id order (a walk over every house that
    can stop and resume)."""
    found = db[HOUSES].find({"_id": {"$gt": after}}, {"_id": 1}).sort("_id", 1).limit(limit)
    return [house["_id"] for house in found]


def addresses_by_id(db: Any, house_ids: list[str]) -> list[dict[str, Any]]:
    """These houses as ``{_id, community_id, building, unit, room}`` (no owner data)."""
    fields = {"community_id": 1, "building": 1, "unit": 1, "room": 1}
    return list(db[HOUSES].find({"_id": {"$in": house_ids}}, fields))


def count_in(db: Any, community_id: str) -> int:
    """How many houses the community has."""
    return int(db[HOUSES].count_documents({"community_id": community_id}))


def addresses_of(db: Any, community_id: str) -> list[dict[str, Any]]:
    """Every house of a community as ``{_id, building, unit, room}`` (no owner data), by
    address."""
    found = db[HOUSES].find({"community_id": community_id}, {"building": 1, "unit": 1, "room": 1})
    return list(found.sort([("building", 1), ("unit", 1), ("room", 1)]))


def at_addresses(db: Any, community_id: str, addresses: Iterable[Address]) -> list[House]:
    """The houses at these addresses, in one command: one ``$or`` branch per address, each an
    exact match on the unique address index."""
    branches = [at_address(community_id, *address) for address in sorted(addresses)]
    if not branches:
        return []
    fields = {"building": 1, "unit": 1, "room": 1, "owner_name": 1, "owner_phone": 1}
    return list(db[HOUSES].find({"$or": branches}, fields))


def insert_all(db: Any, new: list[House]) -> list[int]:
    """Insert these houses; the positions (in ``new``) of those whose address another import
    took meanwhile."""
    return insert_new(db[HOUSES], new)


def set_owners(db: Any, changed: list[House], now: datetime) -> None:
    """Write each house's owner (name and phone) as given, in one command."""
    if not changed:
        return
    db[HOUSES].bulk_write(
        [
            UpdateOne(
                {"_id": h["_id"]},
                {
                    "$set": {
                        "owner_name": h["owner_name"],
                        "owner_phone": h["owner_phone"],
                        "updated_at": now,
                    }
                },
            )
            for h in changed
        ],
        ordered=False,
    )

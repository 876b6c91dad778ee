"""The communities collection (小区): the record, its indexes and its queries.

A community is keyed by its region and name (the unique index), so two imports naming the same
community make one, and its name never changes: records about a house copy it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict, cast

from pymongo import IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from caiyun.data.schema import declare
from caiyun.ids import new_id

COMMUNITIES = declare(
    "communities",
    IndexModel([("province", 1), ("city", 1), ("district", 1), ("name", 1)], unique=True),
    IndexModel("name"),
)


class Community(TypedDict):
    """A community: where it is (province → city → district) and its name and address."""

    _id: str
    province: str
    city: str
    district: str
    name: str
    address: str
    created_at: datetime


def get(db: Any, community_id: str) -> Community | None:
    """The community with this id."""
    return db[COMMUNITIES].find_one({"_id": community_id})


def find(db: Any, region: dict[str, str]) -> list[Community]:
    """Communities in a region (any of province, city, district), by region then name."""
    found = db[COMMUNITIES].find({k: v for k, v in region.items() if v})
    return list(found.sort([("province", 1), ("city", 1), ("district", 1), ("name", 1)]))


def id_at(db: Any, *, province: str, city: str, district: str, name: str) -> str | None:
    """The id of the community of that name in that region (the unique key), if there is one."""
    key = {"province": province, "city": city, "district": district, "name": name}
    found = db[COMMUNITIES].find_one(key, {"_id": 1})
    return None if found is None else str(found["_id"])


def every_name(db: Any) -> dict[str, str]:
    """Every community's name by id, in name order."""
    found = db[COMMUNITIES].find({}, {"name": 1}).sort("name", 1)
    return {c["_id"]: c["name"] for c in found}


def regions(db: Any) -> list[tuple[str, str, str]]:
    """Every (province, city, district) that has a community; one command, however many
    communities there are."""
    rows = db[COMMUNITIES].aggregate(
        [{"$group": {"_id": {"province": "$province", "city": "$city", "district": "$district"}}}]
    )
    return [(r["_id"]["province"], r["_id"]["city"], r["_id"]["district"]) for r in rows]


def names(db: Any, community_ids: list[str]) -> dict[str, str]:
    """Community names by id, in one query."""
    return {
        c["_id"]: c["name"]
        for c in db[COMMUNITIES].find({"_id": {"$in": community_ids}}, {"name": 1})
    }


def as_group_row(db: Any, community_id: str, then: list[dict[str, Any]]) -> Any:
    """Rows for one community shaped ``{_id, since, community: [{name}]}`` (a list groups by
    community in that shape), run on through the stages ``then``. One command."""
    return db[COMMUNITIES].aggregate(
        [
            {"$match": {"_id": community_id}},
            {"$project": {"_id": 1, "since": "$_id"}},
            {
                "$lookup": {
                    "from": COMMUNITIES,
                    "localField": "_id",
                    "foreignField": "_id",
                    "as": "community",
                }
            },
            *then,
        ]
    )


def upsert(db: Any, fields: dict[str, str], now: datetime) -> tuple[Community, bool]:
    """The community with this region and name, created if new; the address is updated.

    Returns (community, created). Keyed on the unique region+name, so racing imports of the
    same community make one.
    """
    key = {k: fields[k] for k in ("province", "city", "district", "name")}
    new = new_id()
    for _ in range(2):
        try:
            doc = db[COMMUNITIES].find_one_and_update(
                key,
                {
                    "$set": {"address": fields.get("address", "")},
                    "$setOnInsert": {"_id": new, "created_at": now},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            return cast(Community, doc), doc["_id"] == new
        except DuplicateKeyError:
            continue
    raise RuntimeError("community upsert kept colliding")


def by_id_or_name(db: Any, ref: str) -> Community | None:
    """A community by id, else by its exact name when that name is unique."""
    found = get(db, ref)
    if found is not None:
        return found
    matches = list(db[COMMUNITIES].find({"name": ref}).limit(2))
    return matches[0] if len(matches) == 1 else None

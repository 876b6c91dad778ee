"""Communities (小区): the region → community level of the selection lists."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo import IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from caiyun.data.schema import declare
from caiyun.ids import new_id

COMMUNITIES = declare(
    "communities",
    IndexModel([("province", 1), ("city", 1), ("district", 1), ("name", 1)], unique=True),
    IndexModel("name"),
)


def get(db: Any, community_id: str) -> dict[str, Any] | None:
    """The community with this id."""
    return db[COMMUNITIES].find_one({"_id": community_id})


def view(community: dict[str, Any]) -> dict[str, Any]:
    """A community as the pickers show it."""
    fields = ("name", "province", "city", "district", "address")
    return {"community_id": community["_id"], **{k: community.get(k, "") for k in fields}}


def find(db: Any, region: dict[str, str]) -> list[dict[str, Any]]:
    """Communities in a region (any of province, city, district), by region then name."""
    return list(
        db[COMMUNITIES]
        .find({k: v for k, v in region.items() if v})
        .sort([("province", 1), ("city", 1), ("district", 1), ("name", 1)])
    )


def regions(db: Any) -> list[dict[str, Any]]:
    """The provinces, cities and districts that have communities, for the binding picker
    (省 → 市 → 区), sorted; one command, however many communities there are."""
    rows = db[COMMUNITIES].aggregate(
        [{"$group": {"_id": {"province": "$province", "city": "$city", "district": "$district"}}}]
    )
    tree: dict[str, dict[str, set[str]]] = {}
    for row in rows:
        where = row["_id"]
        tree.setdefault(where["province"], {}).setdefault(where["city"], set()).add(
            where["district"]
        )
    return [
        {
            "province": province,
            "cities": [
                {"city": city, "districts": sorted(districts)}
                for city, districts in sorted(cities.items())
            ],
        }
        for province, cities in sorted(tree.items())
    ]


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


def name_on(db: Any, doc: Mapping[str, Any]) -> str:
    """The name of the community a document belongs to: the copy it carries when it was
    written with one (a community's name never changes: it is part of its unique key), else
    looked up."""
    if "community_name" in doc:
        return doc["community_name"]
    return names(db, [doc["community_id"]]).get(doc["community_id"], "")


def upsert(db: Any, fields: dict[str, str], now: datetime) -> tuple[dict[str, Any], bool]:
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
            return doc, doc["_id"] == new
        except DuplicateKeyError:
            continue
    raise RuntimeError("community upsert kept colliding")


def by_id_or_name(db: Any, ref: str) -> dict[str, Any] | None:
    """A community by id, else by its exact name when that name is unique."""
    found = get(db, ref)
    if found is not None:
        return found
    matches = list(db[COMMUNITIES].find({"name": ref}).limit(2))
    return matches[0] if len(matches) == 1 else None

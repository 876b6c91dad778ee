"""Communities (小区) as the apps show them: the pickers' entries and region tree, and the name
a record carries. The record and its queries are :mod:`caiyun.stores.communities`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caiyun.stores import communities as store


def _view(community: Mapping[str, Any]) -> dict[str, Any]:
    """A community as the pickers show it."""
    fields = ("name", "province", "city", "district", "address")
    return {"community_id": community["_id"], **{k: community.get(k, "") for k in fields}}


def in_region(db: Any, region: dict[str, str]) -> list[dict[str, Any]]:
    """The communities of a region (any of province, city, district) as the pickers show them,
    by region then name."""
    return [_view(c) for c in store.find(db, region)]


def regions(db: Any) -> list[dict[str, Any]]:
    """The provinces, cities and districts that have communities, for the binding picker
    (省 → 市 → 区), sorted; one command, however many communities there are."""
    tree: dict[str, dict[str, set[str]]] = {}
    for province, city, district in store.regions(db):
        tree.setdefault(province, {}).setdefault(city, set()).add(district)
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


def name_on(db: Any, doc: Mapping[str, Any]) -> str:
    """The name of the community a document belongs to: the copy it carries when it was
    written with one (a community's name never changes: it is part of its unique key), else
    looked up."""
    if "community_name" in doc:
        return doc["community_name"]
    return store.names(db, [doc["community_id"]]).get(doc["community_id"], "")

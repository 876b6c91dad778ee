"""One page of a collection, its total and any extra counts, in one database command."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def window(page: int, page_size: int) -> list[dict[str, Any]]:
    """The ``$skip``/``$limit`` stages that keep page ``page`` (from 1) of a sorted pipeline."""
    stages: list[dict[str, Any]] = []
    if page > 1:
        stages.append({"$skip": (page - 1) * page_size})
    stages.append({"$limit": page_size})
    return stages


def page(
    collection: Any,
    query: dict[str, Any],
    sort: list[tuple[str, int]],
    page: int,
    page_size: int,
    projection: dict[str, Any] | None = None,
    extra_counts: dict[str, dict[str, Any]] | None = None,
    item_stages: list[dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    """Page ``page`` (from 1) of the documents matching ``query`` in ``sort`` order.

    Returns ``(items, total, counts)``: at most ``page_size`` documents (with ``projection``
    applied, as ``find`` would), how many documents match ``query`` in all, and for each
    ``name: extra`` in ``extra_counts`` how many match both ``query`` and ``extra`` (the
    inbox's unread count). Nothing matching gives ``([], 0, {name: 0, ...})``.
    ``item_stages`` run on the page's documents only, after ``projection`` (a ``$lookup`` of
    what each item shows costs the page's size, not the collection's).

    Works on MongoDB and on the embedded engine alike (both run ``$facet``).
    """
    if page < 1 or page_size < 1:
        raise ValueError("page and page_size start at 1")
    extra_counts = extra_counts or {}
    if {"items", "total"} & extra_counts.keys():
        raise ValueError("extra_counts may not be named items or total")
    items = window(page, page_size)
    if projection:
        items.append({"$project": projection})
    items.extend(item_stages or [])
    facets: dict[str, list[dict[str, Any]]] = {
        "items": items,
        "total": [{"$count": "n"}],
        **{name: [{"$match": extra}, {"$count": "n"}] for name, extra in extra_counts.items()},
    }
    # One aggregate instead of count_documents + find: a read action stays within its budget
    # of two database commands (one is the caller lookup), i.e. one round trip for the page.
    # The $sort sits before $facet, right after $match, so the index that served find's
    # filter and sort still serves both here; stages inside $facet can use no index.
    pipeline = [{"$match": query}, {"$sort": dict(sort)}, {"$facet": facets}]
    result: dict[str, Any] = next(iter(collection.aggregate(pipeline)), {})
    counts = {name: (result.get(name) or [{"n": 0}])[0]["n"] for name in ["total", *extra_counts]}
    total = counts.pop("total")
    return list(result.get("items", [])), total, counts


def tabbed(
    collection: Any,
    query: dict[str, Any],
    tab_field: str,
    tab: Any,
    sort: list[tuple[str, int]],
    page: int,
    page_size: int,
    projection: dict[str, Any] | None = None,
    shaping: list[dict[str, Any]] | None = None,
    tabs: Iterable[Any] = (),
) -> tuple[list[dict[str, Any]], int, dict[Any, int]]:
    """A page as :func:`page` gives it, of the documents matching ``query`` whose ``tab_field``
    is ``tab`` (any, when ``tab`` is None), with how many match ``query`` per value of
    ``tab_field``: the counts a list's tabs show. One command. ``shaping`` stages run between
    the match and the sort (to make the rows listed out of the documents matched). Every value
    in ``tabs`` is counted, 0 when no document holds it (a list shows every tab).

    Returns ``(items, total, counts)``; ``total`` counts the tab's documents.
    """
    in_tab = [] if tab is None else [{"$match": {tab_field: tab}}]
    items = [*in_tab, *window(page, page_size)]
    if projection:
        items.append({"$project": projection})
    facets = {
        "items": items,
        "total": [*in_tab, {"$count": "n"}],
        "tabs": [{"$group": {"_id": f"${tab_field}", "n": {"$sum": 1}}}],
    }
    # As in page(): the sort right after the match keeps the index serving both; the tab's
    # own match inside the facet keeps that order.
    pipeline = [{"$match": query}, *(shaping or []), {"$sort": dict(sort)}, {"$facet": facets}]
    result: dict[str, Any] = next(iter(collection.aggregate(pipeline)), {})
    total = (result.get("total") or [{"n": 0}])[0]["n"]
    counts = {row["_id"]: row["n"] for row in result.get("tabs", [])}
    counts = {**dict.fromkeys(tabs, 0), **counts}
    return list(result.get("items", [])), total, counts

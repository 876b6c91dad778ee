"""mongomock's collection and cursor, answering through the hash indexes.

:mod:`caiyun.data.embedded_indexes` keeps the indexes and plans with them; this module replaces
the mongomock methods that would otherwise scan every document, importing it installs them
(``caiyun.data.embedded`` does): a query's documents and a unique check come from the index
plan, a sorted page is cut before it is copied, a paged ``$facet`` (a list with its total and
tab counts) is answered from the matched documents without running each facet over all of
them, and an in-place update unindexes the document first and indexes it again after. Every
answer is still mongomock's own filter's over the narrowed documents.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from mongomock import aggregate, helpers
from mongomock.collection import Collection, Cursor
from mongomock.command_cursor import CommandCursor
from mongomock.filtering import NOTHING, filter_applies
from pymongo.errors import DuplicateKeyError

# Types whose equality is plain Python equality with a consistent hash, in mongomock's filter as
# in a dict; values of any other type are never used as keys.
from caiyun.data.embedded_indexes import SORTABLE_IDS, IndexedStore, unique_key

_scan = Collection._iter_documents
_scan_uniques = Collection._ensure_uniques
_get_dataset = Collection._get_dataset
_compute_results = Cursor._compute_results
_whole_aggregate = Collection.aggregate


def _iter_documents(self: Collection, query: Any) -> Iterator[dict[str, Any]]:
    store = self._store
    if not isinstance(store, IndexedStore) or not isinstance(query, dict):
        return _scan(self, query)
    store._remove_expired_documents()
    planned = store.plan(query)
    if planned is None:
        return _scan(self, query)
    keys, residual = planned
    docs = [store._documents[key] for key in keys]
    if not docs:
        filter_applies(query, {})  # mongomock's validation of a filter on no documents
    if not residual:
        return iter(docs)
    return (doc for doc in docs if filter_applies(residual, doc))


def _ensure_uniques(self: Collection, new_data: dict[str, Any]) -> None:
    # mongomock checks every unique index with a query that, for a partial index, also lists
    # every document outside it (all accounts without an openid share the key None): a scan
    # per write. A document a partial index leaves out is bound by nothing (MongoDB's rule),
    # and otherwise the equality on the index's fields is answered from the hash index.
    store = self._store
    if not isinstance(store, IndexedStore):
        _scan_uniques(self, new_data)
        return
    own = store.stored_key(new_data)
    for spec in store.indexes.values():
        if not spec.get("unique"):
            continue
        value = unique_key(new_data, spec)
        if value is None:
            continue
        query = {field: v for (field, _), v in zip(spec["key"], value, strict=True)}
        # As mongomock counts: the documents the index holds that match the key, new_data
        # included when it matches its own key (its values are already stored).
        holders = [d for d in _iter_documents(self, query) if unique_key(d, spec) is not None]
        if len(holders) < 2:
            continue
        tolerated = store.tolerated
        if own in tolerated and all(store.stored_key(doc) in tolerated for doc in holders):
            continue
        raise DuplicateKeyError("E11000 Duplicate Key Error", 11000)


def _get_indexed_dataset(
    self: Collection, spec: Any, sort: Any, fields: Any, as_class: Any
) -> Iterator[Any]:
    store = self._store
    walk = store.walk_by_id(spec, sort) if isinstance(store, IndexedStore) else None
    if walk is None:
        yield from _get_dataset(self, spec, sort, fields, as_class)
        return
    for doc in walk:
        yield self._copy_only_fields(doc, fields, as_class)


def _compute_page(self: Cursor, with_limit_and_skip: bool = False) -> list[Any]:
    # mongomock builds (and copies) every matching document before applying a limit, and slices
    # its results again for every document the cursor hands out; read only as many as the page
    # needs, once per query, skip and limit.
    if not with_limit_and_skip:
        return _compute_results(self, with_limit_and_skip)
    shape = (self._factory, self._skip, self._limit)
    page = getattr(self, "_caiyun_page", None)
    if page is None or page[0] != shape:
        stop = self._skip + abs(self._limit) if self._limit else None
        rows = list(itertools.islice(self._factory(), stop))[self._skip :]
        if self.collection.codec_options.tz_aware:
            rows = [helpers.make_datetime_timezone_aware_in_document(row) for row in rows]
        # A cache on the cursor, which mongomock's Cursor does not declare.
        page = self._caiyun_page = (shape, rows)  # type: ignore[attr-defined]
    return page[1]


def _aggregate(self: Collection, pipeline: Any, session: Any = None, **unused: Any) -> Any:
    # mongomock copies the whole collection into every pipeline; a leading $match is the same
    # filter as a find's (both compare naive UTC datetimes), so let the find narrow it first.
    first = pipeline[0] if pipeline and isinstance(pipeline, list) else None
    if isinstance(first, dict) and list(first) == ["$match"] and isinstance(first["$match"], dict):
        paged = _paged_facet(self, pipeline, session)
        if paged is not None:
            return paged
        found = list(self.find(pipeline[0]["$match"]))
        return aggregate.process_pipeline(found, self.database, pipeline[1:], session)
    return _whole_aggregate(self, pipeline, session, **unused)


# Sort values whose order within one type is Python's (as BSON's): a page can be sorted from
# the stored documents without mongomock's comparator.
_SORTABLE_VALUES = frozenset({str, ObjectId, int, datetime})


def _sort_in_place(docs: list[dict[str, Any]], sort: dict[str, Any]) -> bool:
    """Sort stored documents by ``sort`` (top-level fields, 1/-1) when every value of each
    field is of one sortable type; False (unsorted) otherwise."""
    if not sort or not all(
        isinstance(f, str) and "." not in f and d in (1, -1) for f, d in sort.items()
    ):
        return False
    for field in sort:
        try:
            kinds = set(map(type, map(operator.itemgetter(field), docs)))
        except KeyError:
            return False  # a missing value sorts as null: left to mongomock
        if len(kinds) > 1 or not kinds <= _SORTABLE_VALUES:
            return False
    for field, direction in reversed(list(sort.items())):  # stable: last key first
        docs.sort(key=operator.itemgetter(field), reverse=direction == -1)
    return True


def _paged_facet(self: Collection, pipeline: list[Any], session: Any) -> Any:
    """``[$match, $sort, $facet]`` as a list page asks it (``caiyun.data.paging``), answered
    from the stored documents: the filter narrowed by the indexes, the sort on the stored
    values, counts without copies, and only the page's documents copied into the pipeline.
    mongomock would copy and compare every matching document. None when the pipeline is of
    another shape or its sort values are not plainly ordered."""
    if len(pipeline) != 3 or not all(isinstance(stage, dict) for stage in pipeline):
        return None
    if [list(stage) for stage in pipeline[1:]] != [["$sort"], ["$facet"]]:
        return None
    sort, facets = pipeline[1]["$sort"], pipeline[2]["$facet"]
    if not isinstance(sort, dict) or not isinstance(facets, dict):
        return None
    query = helpers.patch_datetime_awareness_in_document(pipeline[0]["$match"])
    store = self._store
    # Ties keep the store's order, as in mongomock; sorted by _id there are none to keep.
    ordered = "_id" not in sort
    planned = None
    if isinstance(store, IndexedStore):
        store._remove_expired_documents()
        planned = store.plan(query, ordered)
    if planned is not None and not planned[1] and list(sort) == ["_id"] and sort["_id"] in (1, -1):
        # Answered by the index and sorted by _id: count the keys and pick the page's out of
        # them; only the page's documents are read.
        keys = planned[0]
        kinds = set(map(type, keys))
        if not keys:
            filter_applies(query, {})  # mongomock's validation of a filter on no documents
        if len(kinds) <= 1 and kinds <= SORTABLE_IDS:
            matched = _Matched.by_keys(store, keys, descending=sort["_id"] == -1)
            return _facets(self, matched, facets, session)
    if planned is None:
        docs = list(_iter_documents(self, query))
    else:
        keys, residual = planned
        docs = [store._documents[key] for key in keys]
        if residual:
            docs = [doc for doc in docs if _applies(residual, doc)]
    if not docs:
        filter_applies(query, {})  # mongomock's validation of a filter on no documents
    if not _sort_in_place(docs, sort):
        return None
    return _facets(self, _Matched(len(docs), lambda: docs, lambda a, b: docs[a:b]), facets, session)


@dataclass(frozen=True)
class _Matched:
    """The documents a page's ``$match`` selected: how many, all of them (any order), and a
    slice of them in the page's order."""

    count: int
    every: Callable[[], Iterable[dict[str, Any]]]
    window: Callable[[int, int | None], list[dict[str, Any]]]

    @staticmethod
    def by_keys(store: IndexedStore, keys: list[Any], descending: bool) -> _Matched:
        docs = store._documents

        def window(start: int, stop: int | None) -> list[dict[str, Any]]:
            if stop is None:
                chosen = sorted(keys, reverse=descending)
            else:
                chosen = (heapq.nlargest if descending else heapq.nsmallest)(stop, keys)
            return [docs[key] for key in chosen[start:stop]]

        return _Matched(len(keys), lambda: (docs[key] for key in keys), window)


def _facets(self: Collection, matched: _Matched, facets: dict[str, Any], session: Any) -> Any:
    return CommandCursor([{name: _facet(self, matched, s, session) for name, s in facets.items()}])


def _facet(self: Collection, matched: _Matched, stages: Any, session: Any) -> list[Any]:
    def copies(chosen: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        out = [self._copy_only_fields(doc, None, dict) for doc in chosen]
        if self.codec_options.tz_aware:
            out = [helpers.make_datetime_timezone_aware_in_document(doc) for doc in out]
        return out

    def counted(n: int, field: str) -> list[Any]:
        # As mongomock's $count, which also answers 0 (MongoDB gives no document; callers such
        # as caiyun.data.paging read both alike).
        return [{field: n}]

    kinds = [next(iter(stage), None) if isinstance(stage, dict) else None for stage in stages]
    if kinds == ["$count"]:
        return counted(matched.count, stages[0]["$count"])
    if kinds == ["$match", "$count"] and isinstance(stages[0]["$match"], dict):
        extra = helpers.patch_datetime_awareness_in_document(stages[0]["$match"])
        found = sum(1 for doc in matched.every() if _applies(extra, doc))
        return counted(found, stages[1]["$count"])
    if kinds == ["$group"]:
        grouped = _counted_by(stages[0]["$group"], matched)
        if grouped is not None:
            return grouped
    start, stop, rest = 0, None, list(stages)
    if kinds[:1] == ["$skip"] and isinstance(stages[0]["$skip"], int):
        start, rest = stages[0]["$skip"], rest[1:]
    if rest and next(iter(rest[0])) == "$limit" and isinstance(rest[0]["$limit"], int):
        stop, rest = start + rest[0]["$limit"], rest[1:]
    page = copies(matched.window(start, stop))
    return list(aggregate.process_pipeline(page, self.database, rest, session))


def _counted_by(group: Any, matched: _Matched) -> list[dict[str, Any]] | None:
    """``{"$group": {"_id": "$field", "n": {"$sum": 1}}}`` (a list's tab counts) counted from
    the stored documents without copying them; None for any other group, or unless every
    value is null, missing or of one type of str and int (an array, a document, a date or
    numbers of two types are left to mongomock's own grouping)."""
    if not isinstance(group, dict) or "_id" not in group or len(group) != 2:
        return None
    key = group["_id"]
    name, accumulator = next((k, v) for k, v in group.items() if k != "_id")
    if accumulator != {"$sum": 1} or not isinstance(key, str) or not key.startswith("$"):
        return None
    field = key[1:]
    if "." in field or field.startswith("$"):
        return None
    try:
        counts = Counter(doc.get(field) for doc in matched.every())
    except TypeError:  # an array or a document: no hashable key
        return None
    kinds = {type(value) for value in counts if value is not None}
    if len(kinds) > 1 or not kinds <= {str, int}:
        return None
    return [{"_id": value, name: n} for value, n in counts.items()]


def _applies(query: dict[str, Any], doc: dict[str, Any]) -> bool:
    """``filter_applies`` for what a page filters on besides its index (an inbox's app, its
    unread count), without mongomock's general matcher where a stored value is plainly equal
    or not to a top-level equality or ``$ne``: null is equal to null or missing; a value of
    the filter's own type compares as Python does. Anything else (arrays, documents, other
    types, other operators) is left to mongomock."""
    for field, wanted in query.items():
        if not isinstance(field, str) or field.startswith("$") or "." in field:
            return filter_applies(query, doc)
        have = doc.get(field)
        negated = isinstance(wanted, dict) and list(wanted) == ["$ne"]
        value = wanted["$ne"] if negated else wanted
        if isinstance(have, (list, dict)) or (isinstance(value, dict) and not negated):
            equal = None
        elif value is None:
            equal = have is None
        elif type(value) in _SORTABLE_VALUES and (have is None or type(have) is type(value)):
            equal = have == value
        else:
            equal = None
        if equal is None:
            if not filter_applies({field: wanted}, doc):
                return False
        elif equal is negated:
            return False
    return True


def _reindexing(apply: Callable[..., Any]) -> Callable[..., Any]:
    # mongomock updates a stored document in place, which its store never sees.
    def applied(self: Collection, existing_document: Any, *args: Any, **kwargs: Any) -> Any:
        store = self._store
        key = store.stored_key(existing_document) if isinstance(store, IndexedStore) else NOTHING
        if key is NOTHING:
            return apply(self, existing_document, *args, **kwargs)
        store.unindex(key, existing_document)
        try:
            return apply(self, existing_document, *args, **kwargs)
        finally:
            store.index(key, existing_document)
            store.updated(key)

    return applied


# The engine is mongomock with these methods replaced (the type checker's method-assign is
# exactly what is meant here).
Collection._iter_documents = _iter_documents  # type: ignore[method-assign]
Collection._ensure_uniques = _ensure_uniques  # type: ignore[method-assign]
Collection._get_dataset = _get_indexed_dataset  # type: ignore[method-assign]
Collection.aggregate = _aggregate  # type: ignore[method-assign]
Cursor._compute_results = _compute_page  # type: ignore[method-assign]
Collection._apply_update_document = _reindexing(  # type: ignore[method-assign]
    Collection._apply_update_document
)
Collection._apply_update_pipeline = _reindexing(  # type: ignore[method-assign]
    Collection._apply_update_pipeline
)

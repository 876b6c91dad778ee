"""Hash indexes under mongomock, so the embedded engine answers without scanning every document.

mongomock evaluates every query, and every unique-index check, by running its filter over the
whole collection. :class:`IndexedStore` keeps, beside a collection's documents, a hash index on
the leading field of each declared index (multikey: each element of an array is a key; a missing
field is the key ``None``, which is what it matches) and one per compound unique index, the
``_id`` order, and a heap of TTL expiry moments, all maintained on every write. The planner
here uses them only to *narrow* the documents mongomock's own filter then runs on, so answers
stay exactly mongomock's: a condition the index cannot answer exactly (an ObjectId also matching
its string form inside arrays, a value of a type without a reliable hash) is still checked by
``filter_applies``, and any query the planner does not understand is a scan as before.
mongomock's collection and cursor use them through :mod:`caiyun.data.embedded_patches`.

Every stored document is indexed as it is now: a document is unindexed before mongomock updates
it in place and indexed again after (also when the update raises; :meth:`IndexedStore.updated`
then tells subclasses), and ``__setitem__`` / ``__delitem__`` cover inserts, replacements,
rollbacks and deletes.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import mongomock
from bson import ObjectId
from mongomock import helpers
from mongomock.filtering import NOTHING, filter_applies, iter_key_candidates
from mongomock.store import CollectionStore, _get_min_datetime_from_value

# Types whose equality is plain Python equality with a consistent hash, in mongomock's filter as
# in a dict; values of any other type are never used as keys.
KEYABLE = frozenset({str, ObjectId, int, bool, float, datetime, type(None)})
# Types the ``_id`` order can be kept for: mongomock's BSON ordering within one of them is
# Python's.
SORTABLE_IDS = frozenset({str, ObjectId, int})
# A multikey compound key is the product of its fields' keys; past this the document is left
# to the filter instead.
_MAX_COMPOUND_KEYS = 64
# Walking the ``_id`` order beats sorting hash candidates unless these are this much fewer.
_WALK_RATIO = 16
_RANGE_OPS = {"$gt", "$gte", "$lt", "$lte"}
_UNSORTABLE = object()


def _keyable(value: Any) -> bool:
    return type(value) in KEYABLE and not (type(value) is float and math.isnan(value))


def _field_keys(doc: dict[str, Any], field: str) -> tuple[Any, ...] | set[Any] | None:
    """The keys an equality on ``field`` can match this document by; None if some value at the
    field has a type the index cannot key (the document must then always be a candidate)."""
    if "." not in field:
        value = doc.get(field, NOTHING)
        if _keyable(value):
            return (value,)  # the common case, without mongomock's path walk
        values: Iterable[Any] = (value,)
    else:
        values = iter_key_candidates(field, doc)
    keys: set[Any] = set()
    for value in values:
        if value is NOTHING:
            keys.add(None)
        elif isinstance(value, list | tuple):
            for item in value:
                if _keyable(item):
                    keys.add(item)
                elif not isinstance(item, dict | list | tuple):
                    return None
                # A subdocument or nested array equals no keyable value: it adds no key.
        elif _keyable(value):
            keys.add(value)
        elif not isinstance(value, dict):
            return None
    return keys


def _path_keys(doc: dict[str, Any], path: tuple[str, ...]) -> tuple[Any, ...] | set[Any] | None:
    if len(path) == 1:
        return _field_keys(doc, path[0])
    per_field = []
    for field in path:
        keys = _field_keys(doc, field)
        if keys is None:
            return None
        per_field.append(keys)
    if math.prod(len(keys) for keys in per_field) > _MAX_COMPOUND_KEYS:
        return None
    return set(itertools.product(*per_field))


def _post(postings: dict[Any, Any], value: Any, key: Any) -> None:
    # One id is stored bare, several in a set: most keys of a unique-ish field have one document.
    held = postings.get(value, NOTHING)
    if held is NOTHING:
        postings[value] = key
    elif type(held) is set:
        held.add(key)
    else:
        postings[value] = {held, key}


def _unpost(postings: dict[Any, Any], value: Any, key: Any) -> None:
    held = postings[value]
    if type(held) is set:
        held.discard(key)
        if len(held) == 1:
            postings[value] = next(iter(held))
    else:
        del postings[value]


def _posted(postings: dict[Any, Any], value: Any) -> tuple[Any, ...] | set[Any]:
    held = postings.get(value, NOTHING)
    if held is NOTHING:
        return ()
    return held if type(held) is set else (held,)


def _equality(condition: Any) -> tuple[list[Any], bool] | None:
    """The values an equality or ``$in`` condition accepts, and whether the condition is only
    that (so matching one of them is the whole condition); None if it is not one."""
    if _keyable(condition):
        return [condition], True
    if not isinstance(condition, dict) or not condition:
        return None
    if not all(isinstance(op, str) and op.startswith("$") for op in condition):
        return None
    if "$eq" in condition and _keyable(condition["$eq"]):
        return [condition["$eq"]], len(condition) == 1
    wanted = condition.get("$in")
    if isinstance(wanted, list) and all(_keyable(v) for v in wanted):
        return wanted, len(condition) == 1
    return None


@dataclass(frozen=True)
class Clash:
    """Documents that share one key of a unique index."""

    collection: str
    index: str
    values: dict[str, Any]
    ids: tuple[Any, ...]


def unique_key(doc: dict[str, Any], spec: dict[str, Any]) -> tuple[Any, ...] | None:
    """The key ``doc`` holds in the unique index ``spec``, None when the index leaves it out
    (MongoDB: a partial index holds only documents matching its filter, a sparse one only
    documents with the field). A missing field is None, as mongomock and MongoDB's null."""
    partial = spec.get("partialFilterExpression")
    if partial is not None and not filter_applies(partial, doc):
        return None
    values = []
    for field, _ in spec["key"]:
        try:
            values.append(helpers.get_value_by_dot(doc, field))
        except KeyError:
            values.append(None)
    if spec.get("sparse") and all(value is None for value in values):
        return None
    return tuple(values)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def unique_clashes(store: IndexedStore, index_name: str) -> list[Clash]:
    """Every group of documents sharing a key of the unique index ``index_name``. Only
    documents the hash index files under a shared value (or cannot key) are compared."""
    spec = store.indexes[index_name]
    fields = tuple(field for field, _ in spec["key"])
    postings = store._postings.get(fields)
    if postings is None:
        candidates: Iterable[Any] = list(store._documents)
    else:
        shared: set[Any] = set(store._unkeyed[fields])
        for held in postings.values():
            if type(held) is set:
                shared.update(held)
        candidates = sorted(shared, key=store._rank.__getitem__)
    groups: dict[Any, list[Any]] = {}
    for key in candidates:
        value = unique_key(store._documents[key], spec)
        if value is not None:
            groups.setdefault(_hashable(value), []).append(key)
    clashes = []
    for ids in groups.values():
        if len(ids) > 1:
            shown = unique_key(store._documents[ids[0]], spec) or ()
            values = dict(zip(fields, shown, strict=True))
            clashes.append(Clash(store.name, index_name, values, tuple(ids)))
            store.tolerated.update(ids)
    return clashes


class _Option:
    """One way to narrow a query: how many candidates, how to list them, what it answers."""

    def __init__(
        self, size: int, keys: Callable[[], Iterable[Any]], answers: tuple[str, ...] = ()
    ) -> None:
        self.size = size
        self.keys = keys
        # The top-level conditions the candidates satisfy by construction (left out of the
        # filter run on them).
        self.answers = answers


class IndexedStore(CollectionStore):
    """A mongomock collection store that keeps hash indexes of its declared index fields."""

    def __init__(self, name: str, now: Callable[[], datetime] | None = None) -> None:
        super().__init__(name)
        # The naive UTC time TTL expiry is measured against: mongomock's (looked up per call)
        # unless the engine was given a clock.
        # mongomock's own clock, looked up at each call (its TTL reads it there too); the
        # package exports it without declaring it.
        self._now = now or (lambda: mongomock.utcnow())  # type: ignore[attr-defined]
        # Documents found breaking a unique index when it was created: they may keep their key
        # (so the directory works while an operator removes the extras), nothing may join them.
        self.tolerated: set[Any] = set()
        self._reset_indexes()

    def _reset_indexes(self) -> None:
        self._postings: dict[tuple[str, ...], dict[Any, Any]] = {}
        self._unkeyed: dict[tuple[str, ...], set[Any]] = {}
        # Insertion rank of every key, to give candidates back in the store's (mongomock's) order.
        self._rank: dict[Any, int] = {}
        self._ranks = itertools.count()
        self._ids_sorted: Any = None
        # When each TTL document expires, soonest first; entries of documents since changed or
        # removed stay until their moment and are checked again then.
        self._expiries: list[tuple[datetime, int, Any]] = []
        self._ties = itertools.count()

    # ------------------------------------------------------------------ maintenance

    def create_index(self, index_name: str, index_dict: dict[str, Any]) -> None:
        """Register an index (as mongomock's store does) and build its hash indexes."""
        super().create_index(index_name, index_dict)
        self._rebuild()

    def drop_index(self, index_name: str) -> None:
        """Forget an index and the hash indexes only it needed."""
        super().drop_index(index_name)
        self._rebuild()

    def drop(self) -> None:
        """Remove every document and index."""
        super().drop()
        self._reset_indexes()

    def _wanted_paths(self) -> set[tuple[str, ...]]:
        # The leading field of every index (what a query can use an index by without the rest)
        # and the whole key of a compound unique index (what its uniqueness is checked by).
        paths: set[tuple[str, ...]] = set()
        for spec in self.indexes.values():
            fields = tuple(field for field, _ in spec["key"])
            if fields[0] != "_id":
                paths.add(fields[:1])
            if len(fields) > 1 and spec.get("unique") and "_id" not in fields:
                paths.add(fields)
        return paths

    def _rebuild(self) -> None:
        self._expiries = []
        wanted = self._wanted_paths()
        if wanted == set(self._postings):
            for key, doc in self._documents.items():
                self._note_expiry(key, doc)
            return
        self._postings = {path: {} for path in wanted}
        self._unkeyed = {path: set() for path in wanted}
        for key, doc in self._documents.items():
            self.index(key, doc)

    def index(self, key: Any, doc: dict[str, Any]) -> None:
        """Add a stored document's current values to the hash indexes."""
        for path, postings in self._postings.items():
            keys = _path_keys(doc, path)
            if keys is None:
                self._unkeyed[path].add(key)
            else:
                for value in keys:
                    _post(postings, value, key)
        self._note_expiry(key, doc)

    def unindex(self, key: Any, doc: dict[str, Any]) -> None:
        """Remove a stored document's current values from the hash indexes."""
        for path, postings in self._postings.items():
            keys = _path_keys(doc, path)
            if keys is None:
                self._unkeyed[path].discard(key)
            else:
                for value in keys:
                    _unpost(postings, value, key)

    def updated(self, key: Any) -> None:
        """Called after mongomock changed (or tried to change) a stored document in place."""

    def __setitem__(self, key: Any, val: Any) -> None:
        old = self._documents.get(key)
        if old is not None:
            self.unindex(key, old)
        super().__setitem__(key, val)
        if old is None:
            self._rank[key] = next(self._ranks)
            self._note_new_id(key)
        self.index(key, val)

    def __delitem__(self, key: Any) -> None:
        doc = self._documents[key]
        super().__delitem__(key)
        self.unindex(key, doc)
        del self._rank[key]
        ids = self._ids_sorted
        if ids is _UNSORTABLE:
            self._ids_sorted = None  # the key that mixed the types may be the one gone
        elif ids is not None:
            del ids[bisect.bisect_left(ids, key)]

    def stored_key(self, doc: dict[str, Any]) -> Any:
        """The key ``doc`` is stored under, if it is the stored object itself; else NOTHING."""
        key = doc.get("_id", NOTHING)
        if isinstance(key, dict):
            key = helpers.hashdict(key)
        try:
            return key if self._documents.get(key) is doc else NOTHING
        except TypeError:
            return NOTHING

    # ------------------------------------------------------------------ TTL

    def _expires(self, doc: dict[str, Any]) -> datetime:
        # When mongomock's _value_meets_expiry first holds for this document (datetime.max:
        # never, as for the values it cannot subtract from its naive UTC now).
        soonest = datetime.max
        for index in self._ttl_indexes.values():
            try:
                seconds = int(index["expireAfterSeconds"])
            except ValueError:
                continue
            if len(index["key"]) > 1:
                continue
            value = _get_min_datetime_from_value(doc.get(index["key"][0][0]))
            if not isinstance(value, datetime) or value.tzinfo is not None:
                continue
            try:
                soonest = min(soonest, value + timedelta(seconds=seconds))
            except OverflowError:
                continue
        return soonest

    def _note_expiry(self, key: Any, doc: dict[str, Any]) -> None:
        if self._ttl_indexes:
            moment = self._expires(doc)
            if moment != datetime.max:
                heapq.heappush(self._expiries, (moment, next(self._ties), key))

    def _remove_expired_documents(self) -> None:
        # mongomock scans every document for expiry on every access; the same documents go
        # (those whose expiry, checked again as they are now, has come) taken soonest first.
        if not self._ttl_indexes or not self._expiries:
            return
        now = self._now()
        while self._expiries and self._expiries[0][0] <= now:
            _, _, key = heapq.heappop(self._expiries)
            doc = self._documents.get(key)
            if doc is not None and self._expires(doc) <= now:
                del self[key]

    # ------------------------------------------------------------------ _id order

    def _note_new_id(self, key: Any) -> None:
        ids = self._ids_sorted
        if ids is None or ids is _UNSORTABLE:
            return
        if type(key) in SORTABLE_IDS and (
            not ids or (type(key) is type(ids[-1]) and key > ids[-1])
        ):
            ids.append(key)
        else:
            self._ids_sorted = None

    def sorted_ids(self) -> list[Any] | None:
        """Every key in ascending order, when all are of one sortable type; else None."""
        if self._ids_sorted is None:
            kinds = {type(key) for key in self._documents}
            if len(kinds) > 1 or not kinds <= SORTABLE_IDS:
                self._ids_sorted = _UNSORTABLE
            else:
                self._ids_sorted = sorted(self._documents)
        return None if self._ids_sorted is _UNSORTABLE else self._ids_sorted

    def _id_span(self, condition: Any) -> tuple[int, int] | None:
        """The slice of :meth:`sorted_ids` an ``_id`` range condition selects, if it is one."""
        if not isinstance(condition, dict) or not condition or not set(condition) <= _RANGE_OPS:
            return None
        kinds = {type(v) for v in condition.values()}
        ids = self.sorted_ids()
        if ids is None or len(kinds) != 1 or not kinds <= SORTABLE_IDS:
            return None
        if ids and type(ids[0]) not in kinds:
            return None
        start, end = 0, len(ids)
        for op, bound in condition.items():
            if op == "$gt":
                start = max(start, bisect.bisect_right(ids, bound))
            elif op == "$gte":
                start = max(start, bisect.bisect_left(ids, bound))
            elif op == "$lt":
                end = min(end, bisect.bisect_left(ids, bound))
            else:
                end = min(end, bisect.bisect_right(ids, bound))
        return start, max(start, end)

    # ------------------------------------------------------------------ planning

    def _options(self, query: dict[str, Any], top: bool) -> Iterator[_Option]:
        equalities: dict[str, list[Any]] = {}
        whole_fields: set[str] = set()
        for field, condition in query.items():
            if field == "$and" and isinstance(condition, list):
                for part in condition:
                    if isinstance(part, dict):
                        yield from self._options(part, top=False)
                continue
            if field == "$or" and isinstance(condition, list):
                either = self._or_option(condition, top)
                if either is not None:
                    yield either
                continue
            if not isinstance(field, str) or field.startswith("$"):
                continue
            accepted = _equality(condition)
            if field == "_id":
                yield from self._id_options(condition, accepted, top)
                continue
            if accepted is None:
                continue
            values, whole = accepted
            if whole and type(condition) is ObjectId:
                # mongomock also matches an ObjectId by its string form inside an array.
                values, whole = [*values, str(condition)], False
            equalities[field] = values
            if whole:
                whole_fields.add(field)
            postings = self._postings.get((field,))
            if postings is not None:
                unkeyed = self._unkeyed[(field,)]
                answers = (field,) if top and whole and not unkeyed else ()
                yield self._union_option(postings, values, unkeyed, answers)
        for path, postings in self._postings.items():
            if len(path) > 1 and all(field in equalities for field in path):
                combos = list(itertools.product(*(equalities[field] for field in path)))
                unkeyed = self._unkeyed[path]
                # A document is filed under every combination of its fields' keys, so the
                # candidates of whole equalities on all of them are exactly the matches (but
                # for null on a dotted path, which mongomock's filter judges by the parents).
                exact = (
                    top
                    and whole_fields.issuperset(path)
                    and not unkeyed
                    and not any("." in f and None in equalities[f] for f in path)
                )
                yield self._union_option(postings, combos, unkeyed, path if exact else ())

    def _or_option(self, branches: list[Any], top: bool) -> _Option | None:
        """A ``$or`` narrows only when each of its branches does: the union of every branch's
        best candidates. When each branch is one condition its candidates satisfy exactly (a
        resident's list: filed by me, or of a house I own), the union is the ``$or``'s answer
        and its filter is not run again; otherwise the whole query still runs on them."""
        picked: list[_Option] = []
        exact = top
        for branch in branches:
            if not isinstance(branch, dict):
                return None
            best = min(self._options(branch, top=True), key=lambda o: o.size, default=None)
            if best is None:
                return None
            exact = exact and set(best.answers) == set(branch)
            picked.append(best)
        if not picked:
            return None

        def keys() -> set[Any]:
            found: set[Any] = set()
            for option in picked:
                found.update(option.keys())
            return found

        return _Option(sum(o.size for o in picked), keys, ("$or",) if exact else ())

    @staticmethod
    def _union_option(
        postings: dict[Any, Any], values: list[Any], unkeyed: set[Any], answers: tuple[str, ...]
    ) -> _Option:
        size = len(unkeyed) + sum(len(_posted(postings, v)) for v in values)

        def keys() -> set[Any]:
            found = set(unkeyed)
            for value in values:
                found.update(_posted(postings, value))
            return found

        return _Option(size, keys, answers)

    def _id_options(
        self, condition: Any, accepted: tuple[list[Any], bool] | None, top: bool
    ) -> Iterator[_Option]:
        docs = self._documents
        if accepted is not None:
            values, whole = accepted
            found = [key for key in dict.fromkeys(values) if key in docs]
            yield _Option(len(found), lambda: found, ("_id",) if top and whole else ())
            return
        span = self._id_span(condition)
        if span is not None:
            ids = self.sorted_ids() or []
            start, end = span
            yield _Option(end - start, lambda: ids[start:end], ("_id",) if top else ())

    def plan(
        self, query: dict[str, Any], ordered: bool = True
    ) -> tuple[list[Any], dict[str, Any]] | None:
        """The keys, in store order (unless not ``ordered``), of a superset of the documents
        ``query`` matches, and the part of ``query`` still to check on them; None when no
        index narrows it."""
        best = min(self._options(query, top=True), key=lambda option: option.size, default=None)
        if best is None:
            return None
        keys = list(best.keys())
        if ordered and len(keys) > 1:
            keys.sort(key=self._rank.__getitem__)
        if not best.answers:
            return keys, query
        return keys, {field: cond for field, cond in query.items() if field not in best.answers}

    def walk_by_id(self, query: dict[str, Any], sort: Any) -> Iterator[dict[str, Any]] | None:
        """The matching documents lazily in ``_id`` order, for a query sorted by ``_id`` alone
        (so a limit stops the walk early); None when a hash index narrows it better."""
        if not sort or not isinstance(query, dict):
            return None
        order = list(sort.items()) if isinstance(sort, dict) else list(sort)
        if len(order) != 1 or order[0][0] != "_id" or order[0][1] not in (1, -1):
            return None
        self._remove_expired_documents()
        ids = self.sorted_ids()
        if ids is None:
            return None
        span = (0, len(ids))
        residual = query
        if "_id" in query:
            span = self._id_span(query["_id"])  # type: ignore[assignment]
            if span is None:
                return None
            residual = {field: cond for field, cond in query.items() if field != "_id"}
        start, end = span
        narrowest = min((o.size for o in self._options(residual, top=True)), default=None)
        if narrowest is not None and narrowest * _WALK_RATIO < end - start:
            return None
        if not ids:
            filter_applies(query, {})  # mongomock's validation of a filter on no documents
        positions = range(start, end) if order[0][1] == 1 else range(end - 1, start - 1, -1)
        docs = self._documents
        if not residual:
            return (docs[ids[i]] for i in positions)
        return (docs[ids[i]] for i in positions if filter_applies(residual, docs[ids[i]]))

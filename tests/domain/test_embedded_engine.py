"""The embedded database engine: durable across restarts, atomic across threads, shared with a
second process on the same data directory, and faithful to pymongo where the domain relies on it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from copy import deepcopy
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import mongomock
import pytest
from bson import ObjectId
from conftest import TEST_START, fixed_clock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import (
    DeleteMany,
    DeleteOne,
    InsertOne,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
)
from pymongo.errors import BulkWriteError, DuplicateKeyError

from caiyun.catalog import ensure_indexes, open_database
from caiyun.data import embedded_indexes, embedded_patches
from caiyun.data.embedded import EmbeddedEngine
from caiyun.domain.accounts import bind_openid
from caiyun.settings import Settings
from caiyun.stores.accounts import ensure_account

SHANGHAI_OFFSET = timezone(timedelta(hours=8))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def engines(data_dir: Path) -> Iterator[list[EmbeddedEngine]]:
    """Engines opened by a test on ``data_dir``; all closed at the end."""
    opened: list[EmbeddedEngine] = []
    yield opened
    for engine in opened:
        engine.close()


def open_engine(engines: list[EmbeddedEngine], data_dir: Path) -> Any:
    engine = EmbeddedEngine(data_dir)
    engines.append(engine)
    return engine.database


def restart(engines: list[EmbeddedEngine], data_dir: Path) -> Any:
    """Close every open engine (the process ends) and open the directory again."""
    for engine in engines:
        engine.close()
    engines.clear()
    return open_engine(engines, data_dir)


def contents(db: Any, name: str) -> list[dict[str, Any]]:
    return list(db[name].find({}, sort=[("_id", 1)]))


# ---------------------------------------------------------------------------- durability


def test_inserts_survive_a_restart(engines: list[EmbeddedEngine], data_dir: Path) -> None:
    db = open_engine(engines, data_dir)
    db["notes"].insert_one({"_id": "a", "text": "一"})
    db["notes"].insert_many([{"_id": "b", "n": 1}, {"_id": "c", "nested": {"list": [1, 2]}}])

    db = restart(engines, data_dir)

    assert contents(db, "notes") == [
        {"_id": "a", "text": "一"},
        {"_id": "b", "n": 1},
        {"_id": "c", "nested": {"list": [1, 2]}},
    ]


def test_in_place_updates_survive_a_restart(engines: list[EmbeddedEngine], data_dir: Path) -> None:
    # mongomock changes stored documents in place; each of these must still reach the disk.
    db = open_engine(engines, data_dir)
    db["c"].insert_many([{"_id": i, "n": 0, "tags": []} for i in range(6)])

    db["c"].update_one({"_id": 0}, {"$set": {"n": 1}})
    db["c"].find_one_and_update({"_id": 1}, {"$inc": {"n": 5}, "$push": {"tags": "x"}})
    db["c"].update_many({"_id": {"$in": [2, 3]}}, {"$set": {"n": 7}, "$unset": {"tags": ""}})
    db["c"].replace_one({"_id": 4}, {"n": 11})
    db["c"].find_one_and_replace({"_id": 5}, {"n": 12})
    expected = contents(db, "c")

    db = restart(engines, data_dir)

    assert contents(db, "c") == expected
    assert expected == [
        {"_id": 0, "n": 1, "tags": []},
        {"_id": 1, "n": 5, "tags": ["x"]},
        {"_id": 2, "n": 7},
        {"_id": 3, "n": 7},
        {"_id": 4, "n": 11},
        {"_id": 5, "n": 12},
    ]


def test_updates_chosen_by_sort_survive_a_restart(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    db = open_engine(engines, data_dir)
    db["codes"].insert_many([{"_id": i, "at": i, "used": False} for i in range(3)])

    newest = db["codes"].find_one_and_update(
        {"used": False},
        {"$set": {"used": True}},
        sort=[("at", -1)],
        return_document=ReturnDocument.AFTER,
    )

    db = restart(engines, data_dir)
    assert newest == {"_id": 2, "at": 2, "used": True}
    assert [d["used"] for d in contents(db, "codes")] == [False, False, True]


def test_upserts_survive_a_restart(engines: list[EmbeddedEngine], data_dir: Path) -> None:
    db = open_engine(engines, data_dir)

    db["c"].update_one({"_id": "u1"}, {"$set": {"n": 1}}, upsert=True)
    db["c"].find_one_and_update({"_id": "u2"}, {"$inc": {"n": 2}}, upsert=True)
    db["c"].update_many({"kind": "k"}, {"$set": {"n": 3}}, upsert=True)
    db["c"].replace_one({"_id": "u4"}, {"n": 4}, upsert=True)
    expected = contents(db, "c")

    db = restart(engines, data_dir)

    assert len(expected) == 4
    assert contents(db, "c") == expected


def test_deletes_survive_a_restart(engines: list[EmbeddedEngine], data_dir: Path) -> None:
    db = open_engine(engines, data_dir)
    db["c"].insert_many([{"_id": i, "odd": i % 2 == 1} for i in range(6)])

    db["c"].delete_one({"_id": 0})
    db["c"].delete_many({"odd": True})
    db["c"].find_one_and_delete({"_id": 2})

    db = restart(engines, data_dir)

    assert contents(db, "c") == [{"_id": 4, "odd": False}]


def test_a_dropped_collection_stays_dropped(engines: list[EmbeddedEngine], data_dir: Path) -> None:
    db = open_engine(engines, data_dir)
    db["gone"].insert_many([{"_id": 1}, {"_id": 2}])
    db["kept"].insert_one({"_id": 1})

    db["gone"].drop()

    db = restart(engines, data_dir)
    assert contents(db, "gone") == []
    assert contents(db, "kept") == [{"_id": 1}]


def test_bulk_write_inserts_updates_and_deletes_survive_a_restart(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    db = open_engine(engines, data_dir)
    db["c"].insert_many([{"_id": i, "n": 0} for i in range(4)])

    result = db["c"].bulk_write(
        [
            InsertOne({"_id": 10, "n": 10}),
            UpdateMany({"_id": {"$in": [0, 1]}}, {"$inc": {"n": 5}}),
            UpdateMany({"_id": 20}, {"$set": {"n": 20}}, upsert=True),
            DeleteOne({"_id": 2}),
            DeleteMany({"_id": 3}),
        ]
    )
    expected = contents(db, "c")

    db = restart(engines, data_dir)

    assert (result.inserted_count, result.modified_count, result.deleted_count) == (1, 2, 2)
    assert contents(db, "c") == expected
    assert expected == [
        {"_id": 0, "n": 5},
        {"_id": 1, "n": 5},
        {"_id": 10, "n": 10},
        {"_id": 20, "n": 20},
    ]


def test_an_update_mongomock_refuses_halfway_is_kept_as_memory_has_it(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    # mongomock applies $set in place before $push fails on a non-array, and keeps it; the
    # journal learns of in-place changes from the store, so the disk agrees with memory.
    db = open_engine(engines, data_dir)
    db["c"].insert_one({"_id": 1, "a": 0, "s": "text"})
    with pytest.raises(AttributeError):  # mongomock 4.3 appends to the string
        db["c"].update_one({"_id": 1}, {"$set": {"a": 1}, "$push": {"s": "x"}})
    expected = contents(db, "c")

    db = restart(engines, data_dir)

    assert contents(db, "c") == expected


def test_bulk_write_requests_matching_what_earlier_ones_wrote_survive_a_restart(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    # Targets are looked up once before the write: a later request reaching documents only an
    # earlier one made match (or created) must still reach the disk.
    db = open_engine(engines, data_dir)
    db["c"].insert_many([{"_id": i, "stage": "new"} for i in range(3)])

    db["c"].bulk_write(
        [
            UpdateOne({"_id": 0}, {"$set": {"stage": "ready"}}),
            UpdateOne({"_id": 7}, {"$set": {"stage": "ready"}}, upsert=True),
            UpdateMany({"stage": "ready"}, {"$set": {"stage": "done"}}),
            ReplaceOne({"stage": "done", "_id": 7}, {"stage": "replaced"}),
        ]
    )
    expected = contents(db, "c")

    db = restart(engines, data_dir)

    assert contents(db, "c") == expected
    assert expected == [
        {"_id": 0, "stage": "done"},
        {"_id": 1, "stage": "new"},
        {"_id": 2, "stage": "new"},
        {"_id": 7, "stage": "replaced"},
    ]


def test_bulk_write_update_one_and_replace_one_survive_a_restart(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    db = open_engine(engines, data_dir)
    db["c"].insert_many([{"_id": i, "n": 0} for i in range(3)])

    db["c"].bulk_write(
        [
            UpdateOne({"_id": 0}, {"$set": {"n": 1}}),
            ReplaceOne({"_id": 1}, {"n": 2}),
            UpdateOne({"_id": 30}, {"$set": {"n": 3}}, upsert=True),
        ]
    )

    db = restart(engines, data_dir)

    assert contents(db, "c") == [
        {"_id": 0, "n": 1},
        {"_id": 1, "n": 2},
        {"_id": 2, "n": 0},
        {"_id": 30, "n": 3},
    ]


def test_domain_writes_survive_a_restart(engines: list[EmbeddedEngine], data_dir: Path) -> None:
    db = open_engine(engines, data_dir)
    ensure_indexes(db)
    now = TEST_START
    account, created = ensure_account(db, "13800001111", now, "张三")
    bind_openid(db, account["_id"], "resident", "o-1")

    db = restart(engines, data_dir)
    ensure_indexes(db)

    assert created
    stored = db["accounts"].find_one({"wx.resident": "o-1"})
    assert stored is not None
    assert stored["_id"] == account["_id"]
    assert ensure_account(db, "13800001111", now)[1] is False  # still there: not made again


def test_a_data_directory_with_several_accounts_opens_again(data_dir: Path) -> None:
    # What `caiyun dev` does on every start: open the directory, then ensure every index.
    settings = Settings(env="sandbox", data_dir=str(data_dir))
    db = open_database(settings)
    now = TEST_START
    first, _ = ensure_account(db, "13800000001", now, "张三")
    ensure_account(db, "13800000002", now, "李四")  # neither has an openid bound yet
    ensure_account(db, "13800000003", now, "王五")
    bind_openid(db, first["_id"], "resident", "o-1")
    db.engine.close()

    db = open_database(settings)
    try:
        phones = sorted(a["phone"] for a in db["accounts"].find({}))
        assert phones == ["13800000001", "13800000002", "13800000003"]
        with pytest.raises(DuplicateKeyError):
            db["accounts"].insert_one({"_id": "dup", "phone": "13800000002"})
    finally:
        db.engine.close()


# ---------------------------------------------------------------------------- indexes


def test_unique_phone_index_raises_duplicate_key_error(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    db = open_engine(engines, data_dir)
    ensure_indexes(db)
    db["accounts"].insert_one({"_id": "a1", "phone": "13800001111"})
    db["accounts"].insert_one({"_id": "a2", "phone": "13900002222"})

    with pytest.raises(DuplicateKeyError):
        db["accounts"].insert_one({"_id": "a3", "phone": "13800001111"})
    with pytest.raises(DuplicateKeyError):
        db["accounts"].update_one({"_id": "a2"}, {"$set": {"phone": "13800001111"}})

    assert db["accounts"].count_documents({"phone": "13800001111"}) == 1
    assert db["accounts"].find_one({"_id": "a2"})["phone"] == "13900002222"


def test_unique_phone_index_still_holds_after_a_restart(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    db = open_engine(engines, data_dir)
    ensure_indexes(db)
    db["accounts"].insert_one({"_id": "a1", "phone": "13800001111"})

    db = restart(engines, data_dir)
    ensure_indexes(db)

    with pytest.raises(DuplicateKeyError):
        db["accounts"].insert_one({"_id": "a2", "phone": "13800001111"})


def test_openid_index_is_unique_only_among_bound_accounts(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    db = open_engine(engines, data_dir)
    ensure_indexes(db)
    db["accounts"].insert_many(
        [{"_id": "a1", "phone": "13800000001", "wx": {}}, {"_id": "a2", "phone": "13800000002"}]
    )
    db["accounts"].update_one({"_id": "a1"}, {"$set": {"wx.resident": "o-1"}})

    with pytest.raises(DuplicateKeyError):
        db["accounts"].update_one({"_id": "a2"}, {"$set": {"wx.resident": "o-1"}})


def test_ensure_indexes_is_idempotent(engines: list[EmbeddedEngine], data_dir: Path) -> None:
    db = open_engine(engines, data_dir)
    first = ensure_indexes(db)
    info = {name: db[name].index_information() for name in first}
    db["accounts"].insert_one({"_id": "a1", "phone": "13800001111"})

    second = ensure_indexes(db)
    db = restart(engines, data_dir)
    third = ensure_indexes(db)

    assert first == second == third
    assert "accounts" in first
    assert {name: db[name].index_information() for name in first} == info


# ---------------------------------------------------------------------------- other processes


def test_a_write_by_a_second_engine_is_seen_on_the_next_call(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    first = open_engine(engines, data_dir)
    first["staff"].insert_one({"_id": "s1", "role": "guard"})
    second = open_engine(engines, data_dir)  # e.g. `caiyun admin add-staff` while `dev` runs
    assert second["staff"].find_one({"_id": "s1"}) == {"_id": "s1", "role": "guard"}

    second["staff"].insert_one({"_id": "s2", "role": "admin"})
    second["staff"].update_one({"_id": "s1"}, {"$set": {"role": "repairman"}})

    assert contents(first, "staff") == [
        {"_id": "s1", "role": "repairman"},
        {"_id": "s2", "role": "admin"},
    ]
    first["staff"].delete_one({"_id": "s2"})
    assert contents(second, "staff") == [{"_id": "s1", "role": "repairman"}]


def test_a_write_by_another_process_is_seen_on_the_next_call(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    db = open_engine(engines, data_dir)
    ensure_indexes(db)
    db["accounts"].insert_one({"_id": "a1", "phone": "13800001111"})
    script = textwrap.dedent(
        f"""
        from caiyun.data.embedded import EmbeddedEngine
        from caiyun.catalog import ensure_indexes
        db = EmbeddedEngine({str(data_dir)!r}).database
        ensure_indexes(db)
        db["accounts"].update_one({{"_id": "a1"}}, {{"$set": {{"name": "张三"}}}})
        db["accounts"].insert_one({{"_id": "a2", "phone": "13900002222"}})
        """
    )

    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)

    assert contents(db, "accounts") == [
        {"_id": "a1", "phone": "13800001111", "name": "张三"},
        {"_id": "a2", "phone": "13900002222"},
    ]
    with pytest.raises(DuplicateKeyError):  # indexes survive the reload
        db["accounts"].insert_one({"_id": "a3", "phone": "13900002222"})


def test_writes_by_a_second_engine_are_not_missed_while_the_first_is_busy(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    # The sandbox keeps writing (rate limits, codes, sessions) while `caiyun admin` writes too:
    # a commit made by the other process during one of our calls must still be picked up.
    busy = open_engine(engines, data_dir)
    other = open_engine(engines, data_dir)
    busy["rate_limits"].insert_many([{"_id": f"old-{i}", "n": 0} for i in range(2000)])
    done = threading.Event()

    def admin() -> None:
        for i in range(100):
            other["staff"].insert_one({"_id": i})
        done.set()

    thread = threading.Thread(target=admin)
    thread.start()
    while not done.is_set():
        busy["rate_limits"].find_one_and_update({"_id": "k"}, {"$inc": {"n": 1}}, upsert=True)
    thread.join()

    assert busy["staff"].count_documents({}) == 100


# ---------------------------------------------------------------------------- threads and types


def test_parallel_increments_on_one_document_are_exact(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    db = open_engine(engines, data_dir)
    db["counters"].insert_one({"_id": "c", "n": 0})
    start = threading.Barrier(8)

    def bump() -> None:
        start.wait()
        for _ in range(50):
            db["counters"].find_one_and_update({"_id": "c"}, {"$inc": {"n": 1}})

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert db["counters"].find_one({"_id": "c"})["n"] == 400
    assert restart(engines, data_dir)["counters"].find_one({"_id": "c"})["n"] == 400


def test_parallel_conditional_updates_let_exactly_one_thread_win(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    db = open_engine(engines, data_dir)
    db["orders"].insert_one({"_id": "o", "status": "pending"})
    start = threading.Barrier(8)
    winners: list[Any] = []

    def settle(i: int) -> None:
        start.wait()
        won = db["orders"].find_one_and_update(
            {"_id": "o", "status": "pending"}, {"$set": {"status": "paid", "by": i}}
        )
        if won is not None:
            winners.append(i)

    threads = [threading.Thread(target=settle, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(winners) == 1
    assert db["orders"].find_one({"_id": "o"})["by"] == winners[0]


def test_aware_datetimes_come_back_aware_in_utc(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    db = open_engine(engines, data_dir)
    local = datetime(2026, 11, 24, 9, 30, 15, 123000, tzinfo=SHANGHAI_OFFSET)
    db["events"].insert_one({"_id": "e", "at": local, "nested": {"at": local}})

    for source in (db, restart(engines, data_dir)):
        doc = source["events"].find_one({"_id": "e"})
        for value in (doc["at"], doc["nested"]["at"]):
            assert value.tzinfo is not None
            assert value.utcoffset() == timedelta(0)
            assert value == local
            assert value.replace(tzinfo=None) == datetime(2026, 11, 24, 1, 30, 15, 123000)


def test_aware_datetimes_compare_in_queries(engines: list[EmbeddedEngine], data_dir: Path) -> None:
    db = open_engine(engines, data_dir)
    base = datetime(2026, 11, 24, 0, 0, tzinfo=timezone.utc)
    db["events"].insert_many([{"_id": i, "at": base + timedelta(hours=i)} for i in range(4)])

    db = restart(engines, data_dir)
    # 10:00 Shanghai is 02:00 UTC: hours 0, 1 are before it; 2 is not.
    before = db["events"].find(
        {"at": {"$lt": datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI_OFFSET)}}, sort=[("_id", 1)]
    )

    assert [d["_id"] for d in before] == [0, 1]


# ---------------------------------------------------------------------------- hash indexes
# The engine narrows queries with in-memory hash indexes of the declared index fields; these
# tests hold its answers to plain mongomock's full scan (a collection without the indexed store).

_OID = ObjectId("65a000000000000000000001")
_WHEN = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
_SCALARS = st.sampled_from(["a", "b", str(_OID), _OID, 1, 1.0, True, 0, None, _WHEN])
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.fixed_dictionaries({"x": _SCALARS}),
    st.lists(st.fixed_dictionaries({"x": _SCALARS}), max_size=2),
)
_FIELDS = ("f", "g", "n", "n.x")
_DOCS = st.lists(
    st.dictionaries(st.sampled_from(("f", "g", "n")), _VALUES, max_size=3), max_size=12
)
_CONDITIONS = st.one_of(
    _SCALARS,
    st.builds(lambda v: {"$eq": v}, _SCALARS),
    st.builds(lambda vs: {"$in": vs}, st.lists(_SCALARS, max_size=3)),
    st.builds(lambda vs: {"$in": vs, "$ne": "a"}, st.lists(_SCALARS, max_size=3)),
)
_QUERIES = st.one_of(
    st.dictionaries(st.sampled_from(_FIELDS), _CONDITIONS, min_size=1, max_size=2),
    st.builds(
        lambda a, b: {"$and": [a, b]},
        st.dictionaries(st.sampled_from(_FIELDS), _CONDITIONS, max_size=1),
        st.dictionaries(st.sampled_from(_FIELDS), _CONDITIONS, min_size=1, max_size=1),
    ),
    st.builds(
        lambda ids, q: {"_id": {"$in": ids}, **q},
        st.lists(st.integers(0, 14), max_size=4),
        st.dictionaries(st.sampled_from(_FIELDS), _CONDITIONS, max_size=1),
    ),
    st.builds(
        lambda op, k, q: {"_id": {op: k}, **q},
        st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
        st.integers(-1, 14),
        st.dictionaries(st.sampled_from(_FIELDS), _CONDITIONS, max_size=1),
    ),
    # $or: narrowed by the union of its branches when every branch is indexed.
    st.builds(
        lambda branches, q: {"$or": branches, **q},
        st.lists(
            st.dictionaries(st.sampled_from(_FIELDS), _CONDITIONS, min_size=1, max_size=2),
            min_size=1,
            max_size=3,
        ),
        st.dictionaries(st.sampled_from(_FIELDS), _CONDITIONS, max_size=1),
    ),
)


def _indexed_and_scanned() -> tuple[Any, Any]:
    """The same empty collection, indexed by the engine and as plain mongomock scans it."""
    indexed = EmbeddedEngine(None).database["c"]
    scanned = mongomock.MongoClient(tz_aware=True).db["c"]
    for collection in (indexed, scanned):
        collection.create_index("f")
        collection.create_index([("g", 1), ("n.x", -1)])
        # A compound unique index answers equalities on all its fields from its own hash index.
        collection.create_index(
            [("f", 1), ("n.x", 1)], unique=True, partialFilterExpression={"g": {"$type": "string"}}
        )
    return indexed, scanned


def _both(indexed: Any, scanned: Any, call: str, *args: Any) -> None:
    """Make the same call on both; a call mongomock refuses halfway must fail alike on both."""
    failures = []
    for collection in (indexed, scanned):
        try:
            getattr(collection, call)(*deepcopy(args))
        except Exception as exc:
            failures.append(type(exc))
        else:
            failures.append(None)
    assert failures[0] == failures[1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=_DOCS,
    query=_QUERIES,
    change=_QUERIES,
    new=_VALUES,
    sort=st.sampled_from([None, 1, -1]),
    limit=st.integers(0, 3),
)
def test_indexed_queries_find_exactly_what_a_scan_finds(
    docs: list[dict[str, Any]],
    query: dict[str, Any],
    change: dict[str, Any],
    new: Any,
    sort: int | None,
    limit: int,
) -> None:
    indexed, scanned = _indexed_and_scanned()
    if docs:
        _both(indexed, scanned, "insert_many", [{"_id": i, **doc} for i, doc in enumerate(docs)])

    def agree() -> None:
        found = indexed.find(query, sort=[("_id", sort)] if sort else None).limit(limit)
        expected = list(scanned.find(query, sort=[("_id", sort)] if sort else None))
        assert list(found) == (expected[:limit] if limit else expected)
        assert indexed.count_documents(query) == len(expected)
        # A leading $match is narrowed like a find; mongomock's own order of stages is not.
        pipeline = [{"$match": query}, {"$sort": {"_id": 1}}]
        assert list(indexed.aggregate(pipeline)) == list(scanned.aggregate(pipeline[::-1]))
        # A list page ([$match, $sort, $facet], caiyun.data.paging) is answered from the stored
        # documents; an extra stage sends the same pipeline through mongomock's own.
        facets = {
            "items": [{"$skip": 1}, {"$limit": 2}, {"$project": {"n": 0}}],
            "total": [{"$count": "n"}],
            "with_f": [{"$match": {"f": "a"}}, {"$count": "n"}],
        }
        for order in ({"_id": -1}, {"f": 1, "_id": -1}):
            paged = [{"$match": query}, {"$sort": order}, {"$facet": facets}]
            plain = [*paged[:2], {"$match": {}}, paged[2]]
            assert list(indexed.aggregate(paged)) == list(scanned.aggregate(plain))

    agree()
    # Documents whose indexed values change, and deleted ones, are found as they now are.
    _both(indexed, scanned, "update_many", change, {"$set": {"f": new, "n": {"x": new}}})
    agree()
    # $push onto a non-array fails after mongomock has begun changing the document in place.
    _both(indexed, scanned, "update_one", {}, {"$set": {"f": "b"}, "$push": {"g": new}})
    agree()
    _both(indexed, scanned, "delete_many", {"f": new})
    agree()
    _both(indexed, scanned, "replace_one", {}, {"f": new, "g": "a"})
    agree()


def test_a_changed_indexed_field_is_found_by_its_new_value_only() -> None:
    bills = EmbeddedEngine(None).database["bills"]
    bills.create_index([("house_id", 1), ("period", 1)], unique=True)
    bills.insert_many([{"_id": i, "house_id": f"h{i}", "period": "2026-02"} for i in range(5)])

    bills.update_one({"_id": 2}, {"$set": {"house_id": "moved"}})
    bills.find_one_and_update({"house_id": "h3"}, {"$set": {"period": "2026-03"}})
    bills.delete_one({"house_id": "h4"})

    assert bills.find_one({"house_id": "h2"}) is None
    assert bills.find_one({"house_id": "moved", "period": "2026-02"})["_id"] == 2
    assert bills.find_one({"house_id": "h3", "period": "2026-02"}) is None
    assert bills.find_one({"house_id": "h3", "period": "2026-03"})["_id"] == 3
    assert bills.count_documents({"house_id": {"$in": ["h4", "h0"]}}) == 1
    # The freed keys can be taken again.
    bills.insert_one({"_id": 10, "house_id": "h2", "period": "2026-02"})
    bills.insert_one({"_id": 11, "house_id": "h4", "period": "2026-02"})


def test_unique_violations_still_raise_and_change_nothing() -> None:
    bills = EmbeddedEngine(None).database["bills"]
    bills.create_index([("house_id", 1), ("period", 1)], unique=True)
    bills.insert_many([{"_id": i, "house_id": f"h{i}", "period": "2026-02"} for i in range(3)])

    with pytest.raises(DuplicateKeyError) as dup:
        bills.insert_one({"_id": 9, "house_id": "h1", "period": "2026-02"})
    assert dup.value.code == 11000
    with pytest.raises(DuplicateKeyError):
        bills.update_one({"_id": 2}, {"$set": {"house_id": "h0"}})
    with pytest.raises(BulkWriteError) as bulk:
        bills.insert_many(
            [
                {"_id": 20, "house_id": "h0", "period": "2026-02"},
                {"_id": 21, "house_id": "h0", "period": "2026-03"},
                {"_id": 22, "house_id": "h2", "period": "2026-02"},
            ],
            ordered=False,
        )
    errors = bulk.value.details["writeErrors"]
    assert [(e["index"], e["code"]) for e in errors] == [(0, 11000), (2, 11000)]

    assert bills.find_one({"house_id": "h2"})["_id"] == 2  # the failed update was rolled back
    assert bills.find_one({"house_id": "h0", "period": "2026-02"})["_id"] == 0
    assert sorted(d["_id"] for d in bills.find({})) == [0, 1, 2, 21]


def test_a_write_checks_unique_rules_from_the_indexes_not_by_reading_every_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # mongomock checks the partial unique openid indexes with a query that every account
    # without that openid matches: each upsert of an import read every account.
    db = EmbeddedEngine(None).database
    ensure_indexes(db)
    db["accounts"].insert_many(
        [{"_id": f"a{i}", "phone": f"1380000{i:04d}", "wx": {}} for i in range(2000)]
    )
    examined = []
    real = embedded_indexes.filter_applies
    for module in (embedded_indexes, embedded_patches):
        monkeypatch.setattr(
            module, "filter_applies", lambda *args: examined.append(args[1]) or real(*args)
        )

    account, created = ensure_account(db, "13900000000", TEST_START)
    bind_openid(db, account["_id"], "resident", "o-new")
    with pytest.raises(DuplicateKeyError):
        db["accounts"].update_one({"_id": "a1"}, {"$set": {"wx.resident": "o-new"}})

    assert created
    assert len(examined) < 50  # of 2,001 accounts (each write read them all before)


def test_a_partial_unique_index_only_binds_matching_documents() -> None:
    accounts = EmbeddedEngine(None).database["accounts"]
    accounts.create_index("wx", unique=True, partialFilterExpression={"wx": {"$type": "string"}})
    accounts.insert_many([{"_id": 1, "wx": None}, {"_id": 2, "wx": None}, {"_id": 3, "wx": "o"}])

    with pytest.raises(DuplicateKeyError):
        accounts.insert_one({"_id": 4, "wx": "o"})
    accounts.insert_one({"_id": 5})
    assert [d["_id"] for d in accounts.find({"wx": None})] == [1, 2, 5]


def test_indexes_cover_documents_loaded_from_disk_and_written_by_another_engine(
    engines: list[EmbeddedEngine], data_dir: Path
) -> None:
    db = open_engine(engines, data_dir)
    ensure_indexes(db)
    db["memberships"].insert_many(
        [{"_id": f"m{i}", "house_id": f"h{i % 3}", "account_id": f"a{i}"} for i in range(9)]
    )
    db = restart(engines, data_dir)
    ensure_indexes(db)  # as every process does at start, over the documents already loaded
    other = open_engine(engines, data_dir)
    other["memberships"].insert_one({"_id": "m9", "house_id": "h1", "account_id": "a9"})

    found = db["memberships"].find({"house_id": {"$in": ["h1", "h2"]}})  # reloads first
    assert sorted(d["_id"] for d in found) == ["m1", "m2", "m4", "m5", "m7", "m8", "m9"]
    with pytest.raises(DuplicateKeyError):
        db["memberships"].insert_one({"_id": "x", "house_id": "h1", "account_id": "a9"})


def test_expired_documents_still_vanish_on_the_next_read() -> None:
    now = TEST_START
    claims = EmbeddedEngine(None, clock=fixed_clock(now)).database["claims"]
    claims.create_index("expires_at", expireAfterSeconds=0)
    claims.insert_one({"_id": "later", "expires_at": now + timedelta(hours=1)})
    claims.insert_one({"_id": "past", "expires_at": now - timedelta(seconds=1)})

    assert [d["_id"] for d in claims.find({})] == ["later"]
    claims.insert_one({"_id": "also past", "expires_at": now - timedelta(hours=1)})
    assert claims.find_one({"_id": "also past"}) is None
    assert claims.count_documents({}) == 1


def test_documents_expire_one_by_one_as_the_clock_passes_their_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start = datetime(2026, 3, 2, 2, 0)
    clock = {"now": start}
    monkeypatch.setattr(mongomock, "utcnow", lambda: clock["now"])
    indexed, scanned = EmbeddedEngine(None).database["claims"], mongomock.MongoClient().db["c"]
    for claims in (indexed, scanned):
        claims.create_index("expires_at", expireAfterSeconds=60)
        claims.insert_many(
            [{"_id": i, "expires_at": start + timedelta(minutes=i)} for i in range(1, 4)]
            + [{"_id": "never", "expires_at": "not a date"}]
        )
        # Moved later in place: its first moment passes without it.
        claims.update_one({"_id": 1}, {"$set": {"expires_at": start + timedelta(minutes=5)}})

    def left_at(minutes: float) -> list[Any]:
        clock["now"] = start + timedelta(minutes=minutes)
        left = [sorted((d["_id"] for d in c.find({})), key=str) for c in (indexed, scanned)]
        assert left[0] == left[1]
        return left[0]

    assert left_at(2.5) == [1, 2, 3, "never"]
    assert left_at(3) == [1, 3, "never"]
    assert left_at(4) == [1, "never"]
    assert left_at(5.9) == [1, "never"]
    assert left_at(6) == ["never"]


def test_an_id_range_sorted_by_id_is_paged_in_id_order() -> None:
    repairs = EmbeddedEngine(None).database["repairs"]
    repairs.create_index("status")
    # Inserted out of order: the page must follow _id, not insertion.
    repairs.insert_many(
        [{"_id": f"r{i:03d}", "status": "open" if i % 4 else "done"} for i in range(60, -1, -1)]
    )
    pages, last = [], ""
    while page := [
        d["_id"]
        for d in repairs.find({"status": "open", "_id": {"$gt": last}}).sort("_id", 1).limit(7)
    ]:
        pages.append(page)
        last = page[-1]
    assert [i for page in pages for i in page] == [f"r{i:03d}" for i in range(61) if i % 4]
    assert [d["_id"] for d in repairs.find({"_id": {"$lt": "r010"}}).sort("_id", -1).limit(3)] == [
        "r009",
        "r008",
        "r007",
    ]


_STORED = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.sampled_from(["a", "b", ""]),
    st.just(TEST_START),
    st.floats(-3, 3, allow_nan=False),
    st.booleans(),
    st.lists(st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["a", "b"])), max_size=3),
    st.fixed_dictionaries({"x": st.integers(-1, 1)}),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["read_at", "app", "n"]), _STORED, max_size=3),
    st.dictionaries(
        st.sampled_from(["read_at", "app", "n"]),
        st.one_of(
            st.none(), st.integers(-3, 3), st.sampled_from(["a", "b"]), st.just(TEST_START)
        ).flatmap(lambda v: st.sampled_from([v, {"$ne": v}])),
        min_size=1,
        max_size=3,
    ),
)
def test_a_pages_extra_count_matches_as_mongomock_does(
    doc: dict[str, Any], query: dict[str, Any]
) -> None:
    from mongomock.filtering import filter_applies

    assert embedded_patches._applies(query, doc) == filter_applies(query, doc)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["status", "n"]), _STORED, max_size=2)))
def test_a_lists_tab_counts_group_as_mongomock_does(docs: list[dict[str, Any]]) -> None:
    group = {"_id": "$status", "n": {"$sum": 1}}
    plain = mongomock.MongoClient().db.tabs
    if docs:
        plain.insert_many([{**d, "_id": i} for i, d in enumerate(docs)])
    expected = list(plain.aggregate([{"$group": group}]))
    matched = embedded_patches._Matched(len(docs), lambda: iter(docs), lambda a, b: docs[a:b])

    counted = embedded_patches._counted_by(group, matched)

    if counted is not None:  # None: left to mongomock, which gives `expected` itself
        pairs = sorted((repr(g["_id"]), g["n"]) for g in counted)
        assert pairs == sorted((repr(g["_id"]), g["n"]) for g in expected)

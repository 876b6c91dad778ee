"""What one command, and one list page, cost on the embedded engine, by collection size.

mongomock alone answers every query by scanning the whole collection and checks a unique index
by scanning it again for every document written; the engine's hash indexes
(``caiyun.data.embedded_indexes``) narrow both, so each row here should not grow with N. Each
row below is one call on a collection of N documents (``bills``, which has a unique index);
``engine`` goes through ``EmbeddedCollection`` (lock, journal), ``mongomock`` calls the
mongomock collection underneath directly (the same indexed store), so the difference is the
engine's own.

The second table reads the lists residents and staff page through (the domain's own list
functions, page 1 of 20, median of ``LIST_REPEAT`` calls) in the demo world plus N records per
collection (repairs, complaints, messages): *spread* over 5,000 other accounts and 200
communities (彩云花园 among them), as a company's data is, and *one account* holding all N (the
resident who filed 190,000 repairs). Each is set beside the same read at the small size.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench._support import fmt_s, mongo_uri, note, print_table

SIZES = (1_000, 10_000)
BULK_OPS = 100
LIST_SIZES = (1_000, 100_000)
LIST_REPEAT = 31


def _docs(n: int) -> list[dict[str, Any]]:
    return [
        {
            "_id": f"b{i:023x}",
            "house_id": f"h{i:023x}",
            "period": "2026-02",
            "item": "物业费",
            "status": "unpaid",
            "amount_fen": 26800,
        }
        for i in range(n)
    ]


def _fresh(n: int) -> Any:
    from bench._support import bench_settings, bulk_load, open_raw_db

    db = open_raw_db(bench_settings())
    bulk_load(db, "bills", _docs(n))
    return db


def _time(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure(n: int) -> dict[str, float]:
    """Seconds per call of each operation on a collection of n documents."""
    from pymongo import UpdateOne

    db = _fresh(n)
    engine, raw = db["bills"], db.engine.mongomock_collection("bills")
    middle = f"b{n // 2:023x}"
    figures: dict[str, float] = {}
    figures["find_one by _id (engine)"] = _time(lambda: engine.find_one({"_id": middle}))
    figures["find _id>… sort limit 500"] = _time(
        lambda: list(engine.find({"_id": {"$gt": middle}}).sort("_id", 1).limit(500))
    )
    fresh = {"_id": "new", "house_id": "hx", "period": "2026-03", "item": "物业费"}
    figures["insert_one, unique index (engine)"] = _time(lambda: engine.insert_one(dict(fresh)))
    ops = [UpdateOne({"_id": f"b{i:023x}"}, {"$set": {"x": 1}}) for i in range(BULK_OPS)]
    figures[f"bulk_write {BULK_OPS}×UpdateOne by _id (engine)"] = _time(
        lambda: engine.bulk_write(ops, ordered=False)
    )
    ops2 = [UpdateOne({"_id": f"b{i:023x}"}, {"$set": {"x": 2}}) for i in range(BULK_OPS)]
    figures[f"bulk_write {BULK_OPS}×UpdateOne by _id (mongomock)"] = _time(
        lambda: raw.bulk_write(ops2, ordered=False)
    )
    some = {"_id": {"$lt": f"b{BULK_OPS:023x}"}}
    figures[f"update_many matching {BULK_OPS} (engine)"] = _time(
        lambda: engine.update_many(some, {"$set": {"status": "locked"}})
    )
    figures[f"update_many matching {BULK_OPS} (mongomock)"] = _time(
        lambda: raw.update_many(some, {"$set": {"status": "unpaid"}})
    )
    return figures


def _list_world(n: int, one_account: bool) -> tuple[Any, dict[str, Callable[[], Any]]]:
    """The demo world, a few records of the resident's own, and n more per collection."""
    from bench._support import BENCH_NOW, FixedClock, bench_settings, open_raw_db, seeded
    from caiyun.domain import complaints, messaging, repairs
    from caiyun.sandbox import seed
    from caiyun.services import build_services
    from caiyun.stores import accounts, staff
    from caiyun.stores import communities as community_store
    from caiyun.stores import houses as house_store

    settings = bench_settings()
    services = build_services(settings, clock=FixedClock(BENCH_NOW), db=open_raw_db(settings))
    seed.seed_demo(services)
    db = services.db
    garden = community_store.find(db, {"name": seed.CAIYUN_GARDEN})[0]["_id"]
    house = seeded(
        house_store.by_address(db, garden, building="1栋", unit="1单元", room="101"),
        "1栋-1单元-101",
    )["_id"]
    owner = seeded(accounts.by_phone(db, "13800000001"), "owner 13800000001")
    admin_account = seeded(accounts.by_phone(db, "13900000002"), "admin 13900000002")
    admin = seeded(staff.get(db, admin_account["_id"]), "彩云花园's admin")
    for i in range(10):
        repairs.create(
            services,
            owner,
            house_id=house,
            category="water_electric",
            description=f"漏水 {i}",
            contact_phone="13800000001",
            images=[],
        )
        fields: dict[str, Any] = {"house_id": house, "kind": "complaint", "type": "engineering"}
        fields.update(contact_phone="13800000001", content=f"噪音 {i}", images=[])
        complaints.create(services, owner, fields, None)
        note_ = messaging.Note(owner["_id"], "repair", f"报修进度 {i}", "已受理", "pages/repair")
        messaging.deliver_many(services, [note_])
    for name, filer in (("repairs", "reporter_id"), ("complaints", "account_id")):
        _load_copies(db, name, n, filer, owner["_id"] if one_account else None, garden)
    _load_copies(db, "messages", n, "account_id", owner["_id"] if one_account else None, garden)
    reads = {
        "repair.my_list (resident)": lambda: repairs.my_list(services, owner, None, 1, 20),
        "repair.staff_list (community admin)": lambda: repairs.staff_list(
            services, admin, garden, None, 1, 20
        ),
        "complaint.my_list (resident)": lambda: complaints.my_list(services, owner, None, 1, 20),
        "complaint.staff_list (community admin)": lambda: complaints.staff_list(
            services, admin, garden, {}, 1, 20
        ),
        "notify.inbox (resident)": lambda: messaging.inbox(
            services, owner["_id"], "resident", False, 1, 20
        ),
    }
    return services, reads


def _load_copies(db: Any, name: str, n: int, filer: str, only: str | None, garden: str) -> None:
    """n copies of one of the collection's documents, each another account's (or all ``only``'s)
    in one of 200 communities (every 200th in 彩云花园), with ids older than the originals."""
    from bench._support import bulk_load

    template = db[name].find_one({})
    assert template is not None

    def copies() -> Any:
        for i in range(n):
            doc = {**template, "_id": f"{i:024x}", filer: only or f"acc-{i % 5000}"}
            if "house_id" in doc:
                doc["house_id"] = f"house-{i % 20000}"
            if "community_id" in doc:
                doc["community_id"] = garden if i % 200 == 0 else f"comm-{i % 200}"
            yield doc

    bulk_load(db, name, copies())


def measure_lists(n: int, one_account: bool) -> dict[str, float]:
    """Median seconds of each list read in a world with n more records per collection."""
    import statistics

    _, reads = _list_world(n, one_account)
    figures = {}
    for name, read in reads.items():
        read()  # warm: the first call builds the page's validators
        figures[name] = statistics.median(_time(read) for _ in range(LIST_REPEAT))
    return figures


def run_lists() -> dict[str, Any]:
    """Print each list read at the small and the large size, spread and on one account."""
    small, large = LIST_SIZES
    base = measure_lists(small, one_account=False)
    spread = measure_lists(large, one_account=False)
    heavy = measure_lists(large, one_account=True)
    rows = []
    for name in base:
        rows.append(
            [
                name,
                fmt_s(base[name]),
                fmt_s(spread[name]),
                f"{spread[name] / base[name]:.1f}×",
                fmt_s(heavy[name]),
                f"{heavy[name] / base[name]:.1f}×",
            ]
        )
    print_table(
        f"Embedded engine: list reads (page 1 of 20, median of {LIST_REPEAT}; target ≤ 2× small)",
        [
            "list",
            f"{small:,} per collection",
            f"{large:,} spread",
            "× small",
            f"{large:,} on one account",
            "× small",
        ],
        rows,
    )
    return {"small": base, "spread": spread, "one_account": heavy}


def run() -> dict[str, Any]:
    """Print the per-call costs at each size, then the list reads."""
    if mongo_uri():
        note("\n(engine costs: embedded engine only; skipped on MongoDB)")
        return {}
    lists = run_lists()
    measured = {n: measure(n) for n in SIZES}
    names = list(measured[SIZES[0]])
    rows = []
    for name in names:
        small, large = measured[SIZES[0]][name], measured[SIZES[-1]][name]
        rows.append([name, *(fmt_s(measured[n][name]) for n in SIZES), f"{large / small:.1f}×"])
    print_table(
        "Embedded engine: one call on a collection of N documents",
        ["operation", *(f"N={n:,}" for n in SIZES), f"growth ×{SIZES[-1] // SIZES[0]} N"],
        rows,
    )
    return {**{str(n): figures for n, figures in measured.items()}, "lists": lists}


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

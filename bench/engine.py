"""What one command costs on the embedded engine, by collection size (embedded engine only).

mongomock alone answers every query by scanning the whole collection and checks a unique index
by scanning it again for every document written; the engine's hash indexes
(``caiyun.data.indexes``) narrow both, so each row here should not grow with N. Each row below
is one call on a collection of N documents (``bills``, which has a unique index); ``engine``
goes through ``EmbeddedCollection`` (lock, journal), ``mongomock`` calls the mongomock
collection underneath directly (the same indexed store), so the difference is the engine's own.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench._support import fmt_s, mongo_uri, note, print_table

SIZES = (1_000, 10_000)
BULK_OPS = 100


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


def run() -> dict[str, Any]:
    """Print the per-call costs at each size."""
    if mongo_uri():
        note("\n(engine costs: embedded engine only; skipped on MongoDB)")
        return {}
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
    return {str(n): figures for n, figures in measured.items()}


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

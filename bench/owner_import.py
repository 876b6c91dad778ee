"""An N-row owner import (`caiyun import owners`) against a raw ``insert_many`` of the same
documents.

The file is the owner template of one community: N houses (40 rooms × 5 units per building),
each with an owner of its own phone, written as ``.xlsx`` with openpyxl (write-only) in a
temporary directory.

* ``read``: ``caiyun.imports.files.read_rows`` alone, iterated to the end (parsing the file);
* ``import``: ``caiyun.domain.owner_import.import_owners`` fed by ``read_rows`` into a fresh
  database, as ``caiyun import owners`` does (parsing, validation, then per batch of 500 rows
  the owners' accounts read and inserted, the houses read and inserted);
* ``re-import``: the same file again (every row ``unchanged``: reads only);
* ``raw``: one ``insert_many`` of the N accounts and one of the N houses the import made
  (taken from the imported database, so the documents are the same), into a fresh database.
  Target: import ≤ 2 × raw.

Each size runs in a process of its own (``--child N``), so the RSS figures are its own.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench._support import (
    BENCH_NOW,
    CommandLog,
    CountingDatabase,
    FixedClock,
    RssSampler,
    bench_settings,
    child_result,
    drop_raw_db,
    fmt_s,
    fmt_x,
    mongo_uri,
    note,
    open_raw_db,
    print_table,
    run_child,
)

TARGET_RATIO = 2.0
COMMUNITY = {"province": "广东省", "city": "深圳市", "district": "南山区", "name": "基准小区"}


def write_xlsx(path: Path, n: int) -> None:
    """The owner template with n rows (openpyxl write-only: constant memory)."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("业主")
    sheet.append(["楼栋", "单元", "房号", "业主姓名", "业主手机号"])
    for i in range(n):
        building, rest = divmod(i, 200)
        unit, room = divmod(rest, 40)
        floor, door = divmod(room, 4)
        sheet.append(
            [building + 1, unit + 1, (floor + 1) * 100 + door + 1, f"业主{i}", f"139{i:08d}"]
        )
    workbook.save(path)


def child(n: int) -> None:
    """One size: write the file, read it, import it, import it again, then the raw inserts."""
    from caiyun.domain.owner_import import import_owners
    from caiyun.imports.files import OWNER_COLUMNS, read_rows
    from caiyun.services import build_services

    with tempfile.TemporaryDirectory(prefix="caiyun-bench-") as folder:
        path = Path(folder) / "owners.xlsx"
        write_xlsx(path, n)
        started = time.perf_counter()
        read = sum(1 for _ in read_rows(path, OWNER_COLUMNS, line_field="line"))
        read_s = time.perf_counter() - started

        log = CommandLog()
        settings = bench_settings()
        db = open_raw_db(settings)
        services = build_services(
            settings, clock=FixedClock(BENCH_NOW), db=CountingDatabase(db, log)
        )

        def imported() -> tuple[float, Counter[str]]:
            started = time.perf_counter()
            report = import_owners(
                services, COMMUNITY, read_rows(path, OWNER_COLUMNS, line_field="line")
            )
            return time.perf_counter() - started, Counter(r.status for r in report.rows)

        log.reset()
        with RssSampler() as rss:
            import_s, statuses = imported()
        commands = log.count
        log.reset()
        again_s, again = imported()
        again_commands = log.count
        accounts = list(db["accounts"].find({}))
        houses = list(db["houses"].find({}))
        drop_raw_db(db)

    raw = open_raw_db(settings)
    started = time.perf_counter()
    raw["accounts"].insert_many(accounts, ordered=False)
    raw["houses"].insert_many(houses, ordered=False)
    raw_s = time.perf_counter() - started
    drop_raw_db(raw)
    child_result(
        {
            "n": n,
            "read_rows": read,
            "read_s": read_s,
            "s": import_s,
            "statuses": dict(statuses),
            "commands": commands,
            "again_s": again_s,
            "again_statuses": dict(again),
            "again_commands": again_commands,
            "raw_s": raw_s,
            "documents": len(accounts) + len(houses),
            "rss_peak_mb": rss.peak_mb,
            "rss_growth_mb": rss.growth_mb,
        }
    )


def run(scale: int = 100_000, sizes: tuple[int, ...] = (10_000,)) -> dict[str, Any]:
    """Measure each size and ``scale`` in child processes; print the table."""
    points = []
    for n in sorted({*sizes, scale}):
        result, error = run_child(["-m", "bench.owner_import", "--child", str(n)], 3600)
        if result is None:
            note(f"owner import at N={n:,} failed: {error}")
            continue
        points.append(result)
    rows = []
    for p in points:
        ratio = p["s"] / p["raw_s"] if p["raw_s"] else None
        flag = "" if ratio is not None and ratio <= TARGET_RATIO else " OVER"
        rows.append(
            [
                f"{p['n']:,}",
                fmt_s(p["read_s"]),
                fmt_s(p["s"]),
                fmt_s(p["raw_s"]),
                f"{fmt_x(ratio)}{flag}",
                f"{p['commands']:,}",
                f"{p['rss_peak_mb']:.0f} / {p['rss_growth_mb']:.0f}",
                fmt_s(p["again_s"]),
                f"{p['again_commands']:,}",
                ", ".join(f"{k} {v:,}" for k, v in sorted(p["statuses"].items())),
            ]
        )
    engine = "MongoDB" if mongo_uri() else "embedded engine"
    print_table(
        f"Owner import (`caiyun import owners`, .xlsx) against raw insert_many — {engine}; "
        f"target ≤ {TARGET_RATIO}×",
        [
            "N rows",
            "read_rows only",
            "import",
            "raw insert_many",
            "× raw",
            "commands",
            "peak RSS / growth MB",
            "re-import",
            "re-import cmds",
            "rows",
        ],
        rows,
    )
    at_scale = next((p for p in points if p["n"] == scale), None)
    return {
        "points": points,
        "at_scale": {"ratio": at_scale["s"] / at_scale["raw_s"]} if at_scale else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", type=int)
    parser.add_argument("--scale", type=int, default=100_000)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    run(args.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""An N-row Excel bill import against a raw ``insert_many`` of the same bills.

The file is what a property company sends for one community: N rows over N/50 houses (ten
months × five fee items per house), built with ``openpyxl`` in write-only mode in a temporary
directory, with the bill template's Chinese headers. The houses exist, each with an owner
account (WeChat openid, push templates configured) bound to it, so every new bill is announced
as in production.

* ``read``: ``caiyun.imports.files.read_rows`` alone, iterated to the end (parsing the file);
* ``import``: ``caiyun.domain.bill_import.import_bills`` fed by ``read_rows`` (parsing,
  validation, then per batch of 500 rows one houses read and one insert_many; one
  announcement per house);
* ``raw``: one ``insert_many`` of the same bill documents (built beforehand, not timed).
  Target: import ≤ 2 × raw;
* ``peak RSS``: the process's resident set at its highest during the import (sampled every
  5 ms; the interpreter and the loaded database included), and how much it grew during the
  import. Target: under 300 MB.

Each size runs in a process of its own; on the embedded engine the sizes double from
``--start`` while the next one fits the time budget, and the figures at ``--scale`` are
extrapolated along the power law of the last sizes, and say so.
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
    bulk_load,
    child_result,
    drop_raw_db,
    engine_name,
    extrapolate,
    fmt_n,
    fmt_s,
    fmt_x,
    grow_within_budget,
    install_wire_listener,
    mongo_uri,
    note,
    open_raw_db,
    power_fit,
    print_table,
    run_child,
)

TARGET_RATIO = 2.0
TARGET_MB = 300.0
COMMUNITY = "c0000000000000000000bench"
PERIODS = [f"2025-{m:02d}" for m in range(3, 13)]
ITEMS = [
    ("物业费", 26800),
    ("公摊水电费", 3560),
    ("停车费", 30000),
    ("垃圾处理费", 1500),
    ("电梯费", 4200),
]
ROWS_PER_HOUSE = len(PERIODS) * len(ITEMS)
HEADER = ["楼栋", "单元", "房号", "账期", "收费项目", "金额（分）", "缴费截止日"]


def _address(i: int) -> tuple[int, int, int]:
    # 100 houses per building, 50 per unit: 1栋 1单元 101 … 1栋 2单元 150, 2栋 …
    return i // 100 + 1, (i % 100) // 50 + 1, 101 + i % 50


def _rows(n: int) -> list[tuple[int, int, int, str, str, int, str]]:
    """The file's rows, period by period as an accounting export lists them."""
    houses = max(1, -(-n // ROWS_PER_HOUSE))
    rows = []
    for period in PERIODS:
        for i in range(houses):
            for item, amount in ITEMS:
                rows.append((*_address(i), period, item, amount, f"{period}-28"))
                if len(rows) == n:
                    return rows
    return rows


def write_xlsx(path: Path, n: int) -> None:
    """The bill template with n rows (openpyxl write-only: constant memory)."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("账单")
    sheet.append(HEADER)
    for row in _rows(n):
        sheet.append(list(row))
    workbook.save(path)


def load(db: Any, n: int) -> int:
    """The community, its houses, their owners and memberships; returns how many houses."""
    houses = max(1, -(-n // ROWS_PER_HOUSE))
    now = BENCH_NOW
    bulk_load(
        db,
        "communities",
        [
            {
                "_id": COMMUNITY,
                "province": "广东省",
                "city": "深圳市",
                "district": "南山区",
                "name": "彩云花园",
                "address": "深圳市南山区彩云路 88 号",
            }
        ],
    )
    bulk_load(
        db,
        "houses",
        (
            {
                "_id": f"h{i:023x}",
                "community_id": COMMUNITY,
                "building": f"{b}栋",
                "unit": f"{u}单元",
                "room": str(r),
                "owner_name": f"业主{i}",
                "owner_phone": f"139{i:08d}",
            }
            for i, (b, u, r) in ((i, _address(i)) for i in range(houses))
        ),
    )
    bulk_load(
        db,
        "accounts",
        (
            {
                "_id": f"a{i:023x}",
                "phone": f"139{i:08d}",
                "name": f"业主{i}",
                "created_at": now,
                "nickname": None,
                "avatar": None,
                "last_login_at": None,
                "wx": {"resident": f"o-resident-{i}"},
                "realname_verified": False,
            }
            for i in range(houses)
        ),
    )
    bulk_load(
        db,
        "memberships",
        (
            {
                "_id": f"m{i:023x}",
                "house_id": f"h{i:023x}",
                "account_id": f"a{i:023x}",
                "community_id": COMMUNITY,
                "role": "owner",
                "created_at": now,
                "added_by": f"a{i:023x}",
            }
            for i in range(houses)
        ),
    )
    return houses


def _bill_docs(n: int) -> list[dict[str, Any]]:
    """The documents the import writes for the file's rows."""
    from caiyun.ids import new_id

    index = {_address(i): i for i in range(max(1, -(-n // ROWS_PER_HOUSE)))}
    return [
        {
            "_id": new_id(),
            "house_id": f"h{index[(b, u, r)]:023x}",
            "period": period,
            "item": item,
            "amount_fen": amount,
            "due_date": due,
            "community_id": COMMUNITY,
            "building": f"{b}栋",
            "status": "unpaid",
            "created_at": BENCH_NOW,
            "updated_at": BENCH_NOW,
        }
        for b, u, r, period, item, amount, due in _rows(n)
    ]


TRACED_ROWS = 400


def _traced_import(folder: Path, n: int) -> dict[str, float]:
    """A small import (``TRACED_ROWS``; tracemalloc slows mongomock some 30-fold) under
    tracemalloc: its peak, and what it still holds at the end outside the database engine
    (the per-row results), in MB."""
    import tracemalloc

    from caiyun.domain.bill_import import import_bills
    from caiyun.imports.files import BILL_COLUMNS, read_rows
    from caiyun.services import build_services

    path = folder / "traced.xlsx"
    write_xlsx(path, n)
    settings = bench_settings()
    raw = open_raw_db(settings)
    load(raw, n)
    services = build_services(settings, clock=FixedClock(BENCH_NOW), db=raw)
    tracemalloc.start(8)
    started = time.perf_counter()
    results = import_bills(services, COMMUNITY, read_rows(path, BILL_COLUMNS, line_field="line"))
    traced_s = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    engine_files = ("mongomock", "pymongo", "bson", "caiyun/data/")
    own = sum(
        stat.size
        for stat in snapshot.statistics("traceback")
        if not any(any(part in f.filename for part in engine_files) for f in stat.traceback)
    )
    del results
    drop_raw_db(raw)
    return {
        "traced_n": n,
        "traced_peak_mb": peak / 1e6,
        "own_end_mb": own / 1e6,
        "extra_s": traced_s,
    }


def read_child(n: int) -> None:
    """Only write and read the n-row file (linear, so cheap at full scale on any engine)."""
    from caiyun.imports.files import BILL_COLUMNS, read_rows

    with tempfile.TemporaryDirectory(prefix="caiyun-bench-") as folder:
        path = Path(folder) / "bills.xlsx"
        started = time.perf_counter()
        write_xlsx(path, n)
        write_s = time.perf_counter() - started
        with RssSampler() as rss:
            started = time.perf_counter()
            read = sum(1 for _ in read_rows(path, BILL_COLUMNS, line_field="line"))
            read_s = time.perf_counter() - started
        child_result(
            {
                "n": n,
                "read_rows": read,
                "read_s": read_s,
                "write_s": write_s,
                "file_mb": path.stat().st_size / 1e6,
                "rss_peak_mb": rss.peak_mb,
                "rss_growth_mb": rss.growth_mb,
            }
        )


def child(n: int, traced: bool = False) -> None:
    """One size: build the file, read it, import it, then the raw insert_many."""
    from caiyun.domain.bill_import import import_bills
    from caiyun.imports.files import BILL_COLUMNS, read_rows
    from caiyun.services import build_services

    with tempfile.TemporaryDirectory(prefix="caiyun-bench-") as folder:
        path = Path(folder) / "bills.xlsx"
        started = time.perf_counter()
        write_xlsx(path, n)
        write_s = time.perf_counter() - started
        size_mb = path.stat().st_size / 1e6

        started = time.perf_counter()
        read = sum(1 for _ in read_rows(path, BILL_COLUMNS, line_field="line"))
        read_s = time.perf_counter() - started

        log = CommandLog()
        if mongo_uri():
            install_wire_listener(log)
        settings = bench_settings()
        raw = open_raw_db(settings)
        houses = load(raw, n)
        services = build_services(
            settings, clock=FixedClock(BENCH_NOW), db=CountingDatabase(raw, log)
        )
        log.reset()
        with RssSampler() as rss:
            started = time.perf_counter()
            results = import_bills(
                services, COMMUNITY, read_rows(path, BILL_COLUMNS, line_field="line")
            )
            import_s = time.perf_counter() - started
        statuses = Counter(r.status for r in results)
        reasons = Counter(r.reason for r in results if r.status == "error")
        commands, breakdown = log.count, log.breakdown(limit=10)
        del results
        drop_raw_db(raw)
        memory = _traced_import(Path(folder), min(n, TRACED_ROWS)) if traced else {}

    raw = open_raw_db(settings)
    load(raw, n)
    docs = _bill_docs(n)
    log.reset()
    counted = CountingDatabase(raw, log)
    with RssSampler() as raw_rss:
        started = time.perf_counter()
        counted["bills"].insert_many(docs, ordered=False)
        raw_s = time.perf_counter() - started
    raw_commands = log.count
    drop_raw_db(raw)
    child_result(
        {
            "n": n,
            "houses": houses,
            "file_mb": size_mb,
            "write_s": write_s,
            "read_rows": read,
            "read_s": read_s,
            "s": import_s,
            "statuses": dict(statuses),
            "errors": dict(reasons.most_common(3)),
            "commands": commands,
            "breakdown": breakdown,
            "raw_s": raw_s,
            "raw_commands": raw_commands,
            "rss_start_mb": rss.start_mb,
            "rss_peak_mb": rss.peak_mb,
            "rss_growth_mb": rss.growth_mb,
            "raw_rss_growth_mb": raw_rss.growth_mb,
            **memory,
        }
    )


def run(scale: int = 100_000, budget: float = 180.0, start: int = 1000) -> dict[str, Any]:
    """Measure at growing sizes within the budget; print the table and the figures at scale."""
    points, problem = grow_within_budget(
        "bench.bill_import", scale, budget, start, ["--tracemalloc"], ("s", "raw_s", "read_s")
    )
    read = None
    if points and points[-1]["n"] != scale:
        read, _ = run_child(["-m", "bench.bill_import", "--read-only", str(scale)], 600)
    return _report(points, scale, problem, read)


def _how(xs: list[tuple[int, float]]) -> str:
    if len(xs) < 2:
        return "extrapolated linearly (one size only: a lower bound)"
    return f"extrapolated (time ∝ N^{power_fit(xs):.2f})"


def _flag(ok: bool) -> str:
    return "" if ok else " OVER"


def _report(
    points: list[dict[str, Any]], scale: int, problem: str, read: dict[str, Any] | None = None
) -> dict[str, Any]:
    rows = []
    for p in points:
        ratio = p["s"] / p["raw_s"] if p["raw_s"] else None
        rows.append(
            [
                f"{p['n']:,}",
                "measured",
                f"{p['houses']:,}",
                fmt_s(p["read_s"]),
                fmt_s(p["s"]),
                fmt_s(p["raw_s"]),
                fmt_x(ratio) + _flag(ratio is not None and ratio <= TARGET_RATIO),
                f"{p['commands']:,} ({p['commands'] / p['n']:.2f}/row)",
                str(p["raw_commands"]),
                f"{p['rss_peak_mb']:.0f}{_flag(p['rss_peak_mb'] < TARGET_MB)}",
                f"{p['rss_growth_mb']:.1f} / {p['raw_rss_growth_mb']:.1f}",
                ", ".join(f"{k} {v:,}" for k, v in sorted(p["statuses"].items())),
            ]
        )
    at_scale: dict[str, Any] = {}
    if points and points[-1]["n"] != scale:

        def along(key: str) -> float | None:
            found = [(p["n"], p[key]) for p in points if p.get(key)]
            return extrapolate(found, scale) if found else None

        xs = [(p["n"], p["s"]) for p in points]
        s, raw_s = along("s"), along("raw_s")
        read_s = read["read_s"] if read else along("read_s")
        growth, raw_growth = along("rss_growth_mb"), along("raw_rss_growth_mb")
        peak = None if growth is None else points[-1]["rss_start_mb"] + growth
        ratio = s / raw_s if s and raw_s else None
        at_scale = {
            "s": s,
            "raw_s": raw_s,
            "read_s": read_s,
            "ratio": ratio,
            "commands": along("commands"),
            "rss_growth_mb": growth,
            "raw_rss_growth_mb": raw_growth,
            "rss_peak_mb": peak,
            "time_exponent": power_fit(xs),
            "extrapolated": True,
        }
        rows.append(
            [
                f"{scale:,}",
                _how(xs),
                f"{max(1, -(-scale // ROWS_PER_HOUSE)):,}",
                fmt_s(read_s),
                fmt_s(s),
                fmt_s(raw_s),
                fmt_x(ratio) + _flag(ratio is not None and ratio <= TARGET_RATIO),
                fmt_n(at_scale["commands"]),
                str(points[-1]["raw_commands"]),
                "—" if peak is None else f"{peak:.0f}{_flag(peak < TARGET_MB)}",
                f"{growth or 0:.1f} / {raw_growth or 0:.1f}",
                "",
            ]
        )
    elif points:
        p = points[-1]
        at_scale = {
            "s": p["s"],
            "raw_s": p["raw_s"],
            "read_s": p["read_s"],
            "ratio": p["s"] / p["raw_s"] if p["raw_s"] else None,
            "commands": p["commands"],
            "rss_growth_mb": p["rss_growth_mb"],
            "raw_rss_growth_mb": p["raw_rss_growth_mb"],
            "rss_peak_mb": p["rss_peak_mb"],
            "extrapolated": False,
        }
    print_table(
        f"Excel bill import of N rows — {engine_name()} engine (targets: import ≤ "
        f"{TARGET_RATIO:.0f}× raw insert_many, peak RSS < {TARGET_MB:.0f} MB)",
        [
            "N rows",
            "how",
            "houses",
            "read_rows only",
            "import",
            "raw insert_many",
            "ratio",
            "commands",
            "raw cmds",
            "peak RSS MB",
            "RSS growth MB: import / raw",
            "rows",
        ],
        rows,
    )
    if points:
        last = points[-1]
        note(
            f"Last file: {last['file_mb']:.1f} MB, written in {fmt_s(last['write_s'])}; "
            f"commands of its import: {last['breakdown']}."
        )
        if last["errors"]:
            note(f"Rows refused: {last['errors']}.")
        traced = next((p for p in points if p.get("own_end_mb") is not None), None)
        if traced is not None:
            per_row = traced["own_end_mb"] * 1e6 / traced["traced_n"]
            note(
                f"tracemalloc over a {traced['traced_n']:,}-row import: peak "
                f"{traced['traced_peak_mb']:.1f} MB; held by the import itself at its end, "
                "outside the database engine: "
                f"{traced['own_end_mb']:.2f} MB ({per_row:.0f} B/row, so about "
                f"{per_row * scale / 1e6:.0f} MB at N={scale:,}: every row's RowResult is kept)."
            )
    if read:
        note(
            f"read_rows alone at N={scale:,} was measured, not extrapolated: "
            f"{fmt_s(read['read_s'])} for a {read['file_mb']:.1f} MB file ({read['read_rows']:,} "
            f"rows; written in {fmt_s(read['write_s'])}); RSS grew {read['rss_growth_mb']:.1f} MB "
            f"while reading (peak {read['rss_peak_mb']:.0f} MB): the file is streamed."
        )
        at_scale["read_measured"] = read
    if problem:
        note(f"Not measured at N={scale:,} on the {engine_name()} engine: {problem}.")
    if not mongo_uri():
        note(
            "Embedded engine: the database lives in this process, so the RSS growth includes the "
            "stored bills; the raw insert_many's growth is about that storage alone."
        )
    return {"engine": engine_name(), "points": points, "at_scale": at_scale, "problem": problem}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", type=int)
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--budget", type=float, default=180.0)
    parser.add_argument("--start", type=int, default=1000)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--read-only", type=int, metavar="N")
    args = parser.parse_args(argv)
    if args.read_only:
        read_child(args.read_only)
        return 0
    if args.child:
        child(args.child, args.tracemalloc)
        return 0
    run(args.scale, args.budget, args.start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

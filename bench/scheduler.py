"""The timer over a backlog: N stale repairs and N unpaid bills, against the raw writes.

The data (loaded uncounted): N accounts, each with a WeChat openid and the owner's membership
of one house; one repair per account left ``awaiting_rating`` four days ago (past the three-day
rating window); one unpaid bill per house, due yesterday. The clock stands at 10:00 in
Shanghai, inside the reminders' daytime window, and every push template is configured, so each
notification tries to spend a consent, as in production (none is held: nothing goes to WeChat).

* ``scheduler``: ``caiyun.domain.scheduler.run_jobs`` (every job: auto-close, order expiry,
  auto-debit, payment reminders) — wall time, database commands, and peak Python memory
  (tracemalloc, in a second run on fresh data).
* ``raw``: the same state change written directly: one ``update_many`` closing the repairs
  (same fields, same timeline entry), then ``insert_many`` of the same inbox messages, of the
  (house, account) reminder claims, and of the reminder messages. Target: scheduler ≤ 1.5 × raw.

Each size runs in a process of its own. On the embedded engine (mongomock scans the whole
collection for every query) the sizes double from ``--start`` while the next one fits the time
budget; the figures at ``--scale`` are then extrapolated along the power law of the last two
sizes, and say so.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from datetime import timedelta
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
)

TARGET_RATIO = 1.5
COMMUNITY = "c0000000000000000000bench"


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:023x}" for i in range(n)]


def _community(i: int) -> str:
    return COMMUNITY if i == 0 else f"c{i:024x}"


def load(
    db: Any, n: int, communities: int = 1, bills_per_house: int = 1, repairs: int | None = None
) -> None:
    """The backlog: n accounts, houses and memberships (the houses dealt over ``communities``),
    ``repairs`` stale repairs (one per account, n by default) and ``bills_per_house`` unpaid
    bills per house, each a month apart, the last due yesterday."""
    from caiyun.domain import repair_views

    now = BENCH_NOW
    since = now - repair_views.RATING_WINDOW - timedelta(days=1)
    # Bill k is for the k-th month before February 2026 and fell due on the first of the month
    # after it (as months counted from year 0, January = 0).
    months = [2026 * 12 + 1 - k for k in range(bills_per_house)]
    periods = [f"{m // 12}-{m % 12 + 1:02d}" for m in months]
    dues = [f"{(m + 1) // 12}-{(m + 1) % 12 + 1:02d}-01" for m in months]
    accounts, houses = _ids("a", n), _ids("h", n)
    bulk_load(
        db,
        "communities",
        [
            {
                "_id": _community(c),
                "name": f"彩云花园{c or ''}",
                "province": "广东省",
                "city": "深圳市",
            }
            for c in range(communities)
        ],
    )
    bulk_load(
        db,
        "accounts",
        (
            {
                "_id": a,
                "phone": f"139{i:08d}",
                "name": f"业主{i}",
                "created_at": now,
                "nickname": None,
                "avatar": None,
                "last_login_at": None,
                "wx": {"resident": f"o-resident-{i}"},
                "realname_verified": False,
            }
            for i, a in enumerate(accounts)
        ),
    )
    bulk_load(
        db,
        "houses",
        (
            {
                "_id": h,
                "community_id": _community(i % communities),
                "building": "1栋",
                "unit": "1单元",
                "room": str(101 + i),
                "owner_name": f"业主{i}",
                "owner_phone": f"139{i:08d}",
            }
            for i, h in enumerate(houses)
        ),
    )
    bulk_load(
        db,
        "memberships",
        (
            {
                "_id": f"m{i:023x}",
                "house_id": h,
                "account_id": a,
                "community_id": _community(i % communities),
                "role": "owner",
                "created_at": now,
                "added_by": a,
            }
            for i, (a, h) in enumerate(zip(accounts, houses, strict=True))
        ),
    )

    def timeline(reporter: str) -> list[dict[str, Any]]:
        return [
            {
                "event": event,
                "status": status,
                "actor_id": actor,
                "actor_role": role,
                "at": since,
                "note": None,
            }
            for event, status, actor, role in (
                ("created", "pending", reporter, "resident"),
                ("dispatched", "dispatched", "admin", "admin"),
                ("finished", "awaiting_rating", "repairman", "repairman"),
            )
        ]

    bulk_load(
        db,
        "repairs",
        (
            {
                "_id": f"r{i:023x}",
                "community_id": _community(i % communities),
                "community_name": "彩云花园",
                "house_id": h,
                "house_label": f"1栋-1单元-{i}",
                "reporter_id": a,
                "category": "water_electric",
                "description": "厨房水龙头漏水",
                "contact_phone": f"139{i:08d}",
                "images": [],
                "status": "awaiting_rating",
                "repairman_id": "repairman",
                "created_at": since,
                "updated_at": since,
                "awaiting_since": since,
                "timeline": timeline(a),
            }
            for i, (a, h) in enumerate(zip(accounts, houses, strict=True))
            if repairs is None or i < repairs
        ),
    )
    bulk_load(
        db,
        "bills",
        (
            {
                "_id": f"b{i * bills_per_house + k:023x}",
                "house_id": h,
                "period": periods[k],
                "item": "物业费",
                "amount_fen": 26800,
                "due_date": dues[k],
                "community_id": _community(i % communities),
                "building": "1栋",
                "status": "unpaid",
                "created_at": now,
                "updated_at": now,
            }
            for i, h in enumerate(houses)
            for k in range(bills_per_house)
        ),
    )


_LOG = CommandLog()


def _fresh(n: int) -> tuple[Any, Any, CommandLog]:
    from caiyun.services import build_services

    log = _LOG
    settings = bench_settings()
    raw = open_raw_db(settings)
    load(raw, n)
    services = build_services(settings, clock=FixedClock(BENCH_NOW), db=CountingDatabase(raw, log))
    log.reset()
    return raw, services, log


def timed_jobs(services: Any, log: CommandLog) -> dict[str, Any]:
    """One timer invocation (``run_jobs``) with each job's time, commands and error recorded."""
    from caiyun.domain.scheduler import JOBS, Job, run_jobs

    per_job: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}

    def measured(job: Job) -> Job:
        def run(svc: Any, until: Any) -> Any:
            import traceback

            before = log.count
            started = time.perf_counter()
            try:
                return job.run(svc, until)
            except Exception as exc:
                where = traceback.extract_tb(exc.__traceback__)[-1]
                errors[job.name] = (
                    f"{type(exc).__name__}: {exc} at "
                    f"{where.filename.split('/layers/common/')[-1]}:{where.lineno} "
                    f"({where.name}: {where.line})"
                )
                raise
            finally:
                per_job[job.name] = {
                    "s": time.perf_counter() - started,
                    "commands": log.count - before,
                }

        return Job(job.name, run)

    started = time.perf_counter()
    counts = run_jobs(services, [measured(j) for j in JOBS])
    return {"s": time.perf_counter() - started, "counts": counts, "jobs": per_job, "errors": errors}


def _raw_writes(services: Any) -> float:
    """The scheduler's state change, written with one command per collection and kind."""
    from caiyun.domain import repair_views
    from caiyun.ids import new_id

    db, now = services.db, BENCH_NOW
    started = time.perf_counter()
    deadline = now - repair_views.RATING_WINDOW
    note_text = f"超过{repair_views.RATING_WINDOW.days}天未评价，已自动完成"
    db["repairs"].update_many(
        {"status": "awaiting_rating", "awaiting_since": {"$lte": deadline}},
        {
            "$set": {
                "status": "completed",
                "auto_closed": True,
                "auto_close_run": new_id(),
                "closed_at": now,
                "updated_at": now,
            },
            "$push": {
                "timeline": {
                    "event": "auto_closed",
                    "status": "completed",
                    "actor_id": None,
                    "actor_role": "system",
                    "at": now,
                    "note": note_text,
                }
            },
        },
    )
    closed = db["repairs"].find({"auto_close_run": {"$exists": True}}, {"reporter_id": 1})
    db["messages"].insert_many(
        [
            {
                "_id": new_id(),
                "account_id": r["reporter_id"],
                "community_id": COMMUNITY,
                "kind": "repair",
                "title": "报修已自动完成",
                "body": f"水电维修（1栋-1单元）：{note_text}",
                "page": f"pages/repair/detail?repair_id={r['_id']}",
                "created_at": now,
                "read_at": None,
            }
            for r in closed
        ]
    )
    memberships = list(db["memberships"].find({}, {"house_id": 1, "account_id": 1}))
    expires = now + timedelta(days=1)
    window = int(now.timestamp() // 86400)
    run = new_id()
    db["payment_reminders"].insert_many(
        [
            {
                "_id": f"pair:{m['house_id']}:{m['account_id']}:{window}",
                "run": run,
                "account_id": m["account_id"],
                "house_id": m["house_id"],
                "community_id": COMMUNITY,
                "community_name": "彩云花园",
                "house_label": "1栋-1单元-101",
                "total": 26800,
                "count": 1,
                "created_at": now,
                "expires_at": expires,
            }
            for m in memberships
        ]
    )
    db["messages"].insert_many(
        [
            {
                "_id": new_id(),
                "account_id": m["account_id"],
                "community_id": COMMUNITY,
                "kind": "reminder",
                "title": "缴费提醒",
                "body": (
                    "以下房屋有待缴费用，合计 268.00 元："
                    "彩云花园 1栋-1单元-101：1 笔，共 268.00 元。请及时缴纳。"
                ),
                "page": "/pages/bills/index",
                "created_at": now,
                "read_at": None,
            }
            for m in memberships
        ]
    )
    return time.perf_counter() - started


def child(n: int, memory: bool) -> None:
    """One size: the timed run, the raw writes, and (optionally) the tracemalloc run."""
    if mongo_uri():
        install_wire_listener(_LOG)
    raw, services, log = _fresh(n)
    with RssSampler() as rss:
        timed = timed_jobs(services, log)
    commands, breakdown = log.count, log.breakdown(limit=10)
    drop_raw_db(raw)

    raw, services, log = _fresh(n)
    raw_s = _raw_writes(services)
    raw_commands = log.count
    drop_raw_db(raw)

    peak_mb = held_mb = None
    traced_s = 0.0
    if memory:
        raw, services, log = _fresh(n)
        tracemalloc.start()
        traced_s = timed_jobs(services, log)["s"]
        current, peak = tracemalloc.get_traced_memory()
        peak_mb, held_mb = peak / 1e6, current / 1e6
        tracemalloc.stop()
        drop_raw_db(raw)
    child_result(
        {
            "n": n,
            "s": timed["s"],
            "jobs": timed["jobs"],
            "counts": timed["counts"],
            "errors": timed["errors"],
            "commands": commands,
            "breakdown": breakdown,
            "raw_s": raw_s,
            "raw_commands": raw_commands,
            "peak_mb": peak_mb,
            "held_mb": held_mb,
            "rss_mb": rss.growth_mb,
            "extra_s": traced_s,
        }
    )


def run(scale: int = 100_000, budget: float = 180.0, start: int = 250) -> dict[str, Any]:
    """Measure at growing sizes within the budget; print the table and the figures at scale."""
    # tracemalloc slows mongomock about tenfold: on the embedded engine only the first size is
    # traced; every size reports its RSS growth.
    points, problem = grow_within_budget(
        "bench.scheduler", scale, budget, start, ["--tracemalloc"], ("s", "raw_s")
    )
    return _report(points, scale, problem)


def _flagged(ratio: float | None) -> str:
    return fmt_x(ratio) + ("" if ratio is not None and ratio <= TARGET_RATIO else " OVER")


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _report(points: list[dict[str, Any]], scale: int, problem: str) -> dict[str, Any]:
    rows = []
    for p in points:
        jobs = ", ".join(
            f"{name} {fmt_s(j['s'])}/{j['commands']:,}"
            + (" FAILED" if name in p.get("errors", {}) else "")
            for name, j in p["jobs"].items()
        )
        rows.append(
            [
                f"{p['n']:,}",
                "measured",
                fmt_s(p["s"]),
                fmt_s(p["raw_s"]),
                _flagged(p["s"] / p["raw_s"] if p["raw_s"] else None),
                f"{p['commands']:,} ({p['commands'] / (2 * p['n']):.2f}/item)",
                str(p["raw_commands"]),
                _mb(p["peak_mb"])
                + ("" if p.get("held_mb") is None else f" ({p['held_mb']:.1f} held)"),
                _mb(p["rss_mb"]),
                jobs,
            ]
        )
    at_scale: dict[str, Any] = {}
    if points and points[-1]["n"] != scale:
        xs = [(p["n"], p["s"]) for p in points]

        def along(key: str) -> float | None:
            found = [(p["n"], p[key]) for p in points if p.get(key)]
            return extrapolate(found, scale) if found else None

        s, raw_s = along("s"), along("raw_s")
        ratio = s / raw_s if s and raw_s else None
        at_scale = {
            "s": s,
            "raw_s": raw_s,
            "ratio": ratio,
            "commands": along("commands"),
            "peak_mb": along("peak_mb"),
            "held_mb": along("held_mb"),
            "rss_mb": along("rss_mb"),
            "time_exponent": power_fit(xs),
            "extrapolated": True,
        }
        rows.append(
            [
                f"{scale:,}",
                (
                    f"extrapolated (time ∝ N^{power_fit(xs):.2f})"
                    if len(xs) > 1
                    else "extrapolated linearly (one size only: a lower bound)"
                ),
                fmt_s(s),
                fmt_s(raw_s),
                _flagged(ratio),
                fmt_n(at_scale["commands"]),
                str(points[-1]["raw_commands"]),
                _mb(at_scale["peak_mb"])
                + ("" if at_scale["held_mb"] is None else f" ({at_scale['held_mb']:.0f} held)"),
                _mb(at_scale["rss_mb"]),
                "",
            ]
        )
    elif points:
        p = points[-1]
        at_scale = {
            "s": p["s"],
            "raw_s": p["raw_s"],
            "ratio": p["s"] / p["raw_s"] if p["raw_s"] else None,
            "commands": p["commands"],
            "peak_mb": p["peak_mb"],
            "rss_mb": p["rss_mb"],
            "extrapolated": False,
        }
    print_table(
        f"Scheduler over N stale repairs + N unpaid bills — {engine_name()} engine "
        f"(target: scheduler ≤ {TARGET_RATIO}× raw)",
        [
            "N",
            "how",
            "scheduler",
            "raw",
            "ratio",
            "commands",
            "raw cmds",
            "tracemalloc peak MB",
            "RSS growth MB",
            "per job: time/commands",
        ],
        rows,
    )
    failures = {f"{name}: {error}" for p in points for name, error in p.get("errors", {}).items()}
    for failure in sorted(failures):
        sizes = [f"{p['n']:,}" for p in points if failure.split(":")[0] in p.get("errors", {})]
        note(f"JOB FAILED at N={', '.join(sizes)} — {failure}")
    if points:
        last = points[-1]
        note(f"Counts of the last run: {last['counts']}.")
        note(f"Commands of the last run: {last['breakdown']}.")
    if problem:
        note(f"Not measured at N={scale:,} on the {engine_name()} engine: {problem}.")
    if not mongo_uri():
        note(
            "Embedded engine: tracemalloc (which slows mongomock about tenfold) ran at the first "
            "size only; figures at larger N are extrapolated along a straight line from it. The "
            "database lives in the process: 'held' is what was still allocated at the end (the "
            "new messages, claims and timeline entries stored), the rest of the peak is working "
            "memory (the job's lists and mongomock's per-query copies)."
        )
    return {"engine": engine_name(), "points": points, "at_scale": at_scale, "problem": problem}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", type=int)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--budget", type=float, default=180.0)
    parser.add_argument("--start", type=int, default=250)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.tracemalloc)
        return 0
    run(args.scale, args.budget, args.start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

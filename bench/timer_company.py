"""The timer at a company's size: every invocation within its budget, the backlog done once.

The data (loaded uncounted, as ``bench.scheduler`` loads it): ``--communities`` communities with
``--houses`` houses dealt over them, an owner (account, openid, membership) per house,
``--bills-per-house`` unpaid bills per house (monthly, all due), ``--repairs`` repairs left
``awaiting_rating`` past the rating window. The clock starts at 10:00 in Shanghai (inside the
reminders' daytime window) and runs with real time, so the scheduler's budget
(``scheduler_budget_s``, here ``--budget-s``) is spent as the jobs work.

The timer is invoked again and again, as the platform's minute trigger would, until no job is
left unfinished or deferred. The table gives each invocation's wall time against the budget and
what each job did; the checks after it count that every repair was closed once, every house's
owner was reminded once and told in one message, and nothing was left over.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta
from typing import Any

from bench._support import (
    BENCH_NOW,
    CommandLog,
    CountingDatabase,
    RssSampler,
    bench_settings,
    engine_name,
    fmt_n,
    fmt_s,
    note,
    open_raw_db,
    print_table,
)
from bench.scheduler import load, timed_jobs


class RunningClock:
    """Starts at a given moment and runs with real time: a budget measured on it is spent by
    the work itself."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.began = time.perf_counter()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.perf_counter() - self.began)


def run(
    communities: int = 200,
    houses: int = 400_000,
    bills_per_house: int = 3,
    repairs: int = 100_000,
    budget_s: int = 600,
) -> dict[str, Any]:
    """Load the company, invoke the timer until its backlog is done; returns the figures."""
    from caiyun.services import build_services

    settings = bench_settings(scheduler_budget_s=budget_s)
    raw = open_raw_db(settings)
    started = time.perf_counter()
    with RssSampler() as loading:
        load(raw, houses, communities, bills_per_house, repairs)
    load_s = time.perf_counter() - started
    note(
        f"loaded {communities} communities, {houses:,} houses and owners, "
        f"{houses * bills_per_house:,} unpaid bills, {repairs:,} stale repairs "
        f"in {fmt_s(load_s)} (RSS {loading.peak_mb:.0f} MB)"
    )
    log = CommandLog()
    services = build_services(
        settings, clock=RunningClock(BENCH_NOW), db=CountingDatabase(raw, log)
    )
    invocations: list[dict[str, Any]] = []
    with RssSampler() as working:
        while len(invocations) < 100:
            log.reset()
            result = timed_jobs(services, log)
            result["commands"] = log.count
            invocations.append(result)
            counts = result["counts"]
            if not counts["unfinished_jobs"] and not counts["deferred_jobs"]:
                break
    checks = _checks(raw, houses, repairs)
    rows = [
        [
            str(i + 1),
            fmt_s(r["s"]),
            f"{r['s'] / budget_s:.0%}",
            fmt_n(r["commands"]),
            ", ".join(f"{name} {fmt_s(j['s'])}" for name, j in r["jobs"].items() if j["s"] >= 0.05),
            _did(r["counts"]),
            ", ".join(r["counts"]["unfinished_jobs"]) or "—",
            ", ".join(r["counts"]["deferred_jobs"]) or "—",
        ]
        for i, r in enumerate(invocations)
    ]
    print_table(
        f"The timer at company size — {engine_name()} engine, budget {budget_s} s per invocation",
        [
            "invocation",
            "wall time",
            "of budget",
            "commands",
            "jobs (≥ 50 ms)",
            "did",
            "unfinished",
            "deferred",
        ],
        rows,
    )
    total = sum(r["s"] for r in invocations)
    note(
        f"{len(invocations)} invocation(s), {fmt_s(total)} in all; longest "
        f"{fmt_s(max(r['s'] for r in invocations))} against a budget of {budget_s} s; "
        f"RSS peak while working {working.peak_mb:.0f} MB."
    )
    note("Checks: " + "; ".join(f"{k} {v:,}" for k, v in checks.items()) + ".")
    return {
        "communities": communities,
        "houses": houses,
        "bills": houses * bills_per_house,
        "repairs": repairs,
        "budget_s": budget_s,
        "load_s": load_s,
        "invocations": [
            {"s": r["s"], "commands": r["commands"], "counts": r["counts"]} for r in invocations
        ],
        "checks": checks,
    }


_SHOWN = {
    "repairs_auto_closed": "closed",
    "reminders_houses_unpaid": "houses owing",
    "reminders_accounts_notified": "told",
    "orders_ended": "orders ended",
    "pushes_sent": "pushed",
}


def _did(counts: dict[str, Any]) -> str:
    return ", ".join(f"{label} {counts[k]:,}" for k, label in _SHOWN.items() if counts.get(k))


def _checks(db: Any, houses: int, repairs: int) -> dict[str, int]:
    """What the whole run left: each figure should equal the one beside it in the note."""
    return {
        f"repairs still awaiting rating (of {repairs:,})": db["repairs"].count_documents(
            {"status": "awaiting_rating"}
        ),
        "repairs closed by the timer": db["repairs"].count_documents({"auto_closed": True}),
        f"reminder slots claimed (one per house and owner: {houses:,})": db[
            "payment_reminders"
        ].count_documents({}),
        "reminder messages": db["messages"].count_documents({"kind": "reminder"}),
        "repair messages": db["messages"].count_documents({"kind": "repair"}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timer_company", description=__doc__)
    parser.add_argument("--communities", type=int, default=200)
    parser.add_argument("--houses", type=int, default=400_000)
    parser.add_argument("--bills-per-house", type=int, default=3)
    parser.add_argument("--repairs", type=int, default=100_000)
    parser.add_argument("--budget-s", type=int, default=600)
    args = parser.parse_args(argv)
    run(args.communities, args.houses, args.bills_per_house, args.repairs, args.budget_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

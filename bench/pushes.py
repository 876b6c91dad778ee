"""WeChat pushes off the request path: what queuing N pushes costs the action, and how long the
timer's sender takes to deliver them against a WeChat that answers in ``--latency`` seconds.

The data: N accounts, each holding one consent for the bill template from its own openid. The
action's share is ``messaging.deliver_many`` of one bill note per account with the consents
already read (as the bill import passes them): one inbox write and one outbox write, whatever
WeChat's latency. The sender is ``pushes.drain`` against the fake WeChat server with a send
latency, ``push_concurrency`` calls in flight. Before the outbox, the action itself made those
N calls one after the other: N × latency, shown beside it.
"""

from __future__ import annotations

import time
from typing import Any

from bench._support import (
    BENCH_NOW,
    FixedClock,
    bench_settings,
    fmt_s,
    note,
    open_raw_db,
    print_table,
)

APPID, SECRET = "wxbench", "bench-secret-0123456789abcdef"


def run(n: int = 2_000, latency: float = 0.1) -> dict[str, Any]:
    """Queue ``n`` pushes, then drain them; returns the timings."""
    from caiyun.domain import messaging, pushes
    from caiyun.sandbox.fake_wechat import FakeWeChat
    from caiyun.services import build_services

    with FakeWeChat(apps={APPID: SECRET}) as wechat:
        wechat.send_latency_s = latency
        settings = bench_settings(
            wechat_api_base=wechat.url, wechat_appid=APPID, wechat_secret=SECRET
        )
        services = build_services(settings, clock=FixedClock(BENCH_NOW), db=open_raw_db(settings))
        template = settings.wechat_templates["bill"]
        accounts = [f"a{i:023x}" for i in range(n)]
        consents = [f"{a}:{template}" for a in accounts]
        services.db[messaging.CONSENTS].insert_many(
            [
                {
                    "_id": c,
                    "account_id": a,
                    "template_id": template,
                    "app": "resident",
                    "openid": f"o-{a}",
                    "held": True,
                    "remaining": 1,
                }
                for a, c in zip(accounts, consents, strict=True)
            ]
        )
        notes = [
            messaging.Note(
                a,
                "bill",
                "新账单",
                "物业费 120.00 元",
                "/pages/bill/list",
                messaging.Push("bill", {"thing1": "物业费"}),
            )
            for a in accounts
        ]
        started = time.perf_counter()
        messaging.deliver_many(services, notes, spendable=set(consents))
        queued_s = time.perf_counter() - started
        started = time.perf_counter()
        counts = pushes.drain(services)
        drain_s = time.perf_counter() - started
        sent = len(wechat.sent)
    width = settings.push_concurrency
    per_push = drain_s / max(sent, 1)
    within_budget = int(settings.scheduler_budget_s / per_push)
    rows = [
        ["pushes", f"{n:,}"],
        ["WeChat latency", fmt_s(latency)],
        ["action: inbox write, pushes queued in it", fmt_s(queued_s)],
        ["before: sent inside the action (N × latency)", fmt_s(n * latency)],
        [f"sender: drain ({width} in flight)", f"{fmt_s(drain_s)} ({sent:,} sent)"],
        ["sender: per push", fmt_s(per_push)],
        [f"pushes per {settings.scheduler_budget_s} s invocation", f"{within_budget:,}"],
    ]
    print_table("WeChat pushes through the outbox", ["", "figure"], rows)
    note(f"(drain counts: {counts})")
    return {
        "n": n,
        "latency_s": latency,
        "queued_s": queued_s,
        "drain_s": drain_s,
        "sent": sent,
        "per_invocation": within_budget,
    }

"""The timer's work: a list of jobs, each safe to run again or twice at once.

A job takes the services and the moment the invocation's budget (``scheduler_budget_s``) ends,
and returns counts (``{"repairs_auto_closed": 3}``); the timer's reply merges them. A job that
can stop early checks that moment between batches; once it has passed, the jobs not yet started
are listed under ``deferred_jobs`` and left for the next invocation, which resumes all of them
from what is still due (what a job did no longer matches its query, so nothing is done twice).
A job works through what is due in bounded batches (``scheduler_batch_size``) with conditional
writes, so an overlapping run or a retry never applies anything twice. Adding a job is adding
an entry to :data:`JOBS`.

One failing job does not stop the others: its error is logged and its name is listed under
``failed_jobs``; what it left undone is still due at the next run.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from caiyun.domain import autodebit_charges, notices, payments, pushes, reminders, repairs
from caiyun.logs import log_call
from caiyun.services import Services

# The count a job returns when it stopped at a checkpoint with more to do; the reply lists the
# job under unfinished_jobs instead.
_UNFINISHED = "unfinished"


@dataclass(frozen=True)
class Job:
    """One piece of timer work: a name for the logs and the function that does it."""

    name: str
    run: Callable[[Services, datetime], Mapping[str, int]]


def _remind_overdue(services: Services, until: datetime) -> dict[str, int]:
    counts = reminders.remind_overdue(services, until)
    return {k if k == _UNFINISHED else f"reminders_{k}": v for k, v in counts.items()}


# Orders are settled or released before auto-debit runs, and auto-debit before reminders, so
# nobody is reminded of a bill that was just paid.
JOBS: tuple[Job, ...] = (
    Job("repairs_auto_close", repairs.auto_close_due),
    Job("orders_expire", payments.expire_orders),
    Job("autodebit", autodebit_charges.run_autodebit),
    Job("payment_reminders", _remind_overdue),
    Job("notice_deliveries", notices.resume_deliveries),
    # Last: it sends what the jobs before it queued.
    Job("pushes", pushes.drain),
)


def run_jobs(services: Services, jobs: Sequence[Job] = JOBS) -> dict[str, Any]:
    """Run the jobs in order within the budget; returns their merged counts, ``failed_jobs``,
    ``unfinished_jobs`` (stopped at a checkpoint: the next invocation resumes them) and
    ``deferred_jobs`` (not started: the budget was spent)."""
    until = services.clock.now() + timedelta(seconds=services.settings.scheduler_budget_s)
    counts: dict[str, Any] = {}
    failed: list[str] = []
    unfinished: list[str] = []
    deferred: list[str] = []
    for job in jobs:
        if services.clock.now() >= until:
            deferred.append(job.name)
            continue
        started = time.perf_counter()
        try:
            done = dict(job.run(services, until))
            if done.pop(_UNFINISHED, 0):
                unfinished.append(job.name)
            counts.update(done)
        except Exception as exc:
            failed.append(job.name)
            log_call(
                {
                    "function": "scheduler",
                    "job": job.name,
                    "code": "INTERNAL",
                    "exception": type(exc).__name__,
                    "error": f"{exc}\n{traceback.format_exc(limit=8)}",
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                }
            )
    return {
        **counts,
        "failed_jobs": failed,
        "unfinished_jobs": unfinished,
        "deferred_jobs": deferred,
    }

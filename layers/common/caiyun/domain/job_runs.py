"""Where a long timer job got to, so one that reaches the invocation's budget resumes later.

A job run is named for the period it covers (``autodebit:2026-11-25``, ``reminders:<window>``)
and held by one invocation at a time: SCF may start the next minute's timer while one still
runs, and the second then leaves the job to the first. The holder saves its cursor after each
batch; when the budget is spent it lets go (:func:`pause`) and the next invocation carries on
from the cursor at once; when it is done (:func:`finish`) the period's run is never taken again.
A holder that died lets go when its hold lapses (``scheduler_budget_s``), and its successor
redoes at most the batch after the last saved cursor: each job's own guard (a bill stamped as
tried today, a reminder slot claimed, a message id fixed by its key) makes that repeat change
nothing. Finished runs are deleted by a TTL index once their period is over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo import IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from caiyun.data.schema import declare
from caiyun.ids import new_id
from caiyun.services import Services

RUNS = declare("job_runs", IndexModel("expires_at", expireAfterSeconds=0))


@dataclass
class JobRun:
    """A run this invocation holds: its name, the hold's token and the saved cursor."""

    key: str
    token: str
    state: dict[str, Any]


def begin(services: Services, key: str, keep_s: float) -> JobRun | None:
    """Take the run ``key`` with its saved state (empty when new); None when it is finished or
    another invocation holds it. ``keep_s``: how long the record outlives its start."""
    now = services.clock.now()
    token = new_id()
    hold = now + timedelta(seconds=services.settings.scheduler_budget_s)
    try:
        doc = services.db[RUNS].find_one_and_update(
            {"_id": key, "done": False, "held_until": {"$lte": now}},
            {
                "$set": {"holder": token, "held_until": hold},
                "$setOnInsert": {"state": {}, "expires_at": now + timedelta(seconds=keep_s)},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:
        return None  # finished, or held: the filter missed and the upsert hit the same _id
    return JobRun(key, token, doc["state"])


def save(services: Services, run: JobRun, state: dict[str, Any]) -> None:
    """Keep the cursor after a batch and extend the hold."""
    hold = services.clock.now() + timedelta(seconds=services.settings.scheduler_budget_s)
    run.state = state
    services.db[RUNS].update_one(
        {"_id": run.key, "holder": run.token}, {"$set": {"state": state, "held_until": hold}}
    )


def pause(services: Services, run: JobRun, state: dict[str, Any]) -> None:
    """Keep the cursor and let go, so the next invocation resumes at once."""
    run.state = state
    services.db[RUNS].update_one(
        {"_id": run.key, "holder": run.token},
        {"$set": {"state": state, "held_until": services.clock.now()}},
    )


def finish(services: Services, run: JobRun) -> None:
    """The run's work is all done: it is not taken again."""
    services.db[RUNS].update_one(
        {"_id": run.key, "holder": run.token},
        {"$set": {"done": True, "held_until": services.clock.now()}},
    )

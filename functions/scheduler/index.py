"""scheduler: the timer trigger's function. It has no actions: every client call is refused."""

from __future__ import annotations

from typing import Any

from caiyun.domain import scheduler
from caiyun.runtime import Call, CloudFunction


def on_timer(call: Call) -> dict[str, Any]:
    """Every timer trigger runs every job; the reply is their counts."""
    return scheduler.run_jobs(call.services)


main_handler = CloudFunction("scheduler", {}, timer=on_timer)

"""The collections every record declares, collected above the domain.

A domain or adapter module declares its collection beside its queries (``data.schema.declare``);
this module names those modules, so the data layer never imports the domain to find them.
A new declaring module is added to ``DECLARING_MODULES`` (tests/contract/test_layering.py
fails until it is).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from caiyun.data import connect, schema

if TYPE_CHECKING:
    from caiyun.clock import Clock
    from caiyun.settings import Settings

DECLARING_MODULES: tuple[str, ...] = (
    "caiyun.adapters.sms",
    "caiyun.adapters.wechat",
    "caiyun.domain.appconfig",
    "caiyun.domain.icbc_notifies",
    "caiyun.domain.idempotency",
    "caiyun.domain.import_jobs",
    "caiyun.domain.job_runs",
    "caiyun.domain.messaging",
    "caiyun.domain.payment_issues",
    "caiyun.domain.rate_limits",
    "caiyun.domain.realname",
    "caiyun.domain.reminders",
    "caiyun.domain.sms_codes",
    "caiyun.stores.accounts",
    "caiyun.stores.bills",
    "caiyun.stores.communities",
    "caiyun.stores.complaints",
    "caiyun.stores.houses",
    "caiyun.stores.memberships",
    "caiyun.stores.notices",
    "caiyun.stores.orders",
    "caiyun.stores.repairs",
    "caiyun.stores.staff",
    "caiyun.stores.visitors",
)


def declared_collections() -> list[schema.CollectionSpec]:
    """Every declared collection, after importing every declaring module.

    The modules are imported here, on demand, not at the top: a deployed function that never
    opens the embedded engine or creates indexes does not load the whole domain at cold start.
    """
    for name in DECLARING_MODULES:
        importlib.import_module(name)
    return schema.declared_so_far()


def ensure_indexes(db: Any) -> dict[str, list[str]]:
    """Create every declared index; safe to run again (existing indexes are kept)."""
    return schema.create_indexes(db, declared_collections())


def open_database(settings: Settings, clock: Clock | None = None) -> Any:
    """The database for these settings; the embedded engine gets every declared index at once."""
    return connect.open_database(settings, clock, declared=declared_collections)

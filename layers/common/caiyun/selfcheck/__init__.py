"""`caiyun selfcheck`: every function's read and write path, once, on a real database.

Run after the first deploy against the production MongoDB (``MONGODB_URI``), or on the embedded
engine in a ``--data-dir``. It works in a throwaway database it creates and drops
(``caiyun_selfcheck_<random>``; on the embedded engine a fresh folder inside the data
directory), so nothing of the real data is read or changed: it ensures the indexes, loads the
demo data set, then walks a short journey per function through the real ``main_handler`` of
each, as the mini-programs and the timer call them, with the sandbox's fake WeChat, SMS and
ICBC. What runs on the database is therefore exactly what production runs: aggregation
stages, pipeline updates, partial unique indexes.

Asked with ``--live``, it also calls the real outside services with the deploy's own settings:
``sms`` texts a code to ``--phone``, ``wechat`` fetches each mini-program's access token,
``icbc`` queries an order that does not exist and checks ICBC's signed answer.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from caiyun.selfcheck.journey import Journey, JourneyStopped, Report, StepFailed
from caiyun.selfcheck.journeys import walk

LIVE_SERVICES = ("sms", "wechat", "icbc")


def live_checks(report: Report, services: Any, live: set[str], phone: str | None) -> None:
    """The real outside services, called with the deploy's own settings."""
    journey = Journey(report, services)
    if "sms" in live:
        with _kept(journey.step("live", f"sms: a code texted to {phone}")):
            if not phone:
                raise StepFailed("--phone is required with --live sms")
            services.sms.send(phone, "code", ["000000", "5"])
    if "wechat" in live:
        for app in ("resident", "staff"):
            with _kept(journey.step("live", f"wechat: {app} access token")):
                services.wechat.access_token(app)
    if "icbc" in live:
        with _kept(journey.step("live", "icbc: signed answer to an order query")):
            services.icbc.query_payment("SELFCHECK" + uuid.uuid4().hex[:12].upper())


@contextmanager
def _kept(step: Any) -> Iterator[None]:
    # A failed live check does not stop the others.
    try:
        with step:
            yield
    except JourneyStopped:
        pass


def check_database(db: Any, services_for: Callable[[Any], Any], where: str) -> Report:
    """Indexes, demo data and every journey on ``db`` (a fresh, empty database)."""
    from caiyun.catalog import ensure_indexes
    from caiyun.sandbox.seed import seed_demo
    from caiyun.services import install_services

    report = Report(where)
    journey = Journey(report, None)
    try:
        with journey.step("database", "ensure_indexes"):
            ensure_indexes(db)
        services = services_for(db)
        journey.services = services
        with journey.step("database", "demo data (owners, houses, bills, staff)"):
            seed_demo(services)
    except JourneyStopped:
        return report
    install_services(services)
    try:
        with journey.listening():
            walk(journey)
    finally:
        install_services(None)
    return report


def throwaway_name() -> str:
    """A database name no deployment uses."""
    return f"caiyun_selfcheck_{uuid.uuid4().hex[:12]}"


def embedded_scratch(data_dir: Path) -> Path:
    """A fresh folder for the throwaway embedded database inside ``data_dir``."""
    scratch = data_dir / throwaway_name()
    scratch.mkdir(parents=True)
    return scratch


def drop_embedded(scratch: Path) -> None:
    """Remove the throwaway embedded database."""
    shutil.rmtree(scratch, ignore_errors=True)

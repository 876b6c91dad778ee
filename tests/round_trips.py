"""Which database commands a call makes: on MongoDB each one is a network round trip, so an
action's list of them is part of what a test may pin down.

One command per collection method called (``find`` is one however many documents it returns),
as ``bench`` counts them.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from caiyun.services import Services, install_services


class _Collection:
    def __init__(self, collection: Any, name: str, log: list[str], thread: int) -> None:
        self._collection, self._name, self._log, self._thread = collection, name, log, thread

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._collection, attr)
        if not callable(target):
            return target

        def counted(*args: Any, **kwargs: Any) -> Any:
            # The sandbox bank and WeChat serve from threads of their own on the same database;
            # only the calls of the thread under test count.
            if threading.get_ident() == self._thread:
                self._log.append(f"{self._name}.{attr}")
            return target(*args, **kwargs)

        return counted


class _Database:
    def __init__(self, db: Any, log: list[str]) -> None:
        self._db, self._log, self._thread = db, log, threading.get_ident()

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self._db[name], name, self._log, self._thread)

    def get_collection(self, name: str) -> _Collection:
        return self[name]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._db, attr)


@contextmanager
def counting(services: Services, warm: bool = True) -> Iterator[tuple[Services, list[str]]]:
    """A copy of ``services`` whose database logs each command as ``collection.method``,
    installed for the functions inside the block (``services`` itself stays uncounted, for
    set-up); pass the copy to domain calls the test wants counted.

    ``warm``: as a warm container, which holds the app configuration (read once per
    ``config_cache_s``; the copy shares the memo), so a call is counted as it usually costs.
    """
    from caiyun.domain import appconfig

    if warm:
        appconfig.current(services)
    log: list[str] = []
    copy = dataclasses.replace(services, db=_Database(services.db, log))
    install_services(copy)
    try:
        yield copy, log
    finally:
        install_services(services)


@contextmanager
def counted(services: Services, warm: bool = True) -> Iterator[list[str]]:
    """The commands the functions send inside the block, in order (see :func:`counting`)."""
    with counting(services, warm) as (_, log):
        yield log


# What a notification costs is messaging's business (it reads accounts and consents, writes
# messages and queues pushes), pinned by its own tests.
_NOTIFYING = ("accounts.", "messages.", "subscription_consents.")


def own(commands: list[str]) -> list[str]:
    """The commands after the caller lookup, less those of the notifications the call sent."""
    return [c for c in commands[1:] if not c.startswith(_NOTIFYING)]

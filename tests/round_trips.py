"""Which database commands a call makes: on MongoDB each one is a network round trip, so an
action's list of them is part of what a test may pin down.

One command per collection method called (``find`` is one however many documents it returns),
as ``bench`` counts them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from caiyun.services import Services, install_services


class _Collection:
    def __init__(self, collection: Any, name: str, log: list[str]) -> None:
        self._collection, self._name, self._log = collection, name, log

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._collection, attr)
        if not callable(target):
            return target

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._log.append(f"{self._name}.{attr}")
            return target(*args, **kwargs)

        return counted


class _Database:
    def __init__(self, db: Any, log: list[str]) -> None:
        self._db, self._log = db, log

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self._db[name], name, self._log)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._db, attr)


@contextmanager
def counted(services: Services) -> Iterator[list[str]]:
    """The commands the functions send while inside the block, in order, as
    ``collection.method``; ``services`` (the test's own handle) stays uncounted."""
    log: list[str] = []
    install_services(dataclasses.replace(services, db=_Database(services.db, log)))
    try:
        yield log
    finally:
        install_services(services)


# What a notification costs is messaging's business (it reads accounts and consents, writes
# messages), pinned by its own tests.
_NOTIFYING = ("accounts.", "messages.", "subscription_consents.")


def own(commands: list[str]) -> list[str]:
    """The commands after the caller lookup, less those of the notifications the call sent."""
    return [c for c in commands[1:] if not c.startswith(_NOTIFYING)]

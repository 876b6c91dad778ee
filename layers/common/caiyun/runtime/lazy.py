"""Modules a function needs only once it serves a call, imported then.

A cold container pays for every import before its first event arrives. The contract's pydantic
models are the dearest part of a function's import (pydantic's model machinery plus one class
build per model), and none of it is needed to receive the event, so a function's index names its
contract modules through :func:`lazy_import` and they load on the first dispatch.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands in for a module; the first attribute read imports it and reads from it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            # import_module holds the import system's per-module lock, so two threads racing
            # here both get the one fully executed module.
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<lazy module {self._name!r}, {state}>"


def lazy_import(name: str) -> Any:
    """A stand-in for module ``name`` that imports it on first use (typed ``Any`` on purpose:
    it is used exactly like the module)."""
    return LazyModule(name)

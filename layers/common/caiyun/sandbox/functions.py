"""Finding and loading the cloud functions of this checkout, as the platform would load them."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

_loaded: dict[str, ModuleType] = {}
_lock = threading.Lock()


def functions_dir() -> Path:
    """The ``functions/`` folder: ``CAIYUN_FUNCTIONS_DIR``, else the one beside ``layers/``."""
    configured = os.environ.get("CAIYUN_FUNCTIONS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[4] / "functions"


def function_names() -> list[str]:
    """Every function that has an ``index.py``."""
    root = functions_dir()
    return sorted(p.parent.name for p in root.glob("*/index.py"))


def load_function(name: str) -> ModuleType:
    """Import ``functions/<name>/index.py`` once, under a name of its own."""
    with _lock:
        module = _loaded.get(name)
        if module is None:
            if name not in function_names():
                raise KeyError(name)
            path = functions_dir() / name / "index.py"
            spec = importlib.util.spec_from_file_location(f"caiyun_functions.{name}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _loaded[name] = module
        return module


def handler(name: str) -> Any:
    """The ``main_handler`` of a function."""
    return load_function(name).main_handler

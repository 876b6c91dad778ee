"""A cold container imports a function without building any contract model; the first call
builds what it needs and serves the same envelope as ever."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from caiyun import packaging
from caiyun.runtime.lazy import lazy_import

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: this test process has long since imported everything.
PROBE = """
import contextlib, io, json, sys
sys.path.insert(0, sys.argv[1])
import index
after_import = sorted(m for m in sys.modules if m.startswith(("caiyun.contract", "pydantic.main")))
with contextlib.redirect_stdout(io.StringIO()):
    actions = list(index.main_handler.actions)
after_table = sorted(m for m in sys.modules if m.startswith("caiyun.contract"))
print(json.dumps({"after_import": after_import, "actions": actions, "after_table": after_table}))
"""


@pytest.mark.parametrize("function", packaging.function_names(ROOT))
def test_importing_a_function_builds_no_pydantic_model(function: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "functions" / function)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    seen = json.loads(done.stdout)
    assert seen["after_import"] == []
    if seen["actions"]:
        assert f"caiyun.contract.{function}" in seen["after_table"]


def test_a_lazy_module_hands_out_the_real_modules_classes() -> None:
    from caiyun.contract import visitor

    stand_in = lazy_import("caiyun.contract.visitor")
    assert stand_in.PassView is visitor.PassView


def test_a_lazy_module_for_a_missing_name_fails_on_use_not_on_creation() -> None:
    stand_in = lazy_import("caiyun.contract.no_such_function")
    with pytest.raises(ModuleNotFoundError):
        _ = stand_in.Anything

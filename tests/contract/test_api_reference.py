"""The checked-in API reference is what `caiyun docs` generates from the code today."""

from __future__ import annotations

from pathlib import Path

from caiyun import apidoc
from caiyun.sandbox.functions import function_names, handler

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "api"


def test_checked_in_api_reference_matches_the_action_tables() -> None:
    generated = apidoc.render()
    stale = [
        name
        for name, text in generated.items()
        if not (REFERENCE / name).is_file()
        or (REFERENCE / name).read_text(encoding="utf-8") != text
    ]
    extra = sorted(p.name for p in REFERENCE.iterdir() if p.is_file() and p.name not in generated)
    assert (stale, extra) == ([], []), "run `caiyun docs` and commit docs/api"


def test_every_action_of_every_function_has_a_documented_section() -> None:
    for name in function_names():
        page = (REFERENCE / f"{name}.md").read_text(encoding="utf-8")
        for action in handler(name).actions:
            assert f"\n## {action}\n" in page, f"{name}.{action} is not documented"

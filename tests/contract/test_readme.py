"""The README stays true to the code: its demo data and commands are the real ones."""

from __future__ import annotations

from pathlib import Path

from caiyun.cli import build_parser
from caiyun.sandbox.seed import DEMO_BOUND_OWNERS, DEMO_COMMUNITIES, DEMO_STAFF

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_readme_lists_every_demo_house_owner_and_staff_member() -> None:
    for community in DEMO_COMMUNITIES:
        assert community.name in README and community.address in README
        for house in community.houses:
            assert f"| {house.label} | {house.owner_name} | {house.owner_phone} |" in README
    for member in DEMO_STAFF:
        assert f"| {member.phone} | {member.name} | {member.role} |" in README
    for phone in DEMO_BOUND_OWNERS:
        assert f"({phone}) is already bound" in README


def test_readme_names_only_commands_the_cli_has() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for line in README.splitlines():
        if line.startswith("caiyun "):
            assert line.split()[1] in commands, line
    assert "scripts/dev" in README and "scripts/test" in README

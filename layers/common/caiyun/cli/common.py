"""What every subcommand shares: the default data directory, the operator's refusal, the
arguments several take (a moment, a community, a staff member's phone and name)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from caiyun.clock import SHANGHAI
from caiyun.stores import communities as community_store

DEFAULT_DATA_DIR = ".caiyun/data"
PHONE = re.compile(r"1[3-9][0-9]{9}")

# A subcommand's body: the parsed arguments in, the exit status out.
Command = Callable[[argparse.Namespace], int]
# Adds a subcommand (its arguments and its body) to the ``caiyun`` parser.
Register = Callable[[argparse._SubParsersAction], None]


class CliError(Exception):
    """A refusal shown to the operator as is (Chinese / English)."""


def moment(text: str) -> datetime:
    """An ISO 8601 moment with an offset (a naive one is read as Asia/Shanghai)."""
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"不是 ISO 8601 时刻 / not an ISO 8601 moment: {text}"
        ) from None
    return found if found.tzinfo else found.replace(tzinfo=SHANGHAI)


def community_id(db: Any, ref: str) -> str:
    """The id of the community ``ref`` names (its id, or its name when no other shares it)."""
    found = community_store.by_id_or_name(db, ref)
    if found is None:
        raise CliError(
            f"找不到小区“{ref}”（或有同名小区，请用小区 id）/ "
            f"no community with id or unique name {ref!r}"
        )
    return found["_id"]


def staff_name(phone: str, name: str) -> str:
    """The name a staff member is recorded under, once their phone and name are checked."""
    if not PHONE.fullmatch(phone):
        raise CliError(f"手机号格式不正确 / not a mainland mobile number: {phone}")
    name = name.strip()
    if not name or len(name) > 32:
        raise CliError("姓名须为 1–32 个字符 / the name must be 1–32 characters")
    return name

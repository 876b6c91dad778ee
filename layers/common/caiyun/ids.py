"""Identifiers: string ids that sort by creation time, as the contract wants ids as strings."""

from __future__ import annotations

from bson import ObjectId


def new_id() -> str:
    """A new unique, time-ordered string id."""
    return str(ObjectId())

"""The fields every record about a house keeps, so that it is listed and shown without reading
the house or its community again."""

from __future__ import annotations

from typing import TypedDict


class Place(TypedDict):
    """Where a repair, complaint or visitor pass belongs, copied from the house when filed."""

    community_id: str
    community_name: str
    house_id: str
    house_label: str

"""How a repair is shown: its reply shapes, and the fixed facts they share with the rules
(category and state names, the rating window)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from caiyun import labels
from caiyun.clock import iso
from caiyun.crypto import mask_phone
from caiyun.stores.repairs import Repair, TimelineEntry

STATUS_NAMES: dict[str, str] = labels.LABELS["repair_status"]

# A repair left unrated this long after the repairman finished is completed by the timer.
RATING_WINDOW = timedelta(days=3)


def category_name(doc: Repair) -> str:
    """The category's label as the repair was filed (older repairs: the default label)."""
    return doc.get("category_name") or labels.name("repair_category", doc["category"])


def file_ids(doc: Repair) -> list[str]:
    """Every stored image a repair's detail shows: the report's, then the completion photos."""
    completion = doc.get("completion")
    return [*doc.get("images", []), *(completion["photos"] if completion else [])]


def _images(ids: list[str], urls: Mapping[str, str | None]) -> list[dict[str, Any]]:
    return [{"file_id": fid, "url": urls.get(fid)} for fid in ids]


def summary(doc: Repair) -> dict[str, Any]:
    """A repair as a list shows it to the resident: no phones, no timeline."""
    return {
        "repair_id": doc["_id"],
        "community_id": doc["community_id"],
        "community_name": doc["community_name"],
        "house_id": doc["house_id"],
        "house_label": doc["house_label"],
        "category": doc["category"],
        "category_name": category_name(doc),
        "description": doc["description"],
        "status": doc["status"],
        "status_name": STATUS_NAMES[doc["status"]],
        "auto_closed": bool(doc.get("auto_closed")),
        "created_at": iso(doc["created_at"]),
        "updated_at": iso(doc["updated_at"]),
    }


def staff_item(doc: Repair) -> dict[str, Any]:
    """A repair as the staff lists show it: the contact phone masked, the repairman named."""
    return {
        **summary(doc),
        "contact_phone": mask_phone(doc["contact_phone"]),
        "repairman_id": doc.get("repairman_id"),
        "repairman_name": doc.get("repairman_name"),
    }


def _entry(entry: TimelineEntry) -> dict[str, Any]:
    return {
        "event": entry["event"],
        "event_name": labels.name("repair_event", entry["event"]),
        "status": entry["status"],
        "status_name": STATUS_NAMES[entry["status"]],
        "actor_role": entry["actor_role"],
        "actor_role_name": labels.name("actor_role", entry["actor_role"]),
        "at": iso(entry["at"]),
        "note": entry.get("note"),
    }


def detail(doc: Repair, viewer_id: str, urls: Mapping[str, str | None]) -> dict[str, Any]:
    """Everything about a repair, for its reporter and the staff working on it; ``mine`` says
    whether ``viewer_id`` reported it, ``urls`` are the display URLs of its images
    (:func:`file_ids`).

    Phones are shown in full: the reporter calls the repairman, the repairman calls the
    contact phone the reporter gave for this repair.
    """
    repairman = None
    if doc.get("repairman_id"):
        repairman = {
            "account_id": doc["repairman_id"],
            "name": doc["repairman_name"],
            "phone": doc.get("repairman_phone"),
        }
    completion = doc.get("completion")
    rating = doc.get("rating")
    awaiting = doc["status"] == "awaiting_rating"
    return {
        **summary(doc),
        "mine": doc["reporter_id"] == viewer_id,
        "contact_phone": doc["contact_phone"],
        "images": _images(doc.get("images", []), urls),
        "timeline": [_entry(e) for e in doc.get("timeline", [])],
        "repairman": repairman,
        "completion": None
        if completion is None
        else {
            **completion,
            "photos": _images(completion["photos"], urls),
            "at": iso(completion["at"]),
        },
        "rating": None if rating is None else {**rating, "at": iso(rating["at"])},
        "auto_close_at": iso(doc["awaiting_since"] + RATING_WINDOW) if awaiting else None,
    }

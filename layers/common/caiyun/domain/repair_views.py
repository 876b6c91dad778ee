"""How a repair is shown: its reply shapes, and the fixed facts they share with the rules
(category and state names, the rating window)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from caiyun.clock import iso
from caiyun.crypto import mask_phone

CATEGORIES: dict[str, str] = {
    "water_electric": "水电维修",
    "door_window": "门窗维修",
    "pipe_unclog": "管道疏通",
    "appliance": "电器维修",
    "public_facility": "公共设施",
    "other": "其他",
}

STATUS_NAMES: dict[str, str] = {
    "pending": "待处理",
    "dispatched": "待上门",
    "awaiting_rating": "待评价",
    "completed": "已完成",
    "cancelled": "已取消",
}

# A repair left unrated this long after the repairman finished is completed by the timer.
RATING_WINDOW = timedelta(days=3)


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """A repair as a list shows it to the resident: no phones, no timeline."""
    return {
        "repair_id": doc["_id"],
        "community_id": doc["community_id"],
        "community_name": doc["community_name"],
        "house_id": doc["house_id"],
        "house_label": doc["house_label"],
        "category": doc["category"],
        "category_name": CATEGORIES[doc["category"]],
        "description": doc["description"],
        "status": doc["status"],
        "status_name": STATUS_NAMES[doc["status"]],
        "auto_closed": bool(doc.get("auto_closed")),
        "created_at": iso(doc["created_at"]),
        "updated_at": iso(doc["updated_at"]),
    }


def staff_item(doc: dict[str, Any]) -> dict[str, Any]:
    """A repair as the staff lists show it: the contact phone masked, the repairman named."""
    return {
        **summary(doc),
        "contact_phone": mask_phone(doc["contact_phone"]),
        "repairman_id": doc.get("repairman_id"),
        "repairman_name": doc.get("repairman_name"),
    }


def _entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": entry["event"],
        "status": entry["status"],
        "actor_role": entry["actor_role"],
        "at": iso(entry["at"]),
        "note": entry.get("note"),
    }


def detail(doc: dict[str, Any], viewer_id: str) -> dict[str, Any]:
    """Everything about a repair, for its reporter and the staff working on it; ``mine`` says
    whether ``viewer_id`` reported it.

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
        "images": doc.get("images", []),
        "timeline": [_entry(e) for e in doc.get("timeline", [])],
        "repairman": repairman,
        "completion": None if completion is None else {**completion, "at": iso(completion["at"])},
        "rating": None if rating is None else {**rating, "at": iso(rating["at"])},
        "auto_close_at": iso(doc["awaiting_since"] + RATING_WINDOW) if awaiting else None,
    }

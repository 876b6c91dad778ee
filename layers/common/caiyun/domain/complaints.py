"""Complaints and suggestions (投诉建议): filed by a resident, answered by the property.

A complaint moves ``submitted`` → ``processing`` → ``resolved`` and never back; a resolved one
takes no more replies. Every reply is kept with who gave it and when, and the resident is told
through the inbox (and WeChat where they consented).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import DESCENDING, IndexModel, ReturnDocument

from caiyun.clock import SHANGHAI, iso
from caiyun.crypto import mask_phone
from caiyun.data import paging
from caiyun.data.schema import declare
from caiyun.domain import communities, houses, idempotency, memberships, messaging, staff
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.services import Services

# Lists are newest first by ``_id`` (time-ordered and unique, so pages never overlap).
COMPLAINTS = declare(
    "complaints",
    IndexModel([("account_id", 1), ("_id", DESCENDING)]),
    IndexModel([("account_id", 1), ("status", 1), ("_id", DESCENDING)]),
    # Every complaint of the houses an owner owns.
    IndexModel([("house_id", 1), ("_id", DESCENDING)]),
    IndexModel([("community_id", 1), ("_id", DESCENDING)]),
    IndexModel([("community_id", 1), ("status", 1), ("_id", DESCENDING)]),
    # A company-wide admin's list across every community.
    IndexModel([("status", 1), ("_id", DESCENDING)]),
)

TYPES: dict[str, str] = {
    "engineering": "工程维修",
    "service_staff": "服务人员",
    "environment": "环境绿化",
    "security": "安保秩序",
    "parking": "停车管理",
    "facilities": "公共设施",
    "noise": "噪音扰民",
    "other": "其他",
}
KIND_NAMES = {"complaint": "投诉", "suggestion": "建议"}
STATUS_NAMES = {"submitted": "已提交", "processing": "处理中", "resolved": "已解决"}

# A reply may move a complaint only to a later state; ``resolved`` is final.
_OPEN = ["submitted", "processing"]
# Bounds the document: a complaint answered this often is better closed and filed anew.
MAX_REPLIES = 50


def types() -> list[dict[str, str]]:
    """The complaint types in the order the app offers them."""
    return [{"type": code, "name": name} for code, name in TYPES.items()]


def create(
    services: Services,
    account: dict[str, Any],
    fields: dict[str, Any],
    request_id: str | None,
) -> dict[str, Any]:
    """File a complaint or suggestion about one of the caller's houses; returns its detail.

    ``fields`` holds house_id, kind, type, contact_phone, content and images (file ids of
    this deployment's storage). The same ``request_id`` from the same caller returns the first
    complaint instead of filing again.
    """
    db = services.db
    _, house, community = memberships.require_member_house(db, account["_id"], fields["house_id"])
    images = services.storage.check_file_ids(fields["images"], uploader=account["_id"])
    filed: list[dict[str, Any]] = []

    def file(record_id: str) -> dict[str, Any]:
        now = services.clock.now()
        doc = {
            "_id": record_id,
            **houses.where(house, community),
            "account_id": account["_id"],
            "kind": fields["kind"],
            "type": fields["type"],
            "contact_phone": fields["contact_phone"],
            "content": fields["content"],
            "images": images,
            "status": "submitted",
            "replies": [],
            "created_at": now,
            "updated_at": now,
            "resolved_at": None,
        }
        filed.append(idempotency.insert_once(db[COMPLAINTS], doc))
        return {"complaint_id": filed[-1]["_id"]}

    def stored(record_id: str) -> dict[str, Any] | None:
        # The first call's complaint, if it got as far as storing it.
        found = db[COMPLAINTS].find_one({"_id": record_id}, {"_id": 1})
        return {"complaint_id": record_id} if found is not None else None

    created = idempotency.once(
        services, "complaint.create", account["_id"], request_id, file, stored
    )
    if filed:
        return _detail(db, filed[-1], account["_id"])
    # A repeated request answered from the first one's result: its complaint is read back.
    return detail(services, account, created["complaint_id"])


def _page(
    services: Services, query: dict[str, Any], page: int, page_size: int
) -> tuple[list[dict[str, Any]], int]:
    docs, total, _ = paging.page(
        services.db[COMPLAINTS], query, [("_id", DESCENDING)], page, page_size
    )
    return docs, total


def my_list(
    services: Services, account: dict[str, Any], status: str | None, page: int, page_size: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of the caller's complaints, and of every complaint of the houses the caller owns
    (``mine`` false: filed by family or tenants, the contact phone masked), newest first."""
    me = account["_id"]
    query = memberships.filed_or_owned(services.db, me, "account_id")
    if status:
        query["status"] = status
    docs, total = _page(services, query, page, page_size)
    return [
        {**item(doc, reveal_phone=doc["account_id"] == me), "mine": doc["account_id"] == me}
        for doc in docs
    ], total


def staff_list(
    services: Services,
    admin: dict[str, Any],
    community_id: str | None,
    status: str | None,
    page: int,
    page_size: int,
) -> tuple[list[dict[str, Any]], int]:
    """A page of complaints of one community, or of every community the admin covers.

    Contact phones are masked in the list; the detail shows them to the admin in full.
    """
    query: dict[str, Any] = {}
    if community_id is not None:
        staff.require_scope(admin, community_id)
        query["community_id"] = community_id
    else:
        query.update(staff.scope_query(admin))
    if status:
        query["status"] = status
    docs, total = _page(services, query, page, page_size)
    return [item(doc, reveal_phone=False) for doc in docs], total


def detail(services: Services, account: dict[str, Any], complaint_id: str) -> dict[str, Any]:
    """One complaint with its images and replies, for its reporter, an admin covering it, or
    the owner of its house (read-only, the contact phone masked).

    Anyone else is told it does not exist, so ids cannot be probed for existence.
    """
    db, me = services.db, account["_id"]
    doc = db[COMPLAINTS].find_one({"_id": complaint_id})
    if doc is None:
        raise AppError("NOT_FOUND", "投诉建议不存在")
    if doc["account_id"] == me or staff.is_admin_of(
        staff.of_account(db, account), doc["community_id"]
    ):
        return _detail(db, doc, me)
    if memberships.owns(db, me, doc["house_id"]):
        return _detail(db, doc, me, reveal_phone=False)
    raise AppError("NOT_FOUND", "投诉建议不存在")


def _detail(
    db: Any, doc: dict[str, Any], viewer_id: str, reveal_phone: bool = True
) -> dict[str, Any]:
    return {
        **item(doc, reveal_phone=reveal_phone),
        "mine": doc["account_id"] == viewer_id,
        "community_name": communities.name_on(db, doc),
        "images": doc["images"],
        "replies": [
            {
                "staff_name": r["staff_name"],
                "text": r["text"],
                "status": r["status"],
                "replied_at": iso(r["at"]),
            }
            for r in doc["replies"]
        ],
        "resolved_at": iso(doc.get("resolved_at")),
    }


def item(doc: dict[str, Any], reveal_phone: bool) -> dict[str, Any]:
    """A complaint as a list shows it."""
    return {
        "complaint_id": doc["_id"],
        "community_id": doc["community_id"],
        "house_id": doc["house_id"],
        "house_label": doc["house_label"],
        "kind": doc["kind"],
        "type": doc["type"],
        "type_name": TYPES[doc["type"]],
        "content": doc["content"],
        "contact_phone": doc["contact_phone"] if reveal_phone else mask_phone(doc["contact_phone"]),
        "status": doc["status"],
        "reply_count": len(doc["replies"]),
        "created_at": iso(doc["created_at"]),
        "updated_at": iso(doc["updated_at"]),
    }


def reply(
    services: Services, admin: dict[str, Any], complaint_id: str, text: str, status: str
) -> dict[str, Any]:
    """Answer a complaint and move it to ``status``; returns the detail.

    The update is conditional on the complaint still being open, so a reply racing the one
    that resolves it loses with CONFLICT instead of reopening it.
    """
    db = services.db
    now = services.clock.now()
    entry = {
        "reply_id": new_id(),
        "staff_id": admin["_id"],
        "staff_name": admin.get("name") or "物业管理员",
        "text": text,
        "status": status,
        "at": now,
    }
    update: dict[str, Any] = {
        "$set": {"status": status, "updated_at": now},
        "$push": {"replies": entry},
    }
    if status == "resolved":
        update["$set"]["resolved_at"] = now
    # The admin's scope is part of the condition, so the write is the only command when the
    # reply is allowed; why it was not is read only when it was not.
    doc = db[COMPLAINTS].find_one_and_update(
        {
            "_id": complaint_id,
            **staff.scope_query(admin),
            "status": {"$in": _OPEN},
            f"replies.{MAX_REPLIES - 1}": {"$exists": False},
        },
        update,
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        raise _refusal(db, admin, complaint_id)
    _tell_reporter(services, doc, text, now)
    return _detail(db, doc, admin["_id"])


def _refusal(db: Any, admin: dict[str, Any], complaint_id: str) -> AppError:
    latest = db[COMPLAINTS].find_one({"_id": complaint_id}, {"community_id": 1, "status": 1})
    if latest is None:
        return AppError("NOT_FOUND", "投诉建议不存在")
    staff.require_scope(admin, latest["community_id"])
    if latest["status"] == "resolved":
        return AppError("CONFLICT", "该投诉建议已解决，不能再回复")
    return AppError("CONFLICT", "回复次数已达上限，请处理完毕后结案")


def _tell_reporter(services: Services, doc: dict[str, Any], text: str, now: datetime) -> None:
    kind = KIND_NAMES[doc["kind"]]
    status = STATUS_NAMES[doc["status"]]
    messaging.notify(
        services,
        [doc["account_id"]],
        "complaint",
        f"您的{kind}{status}",
        text,
        f"/pages/complaint/detail?id={doc['_id']}",
        # Keys of the 投诉处理结果通知 template: content, progress, reply, time.
        push=messaging.Push(
            template="complaint",
            data={
                "thing1": doc["content"],
                "phrase2": status,
                "thing3": text,
                "time4": f"{now.astimezone(SHANGHAI):%Y-%m-%d %H:%M}",
            },
        ),
        community_id=doc["community_id"],
    )

"""Telling people things: the in-app inbox always, a WeChat subscription message when allowed.

A one-time subscription consent allows exactly one message, so consents are counted per account
and template and spent atomically; two features sharing a template cannot both spend the same
consent. WeChat being down never fails the business action that wanted to tell someone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pymongo import DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import BulkWriteError

from caiyun.adapters.wechat import WeChatError, WeChatNoConsent
from caiyun.clock import iso
from caiyun.data import paging
from caiyun.data.schema import declare
from caiyun.domain import accounts
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.services import Services

MessageKind = Literal["bill", "payment", "reminder", "repair", "complaint", "notice", "visitor"]

MESSAGES = declare(
    "messages",
    IndexModel([("account_id", 1), ("created_at", DESCENDING), ("_id", DESCENDING)]),
    IndexModel([("account_id", 1), ("read_at", 1)]),
)
CONSENTS = declare("subscription_consents", IndexModel("account_id"))

# WeChat's limits on template values, by the key's type prefix (thing12 → thing).
_VALUE_LIMITS = {
    "thing": 20,
    "phrase": 5,
    "name": 10,
    "character_string": 32,
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "car_number": 8,
}


@dataclass(frozen=True)
class Push:
    """The WeChat half of a message: which template, and its values by template key."""

    template: str  # a key of settings.wechat_templates
    data: dict[str, str] = field(default_factory=dict)


def _fit(key: str, value: str) -> str:
    prefix = key.rstrip("0123456789")
    limit = _VALUE_LIMITS.get(prefix)
    if limit is not None and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def add_consents(services: Services, account_id: str, template_ids: list[str]) -> dict[str, int]:
    """Record one more one-time consent per template; returns what is left per template.

    Only this deployment's templates are accepted: a consent counted for any other id could
    never be spent.
    """
    configured = set(services.settings.wechat_templates.values())
    if not set(template_ids) <= configured:
        raise AppError(
            "INVALID_ARGUMENT", "订阅消息模板无效", {"fields": {"template_ids": "包含未配置的模板"}}
        )
    template_ids = list(dict.fromkeys(template_ids))
    now = services.clock.now()
    left = {}
    for template_id in template_ids:
        doc = services.db[CONSENTS].find_one_and_update(
            {"_id": f"{account_id}:{template_id}"},
            {
                "$inc": {"remaining": 1},
                "$set": {"account_id": account_id, "template_id": template_id, "updated_at": now},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        left[template_id] = doc["remaining"]
    return left


def _send(services: Services, note: Note, template_id: str, openid: str) -> bool:
    data = {key: _fit(key, value) for key, value in (note.push.data if note.push else {}).items()}
    consent = {"_id": f"{note.account_id}:{template_id}"}
    try:
        # The inbox keeps an absolute path for wx.navigateTo; a subscribe message's page is
        # written without the leading slash.
        services.wechat.send_subscribe(
            note.app,
            openid,
            template_id,
            note.page.lstrip("/"),
            data,
            services.settings.wechat_miniprogram_state,
        )
        return True
    except WeChatNoConsent:
        services.db[CONSENTS].update_one(consent, {"$set": {"remaining": 0}})
    except WeChatError as error:
        if error.retryable or error.errcode is None:
            # Not delivered (WeChat down, or never asked): the consent was not used up.
            services.db[CONSENTS].update_one(consent, {"$inc": {"remaining": 1}})
    return False


@dataclass(frozen=True)
class Note:
    """One message to one account. With ``key`` it is sent at most once however often the
    sending step runs (its inbox id is made from the key)."""

    account_id: str
    kind: MessageKind
    title: str
    body: str
    page: str
    push: Push | None = None
    app: accounts.App = "resident"
    community_id: str | None = None
    key: str | None = None


def _store(services: Services, notes: list[Note]) -> list[Note]:
    """Write the inbox messages; returns the notes that were new (not sent before by key)."""
    now = services.clock.now()
    docs = [
        {
            "_id": f"{n.key}-{n.account_id}" if n.key else new_id(),
            "account_id": n.account_id,
            "community_id": n.community_id,
            "kind": n.kind,
            "title": n.title,
            "body": n.body,
            "page": n.page,
            "created_at": now,
            "read_at": None,
        }
        for n in notes
    ]
    try:
        services.db[MESSAGES].insert_many(docs, ordered=False)
        return notes
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        sent_before = {e["index"] for e in errors}
        return [n for i, n in enumerate(notes) if i not in sent_before]


def notify_many(services: Services, notes: list[Note]) -> dict[str, int]:
    """Put each note in its account's inbox and push it on WeChat where a consent is left.

    A batch costs one write for the inbox and, when some notes have a template, one read of
    the accounts and one of their consents; only consents actually spent are written one by
    one. WeChat being down never raises: the inbox has the message either way.
    Returns counts: ``inbox`` messages written and ``pushed`` WeChat messages sent.
    """
    if not notes:
        return {"inbox": 0, "pushed": 0}
    fresh = _store(services, notes)
    templates = services.settings.wechat_templates
    pushable = [n for n in fresh if n.push is not None and templates.get(n.push.template)]
    if not pushable:
        return {"inbox": len(fresh), "pushed": 0}
    db = services.db
    openids = {
        a["_id"]: a.get("wx", {})
        for a in db[accounts.ACCOUNTS].find(
            {"_id": {"$in": sorted({n.account_id for n in pushable})}}, {"wx": 1}
        )
    }
    wanted = {
        f"{n.account_id}:{templates[n.push.template]}": n
        for n in pushable
        if n.push is not None and openids.get(n.account_id, {}).get(n.app)
    }
    with_consent = [
        c["_id"]
        for c in db[CONSENTS].find(
            {"_id": {"$in": list(wanted)}, "remaining": {"$gt": 0}}, {"_id": 1}
        )
    ]
    pushed = 0
    for consent_id in with_consent:
        note = wanted[consent_id]
        # Spent atomically: two features sharing a template cannot both use one consent.
        if (
            db[CONSENTS].find_one_and_update(
                {"_id": consent_id, "remaining": {"$gt": 0}}, {"$inc": {"remaining": -1}}
            )
            is None
        ):
            continue
        template_id = consent_id.split(":", 1)[1]
        pushed += _send(services, note, template_id, openids[note.account_id][note.app])
    return {"inbox": len(fresh), "pushed": pushed}


def notify(
    services: Services,
    account_ids: list[str],
    kind: MessageKind,
    title: str,
    body: str,
    page: str,
    push: Push | None = None,
    app: accounts.App = "resident",
    community_id: str | None = None,
    message_key: str | None = None,
) -> dict[str, int]:
    """The same message to several accounts (see :func:`notify_many`)."""
    return notify_many(
        services,
        [
            Note(account_id, kind, title, body, page, push, app, community_id, message_key)
            for account_id in dict.fromkeys(account_ids)
        ],
    )


def inbox(
    services: Services, account_id: str, unread_only: bool, page: int, page_size: int
) -> tuple[list[dict[str, Any]], int, int]:
    """A page of the account's messages, newest first; returns (items, total, unread)."""
    db = services.db
    query: dict[str, Any] = {"account_id": account_id}
    if unread_only:
        query["read_at"] = None
    # Unread only: the total is the unread count; otherwise unread is counted alongside.
    items, total, counts = paging.page(
        db[MESSAGES],
        query,
        # _id breaks ties between messages written in the same millisecond.
        [("created_at", DESCENDING), ("_id", DESCENDING)],
        page,
        page_size,
        extra_counts=None if unread_only else {"unread": {"read_at": None}},
    )
    return items, total, total if unread_only else counts["unread"]


def view(message: dict[str, Any]) -> dict[str, Any]:
    """An inbox message as the apps show it."""
    return {
        "message_id": message["_id"],
        "kind": message["kind"],
        "title": message["title"],
        "body": message["body"],
        "page": message["page"],
        "created_at": iso(message["created_at"]),
        "read": message["read_at"] is not None,
    }


def mark_read(services: Services, account_id: str, message_ids: list[str] | None) -> int:
    """Mark the given messages (or all) of this account read; returns how many changed."""
    query: dict[str, Any] = {"account_id": account_id, "read_at": None}
    if message_ids is not None:
        query["_id"] = {"$in": message_ids}
    result = services.db[MESSAGES].update_many(query, {"$set": {"read_at": services.clock.now()}})
    return result.modified_count

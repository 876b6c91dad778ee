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
from caiyun.data.schema import declare
from caiyun.domain import accounts
from caiyun.ids import new_id
from caiyun.services import Services

MessageKind = Literal["bill", "payment", "reminder", "repair", "complaint", "notice", "visitor"]

MESSAGES = declare(
    "messages",
    IndexModel([("account_id", 1), ("created_at", DESCENDING)]),
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
    """Record one more one-time consent per template; returns what is left per template."""
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


def _spend_consent(services: Services, account_id: str, template_id: str) -> bool:
    spent = services.db[CONSENTS].find_one_and_update(
        {"_id": f"{account_id}:{template_id}", "remaining": {"$gt": 0}},
        {"$inc": {"remaining": -1}},
    )
    return spent is not None


def _push(
    services: Services, account: dict[str, Any], push: Push, page: str, app: accounts.App
) -> bool:
    template_id = services.settings.wechat_templates.get(push.template)
    openid = account.get("wx", {}).get(app)
    if not template_id or not openid or not _spend_consent(services, account["_id"], template_id):
        return False
    data = {key: _fit(key, value) for key, value in push.data.items()}
    try:
        # The inbox keeps an absolute path for wx.navigateTo; a subscribe message's page is
        # written without the leading slash.
        services.wechat.send_subscribe(
            app,
            openid,
            template_id,
            page.lstrip("/"),
            data,
            services.settings.wechat_miniprogram_state,
        )
        return True
    except WeChatNoConsent:
        services.db[CONSENTS].update_one(
            {"_id": f"{account['_id']}:{template_id}"}, {"$set": {"remaining": 0}}
        )
    except WeChatError as error:
        if error.retryable:
            # Not delivered: the consent was not used up on WeChat's side either.
            services.db[CONSENTS].update_one(
                {"_id": f"{account['_id']}:{template_id}"}, {"$inc": {"remaining": 1}}
            )
    return False


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
    """Put a message in each account's inbox and push it on WeChat where consented.

    With ``message_key`` the message is sent at most once per account however often this is
    called (its inbox id is made from the key), so a retried step can always call it again.
    Returns counts: ``inbox`` messages written and ``pushed`` WeChat messages sent.
    """
    unique_ids = list(dict.fromkeys(account_ids))
    if not unique_ids:
        return {"inbox": 0, "pushed": 0}
    now = services.clock.now()
    docs = [
        {
            "_id": f"{message_key}-{account_id}" if message_key else new_id(),
            "account_id": account_id,
            "community_id": community_id,
            "kind": kind,
            "title": title,
            "body": body,
            "page": page,
            "created_at": now,
            "read_at": None,
        }
        for account_id in unique_ids
    ]
    try:
        services.db[MESSAGES].insert_many(docs, ordered=False)
        fresh = unique_ids
    except BulkWriteError as exc:
        told = {
            docs[e["index"]]["account_id"]
            for e in exc.details.get("writeErrors", [])
            if e.get("code") == 11000
        }
        if len(told) != len(exc.details.get("writeErrors", [])):
            raise
        fresh = [a for a in unique_ids if a not in told]
    pushed = 0
    if push is not None and fresh:
        for account in services.db[accounts.ACCOUNTS].find({"_id": {"$in": fresh}}, {"wx": 1}):
            pushed += _push(services, account, push, page, app)
    return {"inbox": len(fresh), "pushed": pushed}


def inbox(
    services: Services, account_id: str, unread_only: bool, page: int, page_size: int
) -> tuple[list[dict[str, Any]], int, int]:
    """A page of the account's messages, newest first; returns (items, total, unread)."""
    db = services.db
    query: dict[str, Any] = {"account_id": account_id}
    unread = db[MESSAGES].count_documents({"account_id": account_id, "read_at": None})
    if unread_only:
        query["read_at"] = None
    total = unread if unread_only else db[MESSAGES].count_documents(query)
    items = list(
        db[MESSAGES]
        .find(query)
        .sort("created_at", DESCENDING)
        .skip((page - 1) * page_size)
        .limit(page_size)
    )
    return items, total, unread


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

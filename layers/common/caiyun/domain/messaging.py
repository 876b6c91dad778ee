"""Telling people things: the in-app inbox always, a WeChat subscription message when allowed.

A one-time subscription consent allows exactly one message, so consents are counted per account
and template. WeChat counts a consent for the WeChat user who gave it, in the mini-program where
it was given, so the consent document names that openid and app: it says whom to send to, and
it is only spendable (``held``) while the account still holds that openid. An action only
queues its pushes (caiyun.domain.pushes sends them and spends a consent per delivered push), so
WeChat being slow or down never slows or fails the business action that wanted to tell someone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import DESCENDING, IndexModel, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError

from caiyun import labels
from caiyun.clock import iso
from caiyun.data import paging
from caiyun.data.schema import declare
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.labels import App
from caiyun.services import Services

MESSAGES = declare(
    "messages",
    IndexModel([("account_id", 1), ("created_at", DESCENDING), ("_id", DESCENDING)]),
    IndexModel([("account_id", 1), ("read_at", 1)]),
    # The WeChat push outbox is the inbox: a message whose push is queued waits here for
    # caiyun.domain.pushes to send it.
    IndexModel(
        [("push.state", 1), ("push.due_at", 1)],
        partialFilterExpression={"push.state": {"$exists": True}},
    ),
)
CONSENTS = declare(
    "subscription_consents",
    IndexModel("account_id"),
    IndexModel("openid", partialFilterExpression={"openid": {"$type": "string"}}),
)

# Up to this many pushable notes are queued without reading their consents first; a bigger
# batch reads which consents are left so it only queues those.
_DIRECT_SPENDS = 2

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


def add_consents(
    services: Services,
    account_id: str,
    template_ids: list[str],
    granted_by: tuple[App, str] | None = None,
) -> dict[str, int]:
    """Record one more one-time consent per template; returns what is left per template.

    ``granted_by`` is the WeChat user who accepted them: the mini-program and the openid the
    call came from. Consents an account kept from another openid (or app) are WeChat's count
    for that other user, so they are dropped, not added to. Without ``granted_by`` (an HTTP
    session with no WeChat user bound) nobody could ever receive the message, so nothing is
    recorded and nothing kept is dropped: the reply is what is left as it was. Only this
    deployment's templates are accepted: a consent counted for any other id could never be
    spent. One bulk write and one read.
    """
    configured = set(services.settings.wechat_templates.values())
    if not set(template_ids) <= configured:
        raise AppError(
            "INVALID_ARGUMENT", "订阅消息模板无效", {"fields": {"template_ids": "包含未配置的模板"}}
        )
    ids = {f"{account_id}:{template_id}": template_id for template_id in template_ids}
    db = services.db
    if granted_by is not None:
        _record_consents(services, account_id, ids, granted_by)
    left = {c["_id"]: c["remaining"] for c in db[CONSENTS].find({"_id": {"$in": list(ids)}})}
    return {template_id: left.get(consent_id, 0) for consent_id, template_id in ids.items()}


def _record_consents(
    services: Services,
    account_id: str,
    ids: dict[str, str],
    granted_by: tuple[App, str],
) -> None:
    app, openid = granted_by
    now = services.clock.now()
    writes: list[UpdateOne] = []
    for consent_id, template_id in ids.items():
        # Ordered: the other user's count is zeroed before this user's consent is added.
        writes.append(
            UpdateOne(
                {"_id": consent_id, "$or": [{"openid": {"$ne": openid}}, {"app": {"$ne": app}}]},
                {"$set": {"remaining": 0}},
            )
        )
        writes.append(
            UpdateOne(
                {"_id": consent_id},
                {
                    "$inc": {"remaining": 1},
                    "$set": {
                        "account_id": account_id,
                        "template_id": template_id,
                        "app": app,
                        "openid": openid,
                        "held": True,
                        "updated_at": now,
                    },
                },
                upsert=True,
            )
        )
    services.db[CONSENTS].bulk_write(writes, ordered=True)


def follow_bind(db: Any, account_id: str, app: App, openid: str) -> None:
    """Consents follow ``openid`` being bound to the account for ``app``: only those this
    openid gave this account are spendable (again, after a sign-out), one write."""
    db[CONSENTS].bulk_write(
        [
            # Given while the openid was bound to another account: not that account's user now.
            UpdateMany(
                {"openid": openid, "account_id": {"$ne": account_id}, "held": True},
                {"$set": {"held": False}},
            ),
            # Given by the account's previous WeChat user of this app.
            UpdateMany(
                {"account_id": account_id, "app": app, "openid": {"$ne": openid}, "held": True},
                {"$set": {"held": False}},
            ),
            UpdateMany(
                {"account_id": account_id, "app": app, "openid": openid, "held": False},
                {"$set": {"held": True}},
            ),
        ],
        ordered=False,
    )


def follow_unbind(db: Any, account_id: str, openid: str) -> None:
    """Consents ``openid`` gave the account stop being spendable when it is unbound. They are
    kept, not zeroed: WeChat still counts them for that user, should they sign in again."""
    db[CONSENTS].update_many(
        {"account_id": account_id, "openid": openid, "held": True}, {"$set": {"held": False}}
    )


@dataclass(frozen=True)
class Note:
    """One message to one account. With ``key`` it is sent at most once however often the
    sending step runs (its inbox id is made from the key)."""

    account_id: str
    kind: labels.MessageKind
    title: str
    body: str
    page: str
    push: Push | None = None
    # The mini-program whose inbox shows it and to which it is pushed.
    app: App = "resident"
    community_id: str | None = None
    key: str | None = None


def _push_of(note: Note, consent_id: str, now: datetime) -> dict[str, Any]:
    """The outbox half of a message: what the sender needs to push it, and its state."""
    assert note.push is not None
    return {
        "consent_id": consent_id,
        "template_id": consent_id.split(":", 1)[1],
        # The inbox keeps an absolute path for wx.navigateTo; a subscribe message's page is
        # written without the leading slash.
        "page": note.page.lstrip("/"),
        "data": {key: _fit(key, value) for key, value in note.push.data.items()},
        "state": "queued",
        "attempts": 0,
        "due_at": now,
    }


def _store(services: Services, notes: list[Note], pushed: dict[int, str]) -> list[int]:
    """Write the inbox messages, each with its push queued where ``pushed`` names its consent
    (by the note's position); returns the positions of the notes that were new (not sent
    before by key): a note sent before is neither stored nor pushed again."""
    now = services.clock.now()
    docs = []
    for i, n in enumerate(notes):
        doc: dict[str, Any] = {
            "_id": f"{n.key}-{n.account_id}" if n.key else new_id(),
            "account_id": n.account_id,
            "app": n.app,
            "community_id": n.community_id,
            "kind": n.kind,
            "title": n.title,
            "body": n.body,
            "page": n.page,
            "created_at": now,
            "read_at": None,
        }
        if i in pushed:
            doc["push"] = _push_of(n, pushed[i], now)
        docs.append(doc)
    try:
        services.db[MESSAGES].insert_many(docs, ordered=False)
        return list(range(len(notes)))
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        sent_before = {e["index"] for e in errors}
        return [i for i in range(len(notes)) if i not in sent_before]


def consents_joined(account_ids_field: str) -> list[dict[str, Any]]:
    """Aggregate stages that join, to a document holding account ids in
    ``account_ids_field``, those accounts' subscription consents (by the consents' account
    index); :func:`spendable_of` reads which can be spent. A caller that reads the people it is
    about to tell anyway learns this in the same command, instead of :func:`deliver_many`
    trying to spend consents nobody gave."""
    return [
        {
            "$lookup": {
                "from": CONSENTS,
                "localField": account_ids_field,
                "foreignField": "account_id",
                "as": "_consents",
            }
        }
    ]


def spendable_of(doc: dict[str, Any]) -> set[str]:
    """The ids of the consents joined by :func:`consents_joined` that have one left (the
    joined field is taken off the document)."""
    return {c["_id"] for c in doc.pop("_consents", []) if c.get("held") and c["remaining"] > 0}


def deliver_many(
    services: Services, notes: list[Note], spendable: set[str] | None = None
) -> dict[str, int]:
    """Put each note in its account's inbox with its WeChat push queued where a consent is left.

    A batch costs one write: the push waits in its inbox message (the outbox is the inbox,
    drained by :func:`caiyun.domain.pushes.drain`; the sender spends the consent once WeChat
    accepted the push). Up to two pushable notes are queued unread (the sender drops a push
    whose consent is gone); a bigger batch first reads which of its consents are left. A caller
    that read the consents already (``spendable``, see :func:`consents_joined`) has only those
    queued. Returns counts: ``inbox`` messages written and ``queued`` WeChat pushes.
    """
    if not notes:
        return {"inbox": 0, "queued": 0}
    templates = services.settings.wechat_templates
    wanted = {
        i: f"{n.account_id}:{templates[n.push.template]}"
        for i, n in enumerate(notes)
        if n.push is not None and templates.get(n.push.template)
    }
    if spendable is not None:
        wanted = {i: c for i, c in wanted.items() if c in spendable}
    elif len(wanted) > _DIRECT_SPENDS:
        left = services.db[CONSENTS].find(
            {"_id": {"$in": list(set(wanted.values()))}, "held": True, "remaining": {"$gt": 0}},
            {"app": 1},
        )
        apps = {c["_id"]: c.get("app") for c in left}
        wanted = {i: c for i, c in wanted.items() if c in apps and apps[c] == notes[i].app}
    fresh = _store(services, notes, wanted)
    return {"inbox": len(fresh), "queued": sum(i in wanted for i in fresh)}


def deliver(
    services: Services,
    account_ids: list[str],
    kind: labels.MessageKind,
    *,
    title: str,
    body: str,
    page: str,
    push: Push | None = None,
    app: App = "resident",
    community_id: str | None = None,
    message_key: str | None = None,
) -> dict[str, int]:
    """The same message to several accounts (see :func:`deliver_many`)."""
    return deliver_many(
        services,
        [
            Note(account_id, kind, title, body, page, push, app, community_id, message_key)
            for account_id in dict.fromkeys(account_ids)
        ],
    )


def _in_app(account_id: str, app: App) -> dict[str, Any]:
    # Messages stored before inboxes were per app carry no app: they were the resident app's.
    return {"account_id": account_id, "app": "staff" if app == "staff" else {"$ne": "staff"}}


def inbox(
    services: Services,
    account_id: str,
    app: App,
    unread_only: bool,
    page: int,
    page_size: int,
) -> tuple[list[dict[str, Any]], int, int]:
    """A page of the account's messages in ``app``'s inbox (a staff member's work reaches the
    staff app only), newest first; returns (items, total, unread)."""
    db = services.db
    query = _in_app(account_id, app)
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
        "kind_name": labels.name("message_kind", message["kind"]),
        "title": message["title"],
        "body": message["body"],
        "page": message["page"],
        "created_at": iso(message["created_at"]),
        "read": message["read_at"] is not None,
    }


def mark_read(services: Services, account_id: str, app: App, message_ids: list[str] | None) -> int:
    """Mark the given messages (or all) of this account's ``app`` inbox read; returns how many
    changed."""
    query = {**_in_app(account_id, app), "read_at": None}
    if message_ids is not None:
        query["_id"] = {"$in": message_ids}
    result = services.db[MESSAGES].update_many(query, {"$set": {"read_at": services.clock.now()}})
    return result.modified_count

"""The WeChat push outbox: an action queues its pushes in the same write as its inbox
messages; the sender drains them.

Sending inside the action made a bill import of N rows wait for N calls to WeChat. Now
:func:`caiyun.domain.messaging.deliver_many` queues each push in its inbox message (a ``push``
field: one document, so the action pays no extra command, and a note sent at most once by key
is queued at most once) and :func:`drain`, run by the timer's ``pushes`` job, sends what is due
with bounded concurrency. A finished push stays on its message (state, attempts, WeChat's last
error) for whoever asks why a resident was not pushed; it goes when the message goes.

Each push is sent at most once: a sender claims it with one conditional write (``queued`` →
``sending``), so two senders racing never both send it, and a push left ``sending`` by a sender
that died is never sent again (it may have reached WeChat). A consent is spent only when WeChat
accepted the push. While a sender has pushes on a consent in flight it holds the consent (a
lease, ``sender_until``), so another sender cannot send more pushes than the consent has left;
the other sender's pushes wait for a later round. A lease left by a sender that died expires.

WeChat's error codes for ``subscribeMessage.send``, as its server API reference lists them
(developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/mp-message-management/subscribe-message/
sendMessage.html, and the global return codes):
-1 system busy and 45009/45011 frequency limits are retried later with backoff; 40001/42001 an
access token rejected or expired (the client already retried once with a fresh token, so a
later attempt may pass); 43101 the user refused or has no consent left; any other code (40003
bad openid, 40037 bad template, 47003 bad data) will not pass on retry.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from pymongo import UpdateOne

from caiyun.adapters.wechat import WeChatError, WeChatNoConsent
from caiyun.domain.messaging import CONSENTS, MESSAGES
from caiyun.ids import new_id
from caiyun.services import Services

_RETRYABLE = frozenset({-1, 40001, 42001, 45009, 45011})
# How long a sender holds the consents of the pushes it is sending: longer than a round of
# calls can take (they run at once, each bounded by wechat_timeout_s, with one token retry).
_LEASE = timedelta(minutes=2)


def _send(services: Services, push: dict[str, Any], openid: str) -> WeChatError | None:
    try:
        services.wechat.send_subscribe(
            push["app"],
            openid,
            push["template_id"],
            push["page"],
            push["data"],
            services.settings.wechat_miniprogram_state,
        )
    except WeChatError as error:
        return error
    return None


def _outcome(
    services: Services, push: dict[str, Any], error: WeChatError | None, now: datetime
) -> tuple[str, dict[str, Any]]:
    """The push's next state and the fields to set with it."""
    if error is None:
        return "sent", {"sent_at": now}
    attempts = push["attempts"] + 1
    fields: dict[str, Any] = {"attempts": attempts, "error": error.errcode}
    if isinstance(error, WeChatNoConsent):
        return "refused", fields
    retryable = error.retryable or error.errcode is None or error.errcode in _RETRYABLE
    if retryable and attempts < services.settings.push_max_attempts:
        backoff = services.settings.push_retry_base_s * 2 ** (attempts - 1)
        return "queued", {**fields, "due_at": now + timedelta(seconds=backoff)}
    return "failed", fields


def drain(services: Services, until: datetime | None = None) -> dict[str, int]:
    """Send due pushes, ``push_concurrency`` at a time, until none is due (or all that are due
    wait for another sender) or the clock passes ``until``; returns counts by outcome
    (``pushes_sent``, ``pushes_queued`` for retries later, ``pushes_refused``,
    ``pushes_failed``, ``pushes_dropped`` with no consent left), with ``unfinished`` when the
    clock passed ``until`` first."""
    counts = dict.fromkeys(
        ("pushes_sent", "pushes_queued", "pushes_refused", "pushes_failed", "pushes_dropped"), 0
    )
    with ThreadPoolExecutor(max_workers=services.settings.push_concurrency) as pool:
        while until is None or services.clock.now() < until:
            if not _send_round(services, pool, counts):
                return counts
    return {**counts, "unfinished": 1}


def _claim_due(services: Services, now: datetime, token: str) -> list[dict[str, Any]]:
    """Up to ``push_concurrency`` due pushes, claimed for this round in three commands: of the
    due ones read, only those still queued are taken, so a racing sender never gets them too."""
    outbox = services.db[MESSAGES]
    due = [
        m["_id"]
        for m in outbox.find({"push.state": "queued", "push.due_at": {"$lte": now}}, {"_id": 1})
        .sort([("push.due_at", 1), ("created_at", 1)])
        .limit(services.settings.push_concurrency)
    ]
    if not due:
        return []
    outbox.update_many(
        {"_id": {"$in": due}, "push.state": "queued"},
        {"$set": {"push.state": "sending", "push.claimed_at": now, "push.claim": token}},
    )
    claimed = {
        m["_id"]: {**m["push"], "_id": m["_id"], "app": m["app"]}
        for m in outbox.find({"_id": {"$in": due}, "push.claim": token}, {"push": 1, "app": 1})
    }
    return [claimed[i] for i in due if i in claimed]


def _hold_consents(
    services: Services, consent_ids: list[str], lease: str, now: datetime
) -> dict[str, dict[str, Any]]:
    """Take the lease on those of the consents that are spendable and not held by another
    sender; returns every one of them (those this sender holds carry ``lease``)."""
    db = services.db
    db[CONSENTS].update_many(
        {
            "_id": {"$in": consent_ids},
            "held": True,
            "remaining": {"$gt": 0},
            "$or": [{"sender_until": None}, {"sender_until": {"$lt": now}}],
        },
        {"$set": {"sender": lease, "sender_until": now + _LEASE}},
    )
    return {c["_id"]: c for c in db[CONSENTS].find({"_id": {"$in": consent_ids}})}


def _sort_out(
    claimed: list[dict[str, Any]], consents: dict[str, dict[str, Any]], lease: str
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Which claimed pushes go out now: as many per held consent as it has left. A push whose
    consent is gone (or is the other app's) is dropped; one whose consent another sender holds,
    or beyond what its consent has left, waits for a later round, when the pushes before it
    have spent it or not."""
    left = {i: c["remaining"] for i, c in consents.items() if c.get("sender") == lease}
    sendable: list[dict[str, Any]] = []
    others: dict[str, str] = {}  # push id → its state: dropped, or queued again
    for push in claimed:
        consent = consents.get(push["consent_id"])
        spendable = (
            consent is not None
            and consent.get("held")
            and consent["remaining"] > 0
            and consent["app"] == push["app"]
        )
        if not spendable:
            others[push["_id"]] = "dropped"
        elif left.get(push["consent_id"], 0) > 0:
            left[push["consent_id"]] -= 1
            sendable.append(push)
        else:
            others[push["_id"]] = "queued"
    return sendable, others


def _send_round(services: Services, pool: ThreadPoolExecutor, counts: dict[str, int]) -> bool:
    """Claim up to ``push_concurrency`` due pushes, send those whose consents this sender holds
    at once and record how each went; False when none was due or none could be sent."""
    db, now = services.db, services.clock.now()
    lease = new_id()
    claimed = _claim_due(services, now, lease)
    if not claimed:
        return False
    consents = _hold_consents(services, list({p["consent_id"] for p in claimed}), lease, now)
    sendable, others = _sort_out(claimed, consents, lease)
    openids = [consents[p["consent_id"]]["openid"] for p in sendable]
    errors = list(pool.map(lambda p, o: _send(services, p, o), sendable, openids))
    now = services.clock.now()
    counts["pushes_dropped"] += sum(state == "dropped" for state in others.values())
    push_writes = [UpdateOne({"_id": i}, {"$set": {"push.state": st}}) for i, st in others.items()]
    # Every consent this sender holds is let go, less what was delivered on it.
    spent: dict[str, dict[str, Any]] = {
        i: {"$inc": {"remaining": 0}} for i, c in consents.items() if c.get("sender") == lease
    }
    for push, error in zip(sendable, errors, strict=True):
        state, fields = _outcome(services, push, error, now)
        counts[f"pushes_{state}"] += 1
        pushed = {f"push.{name}": value for name, value in {"state": state, **fields}.items()}
        push_writes.append(UpdateOne({"_id": push["_id"]}, {"$set": pushed}))
        update = spent[push["consent_id"]]
        # WeChat saying no consent is left outweighs what the other pushes on it spent.
        if state == "sent" and "$inc" in update:
            update["$inc"]["remaining"] -= 1
        elif state == "refused":
            update.pop("$inc", None)
            update["$set"] = {"remaining": 0}
    db[MESSAGES].bulk_write(push_writes, ordered=False)
    if spent:
        db[CONSENTS].bulk_write(
            [
                # Put right only while the consent is still this user's: a subscribe from
                # another openid meanwhile reset it (and this lease then simply expires).
                UpdateOne(
                    {"_id": consent_id, "sender": lease, "openid": consents[consent_id]["openid"]},
                    {**update, "$unset": {"sender": "", "sender_until": ""}},
                )
                for consent_id, update in spent.items()
            ],
            ordered=False,
        )
    return bool(sendable) or "dropped" in others.values()

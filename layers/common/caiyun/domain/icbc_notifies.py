"""ICBC's notifies: verified before anything is read, applied once, kept for audit.

ICBC posts three kinds to the one notify URL, told apart by the interface they report on: the
result of a WeChat Pay order, of a payment from the account, and of a JFT account opening (the
last two AES-encrypted). Payments go through :func:`caiyun.domain.payments.apply_result`, an
opening through :func:`caiyun.domain.realname.apply_opening`. A notify refused (forged, a sign
type other than RSA or RSA2, not for us) is answered as a failure and kept with its reason, which
the call's log line carries too.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from pymongo import IndexModel
from pymongo.errors import PyMongoError

from caiyun.adapters.icbc_protocol import IcbcError
from caiyun.data.schema import declare
from caiyun.domain import payments, realname
from caiyun.ids import new_id
from caiyun.services import Services

NOTIFIES = declare("icbc_notifies", IndexModel("order_no"), IndexModel("received_at"))

_MAX_FORM_BYTES = 64 * 1024


@dataclass(frozen=True)
class NotifyOutcome:
    """What to answer ICBC: ``success`` tells it to stop resending; ``encrypted`` answers an
    encrypted notify in kind. ``outcome`` and ``reason`` are for the log line."""

    success: bool
    msg_id: str
    message: str
    encrypted: bool = False
    outcome: str = ""
    reason: str | None = None


def _parse_form(raw_body: str) -> dict[str, str] | None:
    if len(raw_body.encode("utf-8")) > _MAX_FORM_BYTES:
        return None
    pairs = parse_qsl(raw_body, keep_blank_values=True, strict_parsing=False)
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            return None  # a repeated field is never sent by ICBC; refuse the ambiguity
        form[key] = value
    return form


def receive(services: Services, raw_body: str) -> NotifyOutcome:
    """Verify, apply and keep one notify body (form-encoded, as ICBC posts it).

    The record is written once, when the outcome is known: one command, not a record first and
    its outcome after. Nothing is lost by it: a payment notify acts through the order's
    conditional update, which names this record's id (``settled_by_notify``), so a notify that
    moved money is on file from that moment; one whose function died before answering was not
    told success, so ICBC sends it again; and one that raised is kept with the outcome ``error``
    (when the database takes it) before the error goes on to the log.
    """
    notify_id = new_id()
    received_at = services.clock.now()
    try:
        outcome, fields = _act(services, raw_body, notify_id)
    except Exception:
        # The database may be what failed: then the error itself is what the log must show.
        with contextlib.suppress(PyMongoError):
            _keep(services, notify_id, received_at, raw_body, "error", {})
        raise
    _keep(services, notify_id, received_at, raw_body, outcome.outcome, fields)
    return outcome


def _keep(
    services: Services,
    notify_id: str,
    received_at: datetime,
    raw_body: str,
    outcome: str,
    fields: dict[str, Any],
) -> None:
    services.db[NOTIFIES].insert_one(
        {
            "_id": notify_id,
            "received_at": received_at,
            "body": raw_body[:_MAX_FORM_BYTES],
            "outcome": outcome,
            **fields,
        }
    )


def _act(services: Services, raw_body: str, notify_id: str) -> tuple[NotifyOutcome, dict[str, Any]]:
    """What the notify does, and the fields its record keeps beside the outcome."""
    form = _parse_form(raw_body)
    if form is None:
        return NotifyOutcome(False, "", "malformed", outcome="malformed"), {}
    client = services.icbc
    try:
        notice = client.verify_notify(form)
        if notice.kind == "wallet_open":
            opening = client.read_opening(notice)
        else:
            paid = client.read_payment(notice)
    except IcbcError as exc:
        # The reason (never the form: it may carry an ID or card number) is kept and logged
        # for whoever looks into notifies that stop going through.
        refused = NotifyOutcome(False, "", "verify failed", outcome="rejected", reason=exc.code)
        return refused, {"reason": exc.code}
    reply_to, encrypted = notice.msg_id, notice.encrypted
    if notice.kind == "wallet_open":
        known = realname.apply_opening(services, opening)
        outcome = "applied" if known else "unknown_opening"
        message = "success" if known else outcome
        return NotifyOutcome(known, reply_to, message, encrypted, outcome), {}
    fields: dict[str, Any] = {
        "order_no": paid.order_no,
        "msg_id": paid.msg_id,
        "amount_fen": paid.amount_fen,
    }
    result = payments.BankResult(
        order_no=paid.order_no,
        status="paid" if paid.success else "failed",
        amount_fen=paid.amount_fen,
        transaction_id=paid.transaction_id,
        paid_at=paid.paid_at,
    )
    # apply_result checks the order and its amount in the same update that applies it.
    applied = payments.apply_result(services, result, notify_id)
    refusals = {"unknown_order": "order not found", "amount_mismatch": "amount mismatch"}
    success = applied not in refusals
    message = refusals.get(applied, "success")
    return NotifyOutcome(success, reply_to, message, encrypted, applied), fields

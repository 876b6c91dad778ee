"""ICBC's payment notify: verified before anything is read, kept for audit, applied once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from pymongo import IndexModel

from caiyun.data.schema import declare
from caiyun.domain import payments
from caiyun.ids import new_id
from caiyun.services import Services

NOTIFIES = declare("icbc_notifies", IndexModel("order_no"), IndexModel("received_at"))

_MAX_FORM_BYTES = 64 * 1024


@dataclass(frozen=True)
class NotifyOutcome:
    """What to answer ICBC: ``success`` tells it to stop resending."""

    success: bool
    msg_id: str
    message: str


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
    """Verify, audit and apply one notify body (form-encoded, as ICBC posts it)."""
    from caiyun.adapters.icbc import IcbcError

    db, now = services.db, services.clock.now()
    audit_id = new_id()
    db[NOTIFIES].insert_one(
        {
            "_id": audit_id,
            "received_at": now,
            "body": raw_body[:_MAX_FORM_BYTES],
            "outcome": "received",
        }
    )

    def record(
        outcome: str, success: bool, reply_to: str = "", message: str = "", **extra: Any
    ) -> NotifyOutcome:
        db[NOTIFIES].update_one({"_id": audit_id}, {"$set": {"outcome": outcome, **extra}})
        return NotifyOutcome(success, reply_to, message or outcome)

    form = _parse_form(raw_body)
    if form is None:
        return record("malformed", False)
    try:
        notice = services.icbc.verify_notify(form)
    except IcbcError as exc:
        return record("rejected", False, message="verify failed", reason=type(exc).__name__)
    fields = {"order_no": notice.order_no, "msg_id": notice.msg_id, "amount_fen": notice.amount_fen}
    result = payments.BankResult(
        order_no=notice.order_no,
        status="paid" if notice.success else "failed",
        amount_fen=notice.amount_fen,
        transaction_id=notice.transaction_id,
        paid_at=notice.paid_at,
    )
    # apply_result checks the order and its amount in the same update that applies it.
    applied = payments.apply_result(services, result)
    if applied == "unknown_order":
        return record(applied, False, notice.msg_id, "order not found", **fields)
    if applied == "amount_mismatch":
        return record(applied, False, notice.msg_id, "amount mismatch", **fields)
    return record(applied, True, notice.msg_id, "success", **fields)

"""Auto-debit (代扣): only under the entrusted-debit agreement the resident signed.

Turning it on is signing: ``start`` has ICBC text a code to the bank phone for the agreement
(ICBC's ``entrust/prtl/msg``), ``enable`` signs it with that code and the resident's consent to
our auto-debit terms (``entrust/protocol/mng``), and only then does the timer charge. Turning it
off takes effect at once (the timer never charges an account whose auto-debit is off) and
cancels the agreement at ICBC; a cancellation ICBC could not take is marked and retried the
next time the resident changes the setting. Every debit records the agreement it relied on
(:func:`consent`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from caiyun.adapters.icbc_protocol import IcbcError
from caiyun.clock import business_date
from caiyun.crypto import mask_phone
from caiyun.domain import appconfig, realname
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores.accounts import Account, Autodebit, AutodebitDraft, SignedAgreement

LIMIT_FEN = 500_000
_YEARS = 3
_DRAFT_TTL = timedelta(minutes=10)


def _agreement_end(now: datetime) -> date:
    # The bank's end date is a Shanghai calendar date, not the UTC one.
    return business_date(now) + timedelta(days=365 * _YEARS)


def start(services: Services, account: Account) -> dict[str, Any]:
    """Begin signing the auto-debit agreement: ICBC texts a code to the bank phone. Returns
    the ticket and the terms the resident is agreeing to."""
    number = realname.account_no(services, account)
    if account.get("autodebit", {}).get("enabled"):
        raise AppError("CONFLICT", "已开通自动扣缴")
    person = realname.bank_person(services, account)
    now = services.clock.now()
    agreement_id = "AD" + secrets.token_hex(10).upper()
    end = _agreement_end(now)
    try:
        send_no = services.icbc.autodebit_send_code(agreement_id, number, person, LIMIT_FEN, end)
    except IcbcError as exc:
        raise realname.bank_error(exc) from None
    draft: AutodebitDraft = {
        "agreement_id": agreement_id,
        "send_no": send_no,
        "limit_fen": LIMIT_FEN,
        "end_date": end.isoformat(),
        "expires_at": now + _DRAFT_TTL,
    }
    account_store.save_autodebit_draft(services.db, account["_id"], draft)
    return {
        "ticket": agreement_id,
        "agreement": {
            "name": "autodebit",
            "version": appconfig.current(services).agreement("autodebit").version,
            "limit_fen": LIMIT_FEN,
            "end_date": end.isoformat(),
        },
        "sent_to": mask_phone(person.phone),
    }


def set_enabled(
    services: Services,
    account: Account,
    enabled: bool,
    ticket: str | None,
    sms_code: str | None,
    agreements: list[str],
) -> dict[str, Any]:
    """Turn auto-debit on (signing the agreement with the code from :func:`start`) or off
    (at once); returns the wallet summary."""
    realname.verified_wallet(account)
    current = account.get("autodebit")
    after: Mapping[str, Any] = account
    if enabled:
        if current is None or not current.get("enabled"):
            after = _sign(services, account, ticket, sms_code, agreements)
    elif current is not None and (current.get("enabled") or current.get("cancel_pending")):
        after = _turn_off(services, account, current)
    return realname.wallet_summary(after) or {}


def _sign(
    services: Services,
    account: Account,
    ticket: str | None,
    sms_code: str | None,
    agreements: list[str],
) -> dict[str, Any]:
    config = appconfig.current(services)
    missing = (config.missing_agreements("autodebit", agreements) or {}).get("fields", {})
    if not ticket:
        missing["ticket"] = "请先获取代扣协议验证码（autodebit_start）"
    if not sms_code:
        missing["sms_code"] = "请输入银行发送的验证码"
    if missing:
        raise AppError("INVALID_ARGUMENT", "开通自动扣缴须签署代扣协议", {"fields": missing})
    assert sms_code is not None  # refused above when missing
    now = services.clock.now()
    draft = account.get("autodebit_draft")
    if draft is None or draft["agreement_id"] != ticket or draft["expires_at"] <= now:
        raise AppError("NOT_FOUND", "代扣协议验证已过期，请重新获取验证码")
    number = realname.account_no(services, account)
    person = realname.bank_person(services, account)
    end = date.fromisoformat(draft["end_date"])
    try:
        agreement_no = services.icbc.autodebit_sign(
            draft["agreement_id"],
            number,
            person,
            draft["limit_fen"],
            end,
            draft["send_no"],
            sms_code,
        )
    except IcbcError as exc:
        raise realname.bank_error(exc) from None
    version = config.agreement("autodebit").version
    autodebit: Autodebit = {
        "enabled": True,
        "agreement_id": draft["agreement_id"],
        "agreement_no": agreement_no,
        "version": version,
        "signed_at": now,
        "limit_fen": draft["limit_fen"],
        "end_date": draft["end_date"],
        "changed_at": now,
    }
    agreement: SignedAgreement = {
        "name": "autodebit",
        "version": version,
        "signed_at": now,
        "agreement_no": agreement_no,
    }
    # Conditional: of two signings racing, one wins; the loser cancels what it signed at the
    # bank so ICBC and our record never disagree.
    if not account_store.sign_autodebit(services.db, account["_id"], autodebit, agreement):
        services.icbc.autodebit_cancel(
            draft["agreement_id"], number, person, draft["limit_fen"], end
        )
        raise AppError("CONFLICT", "代扣设置已被更改，请刷新后重试")
    return {**account, "autodebit": autodebit}


def _turn_off(services: Services, account: Account, current: Autodebit) -> dict[str, Any]:
    now = services.clock.now()
    off: Autodebit = {**current, "enabled": False, "changed_at": now, "cancel_pending": False}
    # Off before the bank is asked: from this write on the timer never charges the account.
    account_store.replace_autodebit(services.db, account["_id"], current.get("agreement_id"), off)
    if "agreement_id" not in current:
        return {**account, "autodebit": off}  # switched on before agreements were signed
    try:
        services.icbc.autodebit_cancel(
            current["agreement_id"],
            realname.account_no(services, account),
            realname.bank_person(services, account),
            current["limit_fen"],
            date.fromisoformat(current["end_date"]),
        )
    except IcbcError:
        off["cancel_pending"] = True
        account_store.mark_autodebit_cancel_pending(
            services.db, account["_id"], current.get("agreement_id")
        )
    return {**account, "autodebit": off}


def consent(account: Account) -> dict[str, Any]:
    """The agreement an auto-debit of this account relies on, as the debit records it."""
    current = account["autodebit"]
    return {
        "agreement_id": current["agreement_id"],
        "agreement_no": current["agreement_no"],
        "version": current["version"],
        "signed_at": current["signed_at"],
    }

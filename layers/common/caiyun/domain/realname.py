"""Real-name verification through ICBC, the e-wallet, and the auto-debit (代扣) consent.

ID and card numbers are encrypted at rest (AES-GCM) and only ever shown masked. The agreements
and the auto-debit consent are recorded with their version and time: the versions in force
(``appconfig``), whose texts are kept.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal

from pymongo import IndexModel

from caiyun import crypto
from caiyun.clock import business_date
from caiyun.data.schema import declare
from caiyun.domain import accounts, appconfig
from caiyun.errors import AppError
from caiyun.services import Services

Method = Literal["card", "wallet"]

TICKETS = declare(
    "realname_tickets", IndexModel("account_id"), IndexModel("expires_at", expireAfterSeconds=0)
)

_TICKET_TTL = timedelta(minutes=10)
_AUTODEBIT_LIMIT_FEN = 500_000
_AUTODEBIT_YEARS = 3


# ICBC's answers that mean the details the resident typed were refused.
_VERIFICATION_REFUSALS = frozenset(
    {"CARD_INVALID", "ID_NUMBER_INVALID", "PHONE_INVALID", "REQUEST_INVALID", "WALLET_NOT_FOUND"}
)


def _agreement_end(now: datetime) -> date:
    # The bank's end date is a Shanghai calendar date, not the UTC one.
    return business_date(now) + timedelta(days=365 * _AUTODEBIT_YEARS)


def _bank_error(exc: Any) -> AppError:
    code = getattr(exc, "code", "")
    if code == "NOT_ICBC_CARD":
        return AppError("NOT_ICBC_CARD")
    if code == "SMS_CODE_INVALID":
        return AppError("CODE_INVALID")
    if code in _VERIFICATION_REFUSALS:
        return AppError("INVALID_ARGUMENT", "银行未通过核验，请检查填写的信息")
    # Our side or the link to the bank failed, not the resident's details.
    return AppError("UNAVAILABLE", "银行服务暂时不可用，请稍后重试", {"retryable": True})


def start(
    services: Services,
    account: dict[str, Any],
    method: Method,
    name: str,
    id_number: str,
    card_no: str,
    bank_phone: str,
) -> str:
    """Ask ICBC to verify the person (it sends an SMS to the bank phone); returns a ticket."""
    from caiyun.adapters.icbc import IcbcError

    if account.get("realname_verified"):
        raise AppError("CONFLICT", "已完成实名认证")
    try:
        ticket = services.icbc.realname_start(method, name, id_number, card_no, bank_phone)
    except IcbcError as exc:
        raise _bank_error(exc) from None
    now, settings = services.clock.now(), services.settings
    services.db[TICKETS].insert_one(
        {
            "_id": ticket,
            "account_id": account["_id"],
            "method": method,
            "name": name,
            "id_number": crypto.encrypt(settings, id_number, "id_number"),
            "id_masked": crypto.mask_id_number(id_number),
            "card_no": crypto.encrypt(settings, card_no, "card_no"),
            "card_masked": crypto.mask_card(card_no),
            "created_at": now,
            "expires_at": now + _TICKET_TTL,
        }
    )
    return ticket


def confirm(
    services: Services,
    account: dict[str, Any],
    ticket: str,
    sms_code: str,
    agreements: list[str],
    autodebit: bool,
) -> dict[str, Any]:
    """Finish verification with the bank's SMS code; record agreements and the consent."""
    from caiyun.adapters.icbc import IcbcError

    db, now = services.db, services.clock.now()
    if account.get("realname_verified"):
        raise AppError("CONFLICT", "已完成实名认证")
    pending = db[TICKETS].find_one(
        {"_id": ticket, "account_id": account["_id"], "expires_at": {"$gt": now}}
    )
    if pending is None:
        raise AppError("NOT_FOUND", "认证已过期，请重新提交")
    config = appconfig.current(services)
    missing = [
        c for c in config.required_agreements(pending["method"], autodebit) if c not in agreements
    ]
    if missing:
        reasons = {f"agreements.{c}": f"须同意《{config.agreement(c).title}》" for c in missing}
        raise AppError("INVALID_ARGUMENT", "请阅读并同意相关协议", {"fields": reasons})
    try:
        wallet = services.icbc.realname_confirm(ticket, sms_code)
        agreement_no = (
            services.icbc.sign_autodebit(
                wallet.wallet_no,
                _AUTODEBIT_LIMIT_FEN,
                _agreement_end(now),
            )
            if autodebit
            else None
        )
    except IcbcError as exc:
        raise _bank_error(exc) from None
    signed = [
        {"name": name, "version": config.agreement(name).version, "signed_at": now}
        for name in sorted(set(agreements))
    ]
    update = {
        "realname_verified": True,
        "realname": {
            "method": pending["method"],
            "name": pending["name"],
            "id_number": pending["id_number"],
            "id_masked": pending["id_masked"],
            "verified_at": now,
        },
        "wallet": {
            "wallet_no": wallet.wallet_no,
            "wallet_class": wallet.wallet_class,
            "linked_card": pending["card_no"],
            "linked_card_masked": wallet.linked_card_masked or pending["card_masked"],
        },
        "agreements": signed,
        "autodebit": {
            "enabled": autodebit,
            "agreement_no": agreement_no,
            "version": config.agreement("autodebit").version,
            "changed_at": now,
        },
    }
    db[TICKETS].delete_one({"_id": ticket})
    # Conditional: of two tickets confirmed at once, only the first identity is kept.
    written = db[accounts.ACCOUNTS].update_one(
        {"_id": account["_id"], "realname_verified": {"$ne": True}}, {"$set": update}
    )
    if written.matched_count == 0:
        if agreement_no is not None:
            services.icbc.cancel_autodebit(agreement_no)
        raise AppError("CONFLICT", "已完成实名认证")
    return wallet_summary({**account, **update})


def wallet_summary(account: dict[str, Any]) -> dict[str, Any] | None:
    """The wallet as the 我的 page shows it (no balance: that needs a bank call)."""
    wallet = account.get("wallet")
    if not wallet:
        return None
    return {
        "wallet_no": wallet["wallet_no"][:4] + "****" + wallet["wallet_no"][-4:],
        "wallet_class": wallet["wallet_class"],
        "linked_card": wallet["linked_card_masked"],
        "autodebit": bool(account.get("autodebit", {}).get("enabled")),
        "realname": account.get("realname", {}).get("id_masked"),
    }


def _verified_wallet(account: dict[str, Any]) -> dict[str, Any]:
    if not account.get("realname_verified") or not account.get("wallet"):
        raise AppError("REALNAME_REQUIRED")
    return account["wallet"]


def wallet(services: Services, account: dict[str, Any]) -> dict[str, Any]:
    """Wallet summary with its balance from ICBC."""
    from caiyun.adapters.icbc import IcbcError

    info = _verified_wallet(account)
    try:
        balance = services.icbc.wallet_balance(info["wallet_no"])
    except IcbcError as exc:
        raise _bank_error(exc) from None
    return {**(wallet_summary(account) or {}), "balance_fen": balance}


def transactions(
    services: Services, account: dict[str, Any], page: int, page_size: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of ICBC's transaction details for the wallet."""
    from caiyun.adapters.icbc import IcbcError

    info = _verified_wallet(account)
    try:
        return services.icbc.wallet_transactions(info["wallet_no"], page, page_size)
    except IcbcError as exc:
        raise _bank_error(exc) from None


def set_autodebit(services: Services, account: dict[str, Any], enabled: bool) -> dict[str, Any]:
    """Sign or cancel the auto-debit agreement with ICBC and record the change."""
    from caiyun.adapters.icbc import IcbcError

    info = _verified_wallet(account)
    now = services.clock.now()
    current = account.get("autodebit") or {}
    if bool(current.get("enabled")) == enabled:
        return wallet_summary(account) or {}
    try:
        if enabled:
            agreement_no = services.icbc.sign_autodebit(
                info["wallet_no"],
                _AUTODEBIT_LIMIT_FEN,
                _agreement_end(now),
            )
        else:
            services.icbc.cancel_autodebit(current["agreement_no"])
            agreement_no = None
    except IcbcError as exc:
        raise _bank_error(exc) from None
    autodebit = {
        "enabled": enabled,
        "agreement_no": agreement_no,
        "version": appconfig.current(services).agreement("autodebit").version,
        "changed_at": now,
    }
    # Conditional on the agreement we saw: of two changes racing, one wins; the loser undoes
    # what it did at the bank so ICBC and our record never disagree.
    written = services.db[accounts.ACCOUNTS].update_one(
        {"_id": account["_id"], "autodebit.agreement_no": current.get("agreement_no")},
        {"$set": {"autodebit": autodebit}},
    )
    if written.matched_count == 0:
        if agreement_no is not None:
            services.icbc.cancel_autodebit(agreement_no)
        raise AppError("CONFLICT", "代扣设置已被更改，请刷新后重试")
    return wallet_summary({**account, "autodebit": autodebit}) or {}

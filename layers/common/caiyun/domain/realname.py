"""Real-name verification through ICBC, and the ICBC account it leaves the resident with.

Verification is ICBC's JFT opening (:class:`caiyun.adapters.icbc.IcbcClient`): ``start`` sends
the person's details (ICBC texts a code to the bank phone), ``resend`` texts it again,
``confirm`` sends the code back. A resident with an ICBC Class I debit card verifies with the
card, which is then the account they pay from (no separate wallet number); anyone else opens a
Class II or III e-wallet of the class they choose, linked to a card of any bank. ICBC may open
the account at once or tell us later by notify (:func:`apply_opening`); either way the account
is written once.

The name given must be the account holder's name where the property recorded one. ID and card
numbers are encrypted at rest (AES-GCM) and only ever shown masked; the e-wallet number is the
owner's to see in full. The agreements are recorded with the version in force (``appconfig``),
whose text is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import unicodedata
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any, Literal

from pymongo import IndexModel

from caiyun import crypto, labels
from caiyun.adapters.icbc_protocol import IcbcError
from caiyun.adapters.icbc_values import Person, corp_serial
from caiyun.data.schema import declare
from caiyun.domain import appconfig, messaging
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores.accounts import Account, Wallet

Method = Literal["card", "wallet"]
WalletClass = Literal["II", "III"]

TICKETS = declare(
    "realname_tickets", IndexModel("account_id"), IndexModel("expires_at", expireAfterSeconds=0)
)

_TICKET_TTL = timedelta(minutes=10)
# An opening ICBC reports later waits this long for its notify.
_PENDING_TTL = timedelta(days=2)

# ICBC's answers that mean the details the resident typed were refused.
_VERIFICATION_REFUSALS = frozenset(
    {
        "CARD_INVALID",
        "ID_NUMBER_INVALID",
        "PHONE_INVALID",
        "REQUEST_INVALID",
        "ACCOUNT_NOT_FOUND",
        "NAME_MISMATCH",
    }
)


def bank_error(exc: Any) -> AppError:
    """The contract's error for an IcbcError met while verifying or using the account."""
    code = getattr(exc, "code", "")
    if code == "NOT_ICBC_CARD":
        return AppError("NOT_ICBC_CARD")
    if code == "SMS_CODE_INVALID":
        return AppError("CODE_INVALID")
    if code == "BALANCE_INSUFFICIENT":
        return AppError("INSUFFICIENT_BALANCE")
    if code in _VERIFICATION_REFUSALS:
        return AppError("INVALID_ARGUMENT", "银行未通过核验，请检查填写的信息")
    # Our side or the link to the bank failed, not the resident's details.
    return AppError("UNAVAILABLE", "银行服务暂时不可用，请稍后重试", {"retryable": True})


def _same_name(a: str, b: str) -> bool:
    def plain(name: str) -> str:
        return "".join(unicodedata.normalize("NFKC", name).split())

    return plain(a) == plain(b)


def start(
    services: Services,
    account: Account,
    method: Method,
    wallet_class: WalletClass | None,
    details: dict[str, Any],
    client_ip: str | None,
) -> str:
    """Ask ICBC to verify the person (it texts a code to the bank phone); returns a ticket.

    ``details``: ``name``, ``id_number``, ``card_no``, ``bank_phone``, ``occupation`` and
    ``id_valid_until`` (a date, or None for an ID valid for life).
    """
    if account.get("realname_verified"):
        raise AppError("CONFLICT", "已完成实名认证")
    name, id_number, card_no = details["name"], details["id_number"], details["card_no"]
    recorded = account.get("name")
    if recorded and not _same_name(recorded, name):
        raise AppError(
            "INVALID_ARGUMENT",
            "实名姓名须与物业登记的姓名一致",
            {"fields": {"name": "与物业登记的姓名不一致"}},
        )
    account_class = "I" if method == "card" else wallet_class
    if account_class is None:
        raise AppError("INVALID_ARGUMENT", details={"fields": {"wallet_class": "请选择账户类别"}})
    serial = corp_serial(services.settings.icbc_app_id)
    person = Person(name, id_number, details["bank_phone"])
    device = hashlib.sha256(account["_id"].encode("utf-8")).hexdigest()
    try:
        send_no = services.icbc.open_account(
            serial,
            account_class,
            person,
            card_no,
            details["occupation"],
            details["id_valid_until"],
            client_ip,
            device,
        )
    except IcbcError as exc:
        raise bank_error(exc) from None
    now, settings = services.clock.now(), services.settings
    services.db[TICKETS].insert_one(
        {
            "_id": serial,
            "account_id": account["_id"],
            "state": "awaiting_code",
            "method": method,
            "account_class": account_class,
            "name": name,
            "id_number": crypto.encrypt(settings, id_number, "id_number"),
            "id_masked": crypto.mask_id_number(id_number),
            "card_no": crypto.encrypt(settings, card_no, "card_no"),
            "card_masked": crypto.mask_card(card_no),
            "bank_phone": details["bank_phone"],
            "sms_send_no": send_no,
            "created_at": now,
            "expires_at": now + _TICKET_TTL,
        }
    )
    return serial


def _awaiting(services: Services, account: Account, ticket: str) -> dict[str, Any]:
    if account.get("realname_verified"):
        raise AppError("CONFLICT", "已完成实名认证")
    pending = services.db[TICKETS].find_one(
        {
            "_id": ticket,
            "account_id": account["_id"],
            "state": "awaiting_code",
            "expires_at": {"$gt": services.clock.now()},
        }
    )
    if pending is None:
        raise AppError("NOT_FOUND", "认证已过期，请重新提交")
    return pending


def resend(services: Services, account: Account, ticket: str) -> str:
    """Have ICBC text the verification code again; returns the ticket."""
    _awaiting(services, account, ticket)
    try:
        send_no = services.icbc.resend_opening_code(ticket)
    except IcbcError as exc:
        raise bank_error(exc) from None
    services.db[TICKETS].update_one({"_id": ticket}, {"$set": {"sms_send_no": send_no}})
    return ticket


def confirm(
    services: Services,
    account: Account,
    ticket: str,
    sms_code: str,
    agreements: list[str],
) -> tuple[dict[str, Any], Account | None]:
    """Send ICBC the code it texted and sign the agreements. Returns ``{status, wallet}``
    (``verified`` with the wallet summary, or ``pending`` until ICBC's notify opens it) and
    the verified account (None while pending)."""
    pending = _awaiting(services, account, ticket)
    config = appconfig.current(services)
    missing = config.missing_agreements(pending["method"], agreements)
    if missing:
        raise AppError("INVALID_ARGUMENT", "请阅读并同意相关协议", missing)
    try:
        result = services.icbc.confirm_opening(ticket, pending["sms_send_no"], sms_code)
    except IcbcError as exc:
        raise bank_error(exc) from None
    now = services.clock.now()
    signed = [
        {"name": name, "version": config.agreement(name).version, "signed_at": now}
        for name in sorted(config.required_agreements(pending["method"]))
    ]
    if result.status == "pending":
        services.db[TICKETS].update_one(
            {"_id": ticket},
            {"$set": {"state": "pending", "agreements": signed, "expires_at": now + _PENDING_TTL}},
        )
        return {
            "status": "pending",
            "status_name": labels.name("realname_status", "pending"),
            "wallet": None,
        }, None
    updated = _finish(services, {**pending, "agreements": signed}, result.account)
    shown = {
        "status": "verified",
        "status_name": labels.name("realname_status", "verified"),
        "wallet": wallet_summary(updated),
    }
    return shown, updated


def apply_opening(services: Services, result: Any) -> bool:
    """Apply ICBC's notify about an opening (:class:`caiyun.adapters.icbc_values.OpeningResult`);
    False when it is about no opening we await. Repeating it changes nothing more."""
    db = services.db
    pending = db[TICKETS].find_one({"_id": result.serial})
    if pending is None:
        return account_store.holds_opening(db, result.serial)
    if result.status == "opened":
        # Verified meanwhile through another opening: the first identity stays.
        with contextlib.suppress(AppError):
            _finish(services, pending, result.account)
        return True
    db[TICKETS].delete_one({"_id": result.serial})
    messaging.deliver(
        services,
        [pending["account_id"]],
        "payment",
        title="实名认证未通过",
        body="工商银行未能为您开立账户，请核对信息后重新认证。",
        page="/pages/realname/index",
        message_key=f"realname-refused-{result.serial}",
    )
    return True


def _finish(services: Services, pending: dict[str, Any], opened: Any) -> Account:
    """Write the verified identity and its account to the account, once."""
    db, now = services.db, services.clock.now()
    is_card = pending["account_class"] == "I"
    wallet: Wallet = {
        "kind": "card" if is_card else "wallet",
        "wallet_no": None if is_card else opened.wallet_no,
        "wallet_class": opened.account_class,
        # The account debited: the e-wallet, or the Class I card itself (kept encrypted).
        "card_no": pending["card_no"] if is_card else None,
        "linked_card_masked": opened.bound_card_masked or pending["card_masked"],
    }
    update = {
        "realname_verified": True,
        "realname": {
            "method": pending["method"],
            "serial": pending["_id"],
            "name": pending["name"],
            "id_number": pending["id_number"],
            "id_masked": pending["id_masked"],
            "bank_phone": pending["bank_phone"],
            "verified_at": now,
        },
        "wallet": wallet,
        "agreements": pending.get("agreements", []),
        "autodebit": {"enabled": False, "changed_at": now},
    }
    # Conditional: of two openings confirmed at once, only the first identity is kept.
    written = account_store.verify_realname(db, pending["account_id"], update)
    db[TICKETS].delete_one({"_id": pending["_id"]})
    if written is None:
        raise AppError("CONFLICT", "已完成实名认证")
    return written


def wallet_summary(account: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ICBC account as the 我的 page shows it to its owner (no balance: that needs a bank
    call): the e-wallet number in full, the verified name, the ID number masked."""
    wallet = account.get("wallet")
    if not wallet:
        return None
    realname = account.get("realname", {})
    kind = _kind(wallet)
    return {
        "account_kind": kind,
        "account_kind_name": labels.name("bank_method", kind),
        "wallet_no": wallet.get("wallet_no"),
        "wallet_class": wallet["wallet_class"],
        "wallet_class_name": labels.name("account_class", wallet["wallet_class"]),
        "linked_card": wallet["linked_card_masked"],
        "autodebit": bool(account.get("autodebit", {}).get("enabled")),
        "realname": realname.get("name"),
        "id_number_masked": realname.get("id_masked"),
    }


def _kind(wallet: Mapping[str, Any]) -> str:
    # Accounts verified before the kind was recorded held a Class I card or an e-wallet.
    return str(wallet.get("kind") or ("card" if wallet["wallet_class"] == "I" else "wallet"))


def account_kind(account: Account) -> str:
    """``card`` (an ICBC Class I card) or ``wallet`` (an e-wallet), or REALNAME_REQUIRED."""
    return _kind(verified_wallet(account))


def verified_wallet(account: Account) -> Wallet:
    """The account's ICBC wallet record, or REALNAME_REQUIRED."""
    if not account.get("realname_verified") or not account.get("wallet"):
        raise AppError("REALNAME_REQUIRED")
    return account["wallet"]


def account_no(services: Services, account: Account) -> str:
    """The number of the ICBC account to debit or query: the e-wallet's, or the Class I card."""
    wallet = verified_wallet(account)
    if _kind(wallet) == "card":
        sealed = wallet.get("card_no") or wallet["linked_card"]
        return crypto.decrypt(services.settings, sealed, "card_no")
    return str(wallet["wallet_no"])


def bank_person(services: Services, account: Account) -> Any:
    """The verified person as ICBC knows them (name, ID number, bank phone)."""
    realname = account["realname"]
    id_number = crypto.decrypt(services.settings, realname["id_number"], "id_number")
    return Person(realname["name"], id_number, realname["bank_phone"])


def wallet(services: Services, account: Account) -> dict[str, Any]:
    """Wallet summary with its balance from ICBC."""
    number = account_no(services, account)
    try:
        balance = services.icbc.account_balance(number)
    except IcbcError as exc:
        raise bank_error(exc) from None
    return {**(wallet_summary(account) or {}), "balance_fen": balance}


def transactions(
    services: Services, account: Account, page: int, page_size: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of ICBC's transaction details for the account."""
    number = account_no(services, account)
    try:
        return services.icbc.account_transactions(number, page, page_size)
    except IcbcError as exc:
        raise bank_error(exc) from None


def id_validity(value: str) -> date | None:
    """An ID's validity as the request gives it: a date, or None for ``long_term``."""
    return None if value == "long_term" else date.fromisoformat(value)

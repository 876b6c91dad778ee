"""The bank behind the local ICBC gateway: its accounts, the openings that make them, and every
transaction on them.

:mod:`caiyun.sandbox.icbc` speaks ICBC's protocol (signed and encrypted requests checked against
the interface sheets, signed answers, notifies) and turns each interface's fields into a call on
this bank, which keeps the money: cards beginning ``6222`` are ICBC Class I debit cards; a
Class II or III e-wallet gets a number of its own; every new account holds
:data:`OPENING_BALANCE_FEN`; a debit moves the balance and appears in the account's details.
Nothing here is kept in clear: accounts are stored under the SHA-256 of their number (the bank's
own e-wallet numbers aside), ID numbers and cards as hashes, and codes texted by SMS as hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from pymongo import IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from caiyun.adapters.icbc_protocol import RETURN_CODE_OF
from caiyun.adapters.sms import SandboxSms
from caiyun.clock import SHANGHAI, Clock
from caiyun.data.schema import declare
from caiyun.ids import new_id

_ACCOUNT_INDEXES = (IndexModel([("id_hash", 1), ("account_class", 1)]),)
_TRANSACTION_INDEXES = (IndexModel([("account_key", 1), ("at", -1)]),)
_ORDER_INDEXES = (IndexModel([("status", 1), ("expires_at", 1)]),)
_AGREEMENT_INDEXES = (IndexModel("protocol_no", sparse=True),)

ACCOUNTS = declare("sandbox_icbc_accounts", *_ACCOUNT_INDEXES)
OPENINGS = declare("sandbox_icbc_openings")
TRANSACTIONS = declare("sandbox_icbc_transactions", *_TRANSACTION_INDEXES)
# The bank's orders: WeChat Pay orders, payments from an account and auto-debit charges.
ORDERS = declare("sandbox_icbc_orders", *_ORDER_INDEXES)
# Entrusted-debit agreements, from the texted code to signed or cancelled.
AGREEMENTS = declare("sandbox_icbc_agreements", *_AGREEMENT_INDEXES)

_INDEXES: dict[str, tuple[IndexModel, ...]] = {
    ACCOUNTS: _ACCOUNT_INDEXES,
    TRANSACTIONS: _TRANSACTION_INDEXES,
    ORDERS: _ORDER_INDEXES,
    AGREEMENTS: _AGREEMENT_INDEXES,
}

ICBC_CARD_PREFIX = "6222"
OPENING_BALANCE_FEN = 500_000
# How long a texted code holds, and how many wrong tries it takes.
CODE_TTL = timedelta(minutes=5)
MAX_CODE_TRIES = 5


class Refusal(Exception):
    """A business refusal, answered as a signed reply with its return_code."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(name)
        self.return_code = RETURN_CODE_OF[name]
        self.message = message


def _ensure_indexes(db: Any) -> None:
    # The sandbox's collections are not among the domain's, so the fake creates its own.
    for name, models in _INDEXES.items():
        for model in models:
            options = {k: v for k, v in model.document.items() if k != "key"}
            db[name].create_index(list(model.document["key"].items()), **options)


def digest(value: str) -> str:
    """The SHA-256 of ``value``, in hex: how the bank keeps numbers and codes."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def digits(count: int) -> str:
    """``count`` random decimal digits."""
    return "".join(secrets.choice(string.digits) for _ in range(count))


def aware(moment: datetime) -> datetime:
    """A stored moment with its time zone (a MongoDB client opened without tz_aware hands back
    naive UTC datetimes)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def compact_time(moment: datetime) -> str:
    """``yyyyMMddHHmmss`` in Beijing time, as the JFT interfaces write a moment."""
    return aware(moment).astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")


class SandboxBank:
    """The bank's accounts over ``db``, on ``clock``; codes are texted through ``sms``."""

    def __init__(self, db: Any, clock: Clock, sms: SandboxSms) -> None:
        self.db = db
        self.clock = clock
        self.sms = sms
        _ensure_indexes(db)

    def set_balance(self, account_no: str, balance_fen: int) -> None:
        """Set an account's balance (to make a payment or an auto-debit decline, say)."""
        updated = self.db[ACCOUNTS].update_one(
            {"_id": digest(account_no)}, {"$set": {"balance_fen": balance_fen}}
        )
        if updated.matched_count == 0:
            raise KeyError(account_no)

    def balance(self, account_no: str) -> int:
        """An account's balance in fen."""
        account = self.db[ACCOUNTS].find_one({"_id": digest(account_no)})
        if account is None:
            raise KeyError(account_no)
        return int(account["balance_fen"])

    def begin_opening(self, opening: dict[str, Any]) -> str:
        """Record an opening request (its ``_id`` is the app's serial) and text its code;
        returns the text's number."""
        try:
            self.db[OPENINGS].insert_one(opening)
        except DuplicateKeyError:
            raise Refusal("REQUEST_INVALID", "corpSerno already used") from None
        return self.text_code(opening["_id"])

    def text_code(self, serial: str) -> str:
        """Text a new code for the opening (the earlier one stops working); the text's
        number."""
        code, send_no = digits(6), digits(6)
        opening = self.db[OPENINGS].find_one_and_update(
            {"_id": serial},
            {
                "$set": {
                    "send_no": send_no,
                    "code_hash": digest(serial + code),
                    "tries": 0,
                    "expires_at": self.clock.now() + CODE_TTL,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        self.sms.send(opening["phone"], "icbc_realname", [code])
        return send_no

    def awaits_code(self, serial: str) -> bool:
        """Whether this opening still waits for its code."""
        return self.db[OPENINGS].find_one({"_id": serial, "used": False}) is not None

    def confirm_opening(self, serial: str, send_no: str, code: str) -> dict[str, Any]:
        """The opening, once its code checks (each code once, within its time and tries)."""
        opening = self.db[OPENINGS].find_one_and_update(
            {
                "_id": serial,
                "send_no": send_no,
                "used": False,
                "expires_at": {"$gt": self.clock.now()},
                "tries": {"$lt": MAX_CODE_TRIES},
            },
            {"$inc": {"tries": 1}},
            return_document=ReturnDocument.AFTER,
        )
        code_hash = digest(serial + code)
        if opening is None or not hmac.compare_digest(opening["code_hash"], code_hash):
            raise Refusal("SMS_CODE_INVALID", "sms code wrong, expired or used up")
        used = self.db[OPENINGS].find_one_and_update(
            {"_id": serial, "used": False}, {"$set": {"used": True}}
        )
        if used is None:
            raise Refusal("SMS_CODE_INVALID", "sms code already used")
        return cast(dict[str, Any], opening)

    def confirmed_opening(self, serial: str) -> dict[str, Any] | None:
        """An opening whose code was confirmed."""
        return self.db[OPENINGS].find_one({"_id": serial, "used": True})

    def open(self, opening: dict[str, Any]) -> dict[str, Any]:
        """The account a confirmed opening opens (the one it opened before, if any)."""
        account_class = opening["account_class"]
        wallet_no = None
        if account_class == "I":
            # The Class I card is the account: verifying it opens nothing new.
            key = opening["card_hash"]
        else:
            # One person, one e-wallet of a class: verifying again hands back the one opened.
            existing = self.db[ACCOUNTS].find_one(
                {"id_hash": opening["id_hash"], "account_class": account_class}
            )
            if existing is not None:
                return cast(dict[str, Any], existing)
            wallet_no = "6212" + digits(15)
            key = digest(wallet_no)
        account = {
            "_id": key,
            "wallet_no": wallet_no,
            "id_hash": opening["id_hash"],
            "name": opening["name"],
            "account_class": account_class,
            "bound_card_masked": opening["card_masked"],
            "balance_fen": OPENING_BALANCE_FEN,
            "created_at": self.clock.now(),
        }
        try:
            self.db[ACCOUNTS].insert_one(account)
        except DuplicateKeyError:
            return cast(dict[str, Any], self.db[ACCOUNTS].find_one({"_id": key}))
        self.record(key, "1", OPENING_BALANCE_FEN, OPENING_BALANCE_FEN, "沙箱开户存入")
        return account

    def account(self, number: str) -> dict[str, Any]:
        """The account with this number (card or e-wallet)."""
        account = self.db[ACCOUNTS].find_one({"_id": digest(number)})
        if account is None:
            raise Refusal("ACCOUNT_NOT_FOUND", "account not found")
        return cast(dict[str, Any], account)

    def holder(self, number: str, id_number: str, name: str) -> dict[str, Any]:
        """The account, if it is this person's."""
        account = self.account(number)
        if account["id_hash"] != digest(id_number) or account["name"] != name:
            raise Refusal("NAME_MISMATCH", "the account belongs to someone else")
        return account

    def transactions(
        self, account_key: str, page: int, page_size: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the account's transactions, newest first, and how many it has."""
        query = {"account_key": account_key}
        records = (
            self.db[TRANSACTIONS]
            .find(query)
            .sort([("at", -1), ("_id", -1)])
            .skip((page - 1) * page_size)
            .limit(page_size)
        )
        return list(records), self.db[TRANSACTIONS].count_documents(query)

    def record(
        self, account_key: str, trx_type: str, amount: int, balance: int, summary: str
    ) -> str:
        """Add a transaction to the account's details; its serial."""
        # Time-ordered (an ObjectId after the time), so details of one second keep their order.
        serial = compact_time(self.clock.now()) + new_id().upper()
        self.db[TRANSACTIONS].insert_one(
            {
                "_id": serial,
                "account_key": account_key,
                "trx_type": trx_type,
                "amount_fen": amount,
                "balance_fen": balance,
                "summary": summary,
                "at": self.clock.now(),
            }
        )
        return serial

    def debit(self, account_key: str, amount: int, summary: str) -> str | None:
        """Take ``amount`` from the account if its balance covers it; the serial, or None."""
        debited = self.db[ACCOUNTS].find_one_and_update(
            {"_id": account_key, "balance_fen": {"$gte": amount}},
            {"$inc": {"balance_fen": -amount}},
            return_document=ReturnDocument.AFTER,
        )
        if debited is None:
            return None
        return self.record(account_key, "2", amount, debited["balance_fen"], summary)


def order_id_at(now: datetime) -> str:
    """A new ICBC order id: the Beijing time and a random tail."""
    return now.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S") + secrets.token_hex(6).upper()

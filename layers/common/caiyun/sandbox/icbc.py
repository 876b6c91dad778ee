"""A local ICBC Open Platform gateway on loopback, for `caiyun dev` and the tests.

It speaks the request, reply and notify shapes of :mod:`caiyun.adapters.icbc` with real RSA:
it holds its own gateway key pair (its public key is what the back end verifies with) and a
merchant key pair generated for the sandbox (the private half is what the back end signs with,
see :meth:`FakeIcbc.settings_overrides`). Every request's signature is checked with the merchant
public key, every reply is signed with the gateway key, and :func:`complete` really posts a
signed notify to the sandbox server's ``/icbc/notify`` and checks the signature of the answer,
as ICBC does.

Sandbox rules (CONTRACT.md §5): cards beginning ``6222`` are ICBC Class I debit cards; other
Luhn-valid cards belong to other banks; ID numbers must carry a valid GB 11643 check digit. The
real-name SMS goes to the sandbox outbox. A new e-wallet starts with
:data:`OPENING_BALANCE_FEN` so auto-debit demos can pay; an unpaid order closes at its
``expire_time`` on the sandbox clock. Payments made through the pay component (``complete``)
do not move e-wallet balances (the component, not the order, knows the payer's account); only
auto-debit charges do.

State (orders, wallets, real-name tickets, agreements, transactions, used ``msg_id``) lives in
the ``sandbox_icbc_*`` collections of the database passed in, so it persists with the sandbox.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import string
import threading
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlsplit

from pydantic import SecretStr
from pymongo import IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from caiyun.adapters.icbc import (
    AGREEMENT_CANCEL,
    AGREEMENT_SIGN,
    CHARSET,
    FORMAT,
    OPEN_TYPES,
    PAY_MODES,
    RETURN_CODE_OF,
    SIGN_TYPE_RSA2,
    SignAlg,
    generate_private_key_pem,
    icbc_time,
    parse_icbc_time,
    public_key_pem,
    rsa_sign,
    rsa_verify,
    sign_params,
    signing_string,
)
from caiyun.adapters.sms import SandboxSms
from caiyun.checksums import luhn_valid, resident_id_valid
from caiyun.clock import SHANGHAI, Clock, business_date
from caiyun.data.schema import declare
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.sandbox.loopback import LoopbackService
from caiyun.settings import Settings

Reply = dict[str, Any]

_ORDER_INDEXES = (IndexModel([("status", 1), ("expires_at", 1)]),)
_WALLET_INDEXES = (IndexModel("id_hash", unique=True),)
_AGREEMENT_INDEXES = (IndexModel("wallet_no"),)
_TRANSACTION_INDEXES = (IndexModel([("wallet_no", 1), ("at", -1)]),)

ORDERS = declare("sandbox_icbc_orders", *_ORDER_INDEXES)
WALLETS = declare("sandbox_icbc_wallets", *_WALLET_INDEXES)
TICKETS = declare("sandbox_icbc_tickets")
AGREEMENTS = declare("sandbox_icbc_agreements", *_AGREEMENT_INDEXES)
TRANSACTIONS = declare("sandbox_icbc_transactions", *_TRANSACTION_INDEXES)
MESSAGES = declare("sandbox_icbc_messages")

_INDEXES: dict[str, tuple[IndexModel, ...]] = {
    ORDERS: _ORDER_INDEXES,
    WALLETS: _WALLET_INDEXES,
    AGREEMENTS: _AGREEMENT_INDEXES,
    TRANSACTIONS: _TRANSACTION_INDEXES,
}

SANDBOX_APP_ID = "10000000000000008888"
SANDBOX_MERCHANT_ID = "020000000000888"
ICBC_CARD_PREFIX = "6222"
OPENING_BALANCE_FEN = 500_000
NOTIFY_PATH = "/icbc/notify"
# Interface name -> the Settings field holding its path (``icbc_<name>_path``).
INTERFACES = (
    "pay",
    "query",
    "wallet_open",
    "wallet_confirm",
    "wallet_balance",
    "wallet_transactions",
    "autodebit_agreement",
    "autodebit_pay",
)

_GATEWAY_KEY_FILE = "gateway_private.pem"
_MERCHANT_KEY_FILE = "merchant_private.pem"
_TICKET_TTL = timedelta(minutes=5)
_MAX_CODE_TRIES = 5
_NOTIFY_TIMEOUT_S = 10.0
_REQUIRED_FIELDS = ("app_id", "msg_id", "format", "charset", "sign_type", "timestamp", "sign")
_STATUS_CODES = {"pending": "0", "paid": "1", "failed": "2", "closed": "3"}
_METHOD_OF_PAY_MODE = {mode: method for method, mode in PAY_MODES.items()}
_METHOD_OF_OPEN_TYPE = {code: method for method, code in OPEN_TYPES.items()}

_running: dict[str, FakeIcbc] = {}
_running_lock = threading.Lock()


def default_paths() -> dict[str, str]:
    """The interface paths as the Settings defaults name them."""
    return {name: Settings.model_fields[f"icbc_{name}_path"].default for name in INTERFACES}


def running_fake(gateway_url: str) -> FakeIcbc | None:
    """The FakeIcbc serving ``gateway_url`` in this process, if any."""
    with _running_lock:
        return _running.get(gateway_url.rstrip("/"))


def complete(
    services: Any, server_base_url: str, order_no: str, result: Literal["success", "fail"]
) -> dict[str, Any]:
    """Settle ``order_no`` in the ICBC sandbox and deliver its signed notify to the server.

    The fake bank is the one serving ``services.icbc.settings.icbc_gateway``. Returns what
    :meth:`FakeIcbc.complete` returns. Raises AppError NOT_FOUND (no such order, or no fake bank
    running) or CONFLICT (the order already ended otherwise).
    """
    fake = running_fake(services.icbc.settings.icbc_gateway)
    if fake is None:
        raise AppError("NOT_FOUND", "工行沙箱未运行")
    return fake.complete(server_base_url, order_no, result)


class _Refusal(Exception):
    """A business refusal, answered as a signed reply with its return_code."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(name)
        self.return_code = RETURN_CODE_OF[name]
        self.message = message


class FakeIcbc(LoopbackService):
    """A fake ICBC gateway over ``db`` and ``clock`` (share the sandbox's, so time rules agree).

    Keys: ``gateway_private_key`` / ``merchant_private_key`` when given (tests reuse keys to stay
    fast), else read from ``key_dir`` (``gateway_private.pem``, ``merchant_private.pem``), else
    generated — and written to ``key_dir`` when one is given, so restarts keep them.
    ``notify_signs_api_path`` makes notifies signed over the pay interface's path instead of the
    notify URL's, the other behaviour seen in the wild.
    """

    thread_name = "fake-icbc"

    def __init__(
        self,
        db: Any,
        clock: Clock,
        *,
        key_dir: str | Path | None = None,
        gateway_private_key: str | None = None,
        merchant_private_key: str | None = None,
        app_id: str = SANDBOX_APP_ID,
        merchant_id: str = SANDBOX_MERCHANT_ID,
        response_sign_alg: SignAlg = "SHA1",
        notify_signs_api_path: bool = False,
        paths: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.clock = clock
        self.app_id = app_id
        self.merchant_id = merchant_id
        self.response_sign_alg: SignAlg = response_sign_alg
        self.notify_signs_api_path = notify_signs_api_path
        self.paths = {**default_paths(), **(paths or {})}
        folder = Path(key_dir) if key_dir is not None else None
        self._gateway_key = gateway_private_key or _load_or_create_key(folder, _GATEWAY_KEY_FILE)
        self._merchant_key = merchant_private_key or _load_or_create_key(folder, _MERCHANT_KEY_FILE)
        self.gateway_public_key = public_key_pem(self._gateway_key)
        self.merchant_public_key = public_key_pem(self._merchant_key)
        self._sms = SandboxSms(db, clock)
        self._routes = {
            self.paths["pay"]: self._pay,
            self.paths["query"]: self._query,
            self.paths["wallet_open"]: self._wallet_open,
            self.paths["wallet_confirm"]: self._wallet_confirm,
            self.paths["wallet_balance"]: self._wallet_balance,
            self.paths["wallet_transactions"]: self._wallet_transactions,
            self.paths["autodebit_agreement"]: self._autodebit_agreement,
            self.paths["autodebit_pay"]: self._autodebit_pay,
        }
        self._failures: list[tuple[str, str | None]] = []
        self._lock = threading.RLock()
        _ensure_indexes(db)

    # Wiring.

    def settings_overrides(self) -> dict[str, Any]:
        """The Settings values that point a back end at this fake bank (call after start)."""
        return {
            "icbc_gateway": self.url,
            "icbc_app_id": self.app_id,
            "icbc_merchant_id": self.merchant_id,
            "icbc_private_key": SecretStr(self._merchant_key),
            "icbc_gateway_public_key": self.gateway_public_key,
            "icbc_response_sign_alg": self.response_sign_alg,
            "icbc_notify_sign_alg": "SHA256",
            "icbc_notify_sign_path": self.paths["pay"]
            if self.notify_signs_api_path
            else NOTIFY_PATH,
            **{f"icbc_{name}_path": path for name, path in self.paths.items()},
        }

    def started(self) -> None:
        """Register this bank so ``complete`` finds it by the gateway URL."""
        with _running_lock:
            _running[self.url] = self

    def stopping(self) -> None:
        """Forget this bank's registration."""
        with _running_lock:
            _running.pop(self.url, None)

    # Steering, for tests and demos.

    def fail_next(self, name: str, path: str | None = None) -> None:
        """Answer the next verified request (to ``path``, or any) with the refusal ``name``."""
        if name not in RETURN_CODE_OF:
            raise ValueError(f"unknown refusal {name!r}")
        with self._lock:
            self._failures.append((name, path))

    def set_balance(self, wallet_no: str, balance_fen: int) -> None:
        """Set a wallet's balance (to make an auto-debit decline, say)."""
        updated = self.db[WALLETS].update_one(
            {"_id": wallet_no}, {"$set": {"balance_fen": balance_fen}}
        )
        if updated.matched_count == 0:
            raise KeyError(wallet_no)

    # Settling an order and delivering its notify.

    def settle(self, order_no: str, result: Literal["success", "fail"]) -> dict[str, Any]:
        """Mark a pending pay-component order paid or failed; repeating the same result is
        allowed (ICBC re-sends notifies). Raises AppError NOT_FOUND or CONFLICT."""
        target = "paid" if result == "success" else "failed"
        with self._lock:
            order = self._current_order(order_no)
            if order is None or order["channel"] not in PAY_MODES:
                raise AppError("NOT_FOUND", "工行沙箱中没有这笔待支付订单")
            if order["status"] == "pending":
                now = self.clock.now()
                settled = self.db[ORDERS].find_one_and_update(
                    {"_id": order_no, "status": "pending"},
                    {"$set": {"status": target, "paid_at": now if target == "paid" else None}},
                    return_document=ReturnDocument.AFTER,
                )
                order = settled or self.db[ORDERS].find_one({"_id": order_no})
            if order["status"] != target:
                raise AppError("CONFLICT", f"订单在工行沙箱中已是 {order['status']}")
            return order

    def notify_form(self, order: dict[str, Any], notify_url: str) -> dict[str, str]:
        """The signed form ICBC posts to ``notify_url`` about a settled order."""
        paid = order["status"] == "paid"
        paid_at = order.get("paid_at")
        biz = {
            "return_code": 0 if paid else 1,
            "return_msg": "支付成功" if paid else "支付失败",
            "msg_id": secrets.token_hex(16),
            "mer_id": self.merchant_id,
            "out_trade_no": order["_id"],
            "order_id": order["order_id"],
            "total_amt": str(order["amount_fen"]),
            "pay_mode": PAY_MODES[order["channel"]],
            "pay_time": icbc_time(_aware(paid_at)) if paid and paid_at else "",
        }
        form = {
            "from": "icbc-api",
            "api": self.paths["pay"],
            "app_id": self.app_id,
            "charset": CHARSET,
            "format": FORMAT,
            "encrypt_type": "",
            "timestamp": icbc_time(self.clock.now()),
            "sign_type": SIGN_TYPE_RSA2,
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        path = self.paths["pay"] if self.notify_signs_api_path else urlsplit(notify_url).path
        form["sign"] = sign_params(path, form, self._gateway_key)
        return form

    def complete(
        self, server_base_url: str, order_no: str, result: Literal["success", "fail"]
    ) -> dict[str, Any]:
        """Settle the order and POST its notify to ``{server_base_url}/icbc/notify``.

        Returns ``{order_no, status, notify_url, http_status, reply, reply_verified,
        acknowledged}``: ``reply`` is the endpoint's answer parsed (its text when not JSON;
        None when unreachable), ``reply_verified`` whether its signature verifies with the
        merchant public key over the documented span, ``acknowledged`` whether ICBC would stop
        re-sending (verified, and return_code 0).
        """
        import requests

        order = self.settle(order_no, result)
        notify_url = server_base_url.rstrip("/") + NOTIFY_PATH
        form = self.notify_form(order, notify_url)
        outcome: dict[str, Any] = {
            "order_no": order_no,
            "status": order["status"],
            "notify_url": notify_url,
            "http_status": None,
            "reply": None,
            "reply_verified": False,
            "acknowledged": False,
        }
        # Posted without the lock: the endpoint may call this bank back while it answers.
        try:
            response = requests.post(notify_url, data=form, timeout=_NOTIFY_TIMEOUT_S)
        except requests.RequestException:
            return outcome
        text = response.content.decode("utf-8", errors="replace")
        try:
            reply: Any = json.loads(text)
        except ValueError:
            reply = text
        verified = self.verify_reply(text)
        biz = reply.get("response_biz_content") if isinstance(reply, dict) else None
        acknowledged = verified and isinstance(biz, dict) and str(biz.get("return_code")) == "0"
        self.db[ORDERS].update_one(
            {"_id": order_no},
            {"$inc": {"notify_attempts": 1}, "$set": {"notify_acknowledged": acknowledged}},
        )
        outcome.update(
            http_status=response.status_code,
            reply=reply,
            reply_verified=verified,
            acknowledged=acknowledged,
        )
        return outcome

    def verify_reply(self, text: str) -> bool:
        """Whether a notify answer is signed by the merchant key over the text between the
        first ``{`` and ``,"sign"``, as ICBC checks it."""
        body = text.strip()
        cut = body.rfind(',"sign":')
        if not body.startswith("{") or not body.endswith("}") or cut < 0:
            return False
        try:
            envelope = json.loads(body)
        except ValueError:
            return False
        signature = envelope.get("sign") if isinstance(envelope, dict) else None
        if not isinstance(signature, str):
            return False
        return rsa_verify(body[1:cut], signature, self.merchant_public_key, "SHA256")

    # The gateway.

    def handle(self, path: str, body: bytes) -> tuple[int, str]:
        """One request's HTTP status and body (signed JSON for every known interface)."""
        endpoint = self._routes.get(path)
        if endpoint is None:
            return 404, json.dumps({"return_code": 404, "return_msg": "api not found"})
        msg_id = ""
        try:
            params = _form(body)
            msg_id = params.get("msg_id", "")
            biz = self._authenticate(path, params)
            with self._lock:
                self._injected_failure(path)
                reply = endpoint(biz)
            reply = {"return_code": 0, "return_msg": "success", **reply}
        except _Refusal as refusal:
            reply = {"return_code": refusal.return_code, "return_msg": refusal.message}
        reply["msg_id"] = msg_id
        return 200, self._signed(reply)

    def _signed(self, biz: Reply) -> str:
        # Spaced and unicode as is: a client that re-serialised before verifying would fail.
        text = json.dumps(biz, ensure_ascii=False)
        signature = rsa_sign(text, self._gateway_key, self.response_sign_alg)
        return '{"response_biz_content": ' + text + ', "sign": ' + json.dumps(signature) + "}"

    def _authenticate(self, path: str, params: dict[str, str]) -> Reply:
        missing = [name for name in (*_REQUIRED_FIELDS, "biz_content") if not params.get(name)]
        if missing:
            raise _Refusal("REQUEST_INVALID", "missing " + ",".join(missing))
        if params["app_id"] != self.app_id:
            raise _Refusal("APP_UNKNOWN", "app_id not registered")
        if params["sign_type"] != SIGN_TYPE_RSA2:
            raise _Refusal("SIGNATURE_REJECTED", "sign_type must be RSA2")
        text = signing_string(path, params)
        if not rsa_verify(text, params["sign"], self.merchant_public_key, "SHA256"):
            raise _Refusal("SIGNATURE_REJECTED", "sign verify failed")
        if params["format"] != FORMAT or params["charset"] != CHARSET:
            raise _Refusal("REQUEST_INVALID", "format must be json and charset UTF-8")
        if parse_icbc_time(params["timestamp"]) is None:
            raise _Refusal("REQUEST_INVALID", "timestamp must be yyyy-MM-dd HH:mm:ss")
        try:
            self.db[MESSAGES].insert_one({"_id": params["msg_id"], "at": self.clock.now()})
        except DuplicateKeyError:
            raise _Refusal("MSG_ID_REPEATED", "msg_id already used") from None
        try:
            biz = json.loads(params["biz_content"])
        except ValueError:
            biz = None
        if not isinstance(biz, dict):
            raise _Refusal("REQUEST_INVALID", "biz_content is not a JSON object")
        if biz.get("mer_id") != self.merchant_id:
            raise _Refusal("REQUEST_INVALID", "mer_id not registered")
        return biz

    def _injected_failure(self, path: str) -> None:
        for i, (name, only) in enumerate(self._failures):
            if only is None or only == path:
                del self._failures[i]
                raise _Refusal(name, "injected failure")

    # Payments.

    def _current_order(self, order_no: str) -> dict[str, Any] | None:
        # An unpaid order closes at its expiry, on the sandbox clock.
        self.db[ORDERS].update_one(
            {"_id": order_no, "status": "pending", "expires_at": {"$lte": self.clock.now()}},
            {"$set": {"status": "closed"}},
        )
        return self.db[ORDERS].find_one({"_id": order_no})

    def _pay(self, biz: Reply) -> Reply:
        order_no = _required(biz, "out_trade_no")
        amount = _amount(biz, "total_fee")
        method = _METHOD_OF_PAY_MODE.get(str(biz.get("pay_mode")))
        expires_at = parse_icbc_time(biz.get("expire_time"))
        if method is None or expires_at is None:
            raise _Refusal("REQUEST_INVALID", "pay_mode or expire_time invalid")
        order = {
            "_id": order_no,
            "order_id": _icbc_order_id(self.clock.now()),
            "channel": method,
            "amount_fen": amount,
            "subject": str(biz.get("body", "")),
            "open_id": biz.get("open_id"),
            "mer_url": biz.get("mer_url"),
            "pay_token": secrets.token_urlsafe(16),
            "status": "pending",
            "created_at": self.clock.now(),
            "expires_at": expires_at,
            "paid_at": None,
        }
        try:
            self.db[ORDERS].insert_one(order)
        except DuplicateKeyError:
            # The same order placed again (a retry) gets the same answer; anything else clashes.
            existing = self._current_order(order_no)
            if (
                existing is None
                or existing["channel"] != method
                or existing["amount_fen"] != amount
                or existing["status"] != "pending"
            ):
                raise _Refusal("ORDER_CONFLICT", "out_trade_no already used") from None
            order = existing
        return {
            "out_trade_no": order_no,
            "order_id": order["order_id"],
            "total_amt": str(order["amount_fen"]),
            "pay_mode": PAY_MODES[order["channel"]],
            "expire_time": icbc_time(_aware(order["expires_at"])),
            "pay_token": order["pay_token"],
        }

    def _query(self, biz: Reply) -> Reply:
        order = self._current_order(_required(biz, "out_trade_no"))
        if order is None:
            raise _Refusal("ORDER_NOT_FOUND", "order not found")
        return _status_fields(order)

    # Real-name verification and the e-wallet.

    def _wallet_open(self, biz: Reply) -> Reply:
        method = _METHOD_OF_OPEN_TYPE.get(str(biz.get("open_type")))
        name = biz.get("cust_name")
        if method is None or not isinstance(name, str) or not name.strip():
            raise _Refusal("REQUEST_INVALID", "open_type or cust_name invalid")
        id_number = str(biz.get("cert_no", "")).upper()
        card_no = str(biz.get("card_no", ""))
        phone = str(biz.get("mobile_no", ""))
        if biz.get("cert_type") != "0" or not resident_id_valid(id_number):
            raise _Refusal("ID_NUMBER_INVALID", "cert_no invalid")
        if not luhn_valid(card_no):
            raise _Refusal("CARD_INVALID", "card_no invalid")
        if method == "card" and not card_no.startswith(ICBC_CARD_PREFIX):
            raise _Refusal("NOT_ICBC_CARD", "not an ICBC class I debit card")
        if not (len(phone) == 11 and phone.isdigit() and phone[0] == "1" and phone[1] in "3456789"):
            raise _Refusal("PHONE_INVALID", "mobile_no invalid")
        apply_no = "AP" + secrets.token_hex(12).upper()
        code = f"{secrets.randbelow(1_000_000):06d}"
        now = self.clock.now()
        self.db[TICKETS].insert_one(
            {
                "_id": apply_no,
                "method": method,
                "name": name.strip(),
                "id_hash": _digest(id_number),
                "card_hash": _digest(card_no),
                "card_masked": f"{card_no[:4]} **** **** {card_no[-4:]}",
                "code_hash": _digest(apply_no + code),
                "tries": 0,
                "used": False,
                "created_at": now,
                "expires_at": now + _TICKET_TTL,
            }
        )
        self._sms.send(phone, "icbc_realname", [code])
        return {"apply_no": apply_no}

    def _wallet_confirm(self, biz: Reply) -> Reply:
        apply_no, code = str(biz.get("apply_no", "")), str(biz.get("sms_code", ""))
        now = self.clock.now()
        ticket = self.db[TICKETS].find_one_and_update(
            {
                "_id": apply_no,
                "used": False,
                "expires_at": {"$gt": now},
                "tries": {"$lt": _MAX_CODE_TRIES},
            },
            {"$inc": {"tries": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if ticket is None or not hmac.compare_digest(ticket["code_hash"], _digest(apply_no + code)):
            raise _Refusal("SMS_CODE_INVALID", "sms code wrong, expired or used up")
        if (
            self.db[TICKETS].find_one_and_update(
                {"_id": apply_no, "used": False}, {"$set": {"used": True}}
            )
            is None
        ):
            raise _Refusal("SMS_CODE_INVALID", "sms code already used")
        # One person, one wallet: verifying again hands back the wallet already opened.
        wallet = self.db[WALLETS].find_one({"id_hash": ticket["id_hash"]})
        if wallet is None:
            wallet = self._open_wallet(ticket, now)
        return {
            "wallet_no": wallet["_id"],
            "acct_class": {"I": "1", "II": "2", "III": "3"}[wallet["wallet_class"]],
            "bind_card_no": wallet["linked_card_masked"],
        }

    def _open_wallet(self, ticket: dict[str, Any], now: datetime) -> dict[str, Any]:
        wallet = {
            "_id": "6212" + "".join(secrets.choice(string.digits) for _ in range(15)),
            "id_hash": ticket["id_hash"],
            "name": ticket["name"],
            "wallet_class": "I" if ticket["method"] == "card" else "II",
            "linked_card_masked": ticket["card_masked"],
            "balance_fen": OPENING_BALANCE_FEN,
            "created_at": now,
        }
        try:
            self.db[WALLETS].insert_one(wallet)
        except DuplicateKeyError:
            return cast(dict[str, Any], self.db[WALLETS].find_one({"id_hash": ticket["id_hash"]}))
        self._record(wallet["_id"], "1", OPENING_BALANCE_FEN, OPENING_BALANCE_FEN, "沙箱开户存入")
        return wallet

    def _wallet(self, biz: Reply) -> dict[str, Any]:
        wallet = self.db[WALLETS].find_one({"_id": str(biz.get("wallet_no", ""))})
        if wallet is None:
            raise _Refusal("WALLET_NOT_FOUND", "wallet not found")
        return wallet

    def _wallet_balance(self, biz: Reply) -> Reply:
        wallet = self._wallet(biz)
        return {"wallet_no": wallet["_id"], "balance": str(wallet["balance_fen"])}

    def _wallet_transactions(self, biz: Reply) -> Reply:
        wallet = self._wallet(biz)
        page, page_size = _amount(biz, "page_no"), _amount(biz, "page_size")
        if page_size > 100:
            raise _Refusal("REQUEST_INVALID", "page_size at most 100")
        query = {"wallet_no": wallet["_id"]}
        records = (
            self.db[TRANSACTIONS]
            .find(query)
            .sort([("at", -1), ("_id", -1)])
            .skip((page - 1) * page_size)
            .limit(page_size)
        )
        return {
            "total_num": str(self.db[TRANSACTIONS].count_documents(query)),
            "records": [
                {
                    "trx_serial": r["_id"],
                    "trx_type": r["trx_type"],
                    "trx_amt": str(r["amount_fen"]),
                    "balance": str(r["balance_fen"]),
                    "summary": r["summary"],
                    "trx_time": icbc_time(_aware(r["at"])),
                }
                for r in records
            ],
        }

    def _record(
        self, wallet_no: str, trx_type: str, amount: int, balance: int, summary: str
    ) -> None:
        self.db[TRANSACTIONS].insert_one(
            {
                "_id": new_id(),
                "wallet_no": wallet_no,
                "trx_type": trx_type,
                "amount_fen": amount,
                "balance_fen": balance,
                "summary": summary,
                "at": self.clock.now(),
            }
        )

    # Auto-debit.

    def _autodebit_agreement(self, biz: Reply) -> Reply:
        operation = biz.get("oper_type")
        if operation == AGREEMENT_SIGN:
            wallet = self._wallet(biz)
            limit = _amount(biz, "single_limit")
            try:
                end = date.fromisoformat(str(biz.get("end_date", "")))
            except ValueError:
                raise _Refusal("REQUEST_INVALID", "end_date must be yyyy-MM-dd") from None
            if end < business_date(self.clock.now()):
                raise _Refusal("REQUEST_INVALID", "end_date is in the past")
            agreement_no = "PRT" + secrets.token_hex(10).upper()
            self.db[AGREEMENTS].insert_one(
                {
                    "_id": agreement_no,
                    "wallet_no": wallet["_id"],
                    "limit_fen": limit,
                    "end_date": end.isoformat(),
                    "status": "active",
                    "signed_at": self.clock.now(),
                }
            )
            return {"prtcl_no": agreement_no, "status": "active"}
        if operation == AGREEMENT_CANCEL:
            agreement_no = _required(biz, "prtcl_no")
            cancelled = self.db[AGREEMENTS].find_one_and_update(
                {"_id": agreement_no},
                {"$set": {"status": "cancelled", "cancelled_at": self.clock.now()}},
            )
            if cancelled is None:
                raise _Refusal("AGREEMENT_INVALID", "agreement not found")
            return {"prtcl_no": agreement_no, "status": "cancelled"}
        raise _Refusal("REQUEST_INVALID", "oper_type invalid")

    def _autodebit_pay(self, biz: Reply) -> Reply:
        agreement_no = _required(biz, "prtcl_no")
        order_no = _required(biz, "out_trade_no")
        amount = _amount(biz, "total_fee")
        existing = self.db[ORDERS].find_one({"_id": order_no})
        if existing is not None:
            # A retried charge answers with the first outcome and never debits twice.
            if existing.get("prtcl_no") != agreement_no or existing["amount_fen"] != amount:
                raise _Refusal("ORDER_CONFLICT", "out_trade_no already used")
            return _status_fields(existing)
        today = business_date(self.clock.now()).isoformat()
        agreement = self.db[AGREEMENTS].find_one(
            {"_id": agreement_no, "status": "active", "end_date": {"$gte": today}}
        )
        if agreement is None:
            raise _Refusal("AGREEMENT_INVALID", "agreement cancelled, lapsed or unknown")
        if amount > agreement["limit_fen"]:
            raise _Refusal("AUTODEBIT_LIMIT_EXCEEDED", "amount over the agreement's limit")
        now = self.clock.now()
        wallet_no = agreement["wallet_no"]
        debited = self.db[WALLETS].find_one_and_update(
            {"_id": wallet_no, "balance_fen": {"$gte": amount}},
            {"$inc": {"balance_fen": -amount}},
            return_document=ReturnDocument.AFTER,
        )
        subject = str(biz.get("body", ""))
        order = {
            "_id": order_no,
            "order_id": _icbc_order_id(now),
            "channel": "passfree",
            "prtcl_no": agreement_no,
            "wallet_no": wallet_no,
            "amount_fen": amount,
            "subject": subject,
            "status": "paid" if debited is not None else "failed",
            "created_at": now,
            "expires_at": now,
            "paid_at": now if debited is not None else None,
        }
        self.db[ORDERS].insert_one(order)
        if debited is not None:
            self._record(wallet_no, "2", amount, debited["balance_fen"], subject or "代扣")
        return _status_fields(order)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        fake = cast(FakeIcbc, self.server.fake)  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, text = fake.handle(urlsplit(self.path).path, body)
        payload = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "POST")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        # Forms carry ID, card and phone numbers; keep request lines off the console.
        pass


def _ensure_indexes(db: Any) -> None:
    # The sandbox's collections are not among the domain's, so the fake creates its own.
    for name, indexes in _INDEXES.items():
        for model in indexes:
            options = {k: v for k, v in model.document.items() if k != "key"}
            db[name].create_index(list(model.document["key"].items()), **options)


def _load_or_create_key(folder: Path | None, filename: str) -> str:
    if folder is not None and (folder / filename).exists():
        return (folder / filename).read_text(encoding="ascii")
    pem = generate_private_key_pem()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"{filename}.{os.getpid()}.tmp"
        # Owner-only from the first byte: it is a private key, even if a sandbox one.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(pem)
        os.replace(temporary, folder / filename)
    return pem


def _form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refusal("REQUEST_INVALID", "body is not UTF-8") from None
    form: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in form:
            raise _Refusal("REQUEST_INVALID", f"field {key} repeated")
        form[key] = value
    return form


def _required(biz: Reply, name: str) -> str:
    value = biz.get(name)
    if not isinstance(value, str) or not value:
        raise _Refusal("REQUEST_INVALID", f"{name} required")
    return value


def _amount(biz: Reply, name: str) -> int:
    value = biz.get(name)
    if not isinstance(value, str) or not value.isdigit() or int(value) <= 0:
        raise _Refusal("REQUEST_INVALID", f"{name} must be a positive integer string")
    return int(value)


def _status_fields(order: dict[str, Any]) -> Reply:
    paid_at = order.get("paid_at")
    return {
        "out_trade_no": order["_id"],
        "order_id": order["order_id"],
        "pay_status": _STATUS_CODES[order["status"]],
        "total_amt": str(order["amount_fen"]),
        "pay_time": icbc_time(_aware(paid_at)) if paid_at else "",
    }


def _icbc_order_id(now: datetime) -> str:
    return now.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S") + secrets.token_hex(6).upper()


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _aware(moment: datetime) -> datetime:
    # A MongoDB client opened without tz_aware hands back naive UTC datetimes.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


FakeIcbc.handler_class = _Handler

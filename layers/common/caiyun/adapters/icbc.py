"""ICBC Open Platform (工行 API 开放平台): signed requests, verified responses and notifies.

What this follows — PLATFORM_NOTES.md ("ICBC Open Platform"), checked against ICBC's published
SDK samples (the PHP ``DefaultIcbcClient`` / ``IcbcSignature`` / ``WebUtils`` and the Java
``NotifyUrlServlet`` notify sample) and independent clients in Go and C#:

* **Requests** are form POSTs of ``app_id``, ``msg_id`` (fresh per call), ``format=json``,
  ``charset=UTF-8``, ``sign_type=RSA2``, ``timestamp`` (``yyyy-MM-dd HH:mm:ss``, GMT+8),
  ``biz_content`` (compact JSON, non-ASCII kept as is) and ``sign``. The string to sign is the
  URI path of the interface, ``?``, then every non-empty parameter except ``sign`` sorted by key
  as raw ``k=v`` joined by ``&`` (no URL encoding); the signature is SHA256withRSA (RSA2,
  PKCS#1 v1.5) with our private key, base64.
* **Responses** are JSON ``{"response_biz_content": {...}, "sign": "..."}``. ICBC signs the
  exact bytes of the ``response_biz_content`` value, so it is sliced out of the raw body by a
  small scanner (:func:`raw_json_member`) and verified as received. The PHP sample re-serialises
  the parsed value instead, which breaks on any difference of spacing, key order or escaping;
  this module never re-serialises. The algorithm is ``icbc_response_sign_alg`` (every
  implementation seen uses SHA1withRSA). Business success is ``return_code == 0`` (ICBC sends it
  as a number or as the string ``"0"``, depending on the interface).
* **Notifies** are form POSTs (``from=icbc-api``, ``api``, ``app_id``, ``charset``, ``format``,
  ``encrypt_type``, ``timestamp``, ``sign_type``, ``biz_content``, ``sign``) signed like a request
  over ``icbc_notify_sign_path`` + ``?`` + the sorted fields. Which path ICBC signs over (our
  notify path or the API's) and with which algorithm differs between implementations, hence
  ``icbc_notify_sign_path`` and ``icbc_notify_sign_alg``; the form's own ``sign_type`` never
  chooses the algorithm, so a forger cannot downgrade it. The signature is checked before
  ``biz_content`` is even parsed. The one public Python sample skips this check; we do not.
* **Notify replies** are ``{"response_biz_content":{"return_code":0,"return_msg":"...",
  "msg_id":"..."},"sign_type":"RSA2","sign":"..."}``, signed over the text between the outer
  brace and ``,"sign"`` (the Java sample's rule).

Notify ``biz_content`` fields read (the aggregate-payment names used by public integrations):
``out_trade_no`` (our order number), ``total_amt`` (fen, number or digit string), ``return_code``
(0 = paid, anything else = failed), ``return_msg``, ``msg_id`` (echoed in the reply),
``order_id`` (ICBC's transaction id), ``pay_time`` (``yyyy-MM-dd HH:mm:ss`` or
``yyyyMMddHHmmss``, GMT+8), ``mer_id`` (checked against ours when both are known).

The wallet, real-name and auto-debit interfaces have no public reference: their field names,
``pay_status`` values and business ``return_code`` values below are the ones the sandbox
(:mod:`caiyun.sandbox.icbc`) speaks, and must be checked against the interface sheet the branch
hands over with the contract. Interface paths are settings for the same reason.

Keys may be PEM or the bare base64 DER that ICBC's key tool prints. ``cryptography`` and
``requests`` are imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from caiyun.clock import SHANGHAI, Clock, iso

if TYPE_CHECKING:
    import requests

    from caiyun.settings import Settings

SignAlg = Literal["SHA1", "SHA256"]
PayMethod = Literal["card", "wallet"]
PaymentState = Literal["paid", "pending", "failed", "closed"]
WalletClass = Literal["I", "II", "III"]

SIGN_TYPE_RSA2 = "RSA2"
CHARSET = "UTF-8"
FORMAT = "json"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# pay_mode of the aggregate purchase by our payment method, and the access type of a
# mini-program. ICBC assigns these per merchant protocol: the sandbox reads these values.
PAY_MODES: dict[str, str] = {"card": "9", "wallet": "10"}
ACCESS_TYPE_MINIPROGRAM = "9"
# open_type of the account-opening interface: verify an ICBC Class I card, or open an e-wallet
# linked to any bank's card.
OPEN_TYPES: dict[str, str] = {"card": "1", "wallet": "2"}
# oper_type of the entrusted-debit agreement interface.
AGREEMENT_SIGN = "1"
AGREEMENT_CANCEL = "2"
# pay_status of the order query and of an auto-debit charge.
PAY_STATUS: dict[str, PaymentState] = {"0": "pending", "1": "paid", "2": "failed", "3": "closed"}
WALLET_CLASSES: dict[str, WalletClass] = {"1": "I", "2": "II", "3": "III"}
# trx_type of a wallet transaction.
TRX_DIRECTIONS: dict[str, str] = {"1": "in", "2": "out"}

# return_code values with a meaning of their own, and whether repeating the call may help.
# Anything else non-zero becomes ``ICBC_<code>``, not retryable.
RETURN_CODES: dict[int, tuple[str, bool]] = {
    1001: ("SIGNATURE_REJECTED", False),
    1002: ("APP_UNKNOWN", False),
    1003: ("REQUEST_INVALID", False),
    1004: ("MSG_ID_REPEATED", True),
    1099: ("SYSTEM_BUSY", True),
    2001: ("ORDER_NOT_FOUND", False),
    2002: ("ORDER_CONFLICT", False),
    3001: ("NOT_ICBC_CARD", False),
    3002: ("CARD_INVALID", False),
    3003: ("ID_NUMBER_INVALID", False),
    3004: ("PHONE_INVALID", False),
    3005: ("SMS_CODE_INVALID", False),
    4001: ("WALLET_NOT_FOUND", False),
    5001: ("AGREEMENT_INVALID", False),
    5002: ("AUTODEBIT_LIMIT_EXCEEDED", False),
}
# The reverse, for the sandbox and the tests to answer with a named refusal.
RETURN_CODE_OF: dict[str, int] = {name: code for code, (name, _) in RETURN_CODES.items()}

_RETURN_MSG_MAX = 200
# Runs of digits as long as a phone, card or ID number: never copied into an exception.
_LONG_NUMBER = re.compile(r"\d{11,}")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_STRUCTURAL = re.compile(r'["{}\[\]]')
_WHITESPACE = " \t\r\n"
_LITERAL_END = ",}] \t\r\n"


class IcbcError(Exception):
    """ICBC refused a call, or the call failed.

    ``code`` is a stable name (``NOT_ICBC_CARD``, ``SMS_CODE_INVALID``, ``NETWORK_ERROR``, ...);
    ``retryable`` tells whether the same call may succeed later; ``return_code`` is ICBC's own
    code when ICBC answered. Messages never carry a key, card, ID or phone number.
    """

    def __init__(
        self, code: str, message: str, retryable: bool = False, return_code: int | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.return_code = return_code


class IcbcSignatureError(IcbcError):
    """A signature from ICBC (response or notify) is missing or does not verify."""

    def __init__(self, message: str) -> None:
        super().__init__("SIGNATURE_INVALID", message)


class IcbcMalformed(IcbcError):
    """ICBC's message is not in the documented shape (or not for us)."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__("MALFORMED", message, retryable)


@dataclass(frozen=True)
class PaymentStatus:
    """ICBC's word on one order: ``paid``, ``pending``, ``failed`` or ``closed``."""

    order_no: str
    status: PaymentState
    amount_fen: int
    transaction_id: str | None
    paid_at: datetime | None


@dataclass(frozen=True)
class WalletInfo:
    """The ICBC e-wallet a verified person holds."""

    wallet_no: str
    wallet_class: WalletClass
    linked_card_masked: str


@dataclass(frozen=True)
class NotifyPayload:
    """A verified payment notify: ``success`` is ``return_code == 0``; ``raw`` is biz_content."""

    msg_id: str
    order_no: str
    amount_fen: int
    success: bool
    transaction_id: str | None
    paid_at: datetime | None
    raw: dict[str, Any]


# Keys and signatures.


def generate_private_key_pem(bits: int = 2048) -> str:
    """A new RSA private key as PKCS#8 PEM (the sandbox and the tests use it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_key_pem(private_key_pem: str) -> str:
    """The SubjectPublicKeyInfo PEM of a private key (what the other side verifies with)."""
    from cryptography.hazmat.primitives import serialization

    public = _private_key(private_key_pem).public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _key_bytes(text: str) -> tuple[bytes, bool]:
    """The key's bytes and whether they are PEM (else DER from ICBC's bare base64)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        return text.encode("ascii"), True
    return base64.b64decode("".join(text.split()), validate=True), False


@lru_cache(maxsize=8)
def _private_key(pem: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        raw, is_pem = _key_bytes(pem)
        load = serialization.load_pem_private_key if is_pem else serialization.load_der_private_key
        key = load(raw, password=None)
    except (ValueError, TypeError, binascii.Error):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        # The key text is never echoed: it is the one secret this module holds.
        raise IcbcError("CONFIG", "the ICBC private key is missing or not an RSA private key")
    return key


_MIN_RSA_BITS = 2048


def key_problems(private_pem: str, public_pem: str) -> list[str]:
    """Why these ICBC keys cannot be used (not RSA, unreadable, shorter than 2048 bits);
    empty when they are fine. Never repeats the key text."""
    problems = []
    for name, load, text in (
        ("CAIYUN_ICBC_PRIVATE_KEY", _private_key, private_pem),
        ("CAIYUN_ICBC_GATEWAY_PUBLIC_KEY", _public_key, public_pem),
    ):
        try:
            key = load(text)
        except IcbcError:
            problems.append(f"{name} is not a readable RSA key")
            continue
        if key.key_size < _MIN_RSA_BITS:
            problems.append(f"{name} must be an RSA key of at least {_MIN_RSA_BITS} bits")
    return problems


@lru_cache(maxsize=8)
def _public_key(pem: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        raw, is_pem = _key_bytes(pem)
        load = serialization.load_pem_public_key if is_pem else serialization.load_der_public_key
        key = load(raw)
    except (ValueError, TypeError, binascii.Error):
        key = None
    if not isinstance(key, rsa.RSAPublicKey):
        raise IcbcError("CONFIG", "the ICBC gateway public key is missing or not an RSA key")
    return key


def _hash(alg: SignAlg) -> Any:
    from cryptography.hazmat.primitives import hashes

    if alg == "SHA256":
        return hashes.SHA256()
    if alg == "SHA1":
        return hashes.SHA1()
    raise ValueError(f"unknown signature algorithm {alg!r}")


def rsa_sign(text: str, private_key_pem: str, alg: SignAlg = "SHA256") -> str:
    """Base64 of ``alg``withRSA (PKCS#1 v1.5) over the UTF-8 bytes of ``text``."""
    from cryptography.hazmat.primitives.asymmetric import padding

    key = _private_key(private_key_pem)
    signature = key.sign(text.encode("utf-8"), padding.PKCS1v15(), _hash(alg))
    return base64.b64encode(signature).decode("ascii")


def rsa_verify(text: str, signature: str, public_key_pem: str, alg: SignAlg) -> bool:
    """Whether ``signature`` (base64) is ``alg``withRSA over ``text`` by that public key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import padding

    key = _public_key(public_key_pem)
    # A form decoder turns an unescaped '+' into a space; base64 never contains spaces, so this
    # repairs that without accepting anything a correct sender could not have meant.
    cleaned = "".join(signature.replace(" ", "+").split())
    try:
        raw = base64.b64decode(cleaned, validate=True)
        key.verify(raw, text.encode("utf-8"), padding.PKCS1v15(), _hash(alg))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def signing_string(path: str, params: dict[str, str]) -> str:
    """``path?k=v&...``: every non-empty parameter except ``sign``, sorted by key, raw."""
    pairs = sorted((k, v) for k, v in params.items() if k != "sign" and v is not None and v != "")
    return path + "?" + "&".join(f"{k}={v}" for k, v in pairs)


def sign_params(path: str, params: dict[str, str], private_key_pem: str) -> str:
    """The RSA2 ``sign`` of a request (or of a notify, on ICBC's side) to ``path``."""
    return rsa_sign(signing_string(path, params), private_key_pem, "SHA256")


# Slicing a member's raw text out of a JSON document.


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _end_of_string(text: str, i: int) -> int:
    found = _STRING.match(text, i)
    if found is None:
        raise IcbcMalformed("unterminated string in ICBC's JSON")
    return found.end()


def _end_of_value(text: str, i: int) -> int:
    if i >= len(text):
        raise IcbcMalformed("truncated JSON from ICBC")
    first = text[i]
    if first == '"':
        return _end_of_string(text, i)
    if first in "{[":
        depth, j = 0, i
        while True:
            found = _STRUCTURAL.search(text, j)
            if found is None:
                raise IcbcMalformed("unbalanced JSON from ICBC")
            j = found.start()
            mark = text[j]
            if mark == '"':
                j = _end_of_string(text, j)
                continue
            depth += 1 if mark in "{[" else -1
            j += 1
            if depth == 0:
                return j
    j = i
    while j < len(text) and text[j] not in _LITERAL_END:
        j += 1
    if j == i:
        raise IcbcMalformed("missing JSON value from ICBC")
    return j


def raw_json_member(document: str, key: str) -> str:
    """The exact text of the value of the top-level member ``key`` of a JSON object.

    Walks the top-level members only (a key spelt inside a string or a nested object is never
    mistaken for it), honours strings and escapes, and refuses a document that names ``key``
    twice: a parser keeps the last and a slicer the first, which an attacker could exploit.
    """
    i = _skip_ws(document, 0)
    if not document.startswith("{", i):
        raise IcbcMalformed("ICBC's reply is not a JSON object")
    i = _skip_ws(document, i + 1)
    found: str | None = None
    if document.startswith("}", i):
        i += 1
    else:
        while True:
            if not document.startswith('"', i):
                raise IcbcMalformed("ICBC's reply has a member without a name")
            name_end = _end_of_string(document, i)
            try:
                name = json.loads(document[i:name_end])
            except ValueError:
                raise IcbcMalformed("ICBC's reply has a badly escaped member name") from None
            i = _skip_ws(document, name_end)
            if not document.startswith(":", i):
                raise IcbcMalformed("ICBC's reply has a member without a value")
            start = _skip_ws(document, i + 1)
            i = _end_of_value(document, start)
            if name == key:
                if found is not None:
                    raise IcbcMalformed(f"ICBC's reply names {key} twice")
                found = document[start:i]
            i = _skip_ws(document, i)
            if document.startswith(",", i):
                i = _skip_ws(document, i + 1)
                continue
            if document.startswith("}", i):
                i += 1
                break
            raise IcbcMalformed("ICBC's reply is not a well-formed JSON object")
    if _skip_ws(document, i) != len(document):
        raise IcbcMalformed("trailing text after ICBC's JSON")
    if found is None:
        raise IcbcMalformed(f"ICBC's reply has no {key}")
    return found


def verify_response(body: str, public_key_pem: str, alg: SignAlg) -> dict[str, Any]:
    """The verified ``response_biz_content`` of a gateway reply, parsed from the signed text."""
    try:
        envelope = json.loads(body)
    except ValueError:
        raise IcbcMalformed("ICBC's reply is not JSON") from None
    if not isinstance(envelope, dict):
        raise IcbcMalformed("ICBC's reply is not a JSON object")
    signed = raw_json_member(body, "response_biz_content")
    signature = envelope.get("sign")
    if not isinstance(signature, str) or not signature:
        raise IcbcSignatureError("ICBC's reply is not signed")
    if not rsa_verify(signed, signature, public_key_pem, alg):
        raise IcbcSignatureError("ICBC's reply signature does not verify")
    # Parsed from the very text that was verified, so nothing unverified is ever read.
    biz = json.loads(signed)
    if not isinstance(biz, dict):
        raise IcbcMalformed("ICBC's response_biz_content is not an object (encrypted?)")
    return biz


def notify_reply_text(success: bool, msg_id: str, message: str, private_key_pem: str) -> str:
    """The signed JSON answer to a notify (see the module docstring for the signed span)."""
    biz = {"return_code": 0 if success else 1, "return_msg": message, "msg_id": msg_id}
    biz_text = json.dumps(biz, ensure_ascii=False, separators=(",", ":"))
    span = f'"response_biz_content":{biz_text},"sign_type":"{SIGN_TYPE_RSA2}"'
    signature = rsa_sign(span, private_key_pem, "SHA256")
    return "{" + span + ',"sign":' + json.dumps(signature) + "}"


# Field parsing.


def icbc_time(moment: datetime) -> str:
    """``yyyy-MM-dd HH:mm:ss`` in GMT+8, ICBC's timestamp format."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(SHANGHAI).strftime(TIME_FORMAT)


def parse_icbc_time(value: Any) -> datetime | None:
    """An aware UTC datetime from ICBC's GMT+8 ``yyyy-MM-dd HH:mm:ss`` or ``yyyyMMddHHmmss``."""
    if not isinstance(value, str) or not value:
        return None
    for pattern in (TIME_FORMAT, "%Y%m%d%H%M%S"):
        try:
            local = datetime.strptime(value, pattern)
        except ValueError:
            continue
        return local.replace(tzinfo=SHANGHAI).astimezone(timezone.utc)
    return None


def _fen(value: Any, name: str) -> int:
    # Amounts come as numbers or digit strings; a bool or a float is never a fen amount.
    if isinstance(value, int) and not isinstance(value, bool):
        amount = value
    elif isinstance(value, str) and value.isdigit():
        amount = int(value)
    else:
        raise IcbcMalformed(f"ICBC sent no valid {name}")
    if amount < 0:
        raise IcbcMalformed(f"ICBC sent a negative {name}")
    return amount


def _return_code(biz: dict[str, Any]) -> int:
    value = biz.get("return_code")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise IcbcMalformed("ICBC sent no valid return_code")


def _text(biz: dict[str, Any], name: str) -> str:
    value = biz.get(name)
    if not isinstance(value, str) or not value:
        raise IcbcMalformed(f"ICBC sent no {name}")
    return value


def _optional_text(biz: dict[str, Any], name: str) -> str | None:
    value = biz.get(name)
    return value if isinstance(value, str) and value else None


def _safe_message(value: Any) -> str:
    text = value if isinstance(value, str) else ""
    return _LONG_NUMBER.sub("***", text)[:_RETURN_MSG_MAX]


def business_error(return_code: int, return_msg: Any) -> IcbcError:
    """The IcbcError for a non-zero ``return_code``."""
    code, retryable = RETURN_CODES.get(return_code, (f"ICBC_{return_code}", False))
    message = f"ICBC refused (return_code {return_code}): {_safe_message(return_msg)}"
    return IcbcError(code, message, retryable, return_code)


class IcbcClient:
    """The ICBC Open Platform for one app: payments, real-name, wallet and auto-debit.

    One client per warm container; it holds a pooled HTTP session. Every method raises
    :class:`IcbcError` (network trouble and ICBC's busy answers are ``retryable``); an order
    number makes payment calls idempotent at ICBC, so a retried charge never pays twice.
    """

    def __init__(
        self, settings: Settings, clock: Clock, session: requests.Session | None = None
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._session = session
        self._base = settings.icbc_gateway.rstrip("/")

    @property
    def settings(self) -> Settings:
        """The settings this client was built with (the sandbox finds its fake bank by them)."""
        return self._settings

    # Payments.

    def create_payment(
        self,
        order_no: str,
        amount_fen: int,
        subject: str,
        payer_openid: str | None,
        method: PayMethod,
        expires_at: datetime,
    ) -> dict[str, Any]:
        """Place an order with ICBC; returns what the mini-program hands ICBC's pay component.

        That is the gateway's ``response_biz_content`` without its ``return_code``,
        ``return_msg`` and ``msg_id``. Calling again with the same order number and amount
        returns the same order.
        """
        _positive(amount_fen, "amount_fen")
        if method not in PAY_MODES:
            raise ValueError(f"unknown payment method {method!r}")
        s = self._settings
        biz: dict[str, Any] = {
            "mer_id": s.icbc_merchant_id,
            "out_trade_no": order_no,
            "pay_mode": PAY_MODES[method],
            "access_type": ACCESS_TYPE_MINIPROGRAM,
            "total_fee": str(amount_fen),
            "body": subject,
            "fee_type": "001",
            "icbc_appid": s.icbc_app_id,
            "mer_url": s.icbc_notify_url,
            "notify_type": "HS",
            "result_type": "0",
            "orig_date_time": self._now().astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M:%S"),
            "expire_time": icbc_time(expires_at),
        }
        if payer_openid:
            biz["open_id"] = payer_openid
        reply = self._call("consumepurchase", s.icbc_pay_path, biz)
        _same_order(reply, order_no)
        return {k: v for k, v in reply.items() if k not in ("return_code", "return_msg", "msg_id")}

    def query_payment(self, order_no: str) -> PaymentStatus:
        """ICBC's current status of an order (reconciles an order whose notify never came)."""
        s = self._settings
        biz = {
            "mer_id": s.icbc_merchant_id,
            "out_trade_no": order_no,
            "deal_flag": "0",
            "icbc_appid": s.icbc_app_id,
        }
        reply = self._call("orderqry", s.icbc_query_path, biz)
        return _payment_status(reply, order_no)

    # Real-name verification and the e-wallet.

    def realname_start(
        self, method: PayMethod, name: str, id_number: str, card_no: str, bank_phone: str
    ) -> str:
        """Start real-name verification; ICBC texts a code to ``bank_phone``. Returns a ticket.

        ``card``: ``card_no`` must be an ICBC Class I debit card (else ``NOT_ICBC_CARD``);
        ``wallet``: opens an ICBC e-wallet with ``card_no`` (any bank) as its linked card.
        """
        if method not in OPEN_TYPES:
            raise ValueError(f"unknown verification method {method!r}")
        biz = {
            "mer_id": self._settings.icbc_merchant_id,
            "open_type": OPEN_TYPES[method],
            "cust_name": name,
            "cert_type": "0",
            "cert_no": id_number,
            "card_no": card_no,
            "mobile_no": bank_phone,
        }
        reply = self._call("openacct", self._settings.icbc_wallet_open_path, biz)
        return _text(reply, "apply_no")

    def realname_confirm(self, ticket: str, sms_code: str) -> WalletInfo:
        """Finish verification with the code ICBC texted; a wrong one is ``SMS_CODE_INVALID``."""
        biz = {"mer_id": self._settings.icbc_merchant_id, "apply_no": ticket, "sms_code": sms_code}
        reply = self._call("openacctconfirm", self._settings.icbc_wallet_confirm_path, biz)
        wallet_class = WALLET_CLASSES.get(str(reply.get("acct_class")))
        if wallet_class is None:
            raise IcbcMalformed("ICBC sent no valid acct_class")
        return WalletInfo(
            wallet_no=_text(reply, "wallet_no"),
            wallet_class=wallet_class,
            linked_card_masked=_text(reply, "bind_card_no"),
        )

    def wallet_balance(self, wallet_no: str) -> int:
        """The wallet's available balance in fen."""
        biz = {"mer_id": self._settings.icbc_merchant_id, "wallet_no": wallet_no}
        reply = self._call("balancequery", self._settings.icbc_wallet_balance_path, biz)
        return _fen(reply.get("balance"), "balance")

    def wallet_transactions(
        self, wallet_no: str, page: int, page_size: int
    ) -> tuple[list[dict[str, Any]], int]:
        """One page (from 1) of the wallet's transactions, newest first, and their total.

        Each item: ``transaction_id``, ``direction`` (``in``/``out``), ``amount_fen``,
        ``balance_fen``, ``summary`` and ``occurred_at`` (ISO 8601, +08:00).
        """
        if page < 1 or not 1 <= page_size <= 100:
            raise ValueError("page starts at 1 and page_size is 1 to 100")
        biz = {
            "mer_id": self._settings.icbc_merchant_id,
            "wallet_no": wallet_no,
            "page_no": str(page),
            "page_size": str(page_size),
        }
        reply = self._call("detailquery", self._settings.icbc_wallet_transactions_path, biz)
        records = reply.get("records")
        if not isinstance(records, list):
            raise IcbcMalformed("ICBC sent no records")
        return [_transaction(record) for record in records], _fen(reply.get("total_num"), "total")

    # Auto-debit (代扣).

    def sign_autodebit(self, wallet_no: str, limit_fen: int, end_date: date) -> str:
        """Sign an entrusted-debit agreement on the wallet; returns the agreement number.

        ``limit_fen`` caps each charge; the agreement lapses after ``end_date``.
        """
        _positive(limit_fen, "limit_fen")
        biz = {
            "mer_id": self._settings.icbc_merchant_id,
            "oper_type": AGREEMENT_SIGN,
            "wallet_no": wallet_no,
            "single_limit": str(limit_fen),
            "end_date": end_date.isoformat(),
        }
        reply = self._call("entrustprtl", self._settings.icbc_autodebit_agreement_path, biz)
        return _text(reply, "prtcl_no")

    def cancel_autodebit(self, agreement_no: str) -> None:
        """Cancel an entrusted-debit agreement; cancelling it again is harmless."""
        biz = {
            "mer_id": self._settings.icbc_merchant_id,
            "oper_type": AGREEMENT_CANCEL,
            "prtcl_no": agreement_no,
        }
        self._call("entrustprtl", self._settings.icbc_autodebit_agreement_path, biz)

    def autodebit_charge(
        self, agreement_no: str, order_no: str, amount_fen: int, subject: str
    ) -> PaymentStatus:
        """Charge the wallet under an agreement, without the payer present.

        A decline (insufficient balance) is ``status="failed"``, not an error; a cancelled or
        lapsed agreement is ``AGREEMENT_INVALID``, a charge over its limit
        ``AUTODEBIT_LIMIT_EXCEEDED``. The same order number never charges twice.
        """
        _positive(amount_fen, "amount_fen")
        biz = {
            "mer_id": self._settings.icbc_merchant_id,
            "prtcl_no": agreement_no,
            "out_trade_no": order_no,
            "total_fee": str(amount_fen),
            "body": subject,
            "orig_date_time": self._now().astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M:%S"),
        }
        reply = self._call("passfreepay", self._settings.icbc_autodebit_pay_path, biz)
        return _payment_status(reply, order_no)

    # The notify.

    def verify_notify(self, form: dict[str, str]) -> NotifyPayload:
        """Verify ICBC's signature on a notify form, then read its payment result.

        Raises :class:`IcbcSignatureError` (no, forged or altered signature) or
        :class:`IcbcMalformed` (not for this app/merchant, encrypted, or fields missing).
        """
        s = self._settings
        signature = form.get("sign")
        if not isinstance(signature, str) or not signature:
            raise IcbcSignatureError("the notify is not signed")
        if any(not isinstance(v, str) for v in form.values()):
            raise IcbcMalformed("notify fields must be text")
        text = signing_string(s.icbc_notify_sign_path, form)
        if not rsa_verify(text, signature, s.icbc_gateway_public_key, s.icbc_notify_sign_alg):
            raise IcbcSignatureError("the notify signature does not verify")
        if form.get("app_id") != s.icbc_app_id:
            raise IcbcMalformed("the notify is for another app")
        if form.get("encrypt_type"):
            raise IcbcMalformed("encrypted notifies are not enabled for this app")
        try:
            biz = json.loads(form.get("biz_content") or "")
        except ValueError:
            raise IcbcMalformed("the notify's biz_content is not JSON") from None
        if not isinstance(biz, dict):
            raise IcbcMalformed("the notify's biz_content is not an object")
        mer_id = biz.get("mer_id")
        if s.icbc_merchant_id and mer_id not in (None, "", s.icbc_merchant_id):
            raise IcbcMalformed("the notify is for another merchant")
        msg_id = biz.get("msg_id", "")
        return NotifyPayload(
            msg_id=msg_id if isinstance(msg_id, str) else "",
            order_no=_text(biz, "out_trade_no"),
            amount_fen=_fen(biz.get("total_amt"), "total_amt"),
            success=_return_code(biz) == 0,
            transaction_id=_optional_text(biz, "order_id"),
            paid_at=parse_icbc_time(biz.get("pay_time")),
            raw=biz,
        )

    def notify_reply(self, success: bool, msg_id: str, message: str) -> str:
        """The signed body to answer a notify with; ICBC resends until it reads success."""
        return notify_reply_text(success, msg_id, message, self._private_key_pem())

    # Transport.

    def _private_key_pem(self) -> str:
        return self._settings.icbc_private_key.get_secret_value()

    def _now(self) -> datetime:
        moment = self._clock.now()
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)

    def _http(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def _call(self, name: str, path: str, biz: dict[str, Any]) -> dict[str, Any]:
        import requests

        s = self._settings
        url = self._base + path
        msg_id = secrets.token_hex(16)
        params = {
            "app_id": s.icbc_app_id,
            "msg_id": msg_id,
            "format": FORMAT,
            "charset": CHARSET,
            "sign_type": SIGN_TYPE_RSA2,
            "timestamp": icbc_time(self._now()),
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        # Signed over the full URI path, so a gateway base with a path prefix still verifies.
        params["sign"] = sign_params(urlsplit(url).path, params, self._private_key_pem())
        try:
            response = self._http().post(
                url,
                data=params,
                headers={"Content-Type": f"application/x-www-form-urlencoded; charset={CHARSET}"},
                timeout=s.icbc_timeout_s,
            )
        except requests.RequestException as error:
            # The exception text can echo the request; report its type only, without a cause.
            raise IcbcError(
                "NETWORK_ERROR", f"ICBC {name} unreachable ({type(error).__name__})", True
            ) from None
        if response.status_code >= 500:
            raise IcbcError(
                "GATEWAY_UNAVAILABLE", f"ICBC {name} answered HTTP {response.status_code}", True
            )
        if response.status_code != 200:
            raise IcbcError("HTTP_ERROR", f"ICBC {name} answered HTTP {response.status_code}")
        try:
            body = response.content.decode("utf-8")
        except UnicodeDecodeError:
            raise IcbcMalformed(f"ICBC {name} answered with something other than UTF-8") from None
        reply = verify_response(body, s.icbc_gateway_public_key, s.icbc_response_sign_alg)
        echoed = reply.get("msg_id")
        if echoed not in (None, "", msg_id):
            # A signed reply to another request, replayed: never take it for this one's.
            raise IcbcSignatureError(f"ICBC {name} answered another request")
        return_code = _return_code(reply)
        if return_code != 0:
            raise business_error(return_code, reply.get("return_msg"))
        return reply


def _positive(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive number of fen")


def _same_order(reply: dict[str, Any], order_no: str) -> None:
    echoed = reply.get("out_trade_no")
    if echoed not in (None, "", order_no):
        raise IcbcMalformed("ICBC answered about another order")


def _payment_status(reply: dict[str, Any], order_no: str) -> PaymentStatus:
    _same_order(reply, order_no)
    status = PAY_STATUS.get(str(reply.get("pay_status")))
    if status is None:
        raise IcbcMalformed("ICBC sent no valid pay_status")
    return PaymentStatus(
        order_no=order_no,
        status=status,
        amount_fen=_fen(reply.get("total_amt"), "total_amt"),
        transaction_id=_optional_text(reply, "order_id"),
        paid_at=parse_icbc_time(reply.get("pay_time")) if status == "paid" else None,
    )


def _transaction(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise IcbcMalformed("ICBC sent a transaction that is not an object")
    direction = TRX_DIRECTIONS.get(str(record.get("trx_type")))
    if direction is None:
        raise IcbcMalformed("ICBC sent a transaction without a valid trx_type")
    return {
        "transaction_id": _text(record, "trx_serial"),
        "direction": direction,
        "amount_fen": _fen(record.get("trx_amt"), "trx_amt"),
        "balance_fen": _fen(record.get("balance"), "balance"),
        "summary": record.get("summary") if isinstance(record.get("summary"), str) else "",
        "occurred_at": iso(parse_icbc_time(record.get("trx_time"))),
    }

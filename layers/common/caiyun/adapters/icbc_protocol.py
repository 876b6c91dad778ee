"""The ICBC Open Platform's wire protocol: keys, signatures, AES, the signed JSON, time formats.

Shared by our client (:mod:`caiyun.adapters.icbc`) and the local bank
(:mod:`caiyun.sandbox.icbc`), so both speak one protocol; what they say in it (the fields of each
interface) is :mod:`caiyun.adapters.icbc_sheets`. Everything here follows ICBC's published SDK
samples, read for this module:

* ``DefaultIcbcClient`` (Java; its PHP port ``fatryst/icbc`` ``src/ICBC/DefaultIcbcClient.php``
  and the C# port ``Magicodes.Pay.Icbcpay``): a request is a form of ``app_id``, ``msg_id``,
  ``format=json``, ``charset=UTF-8``, ``sign_type``, ``timestamp`` (``yyyy-MM-dd HH:mm:ss``,
  GMT+8), ``biz_content`` and ``sign``, plus ``encrypt_type=AES`` when ``biz_content`` is
  encrypted. The string to sign is the URI path, ``?``, then every non-empty parameter except
  ``sign`` sorted by key as raw ``k=v`` joined by ``&`` (``WebUtils.buildOrderedSignStr``).
* ``IcbcSignature``: ``sign_type`` ``RSA`` is SHA1withRSA and ``RSA2`` is SHA256withRSA
  (PKCS#1 v1.5, base64); nothing else is RSA. Which one a request uses is the app's registration
  with ICBC (``CAIYUN_ICBC_SIGN_TYPE``).
* ``IcbcEncrypt``: ``AES`` is AES/CBC/PKCS5Padding with a zero IV, keyed by the base64-decoded
  app AES key, the ciphertext base64 (the PHP port's ``AES.php`` spells the zero IV out).
* The response check (``parseJsonWithIcbcSign``): the gateway signs the exact text of the
  ``response_biz_content`` value with ``sign_type`` RSA whatever the app's own type (the PHP
  port verifies with the app's type instead: a setting); when the
  reply is encrypted that value is a JSON string (quotes included in what is signed), decrypted
  after the check. We slice the member out of the raw body (:func:`raw_json_member`) and never
  re-serialise, which the PHP port does and which breaks on any spacing or escaping.
* ``NotifyUrlServlet`` (ICBC's notify sample): a notify is signed like a request over the
  notify URL's own path, with the algorithm its ``sign_type`` names ("上行网关签名暂时仅支持RSA"),
  its ``biz_content`` AES-encrypted when ``encrypt_type`` is ``AES``; the answer is
  ``{"response_biz_content":…,"sign_type":"…","sign":"…"}`` signed over the text between the
  outer brace and ``,"sign"`` with the app's registered sign type, its ``response_biz_content``
  encrypted (and quoted) when the notify was.
* Keys: every sample's gateway public key is 1024-bit (``MIGfMA0GCSqGSIb3…``), so only our own
  private key must reach 2048 bits. Keys may be PEM or the bare base64 DER ICBC's tools print.

``cryptography`` is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Literal

from caiyun.clock import SHANGHAI

SignType = Literal["RSA", "RSA2"]
SignAlg = Literal["SHA1", "SHA256"]
# sign_type -> the digest of its RSA signature (IcbcSignature); nothing else is accepted.
SIGN_ALGS: dict[str, SignAlg] = {"RSA": "SHA1", "RSA2": "SHA256"}
# The gateway signs its replies with sign_type RSA whatever the app registered.
GATEWAY_REPLY_ALG: SignAlg = "SHA1"
ENCRYPT_AES = "AES"
CHARSET = "UTF-8"
FORMAT = "json"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# return_code values with a meaning of their own, and whether repeating the call may help.
# ICBC publishes no table of them: these are the names the local bank answers with, and anything
# else non-zero becomes ``ICBC_<code>``, not retryable.
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
    3006: ("NAME_MISMATCH", False),
    4001: ("ACCOUNT_NOT_FOUND", False),
    4002: ("BALANCE_INSUFFICIENT", False),
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
_AES_KEY_BYTES = (16, 24, 32)
_AES_BLOCK_BITS = 128


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


# Our own key signs money movements: 2048 bits at least. ICBC's gateway key is 1024 bits in
# every published sample (and in the notify captured from the live gateway), so it is only
# required to be a readable RSA key of the size ICBC hands out.
_MIN_PRIVATE_BITS = 2048
_MIN_GATEWAY_BITS = 1024


def key_problems(private_pem: str, public_pem: str) -> list[str]:
    """Why these ICBC keys cannot be used (unreadable, not RSA, too short: our private key
    under 2048 bits, ICBC's gateway key under 1024; the gateway key equal to ours); empty when
    they are fine. Never repeats the key text."""
    problems = []
    loaded = []
    for name, load, text, floor in (
        ("CAIYUN_ICBC_PRIVATE_KEY", _private_key, private_pem, _MIN_PRIVATE_BITS),
        ("CAIYUN_ICBC_GATEWAY_PUBLIC_KEY", _public_key, public_pem, _MIN_GATEWAY_BITS),
    ):
        try:
            key = load(text)
        except IcbcError:
            problems.append(f"{name} is not a readable RSA key")
            continue
        loaded.append(key)
        if key.key_size < floor:
            problems.append(f"{name} must be an RSA key of at least {floor} bits")
    # Verifying ICBC with our own key would accept notifies anyone holding our key signs.
    if len(loaded) == 2 and loaded[0].public_key().public_numbers() == loaded[1].public_numbers():
        problems.append(
            "CAIYUN_ICBC_GATEWAY_PUBLIC_KEY is our own key's public half, not ICBC's gateway key"
        )
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


def rsa_sign(text: str, private_key_pem: str, alg: SignAlg) -> str:
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


def sign_params(
    path: str, params: dict[str, str], private_key_pem: str, sign_type: SignType
) -> str:
    """The ``sign`` of a request (or of a notify, on ICBC's side) to ``path``, with the
    algorithm ``sign_type`` names."""
    return rsa_sign(signing_string(path, params), private_key_pem, SIGN_ALGS[sign_type])


# AES, as IcbcEncrypt does it.


def _aes_cipher(key_b64: str) -> Any:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    try:
        key = base64.b64decode("".join(key_b64.split()), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) not in _AES_KEY_BYTES:
        # The key text is never echoed: it is a secret.
        raise IcbcError("CONFIG", "the ICBC AES key is not base64 of 16, 24 or 32 bytes")
    return Cipher(algorithms.AES(key), modes.CBC(bytes(16)))


def aes_problems(key_b64: str) -> list[str]:
    """Why this app AES key cannot be used; empty when it is fine."""
    try:
        _aes_cipher(key_b64)
    except IcbcError:
        return ["CAIYUN_ICBC_AES_KEY must be base64 of 16, 24 or 32 bytes"]
    return []


def aes_encrypt(text: str, key_b64: str) -> str:
    """Base64 of AES/CBC/PKCS5Padding (zero IV) over the UTF-8 bytes of ``text``."""
    from cryptography.hazmat.primitives import padding

    padder = padding.PKCS7(_AES_BLOCK_BITS).padder()
    plain = padder.update(text.encode("utf-8")) + padder.finalize()
    encryptor = _aes_cipher(key_b64).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")


def aes_decrypt(text: str, key_b64: str) -> str:
    """The text :func:`aes_encrypt` sealed; IcbcMalformed when it is not such a ciphertext."""
    from cryptography.hazmat.primitives import padding

    decryptor = _aes_cipher(key_b64).decryptor()
    unpadder = padding.PKCS7(_AES_BLOCK_BITS).unpadder()
    try:
        sealed = base64.b64decode("".join(text.split()), validate=True)
        plain = decryptor.update(sealed) + decryptor.finalize()
        return (unpadder.update(plain) + unpadder.finalize()).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise IcbcMalformed("ICBC's encrypted content does not decrypt with our AES key") from None


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


def verify_response(
    body: str, public_key_pem: str, alg: SignAlg = GATEWAY_REPLY_ALG, aes_key: str | None = None
) -> dict[str, Any]:
    """The verified ``response_biz_content`` of a gateway reply, parsed from the signed text.

    The signature (``alg``withRSA: SHA1, the gateway's own type, in the Java SDK; the PHP port
    uses the app's type, hence ``CAIYUN_ICBC_RESPONSE_SIGN_ALG``) covers the member's exact
    text; a string there is an encrypted reply, decrypted with ``aes_key`` after the check.
    """
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
    value = json.loads(signed)
    if isinstance(value, str):
        if not aes_key:
            raise IcbcMalformed("ICBC's reply is encrypted and no AES key is set")
        value = _json_object(aes_decrypt(value, aes_key), "response_biz_content")
    if not isinstance(value, dict):
        raise IcbcMalformed("ICBC's response_biz_content is not an object")
    return value


def _json_object(text: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise IcbcMalformed(f"ICBC's {name} is not JSON") from None
    if not isinstance(value, dict):
        raise IcbcMalformed(f"ICBC's {name} is not a JSON object")
    return value


def read_biz(text: str, encrypted: bool, aes_key: str | None, name: str) -> dict[str, Any]:
    """A ``biz_content`` as a JSON object, decrypted first when ``encrypted``."""
    if encrypted:
        if not aes_key:
            raise IcbcMalformed(f"{name} is encrypted and no AES key is set")
        text = aes_decrypt(text, aes_key)
    return _json_object(text, name)


def compact_json(value: Any) -> str:
    """JSON as ICBC's SDKs write it: no spaces, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def notify_reply_text(
    biz: dict[str, Any],
    private_key_pem: str,
    sign_type: SignType,
    aes_key: str | None = None,
) -> str:
    """The signed JSON answer to a notify (see the module docstring for the signed span);
    with ``aes_key`` its ``response_biz_content`` is encrypted, as for an encrypted notify."""
    biz_text = compact_json(biz)
    if aes_key:
        biz_text = json.dumps(aes_encrypt(biz_text, aes_key))
    span = f'"response_biz_content":{biz_text},"sign_type":"{sign_type}"'
    signature = rsa_sign(span, private_key_pem, SIGN_ALGS[sign_type])
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


def fen_value(value: Any, name: str) -> int:
    """A fen amount ICBC sent as a number or a digit string (never a bool or a float)."""
    if isinstance(value, int) and not isinstance(value, bool):
        amount = value
    elif isinstance(value, str) and value.isdigit():
        amount = int(value)
    else:
        raise IcbcMalformed(f"ICBC sent no valid {name}")
    if amount < 0:
        raise IcbcMalformed(f"ICBC sent a negative {name}")
    return amount


def return_code_of(biz: dict[str, Any], name: str = "return_code") -> int:
    """ICBC's return code (a number, or a digit string, depending on the interface)."""
    value = biz.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise IcbcMalformed(f"ICBC sent no valid {name}")


def required_text(biz: dict[str, Any], name: str) -> str:
    """A required non-empty text field of ICBC's answer."""
    value = biz.get(name)
    if not isinstance(value, str) or not value:
        raise IcbcMalformed(f"ICBC sent no {name}")
    return value


def optional_text(biz: dict[str, Any], name: str) -> str | None:
    """A text field of ICBC's answer, None when absent or empty."""
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

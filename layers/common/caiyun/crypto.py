"""Personal data: AES-256-GCM for ID and card numbers at rest, and how phone, ID and card
numbers are masked in replies."""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caiyun.settings import Settings


_NONCE_BYTES = 12


def encrypt(settings: Settings, plaintext: str, context: str) -> str:
    """Encrypt ``plaintext``; ``context`` (e.g. the field name) is bound in as associated data
    so a ciphertext cannot be moved into another field."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(settings.data_key_bytes()).encrypt(
        nonce, plaintext.encode("utf-8"), context.encode("utf-8")
    )
    return "v1:" + base64.b64encode(nonce + sealed).decode("ascii")


def decrypt(settings: Settings, token: str, context: str) -> str:
    """Decrypt what :func:`encrypt` sealed with the same context."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = base64.b64decode(token.removeprefix("v1:"))
    plain = AESGCM(settings.data_key_bytes()).decrypt(
        raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode("utf-8")
    )
    return plain.decode("utf-8")


def mask_id_number(value: str) -> str:
    """``440301199001011234`` → ``4403**********1234``."""
    return f"{value[:4]}{'*' * (len(value) - 8)}{value[-4:]}"


def mask_card(value: str) -> str:
    """``6222020000000000001`` → ``6222 **** **** 0001``."""
    return f"{value[:4]} **** **** {value[-4:]}"


def mask_phone(phone: str | None) -> str | None:
    """``13800000000`` → ``138****0000``: how another person's phone is shown."""
    if not phone or len(phone) != 11:
        return phone
    return f"{phone[:3]}****{phone[-4:]}"

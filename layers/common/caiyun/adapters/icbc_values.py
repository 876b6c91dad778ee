"""What ICBC's answers mean, without the client: the values our ICBC client returns, the codes
ICBC's fields carry, and the readers that turn ICBC's fields into them.

Kept apart from :mod:`caiyun.adapters.icbc` (the client: requests, signing, the HTTP session) so
that the domain and the local bank read ICBC's values without loading the client. The codes
follow ICBC's interface sheets as :mod:`caiyun.adapters.icbc_sheets` records them (the order
query's ``pay_status`` 0–7, JFT's ``acctLevel`` and ``trxType``), and the ``wx_data_package``
spellings the public clients of ``consumepurchase/V1`` read.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from caiyun.adapters import icbc_sheets as sheets
from caiyun.adapters.icbc_protocol import (
    IcbcMalformed,
    fen_value,
    optional_text,
    parse_icbc_time,
    required_text,
)
from caiyun.clock import iso

PaymentState = Literal[
    "pending", "paid", "failed", "revoked", "revoking", "refunded", "partly_refunded", "refunding"
]
AccountClass = Literal["I", "II", "III"]
NoticeKind = Literal["payment", "wallet_payment", "wallet_open"]

PAY_MODE_WECHAT = "9"
ACCESS_TYPE_MINIPROGRAM = "9"
# The order query's pay_status, every documented value.
PAY_STATUS: dict[str, PaymentState] = {
    "0": "pending",
    "1": "paid",
    "2": "failed",
    "3": "revoked",
    "4": "revoking",
    "5": "refunded",
    "6": "partly_refunded",
    "7": "refunding",
}
ACCOUNT_LEVELS: dict[str, AccountClass] = {"1": "I", "2": "II", "3": "III"}
# trx_type of an account transaction (ours).
TRX_DIRECTIONS: dict[str, str] = {"1": "in", "2": "out"}
_SERIAL_CHARS = 16


@dataclass(frozen=True)
class PaymentStatus:
    """ICBC's word on one order."""

    order_no: str
    status: PaymentState
    amount_fen: int
    transaction_id: str | None
    paid_at: datetime | None


@dataclass(frozen=True)
class AccountInfo:
    """The ICBC account a verified person pays from: a JFT e-wallet (Class II or III, its own
    number) or their ICBC Class I card (no separate number: ``wallet_no`` is None)."""

    wallet_no: str | None
    account_class: AccountClass
    bound_card_masked: str | None


@dataclass(frozen=True)
class OpeningResult:
    """The outcome of an opening: ``opened`` (with the account), ``pending`` (ICBC's notify
    will tell) or ``refused``."""

    serial: str
    status: Literal["opened", "pending", "refused"]
    account: AccountInfo | None
    reason: str | None = None


@dataclass(frozen=True)
class Notice:
    """A verified notify: which of our interfaces it reports on and its ``biz_content``."""

    kind: NoticeKind
    msg_id: str
    biz: dict[str, Any]
    encrypted: bool


@dataclass(frozen=True)
class NotifyPayload:
    """A verified payment result: ``success`` is a paid order; ``raw`` is biz_content."""

    msg_id: str
    order_no: str
    amount_fen: int
    success: bool
    transaction_id: str | None
    paid_at: datetime | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class Person:
    """Who an opening or an agreement is for, as the bank must see them."""

    name: str
    id_number: str
    phone: str


def corp_serial(app_id: str) -> str:
    """A new JFT ``corpSerno``: the 20-digit app id and a serial of ours (36 at most)."""
    return app_id + secrets.token_hex(_SERIAL_CHARS // 2).upper()


def gender_of(id_number: str) -> int:
    """1 (male) or 2 (female), from the 17th digit of a resident ID number (GB 11643)."""
    return 1 if int(id_number[16]) % 2 else 2


def request_payment_of(package_text: str) -> dict[str, str]:
    """The arguments of ``wx.requestPayment`` from ICBC's ``wx_data_package``."""
    try:
        package = json.loads(package_text)
    except ValueError:
        raise IcbcMalformed("ICBC's wx_data_package is not JSON") from None
    if not isinstance(package, dict):
        raise IcbcMalformed("ICBC's wx_data_package is not an object")
    spellings = {
        "timeStamp": ("timeStamp", "timestamp"),
        "nonceStr": ("nonceStr", "noncestr"),
        "package": ("package",),
        "signType": ("signType", "signtype", "sign_type"),
        "paySign": ("paySign", "sign"),
    }
    found = {}
    for name, keys in spellings.items():
        value = next((package[k] for k in keys if package.get(k) not in (None, "")), None)
        if value is None:
            raise IcbcMalformed(f"ICBC's wx_data_package has no {name}")
        found[name] = str(value)
    return found


def pay_amount_text(amount_fen: int, style: sheets.PayStyle) -> str:
    """An amount as the wallet-pay style writes it: fen digits, or yuan with two decimals."""
    if sheets.PAY_STYLES[style]["amount"] == "fen":
        return str(amount_fen)
    return f"{Decimal(amount_fen) / 100:.2f}"


def pay_amount_fen(value: Any, style: sheets.PayStyle) -> int:
    """The fen of an amount written in the wallet-pay style."""
    if sheets.PAY_STYLES[style]["amount"] == "fen":
        return fen_value(value, "tranAmt")
    if not isinstance(value, str) or sheets.problems(
        {"tranAmt": sheets.req("yuan")}, {"tranAmt": value}, style
    ):
        raise IcbcMalformed("ICBC sent no valid tranAmt")
    return int(Decimal(value) * 100)


def account_of(biz: dict[str, Any]) -> AccountInfo:
    """The account an opening reports, from its ``acctLevel``, ``acctNo`` and ``bindMedium``."""
    account_class = ACCOUNT_LEVELS.get(str(biz.get("acctLevel")))
    if account_class is None:
        raise IcbcMalformed("ICBC sent no valid acctLevel")
    wallet_no = optional_text(biz, "acctNo")
    if account_class != "I" and wallet_no is None:
        raise IcbcMalformed("ICBC opened an e-wallet without its number")
    return AccountInfo(
        wallet_no=wallet_no if account_class != "I" else None,
        account_class=account_class,
        bound_card_masked=optional_text(biz, "bindMedium"),
    )


def transaction_of(record: Any) -> dict[str, Any]:
    """One record of an account's transaction details, as our reply lists it."""
    if not isinstance(record, dict):
        raise IcbcMalformed("ICBC sent a transaction that is not an object")
    direction = TRX_DIRECTIONS.get(str(record.get("trxType")))
    if direction is None:
        raise IcbcMalformed("ICBC sent a transaction without a valid trxType")
    summary = record.get("summary")
    return {
        "transaction_id": required_text(record, "trxSerno"),
        "direction": direction,
        "amount_fen": fen_value(record.get("trxAmt"), "trxAmt"),
        "balance_fen": fen_value(record.get("balance"), "balance"),
        "summary": summary if isinstance(summary, str) else "",
        "occurred_at": iso(parse_icbc_time(record.get("trxTime"))),
    }

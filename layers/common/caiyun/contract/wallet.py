"""The real-name and wallet actions of the account function (ICBC)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictStr, StringConstraints

from caiyun.contract.bind_house import PersonName
from caiyun.contract.common import CardNo, Flag, IdNumber, PageRequest, Phone, Reply, Request

Ticket = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]
BankSmsCode = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9]{6}$")]


class RealnameStart(Request):
    """``card``: an ICBC Class I debit card. ``wallet``: open an ICBC e-wallet linked to a card
    of another bank. ICBC sends a code to ``bank_phone`` (the phone the bank has on file)."""

    method: Literal["card", "wallet"]
    name: PersonName
    id_number: IdNumber
    card_no: CardNo
    bank_phone: Phone


class RealnameStartReply(Reply):
    ticket: str


class RealnameConfirm(Request):
    ticket: Ticket
    sms_code: BankSmsCode
    agreements: Annotated[
        list[Literal["wallet_service", "autodebit", "privacy"]], Field(max_length=3)
    ]
    autodebit: Flag


class WalletSummary(Reply):
    wallet_no: str
    wallet_class: str
    linked_card: str
    autodebit: bool
    realname: str | None


class Wallet(WalletSummary):
    balance_fen: int


class WalletTransactions(PageRequest):
    """ICBC's transaction details for the wallet."""


class TransactionsReply(Reply):
    items: list[dict[str, Any]]
    total: int
    page: int
    page_size: int


class SetAutodebit(Request):
    enabled: Flag

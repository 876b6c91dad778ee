"""The real-name, ICBC account and auto-debit actions of the account function."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Field, StrictStr, StringConstraints, field_validator, model_validator

from caiyun.contract.bind_house import PersonName
from caiyun.contract.common import CardNo, Flag, IdNumber, PageRequest, Phone, Reply, Request

Ticket = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]
BankSmsCode = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9]{6}$")]
# ICBC's occupation codes (JFT openacct/V2): 1 civil servant, 2 public institution, 3 company
# employee, 4 army or police, 5 worker, 6 farmer, 7 manager, 8 technician, 9 private business
# owner, 10 arts or sports, 11 freelance, 12 student, 13 none.
Occupation = Literal[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
IdValidity = Annotated[
    StrictStr,
    StringConstraints(pattern=r"^([0-9]{4}-[0-9]{2}-[0-9]{2}|long_term)$"),
]


class RealnameStart(Request):
    """``card``: verify with an ICBC Class I debit card, which is then the account you pay from
    (no separate wallet number). ``wallet``: open an ICBC e-wallet of ``wallet_class`` II or
    III, linked to ``card_no``, a card of any bank. ``name`` must be the name the property
    recorded for you. ICBC sends a code to ``bank_phone`` (the phone the bank has on file).
    ``occupation`` is ICBC's code (1 civil servant, 2 public institution, 3 company employee,
    4 army or police, 5 worker, 6 farmer, 7 manager, 8 technician, 9 private business owner,
    10 arts or sports, 11 freelance, 12 student, 13 none); ``id_valid_until`` the ID card's
    expiry date, or ``long_term``."""

    method: Literal["card", "wallet"]
    wallet_class: Literal["II", "III"] | None = None
    name: PersonName
    id_number: IdNumber
    card_no: CardNo
    bank_phone: Phone
    occupation: Occupation
    id_valid_until: IdValidity

    @field_validator("id_valid_until")
    @classmethod
    def _real_date(cls, value: str) -> str:
        if value != "long_term":
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValueError("不是有效的日期") from None
        return value

    @model_validator(mode="after")
    def _class_for_wallets(self) -> RealnameStart:
        if self.method == "wallet" and self.wallet_class is None:
            raise ValueError("开通电子钱包须选择二类或三类账户（wallet_class）")
        if self.method == "card" and self.wallet_class is not None:
            raise ValueError("一类卡认证不开立电子钱包，请勿填写 wallet_class")
        return self


class RealnameStartReply(Reply):
    ticket: str


class RealnameResend(Request):
    """Have ICBC text the verification code of ``ticket`` again."""

    ticket: Ticket


class RealnameConfirm(Request):
    """``agreements`` must include every agreement ``login.config`` marks required for the
    method (by default ``wallet_service`` and ``privacy``); a missing one is refused as
    ``details.fields["agreements.<code>"]``. ``autodebit: true`` also
    starts signing the auto-debit agreement: ICBC then texts a second code, to be sent with
    ``set_autodebit`` and ``autodebit_ticket``."""

    ticket: Ticket
    sms_code: BankSmsCode
    agreements: Annotated[
        list[Literal["wallet_service", "autodebit", "privacy"]], Field(max_length=3)
    ]
    autodebit: Flag


class WalletSummary(Reply):
    """The ICBC account paid from. ``account_kind`` ``wallet``: an e-wallet, ``wallet_no`` its
    number (in full: it is yours); ``card``: your ICBC Class I card, no separate number.
    ``realname`` is the verified name; the ID number only ever shows masked."""

    account_kind: Literal["wallet", "card"]
    account_kind_name: str
    wallet_no: str | None
    wallet_class: Literal["I", "II", "III"]
    wallet_class_name: str
    linked_card: str | None
    autodebit: bool
    realname: str | None
    id_number_masked: str | None


class RealnameResult(Reply):
    """``verified`` with the account, or ``pending`` while ICBC opens it (its notify completes
    the verification; ``profile`` shows it done)."""

    status: Literal["verified", "pending"]
    status_name: str
    wallet: WalletSummary | None
    autodebit_ticket: str | None = None


class Wallet(WalletSummary):
    balance_fen: int


class WalletTransactions(PageRequest):
    """ICBC's transaction details for the account."""


class TransactionsReply(Reply):
    items: list[dict[str, Any]]
    total: int
    page: int
    page_size: int


class AgreementTerms(Reply):
    name: str
    version: str
    limit_fen: int
    end_date: str


class AutodebitTicket(Reply):
    """ICBC texted a code to the bank phone (``sent_to``, masked) for the auto-debit
    agreement: show ``agreement``, then call ``set_autodebit`` with the ticket and code."""

    ticket: str
    agreement: AgreementTerms
    sent_to: str | None


class SetAutodebit(Request):
    """``enabled: false`` turns auto-debit off at once. ``enabled: true`` signs the agreement:
    it needs ``ticket`` (from ``autodebit_start``), ``sms_code`` (the code ICBC texted) and
    ``"autodebit"`` in ``agreements``."""

    enabled: Flag
    ticket: Ticket | None = None
    sms_code: BankSmsCode | None = None
    agreements: Annotated[list[Literal["autodebit"]], Field(max_length=1, default_factory=list)]

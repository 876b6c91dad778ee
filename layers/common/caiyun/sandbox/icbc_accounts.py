"""The local bank's account counter: the JFT interfaces that open, verify, query and pay from an
ICBC account, and the entrusted-debit (代扣) ones that sign an agreement and charge under it.

:class:`caiyun.sandbox.icbc.FakeIcbc` checks each request (sheet, signature, AES, msg_id) and
hands its ``biz_content`` to the method named after its sheet
(:mod:`caiyun.adapters.icbc_sheets`), which answers with the fields that sheet lists; the money
and the accounts are :class:`SandboxBank`'s.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import date
from typing import Any

from pymongo import ReturnDocument

from caiyun.adapters import icbc_sheets as sheets
from caiyun.adapters.icbc_protocol import icbc_time
from caiyun.adapters.icbc_values import ACCOUNT_LEVELS, pay_amount_fen, pay_amount_text
from caiyun.checksums import luhn_valid, resident_id_valid
from caiyun.clock import business_date
from caiyun.sandbox.icbc_bank import (
    AGREEMENTS,
    CODE_TTL,
    ICBC_CARD_PREFIX,
    MAX_CODE_TRIES,
    ORDERS,
    Refusal,
    SandboxBank,
    aware,
    compact_time,
    digest,
    digits,
    order_id_at,
)

Reply = dict[str, Any]

LEVEL_CODES: dict[str, str] = {level: code for code, level in ACCOUNT_LEVELS.items()}


class AccountInterfaces:
    """The account and auto-debit interfaces of one gateway, over its bank.

    ``user_pro_flags`` maps each account class to the ``userProFlag`` the app opens it with;
    ``wallet_pay_style`` is how the app writes wallet-pay amounts; ``openings_pending`` answers
    a confirmed opening "still being opened" (the result then comes by notify).
    """

    def __init__(
        self,
        bank: SandboxBank,
        *,
        user_pro_flags: dict[str, str],
        wallet_pay_style: sheets.PayStyle,
        openings_pending: bool,
    ) -> None:
        self.bank = bank
        self.user_pro_flags = user_pro_flags
        self.wallet_pay_style: sheets.PayStyle = wallet_pay_style
        self.openings_pending = openings_pending

    def _class_of(self, flag: str) -> str:
        classes = [name for name, value in self.user_pro_flags.items() if value == flag]
        if not classes:
            raise Refusal("REQUEST_INVALID", "userProFlag opens no account for this app")
        return classes[0]

    def wallet_open(self, biz: Reply) -> Reply:
        """``openacct``: record the opening and text its code to the bank phone."""
        account_class = self._class_of(biz["userProFlag"])
        id_number, card_no = biz["certNo"], biz["bindMedium"]
        if not resident_id_valid(id_number):
            raise Refusal("ID_NUMBER_INVALID", "certNo invalid")
        if not luhn_valid(card_no):
            raise Refusal("CARD_INVALID", "bindMedium invalid")
        if account_class == "I" and not card_no.startswith(ICBC_CARD_PREFIX):
            raise Refusal("NOT_ICBC_CARD", "not an ICBC class I debit card")
        now = self.bank.clock.now()
        opening = {
            "_id": biz["corpSerno"],
            "account_class": account_class,
            "name": biz["custName"],
            "id_hash": digest(id_number),
            "card_hash": digest(card_no),
            "card_masked": f"{card_no[:4]}********{card_no[-4:]}",
            "phone": biz["mobileNo"],
            "notify_addr": biz["notifyAddr"],
            "used": False,
            "created_at": now,
        }
        return {"corpSerno": opening["_id"], "smsSendNo": self.bank.begin_opening(opening)}

    def wallet_sendmsg(self, biz: Reply) -> Reply:
        """``openacctsendmsg``: text the opening a new code."""
        serial = biz["corpSernoOriginal"]
        if not self.bank.awaits_code(serial):
            raise Refusal("REQUEST_INVALID", "corpSernoOriginal is no opening awaiting a code")
        return {"smsSendNo": self.bank.text_code(serial)}

    def wallet_checksms(self, biz: Reply) -> Reply:
        """``checksms``: check the code and open the account (or leave it pending)."""
        serial = biz["corpSernoOriginal"]
        opening = self.bank.confirm_opening(serial, biz["smsSendNo"], biz["smsScode"])
        if self.openings_pending:
            return {"corpSernoOriginal": serial, "openStatus": "2"}
        account = self.bank.open(opening)
        return {
            "corpSernoOriginal": serial,
            "openStatus": "0",
            "acctNo": account["wallet_no"] or "",
            "acctLevel": LEVEL_CODES[account["account_class"]],
            "bindMedium": account["bound_card_masked"],
        }

    def wallet_balance(self, biz: Reply) -> Reply:
        """``balance``: the account's balance."""
        account = self.bank.account(biz["acctNo"])
        return {"acctNo": biz["acctNo"], "balance": str(account["balance_fen"])}

    def wallet_transactions(self, biz: Reply) -> Reply:
        """``transactions``: a page of the account's details, newest first."""
        account = self.bank.account(biz["acctNo"])
        page, page_size = int(biz["pageNo"]), int(biz["pageSize"])
        if page < 1 or not 1 <= page_size <= 100:
            raise Refusal("REQUEST_INVALID", "pageNo from 1, pageSize 1 to 100")
        records, total = self.bank.transactions(account["_id"], page, page_size)
        return {
            "totalNum": str(total),
            "records": [
                {
                    "trxSerno": r["_id"],
                    "trxType": r["trx_type"],
                    "trxAmt": str(r["amount_fen"]),
                    "balance": str(r["balance_fen"]),
                    "summary": r["summary"],
                    "trxTime": icbc_time(aware(r["at"])),
                }
                for r in records
            ],
        }

    # Paying from the account.

    def wallet_pay(self, biz: Reply) -> Reply:
        """``walletorderfin``: pay an order from the account (a retry answers the first outcome)."""
        order_no = biz["orderId"]
        amount = pay_amount_fen(biz["tranAmt"], self.wallet_pay_style)
        key = self.bank.account(biz["baseAcctNo"])["_id"]
        existing = self.bank.db[ORDERS].find_one({"_id": order_no})
        if existing is not None:
            # A retried payment answers with the first outcome and never debits twice.
            if existing.get("account_key") != key or existing["amount_fen"] != amount:
                raise Refusal("ORDER_CONFLICT", "orderId already used")
            return self._wallet_answer(existing)
        now = self.bank.clock.now()
        serial = self.bank.debit(key, amount, biz["orderName"])
        if serial is None:
            raise Refusal("BALANCE_INSUFFICIENT", "balance too small for this payment")
        order = {
            "_id": order_no,
            "order_id": serial,
            "channel": "account",
            "account_key": key,
            "amount_fen": amount,
            "subject": biz["orderName"],
            "status": "paid",
            "created_at": now,
            "expires_at": now,
            "paid_at": now,
        }
        self.bank.db[ORDERS].insert_one(order)
        return self._wallet_answer(order)

    def _wallet_answer(self, order: dict[str, Any]) -> Reply:
        return {
            "orderId": order["_id"],
            "payStatus": "1" if order["status"] == "paid" else "2",
            "trxSerno": order["order_id"],
            "tranAmt": pay_amount_text(order["amount_fen"], self.wallet_pay_style),
            "payTime": compact_time(order["paid_at"]) if order.get("paid_at") else "",
        }

    # Auto-debit.

    def autodebit_sms(self, biz: Reply) -> Reply:
        """``entrust/prtl/msg``: draft an agreement and text its code."""
        key = self.bank.holder(biz["acctNo"], biz["idNo"], biz["acctName"])["_id"]
        end = date.fromisoformat(biz["protocolEndDate"])
        if end < business_date(self.bank.clock.now()):
            raise Refusal("REQUEST_INVALID", "protocolEndDate is in the past")
        code, send_no = digits(6), digits(6)
        agreement = {
            "account_key": key,
            "limit_fen": int(biz["protocolLimitAmount"]),
            "end_date": end.isoformat(),
            "send_no": send_no,
            "code_hash": digest(biz["srVid"] + code),
            "tries": 0,
            "expires_at": self.bank.clock.now() + CODE_TTL,
        }
        updated = self.bank.db[AGREEMENTS].find_one_and_update(
            {"_id": biz["srVid"], "status": {"$ne": "active"}},
            {"$set": {**agreement, "status": "draft"}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            raise Refusal("REQUEST_INVALID", "srVid already signed")
        self.bank.sms.send(biz["mobile"], "icbc_autodebit", [code])
        return {"sendNo": send_no}

    def autodebit_agreement(self, biz: Reply) -> Reply:
        """``entrust/protocol/mng``: sign the drafted agreement, or cancel one."""
        agreement_id = biz["srVid"]
        if biz["dealFlag"] == "1":
            cancelled = self.bank.db[AGREEMENTS].find_one_and_update(
                {"_id": agreement_id},
                {"$set": {"status": "cancelled", "cancelled_at": self.bank.clock.now()}},
                return_document=ReturnDocument.AFTER,
            )
            if cancelled is None:
                raise Refusal("AGREEMENT_INVALID", "agreement not found")
            return {"srVid": agreement_id, "protocolNo": cancelled.get("protocol_no") or ""}
        key = self.bank.holder(biz["accountNo"], biz["idNo"], biz["accountName"])["_id"]
        draft = self.bank.db[AGREEMENTS].find_one_and_update(
            {
                "_id": agreement_id,
                "status": "draft",
                "send_no": biz["sendNo"],
                "account_key": key,
                "expires_at": {"$gt": self.bank.clock.now()},
                "tries": {"$lt": MAX_CODE_TRIES},
            },
            {"$inc": {"tries": 1}},
            return_document=ReturnDocument.AFTER,
        )
        code_hash = digest(agreement_id + biz["verifyCode"])
        if draft is None or not hmac.compare_digest(draft["code_hash"], code_hash):
            raise Refusal("SMS_CODE_INVALID", "verifyCode wrong, expired or used up")
        protocol_no = "PRT" + secrets.token_hex(10).upper()
        signed = self.bank.db[AGREEMENTS].find_one_and_update(
            {"_id": agreement_id, "status": "draft"},
            {
                "$set": {
                    "status": "active",
                    "protocol_no": protocol_no,
                    "limit_fen": int(biz["protocolLimitAmount"]),
                    "end_date": biz["protocolEndDate"],
                    "signed_at": self.bank.clock.now(),
                }
            },
        )
        if signed is None:
            raise Refusal("SMS_CODE_INVALID", "verifyCode already used")
        return {"srVid": agreement_id, "protocolNo": protocol_no}

    def autodebit_pay(self, biz: Reply) -> Reply:
        """The password-free debit: charge an order under a signed agreement, within its limit."""
        agreement_no, order_no = biz["prtcl_no"], biz["out_trade_no"]
        amount = int(biz["total_fee"])
        existing = self.bank.db[ORDERS].find_one({"_id": order_no})
        if existing is not None:
            # A retried charge answers with the first outcome and never debits twice.
            if existing.get("prtcl_no") != agreement_no or existing["amount_fen"] != amount:
                raise Refusal("ORDER_CONFLICT", "out_trade_no already used")
            return self._debit_answer(existing)
        today = business_date(self.bank.clock.now()).isoformat()
        agreement = self.bank.db[AGREEMENTS].find_one(
            {"protocol_no": agreement_no, "status": "active", "end_date": {"$gte": today}}
        )
        if agreement is None:
            raise Refusal("AGREEMENT_INVALID", "agreement cancelled, lapsed or unknown")
        if amount > agreement["limit_fen"]:
            raise Refusal("AUTODEBIT_LIMIT_EXCEEDED", "amount over the agreement's limit")
        now = self.bank.clock.now()
        serial = self.bank.debit(agreement["account_key"], amount, biz["body"] or "代扣")
        order = {
            "_id": order_no,
            "order_id": serial or order_id_at(now),
            "channel": "passfree",
            "prtcl_no": agreement_no,
            "account_key": agreement["account_key"],
            "amount_fen": amount,
            "subject": biz["body"],
            "status": "paid" if serial else "failed",
            "created_at": now,
            "expires_at": now,
            "paid_at": now if serial else None,
        }
        self.bank.db[ORDERS].insert_one(order)
        return self._debit_answer(order)

    def _debit_answer(self, order: dict[str, Any]) -> Reply:
        paid_at = order.get("paid_at")
        return {
            "out_trade_no": order["_id"],
            "order_id": order["order_id"],
            "pay_status": "1" if order["status"] == "paid" else "2",
            "total_amt": str(order["amount_fen"]),
            "pay_time": compact_time(paid_at) if paid_at else "",
        }

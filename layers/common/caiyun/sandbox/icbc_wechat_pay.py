"""The local bank's WeChat Pay counter: the orders a mini-program pays through ICBC.

:class:`caiyun.sandbox.icbc.FakeIcbc` checks each request (sheet, signature, AES, msg_id) and
hands the ``biz_content`` of ``consumepurchase`` and of the order query to
:meth:`WechatPayInterfaces.pay` and :meth:`WechatPayInterfaces.query`, and signs and posts the
notify whose fields :meth:`WechatPayInterfaces.notify_biz` writes. Kept apart from the gateway,
as the account interfaces are (:mod:`caiyun.sandbox.icbc_accounts`), because a WeChat Pay order
has a life of its own at the bank: placed, paid or failed when the sandbox settles it (the
payer's WeChat balance is not the bank's), closed at its ``expire_time`` on the sandbox clock,
or put by a test in any state the order query documents.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any, Literal

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from caiyun.adapters.icbc_protocol import compact_json
from caiyun.adapters.icbc_values import ACCESS_TYPE_MINIPROGRAM, PAY_MODE_WECHAT, PAY_STATUS
from caiyun.errors import AppError
from caiyun.sandbox.icbc_bank import (
    ORDERS,
    Refusal,
    SandboxBank,
    compact_time,
    digits,
    order_id_at,
)

Reply = dict[str, Any]

# The bank's own states of an order, by the query's pay_status; an unpaid order closed at its
# expiry reads as a failed payment.
_STATUS_CODES: dict[str, str] = {
    **{state: code for code, state in PAY_STATUS.items()},
    "closed": "2",
}


class WechatPayInterfaces:
    """The WeChat Pay interfaces of one gateway, over its bank, for the merchant
    ``merchant_id``."""

    def __init__(self, bank: SandboxBank, *, merchant_id: str) -> None:
        self.bank = bank
        self.merchant_id = merchant_id

    def current_order(self, order_no: str) -> dict[str, Any] | None:
        """The order as it stands now: an unpaid one closes at its expiry, on the sandbox
        clock."""
        self.bank.db[ORDERS].update_one(
            {"_id": order_no, "status": "pending", "expires_at": {"$lte": self.bank.clock.now()}},
            {"$set": {"status": "closed"}},
        )
        return self.bank.db[ORDERS].find_one({"_id": order_no})

    def pay(self, biz: Reply) -> Reply:
        """``consumepurchase``: place the order (a retry answers the same) and hand back the
        arguments of ``wx.requestPayment``."""
        if biz["pay_mode"] != PAY_MODE_WECHAT or biz["access_type"] != ACCESS_TYPE_MINIPROGRAM:
            raise Refusal("REQUEST_INVALID", "this merchant takes WeChat Pay in a mini-program")
        order_no, amount = biz["out_trade_no"], int(biz["total_fee"])
        now = self.bank.clock.now()
        order = {
            "_id": order_no,
            "order_id": order_id_at(now),
            "channel": "wechat",
            "amount_fen": amount,
            "subject": biz["body"],
            "open_id": biz["open_id"],
            "mer_url": biz["mer_url"],
            "prepay_id": "wx" + secrets.token_hex(14),
            "status": "pending",
            "created_at": now,
            "expires_at": now + timedelta(seconds=int(biz.get("expire_time") or 7200)),
            "paid_at": None,
        }
        try:
            self.bank.db[ORDERS].insert_one(order)
        except DuplicateKeyError:
            # The same order placed again (a retry) gets the same answer; anything else clashes.
            existing = self.current_order(order_no)
            if (
                existing is None
                or existing["channel"] != "wechat"
                or existing["amount_fen"] != amount
                or existing["status"] != "pending"
            ):
                raise Refusal("ORDER_CONFLICT", "out_trade_no already used") from None
            order = existing
        package = {
            "appid": biz["shop_appid"],
            "timestamp": str(int(now.timestamp())),
            "noncestr": secrets.token_hex(16),
            "package": f"prepay_id={order['prepay_id']}",
            "signType": "RSA",
            "sign": secrets.token_urlsafe(48),
        }
        return {
            "out_trade_no": order_no,
            "order_id": order["order_id"],
            "total_amt": str(amount),
            "mer_id": self.merchant_id,
            "pay_mode": PAY_MODE_WECHAT,
            "access_type": ACCESS_TYPE_MINIPROGRAM,
            "trade_type": "JSAPI",
            "wx_data_package": compact_json(package),
        }

    def query(self, biz: Reply) -> Reply:
        """The order query: any order of the bank's, by its ``pay_status``."""
        order_no = biz.get("out_trade_no")
        order = self.current_order(order_no) if order_no else None
        if order is None:
            raise Refusal("ORDER_NOT_FOUND", "order not found")
        paid_at = order.get("paid_at")
        answer = {
            "out_trade_no": order["_id"],
            "order_id": order["order_id"],
            "pay_status": _STATUS_CODES[order["status"]],
            "total_amt": str(order["amount_fen"]),
            "payment_amt": str(order["amount_fen"]),
            "mer_id": self.merchant_id,
            "pay_time": compact_time(paid_at) if paid_at else "",
        }
        if order["channel"] == "wechat":
            answer |= {"access_type": ACCESS_TYPE_MINIPROGRAM, "pay_type": PAY_MODE_WECHAT}
        return answer

    def set_status(self, order_no: str, status: str) -> None:
        """Put an order in any documented state (a refund or a revocation made at the bank's
        counter, say), as the order query will then report it."""
        if status not in _STATUS_CODES:
            raise ValueError(f"unknown status {status!r}")
        updated = self.bank.db[ORDERS].update_one({"_id": order_no}, {"$set": {"status": status}})
        if updated.matched_count == 0:
            raise KeyError(order_no)

    def settle(self, order_no: str, result: Literal["success", "fail"]) -> dict[str, Any]:
        """Mark a pending WeChat Pay order paid or failed; repeating the same result is allowed
        (ICBC re-sends notifies). Raises AppError NOT_FOUND or CONFLICT."""
        target = "paid" if result == "success" else "failed"
        order = self.current_order(order_no)
        if order is None or order["channel"] != "wechat":
            raise AppError("NOT_FOUND", "工行沙箱中没有这笔待支付订单")
        if order["status"] == "pending":
            now = self.bank.clock.now()
            settled = self.bank.db[ORDERS].find_one_and_update(
                {"_id": order_no, "status": "pending"},
                {"$set": {"status": target, "paid_at": now if target == "paid" else None}},
                return_document=ReturnDocument.AFTER,
            )
            order = settled or self.bank.db[ORDERS].find_one({"_id": order_no})
        if order["status"] != target:
            raise AppError("CONFLICT", f"订单在工行沙箱中已是 {order['status']}")
        return order

    def notify_biz(self, order: dict[str, Any]) -> dict[str, str]:
        """The ``biz_content`` of the notify about a settled WeChat Pay order, with the fields
        (all strings) of the notify captured from the live gateway."""
        paid = order["status"] == "paid"
        paid_at = order.get("paid_at")
        amount = str(order["amount_fen"])
        return {
            "access_type": ACCESS_TYPE_MINIPROGRAM,
            "attach": "",
            "bank_disc_amt": "0",
            "card_flag": "",
            "card_kind": "",
            "card_no": "",
            "coupon_amt": "0",
            "cust_id": "",
            "decr_flag": "",
            "ecoupon_amt": "0",
            "mer_disc_amt": "0",
            "mer_id": self.merchant_id,
            "msg_id": digits(27),
            "open_id": order.get("open_id") or "",
            "order_id": order["order_id"],
            "out_trade_no": order["_id"],
            "pay_time": compact_time(paid_at) if paid and paid_at else "",
            "pay_type": PAY_MODE_WECHAT,
            "payment_amt": amount,
            "point_amt": "0",
            "return_code": "0" if paid else "1",
            "return_msg": "交易成功" if paid else "交易失败",
            "third_party_coupon_amt": "0",
            "third_party_discount_amt": "0",
            "third_trade_no": order.get("third_trade_no", ""),
            "total_amt": amount,
            "total_disc_amt": "0",
        }

    def notify_delivered(self, order_no: str, acknowledged: bool) -> None:
        """Count a notify posted about the order, and whether the merchant acknowledged it."""
        self.bank.db[ORDERS].update_one(
            {"_id": order_no},
            {"$inc": {"notify_attempts": 1}, "$set": {"notify_acknowledged": acknowledged}},
        )

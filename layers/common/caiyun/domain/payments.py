"""Payment orders through ICBC: lock bills into an order, settle it exactly once.

The order is written to the database before ICBC is called, so a late or repeated notify always
finds it. A resident pays with WeChat Pay acquired by ICBC (the app opens WeChat's payment with
what ICBC returned, and ICBC's notify settles the order) or from their ICBC account (the
e-wallet, or the Class I card they verified with: ICBC debits it at once); the timer charges
accounts whose owner signed the auto-debit agreement (:mod:`caiyun.domain.autodebit_charges`).
An order is settled by ICBC's notify, by ICBC's immediate answer, or, when neither came, by
asking ICBC again; all go through :func:`apply_result`, whose first step is one conditional
update that only one caller can win however many notifies race. A second successful payment for
a settled order settles nothing more: it is flagged for refund
(:mod:`caiyun.domain.payment_issues`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from caiyun import labels
from caiyun.adapters.icbc_protocol import IcbcError
from caiyun.clock import SHANGHAI, iso
from caiyun.domain import bills, idempotency, messaging, payment_issues, realname
from caiyun.domain.lifecycles import ORDER
from caiyun.errors import AppError
from caiyun.money import yuan
from caiyun.services import Services
from caiyun.stores import bills as bill_store
from caiyun.stores import memberships as membership_store
from caiyun.stores import orders as store
from caiyun.stores.accounts import Account
from caiyun.stores.bills import Bill
from caiyun.stores.orders import Order, OrderStatus, PayMethod

MAX_BILLS_PER_ORDER = 50


@dataclass(frozen=True)
class BankResult:
    """What ICBC says happened to an order, from a notify, its answer or a query."""

    order_no: str
    status: OrderStatus
    amount_fen: int
    transaction_id: str | None
    paid_at: datetime | None

    @classmethod
    def of(cls, status: Any) -> BankResult:
        """From the client's PaymentStatus of a paid or failed order."""
        state: OrderStatus = "paid" if status.status == "paid" else "failed"
        return cls(status.order_no, state, status.amount_fen, status.transaction_id, status.paid_at)


def _new_order_no(now: datetime) -> str:
    return "CY" + now.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S") + secrets.token_hex(4).upper()


def _bank_unavailable() -> AppError:
    return AppError("UNAVAILABLE", "银行服务暂时不可用，请稍后重试", {"retryable": True})


def view(order: Order) -> dict[str, Any]:
    """An order as the payer sees it, with what the app does next (``icbc.pay_with``)."""
    icbc: dict[str, Any] = order.get("icbc") or {}
    pay_with, kind = icbc.get("pay_with", "account"), icbc.get("account_kind")
    return {
        "order_no": order["_id"],
        "status": order["status"],
        "status_name": labels.name("order_status", order["status"]),
        "amount_fen": order["amount_fen"],
        "method": order["method"],
        "bill_ids": order["bill_ids"],
        "created_at": iso(order["created_at"]),
        "expires_at": iso(order["expires_at"]),
        "paid_at": iso(order.get("paid_at")),
        "icbc": {
            "pay_with": pay_with,
            "pay_with_name": labels.name("pay_with", pay_with),
            "order_id": icbc.get("order_id"),
            "request_payment": icbc.get("request_payment"),
            "account_kind": kind,
            "account_kind_name": None if kind is None else labels.name("bank_method", kind),
        },
    }


def _payable_bills(services: Services, account: Account, bill_ids: list[str]) -> list[Bill]:
    # The bills with their houses' members joined in: who may pay them, in the same command.
    found = bill_store.with_members(services.db, bill_ids, members=membership_store.MEMBERSHIPS)
    if len(found) != len(bill_ids):
        raise AppError("NOT_FOUND", "账单不存在")
    payers = [{m["account_id"] for m in b.pop("_members")} for b in found]
    if any(account["_id"] not in allowed for allowed in payers):
        raise AppError("FORBIDDEN", "只能支付自己房屋的账单")
    if any(b["status"] != "unpaid" for b in found):
        raise AppError("BILL_NOT_PAYABLE", "账单已支付或正在支付中")
    if len({b["community_id"] for b in found}) != 1:
        raise AppError(
            "INVALID_ARGUMENT", "一次只能支付同一小区的账单", {"fields": {"bill_ids": "跨小区"}}
        )
    return cast(list[Bill], found)


def _new_order(
    services: Services,
    account: Account,
    found: list[Bill],
    method: PayMethod,
    **extra: Any,
) -> Order:
    """The order for ``found`` (with ``extra`` fields), not yet written."""
    now = services.clock.now()
    order: Order = {
        "_id": _new_order_no(now),
        "account_id": account["_id"],
        "community_id": found[0]["community_id"],
        "house_ids": sorted({b["house_id"] for b in found}),
        "bill_ids": [b["_id"] for b in found],
        "amount_fen": sum(b["amount_fen"] for b in found),
        "method": method,
        "status": "pending",
        "created_at": now,
        "expires_at": now + timedelta(seconds=services.settings.order_ttl_s),
    }
    return cast(Order, {**order, **extra})


def _place(services: Services, order: Order, found: list[Bill]) -> None:
    """Write the order, then lock its bills into it (all or none)."""
    db = services.db
    store.insert(db, order)
    if not bill_store.lock_for_order(db, found, order["_id"]):
        close(services, order["_id"], "closed")
        raise AppError("BILL_NOT_PAYABLE", "账单正在被其他人支付")


def place_order(
    services: Services,
    account: Account,
    found: list[Bill],
    method: PayMethod,
    **extra: Any,
) -> Order:
    """Write the order (with ``extra`` fields) and lock its bills into it, before ICBC is asked
    to take money: a debit happens in ICBC's answer, so the bills must be held first."""
    order = _new_order(services, account, found, method, **extra)
    _place(services, order, found)
    return order


def _check_method(account: Account, method: str) -> None:
    if method == "wechat":
        if not account.get("wx", {}).get("resident"):
            raise AppError(
                "INVALID_ARGUMENT",
                "微信支付须在业主端小程序内发起",
                {"fields": {"method": "没有可用于微信支付的 openid"}},
            )
        return
    kind = realname.account_kind(account)
    if kind != method:
        held = "工行电子钱包" if kind == "wallet" else "工行一类卡"
        raise AppError(
            "INVALID_ARGUMENT",
            f"您实名认证的账户是{held}，请选择对应的支付方式",
            {"fields": {"method": f"须为 {kind}"}},
        )


def open_order(
    services: Services,
    account: Account,
    bill_ids: list[str],
    method: Literal["wechat", "wallet", "card"],
    client_ip: str | None = None,
) -> Order:
    """Lock the bills into a new order and have ICBC take the payment: a WeChat Pay order the
    app then pays, or a debit of the payer's ICBC account, settled at once."""
    if not account.get("realname_verified"):
        raise AppError("REALNAME_REQUIRED")
    _check_method(account, method)
    found = _payable_bills(services, account, list(dict.fromkeys(bill_ids)))
    subject = f"物业费 {len(found)} 笔"
    if method == "wechat":
        return _start_wechat(services, account, found, subject, client_ip)
    icbc = {"pay_with": "account", "account_kind": method}
    order = place_order(services, account, found, method, icbc=icbc)
    return _pay_from_account(services, account, order, subject)


def pay(
    services: Services,
    account: Account,
    bill_ids: list[str],
    method: Literal["wechat", "wallet", "card"],
    client_ip: str | None,
    once: idempotency.Key | None,
) -> dict[str, Any]:
    """:func:`open_order` once per request (``once``): the same request again answers with
    the first order as it was shown, and opens nothing."""
    # The order number is made by open_order (ICBC's format), not from the claim's record id.
    return idempotency.once(
        services,
        once,
        lambda _record_id: view(open_order(services, account, bill_ids, method, client_ip)),
    )


def _start_wechat(
    services: Services,
    account: Account,
    found: list[Bill],
    subject: str,
    client_ip: str | None,
) -> Order:
    """Have ICBC open the WeChat Pay order first and write ours with its answer after.

    Nothing is paid until the app pays with what this returns, so the order and its bill lock
    may follow ICBC's answer: the order is written once, with it (``bills.order`` and
    ``open_orders`` hand it back to resume the payment). If the bills were locked by another
    payer meanwhile, the order is closed and its answer never reaches the app, so ICBC's side of
    it is never paid and expires with ``order_ttl_s``. If ICBC fails, the order is kept as
    failed (the payer can look it up) and no bill was ever locked.
    """
    client = services.icbc
    order = _new_order(services, account, found, "wechat")
    biz = client.pay_biz(
        order["_id"],
        order["amount_fen"],
        subject,
        account["wx"]["resident"],
        services.settings.order_ttl_s,
        client_ip,
    )
    try:
        placed = client.create_wechat_payment(biz)
    except IcbcError:
        store.insert(services.db, {**order, "status": "failed", "ended_at": services.clock.now()})
        raise _bank_unavailable() from None
    order["icbc"] = {"pay_with": "wechat", **placed}
    _place(services, order, found)
    return order


def _pay_from_account(services: Services, account: Account, order: Order, subject: str) -> Order:
    try:
        status = services.icbc.pay_from_account(
            order["_id"],
            realname.account_no(services, account),
            order["amount_fen"],
            subject,
            account["_id"],
        )
    except IcbcError as exc:
        if exc.retryable:
            # ICBC may or may not have debited: the order keeps its bills and the timer asks
            # again with the same order number, which never debits twice.
            return order
        close(services, order["_id"], "failed")
        raise realname.bank_error(exc) from None
    result = BankResult.of(status)
    if apply_result(services, result) == "applied" and result.status == "paid":
        return {**order, "status": "paid", "paid_at": result.paid_at or services.clock.now()}
    return _reread(services, order["_id"])


def _reread(services: Services, order_no: str) -> Order:
    order = store.get(services.db, order_no)
    assert order is not None, "orders are never deleted"
    return order


def close(
    services: Services,
    order_no: str,
    status: Literal["failed", "closed"],
    amount_fen: int | None = None,
) -> bool:
    """End a pending order without payment and release its bills; False if not pending (or,
    with ``amount_fen``, not of that amount)."""
    move = "decline" if status == "failed" else "close"
    ended = store.end(
        services.db,
        order_no,
        expects=ORDER.expects(move),
        to=ORDER.target(move),
        at=services.clock.now(),
        amount_fen=amount_fen,
    )
    if ended is None:
        return False
    bill_store.release(services.db, order_no)
    return True


Applied = Literal["applied", "duplicate", "extra_settlement", "unknown_order", "amount_mismatch"]


def _not_applied(db: Any, result: BankResult) -> tuple[Applied, Order | None]:
    """Why ICBC's word changed nothing: no such order, another amount, or already applied."""
    order = store.get(db, result.order_no)
    if order is None:
        return "unknown_order", None
    if order["amount_fen"] != result.amount_fen:
        return "amount_mismatch", order
    return "duplicate", order


def _another_payment(order: Order, result: BankResult) -> bool:
    # A success naming a bank transaction other than the one that settled the order is a
    # second payment, not the same notify again.
    first = order.get("transaction_id")
    return bool(first and result.transaction_id and result.transaction_id != first)


def apply_result(services: Services, result: BankResult, notify_id: str | None = None) -> Applied:
    """Apply ICBC's word on an order exactly once; repeating it changes nothing more.

    The order is the ledger of the money it took: the settling transaction's id, amount and
    time are set on it by the update that wins the transition, with the id of the notify that
    reported it (``notify_id``, its record in ``icbc_notifies``); any other transaction for
    it is a payment issue.

    Only on an order of the amount ICBC reports: ``unknown_order`` and ``amount_mismatch``
    change nothing. A success is recorded even on an order that had expired: the money
    arrived, so its bills are settled (or the money is flagged for refund when they were paid
    by another order meanwhile). A success with another bank transaction for an order already
    paid is ``extra_settlement``: recorded, flagged for refund, the payer told, no bill touched.
    """
    db = services.db
    if result.status != "paid":
        if close(services, result.order_no, "failed", amount_fen=result.amount_fen):
            return "applied"
        return _not_applied(db, result)[0]
    # One conditional update both finds the order and wins the transition; only when it
    # changes nothing is the order read, to tell a repeat from an unknown order or amount.
    order = store.settle(
        db,
        result.order_no,
        expects=ORDER.expects("settle"),
        to=ORDER.target("settle"),
        amount_fen=result.amount_fen,
        paid_at=result.paid_at or services.clock.now(),
        transaction_id=result.transaction_id,
        notify_id=notify_id,
    )
    outcome: Applied = "applied"
    if order is None:
        outcome, order = _not_applied(db, result)
        if order is None or outcome != "duplicate":
            return outcome
        if _another_payment(order, result):
            payment_issues.flag(
                services,
                "extra_settlement",
                str(result.transaction_id),
                order,
                result.amount_fen,
                transaction_id=result.transaction_id,
            )
            return "extra_settlement"
    # Repeated on every success so a crash between the two writes is mended by the next notify;
    # with the order's own paid_at, a repeat leaves the bills it already paid as they are.
    elsewhere = bill_store.settle(db, order["bill_ids"], order["_id"], order["paid_at"])
    if elsewhere:
        store.note(db, order["_id"], {"needs_refund": True})
        payment_issues.flag(services, "bills_paid_elsewhere", "late", order, result.amount_fen)
    _tell_paid(services, order)
    return outcome


def _tell_paid(services: Services, order: Order) -> None:
    # Sent on every success, duplicates included: the message has a fixed id, so the payer is
    # told once even when the first notify died between marking the order and telling them.
    amount = yuan(order["amount_fen"])
    if order["method"] == "autodebit":
        version = order.get("consent", {}).get("version", "")
        title = "自动扣缴成功"
        body = f"已按您签署的代扣协议（{version}版）从工行账户扣缴物业费 {amount} 元。"
    else:
        title, body = "缴费成功", f"您已成功缴纳物业费 {amount} 元。"
    messaging.deliver(
        services,
        [order["account_id"]],
        "payment",
        title=title,
        body=body,
        page=f"/pages/bills/order?order_no={order['_id']}",
        push=messaging.Push(
            "payment",
            {
                "character_string1": order["_id"],
                "amount2": f"{amount}元",
                "thing3": "物业费缴纳成功",
            },
        ),
        community_id=order["community_id"],
        message_key=f"pay-{order['_id']}",
    )


def open_orders(
    services: Services, account: Account, page: int, page_size: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of the caller's unfinished payment orders, newest first, each with the bills it
    holds (what a bill shown as ``paying`` is waiting for)."""
    found, total = store.open_page(services.db, account["_id"], page, page_size)
    items = []
    for order in found:
        held = [bills.view(b) for b in order.pop("_bills") if b["status"] == "locked"]
        items.append({**view(cast(Order, order)), "bills": held})
    return items, total


def payer_order(services: Services, account: Account, order_no: str) -> Order:
    """The caller's own order, reconciled with ICBC when its notify is overdue."""
    db = services.db
    order = store.get(db, order_no, payer=account["_id"])
    if order is None:
        raise AppError("NOT_FOUND", "订单不存在")
    now, after = services.clock.now(), services.settings.order_query_after_s
    if order["status"] != "pending" or (now - order["created_at"]).total_seconds() < after:
        return order
    # An app polling every second asks ICBC at most once per interval, however many polls race.
    if not store.claim_query(db, order_no, now=now, every=timedelta(seconds=after)):
        return order
    reconcile(services, order)
    return _reread(services, order_no)


# The order query's statuses 3-7 on a pending order: money ICBC took and gave (or is giving)
# back. Recorded for a person; the order closes when all of it went back.
_BANK_REFUNDS = ("revoked", "revoking", "refunded", "partly_refunded", "refunding")
_BANK_CLOSES = ("revoked", "refunded")


def reconcile(services: Services, order: Order) -> None:
    """Ask ICBC about a pending order and apply what it says; an expired unpaid one closes."""
    expired = order["expires_at"] <= services.clock.now()
    try:
        # ICBC's order query answers for every order we placed, whichever way it was paid;
        # asking never pays anything.
        status = services.icbc.query_payment(order["_id"])
    except IcbcError as exc:
        if exc.code == "ORDER_NOT_FOUND" and expired:
            # ICBC never saw the order (the request to open or charge it was lost): it can
            # only end unpaid, and its bills go back to the resident.
            close(services, order["_id"], "closed")
        return
    if status.status == "paid" and status.amount_fen != order["amount_fen"]:
        # ICBC holds money that does not match the order: never settle, never close quietly.
        store.note(
            services.db,
            order["_id"],
            {"needs_review": True, "bank_amount_fen": status.amount_fen},
        )
        payment_issues.flag(
            services, "amount_mismatch", str(status.amount_fen), order, status.amount_fen
        )
        return
    if status.status == "paid":
        apply_result(services, BankResult.of(status))
        return
    if status.status in _BANK_REFUNDS:
        store.note(services.db, order["_id"], {"bank_status": status.status})
        payment_issues.flag(
            services,
            "bank_refund",
            status.status,
            order,
            status.amount_fen,
            bank_status=status.status,
            transaction_id=status.transaction_id,
        )
    if status.status in _BANK_CLOSES or (status.status in ("pending", "failed") and expired):
        close(services, order["_id"], "closed")
    elif status.status == "failed":
        close(services, order["_id"], "failed")


def expire_orders(
    services: Services, until: datetime | None = None, batch_size: int | None = None
) -> dict[str, int]:
    """Reconcile every pending order past its expiry, in batches; returns how many ended
    (``orders_ended``), with ``unfinished`` when it stopped because the clock passed ``until``.

    Pages by ``_id`` so an order ICBC could not be asked about stays pending for the next run
    without stopping this one. What ended no longer matches, so a run cut short by its budget
    needs no cursor: the next one starts again from the orders still pending.
    """
    db, ended, last_id = services.db, 0, ""
    now = services.clock.now()
    size = batch_size or services.settings.scheduler_batch_size
    while True:
        due = store.expired_pending(db, now=now, after=last_id, limit=size)
        for order in due:
            reconcile(services, order)
        if due:
            ids = [o["_id"] for o in due]
            ended += store.count_ended(db, ids)
            last_id = ids[-1]
        if len(due) < size:
            return {"orders_ended": ended}
        if until is not None and services.clock.now() >= until:
            return {"orders_ended": ended, "unfinished": 1}

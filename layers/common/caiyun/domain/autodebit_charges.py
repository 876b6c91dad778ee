"""Auto-debit (代扣) charges: the daily run over every account whose owner signed the agreement,
and the charge of one account's due bills in one community.

The agreement itself (signing, cancelling, what the account records) is
:mod:`caiyun.domain.autodebit`; an auto-debit order is placed, settled and closed like any other
(:mod:`caiyun.domain.payments`).
"""

from __future__ import annotations

from datetime import datetime

from caiyun.adapters.icbc_protocol import IcbcError
from caiyun.clock import business_date
from caiyun.domain import autodebit, job_runs, messaging, payments
from caiyun.errors import AppError
from caiyun.money import yuan
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import bills as bill_store
from caiyun.stores import memberships as membership_store
from caiyun.stores.accounts import Account
from caiyun.stores.bills import Bill
from caiyun.stores.orders import Order


def charge_autodebit(services: Services, account: Account, found: list[Bill]) -> str:
    """Charge due bills under the account's signed auto-debit agreement; returns the order
    status. The order records the agreement it relied on; the resident is told the outcome.

    Bills that could not be charged are stamped for today so the daily run tries them once.
    """
    today = business_date(services.clock.now()).isoformat()
    bill_store.stamp_autodebit_tried(services.db, [b["_id"] for b in found], today=today)
    consent = autodebit.consent(account)
    try:
        order = payments.place_order(
            services, account, found, "autodebit", consent=consent, icbc={"pay_with": "autodebit"}
        )
    except AppError:
        return "skipped"
    try:
        status = services.icbc.autodebit_charge(
            consent["agreement_no"],
            order["_id"],
            order["amount_fen"],
            f"物业费自动扣缴 {len(found)} 笔",
        )
    except IcbcError as exc:
        if not exc.retryable:
            _decline(services, order)
            return "failed"
        return "pending"  # the expiry run asks ICBC what happened
    if status.status == "paid":
        payments.apply_result(services, payments.BankResult.of(status))
    else:
        _decline(services, order)
    return status.status


def _decline(services: Services, order: Order) -> None:
    """End an auto-debit ICBC declined, and tell the resident."""
    if not payments.close(services, order["_id"], "failed"):
        return
    messaging.deliver(
        services,
        [order["account_id"]],
        "payment",
        title="自动扣缴未成功",
        body=f"物业费 {yuan(order['amount_fen'])} 元未能从您的工行账户自动扣缴，请充值或手动缴费。",
        page="/pages/bills/index",
        community_id=order["community_id"],
        message_key=f"autodebit-declined-{order['_id']}",
    )


def run_autodebit(
    services: Services, until: datetime | None = None, batch_size: int | None = None
) -> dict[str, int]:
    """Charge the due bills of every account that signed the auto-debit agreement, one order
    per account and community; once per business day, resumed where it stopped when the clock
    passed ``until`` (``unfinished`` in the counts)."""
    db = services.db
    today = business_date(services.clock.now()).isoformat()
    counts = {"autodebit_accounts": 0, "autodebit_paid": 0, "autodebit_failed": 0}
    # Once per business day: the timer fires every minute, and every run after the day's
    # finished one would only re-read every consenting account to find nothing to charge.
    run = job_runs.begin(services, f"autodebit:{today}", keep_s=2 * 24 * 3600)
    if run is None:
        return counts
    last_id = run.state.get("after", "")
    size = batch_size or services.settings.scheduler_batch_size
    while True:
        batch = account_store.with_autodebit_signed(db, after=last_id, limit=size)
        for account in batch:
            _charge_account(services, account, today, counts)
        if len(batch) < size:
            job_runs.finish(services, run)
            return counts
        last_id = batch[-1]["_id"]
        if until is not None and services.clock.now() >= until:
            job_runs.pause(services, run, {"after": last_id})
            return {**counts, "unfinished": 1}
        job_runs.save(services, run, {"after": last_id})


def _charge_account(
    services: Services, account: Account, today: str, counts: dict[str, int]
) -> None:
    # A bill is stamped as tried today before it is charged, so a run resumed after a crash
    # never charges it twice.
    house_ids = [m["house_id"] for m in membership_store.of_account(services.db, account["_id"])]
    due = bill_store.due_for_autodebit(services.db, house_ids, today=today)
    by_community: dict[str, list[Bill]] = {}
    for bill in due:
        by_community.setdefault(bill["community_id"], []).append(bill)
    for group in by_community.values():
        counts["autodebit_accounts"] += 1
        outcome = charge_autodebit(services, account, group)
        if outcome == "paid":
            counts["autodebit_paid"] += 1
        elif outcome == "failed":
            counts["autodebit_failed"] += 1

"""account: the 我的 page: profile, nickname and avatar, and changing the phone number.

``profile.wallet`` is null until the account has finished real-name verification.
Real-name verification goes through ICBC: ``realname_start`` (method ``card`` with an ICBC
Class I debit card, or ``wallet`` to open an ICBC e-wallet linked to another bank's card; ICBC
texts a code to the bank phone) then ``realname_confirm`` with that code, the agreements read and
the auto-debit (代扣) choice. ID and card numbers are stored encrypted and only shown masked.
``update_profile.avatar`` is a file id of this deployment's storage or a WeChat avatar URL
(``https://…qlogo.cn/…``). ``change_phone`` needs a code sent by ``login.send_code`` with purpose
``change_phone_old`` to the current phone and one with ``change_phone_new`` to the new phone;
a new phone already in use is ``CONFLICT`` (and no code is spent). Sign-in then uses the new
phone; the account, its houses and its sessions stay as they are.
"""

from __future__ import annotations

from dataclasses import asdict

from caiyun.domain import profiles, realname, uploads
from caiyun.runtime import Action, Call, CloudFunction, lazy_import, page_reply, signed_in

api = lazy_import("caiyun.contract.account")
wallet_api = lazy_import("caiyun.contract.wallet")
common = lazy_import("caiyun.contract.common")


def profile(call: Call, req: common.Empty) -> api.Profile:
    return api.Profile.model_validate(profiles.profile(call.services, call.require_account()))


def update_profile(call: Call, req: api.UpdateProfile) -> api.Profile:
    updated = profiles.update_profile(
        call.services, call.require_account(), req.nickname, req.avatar
    )
    return api.Profile.model_validate(updated)


def change_phone(call: Call, req: api.ChangePhone) -> api.Profile:
    changed = profiles.change_phone(
        call.services, call.require_account(), req.old_code, req.new_phone, req.new_code
    )
    return api.Profile.model_validate(changed)


def realname_start(call: Call, req: wallet_api.RealnameStart) -> wallet_api.RealnameStartReply:
    ticket = realname.start(
        call.services,
        call.require_account(),
        req.method,
        req.name,
        req.id_number,
        req.card_no,
        req.bank_phone,
    )
    return wallet_api.RealnameStartReply(ticket=ticket)


def realname_confirm(call: Call, req: wallet_api.RealnameConfirm) -> wallet_api.WalletSummary:
    summary = realname.confirm(
        call.services,
        call.require_account(),
        req.ticket,
        req.sms_code,
        list(req.agreements),
        req.autodebit,
    )
    return wallet_api.WalletSummary.model_validate(summary)


def wallet(call: Call, req: common.Empty) -> wallet_api.Wallet:
    return wallet_api.Wallet.model_validate(realname.wallet(call.services, call.require_account()))


def wallet_transactions(
    call: Call, req: wallet_api.WalletTransactions
) -> wallet_api.TransactionsReply:
    items, total = realname.transactions(
        call.services, call.require_account(), req.page, req.page_size
    )
    return page_reply(wallet_api.TransactionsReply, req, items, total)


def set_autodebit(call: Call, req: wallet_api.SetAutodebit) -> wallet_api.WalletSummary:
    summary = realname.set_autodebit(call.services, call.require_account(), req.enabled)
    return wallet_api.WalletSummary.model_validate(summary)


def upload_url(call: Call, req: api.UploadUrl) -> common.UploadUrlReply:
    target = uploads.target(call.services, call.require_account(), req.purpose, req.filename)
    return common.UploadUrlReply.model_validate(asdict(target))


BANK_ERRORS = ("REALNAME_REQUIRED", "UNAVAILABLE")


def actions() -> dict[str, Action]:
    return {
        "profile": Action(common.Empty, signed_in, profile, api.Profile),
        "update_profile": Action(api.UpdateProfile, signed_in, update_profile, api.Profile),
        "change_phone": Action(
            api.ChangePhone,
            signed_in,
            change_phone,
            api.Profile,
            ("CODE_INVALID", "CONFLICT"),
        ),
        "upload_url": Action(api.UploadUrl, signed_in, upload_url, common.UploadUrlReply),
        "realname_start": Action(
            wallet_api.RealnameStart,
            signed_in,
            realname_start,
            wallet_api.RealnameStartReply,
            ("NOT_ICBC_CARD", "CONFLICT", "UNAVAILABLE"),
        ),
        "realname_confirm": Action(
            wallet_api.RealnameConfirm,
            signed_in,
            realname_confirm,
            wallet_api.WalletSummary,
            ("CODE_INVALID", "NOT_FOUND", "UNAVAILABLE"),
        ),
        "wallet": Action(common.Empty, signed_in, wallet, wallet_api.Wallet, BANK_ERRORS),
        "wallet_transactions": Action(
            wallet_api.WalletTransactions,
            signed_in,
            wallet_transactions,
            wallet_api.TransactionsReply,
            BANK_ERRORS,
        ),
        "set_autodebit": Action(
            wallet_api.SetAutodebit,
            signed_in,
            set_autodebit,
            wallet_api.WalletSummary,
            BANK_ERRORS,
        ),
    }


main_handler = CloudFunction("account", actions)

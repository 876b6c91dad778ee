"""account: the 我的 page: profile, nickname and avatar, the phone number, and the ICBC account.

``profile.wallet`` is null until the account has finished real-name verification.
Real-name verification goes through ICBC: ``realname_start`` (method ``card`` with an ICBC
Class I debit card, which becomes the account paid from, or ``wallet`` to open an ICBC Class II
or III e-wallet linked to any bank's card; the name must be the one the property recorded; ICBC
texts a code to the bank phone; ``realname_resend`` texts it again) then ``realname_confirm``
with that code and the agreements read. ICBC may finish the opening later (``status``
``pending``): ``profile`` shows it verified once ICBC's notify arrives. ID and card numbers are
stored encrypted and only shown masked; the e-wallet number is shown to its owner in full.
Auto-debit (代扣) is on only under a signed agreement: ``autodebit_start`` (ICBC texts a code)
then ``set_autodebit {enabled: true, ticket, sms_code, agreements: ["autodebit"]}``; ``enabled:
false`` turns it off at once. Each auto-debit is recorded with the agreement it relied on and
told to the resident.
``update_profile.avatar`` is a file id of this deployment's storage or a WeChat avatar URL
(``https://…qlogo.cn/…``). ``change_phone`` needs a code sent by ``login.send_code`` with purpose
``change_phone_old`` to the current phone and one with ``change_phone_new`` to the new phone;
a new phone already in use is ``CONFLICT`` (and no code is spent). Sign-in then uses the new
phone; the account, its houses and its sessions stay as they are.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from caiyun.domain import autodebit, profiles, realname, uploads
from caiyun.errors import ErrorCode
from caiyun.runtime import Account, Action, Call, CloudFunction, lazy_import, page_reply, signed_in

# The type checker reads the modules themselves; at run time they load on first use.
if TYPE_CHECKING:
    from caiyun.contract import account as api
    from caiyun.contract import common
    from caiyun.contract import wallet as wallet_api
else:
    api = lazy_import("caiyun.contract.account")
    wallet_api = lazy_import("caiyun.contract.wallet")
    common = lazy_import("caiyun.contract.common")


def profile(call: Call, req: common.Empty, account: Account) -> api.Profile:
    return api.Profile.model_validate(profiles.profile(call.services, account))


def update_profile(call: Call, req: api.UpdateProfile, account: Account) -> api.Profile:
    updated = profiles.update_profile(call.services, account, req.nickname, req.avatar)
    return api.Profile.model_validate(updated)


def change_phone(call: Call, req: api.ChangePhone, account: Account) -> api.Profile:
    changed = profiles.change_phone(
        call.services,
        account,
        old_code=req.old_code,
        new_phone=req.new_phone,
        new_code=req.new_code,
    )
    return api.Profile.model_validate(changed)


def realname_start(
    call: Call, req: wallet_api.RealnameStart, account: Account
) -> wallet_api.RealnameStartReply:
    ticket = realname.start(
        call.services,
        account,
        req.method,
        req.wallet_class,
        {
            "name": req.name,
            "id_number": req.id_number,
            "card_no": req.card_no,
            "bank_phone": req.bank_phone,
            "occupation": req.occupation,
            "id_valid_until": realname.id_validity(req.id_valid_until),
        },
        call.invocation.source_ip,
    )
    return wallet_api.RealnameStartReply(ticket=ticket)


def realname_resend(
    call: Call, req: wallet_api.RealnameResend, account: Account
) -> wallet_api.RealnameStartReply:
    ticket = realname.resend(call.services, account, req.ticket)
    return wallet_api.RealnameStartReply(ticket=ticket)


def realname_confirm(
    call: Call, req: wallet_api.RealnameConfirm, account: Account
) -> wallet_api.RealnameResult:
    result, verified = realname.confirm(
        call.services, account, req.ticket, req.sms_code, list(req.agreements)
    )
    if req.autodebit and verified is not None:
        result["autodebit_ticket"] = autodebit.start(call.services, verified)["ticket"]
    return wallet_api.RealnameResult.model_validate(result)


def wallet(call: Call, req: common.Empty, account: Account) -> wallet_api.Wallet:
    return wallet_api.Wallet.model_validate(realname.wallet(call.services, account))


def wallet_transactions(
    call: Call, req: wallet_api.WalletTransactions, account: Account
) -> wallet_api.TransactionsReply:
    items, total = realname.transactions(call.services, account, req.page, req.page_size)
    return page_reply(wallet_api.TransactionsReply, req, items, total)


def autodebit_start(call: Call, req: common.Empty, account: Account) -> wallet_api.AutodebitTicket:
    started = autodebit.start(call.services, account)
    return wallet_api.AutodebitTicket.model_validate(started)


def set_autodebit(
    call: Call, req: wallet_api.SetAutodebit, account: Account
) -> wallet_api.WalletSummary:
    summary = autodebit.set_enabled(
        call.services,
        account,
        req.enabled,
        req.ticket,
        req.sms_code,
        list(req.agreements),
    )
    return wallet_api.WalletSummary.model_validate(summary)


def upload_url(call: Call, req: api.UploadUrl, account: Account) -> common.UploadUrlReply:
    target = uploads.target(call.services, account, req.purpose, req.filename)
    return common.UploadUrlReply.model_validate(asdict(target))


BANK_ERRORS: tuple[ErrorCode, ...] = ("REALNAME_REQUIRED", "UNAVAILABLE")


def actions() -> dict[str, Action]:
    return {
        "profile": Action(signed_in, profile),
        "update_profile": Action(signed_in, update_profile),
        "change_phone": Action(signed_in, change_phone, ("CODE_INVALID", "CONFLICT")),
        "upload_url": Action(signed_in, upload_url, ("RATE_LIMITED",)),
        "realname_start": Action(
            signed_in, realname_start, ("NOT_ICBC_CARD", "CONFLICT", "UNAVAILABLE")
        ),
        "realname_resend": Action(
            signed_in, realname_resend, ("NOT_FOUND", "CONFLICT", "UNAVAILABLE")
        ),
        "realname_confirm": Action(
            signed_in, realname_confirm, ("CODE_INVALID", "NOT_FOUND", "CONFLICT", "UNAVAILABLE")
        ),
        "wallet": Action(signed_in, wallet, BANK_ERRORS),
        "wallet_transactions": Action(signed_in, wallet_transactions, BANK_ERRORS),
        "autodebit_start": Action(signed_in, autodebit_start, (*BANK_ERRORS, "CONFLICT")),
        "set_autodebit": Action(
            signed_in, set_autodebit, (*BANK_ERRORS, "CODE_INVALID", "NOT_FOUND", "CONFLICT")
        ),
    }


main_handler = CloudFunction("account", actions)

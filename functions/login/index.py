"""login: phone + SMS code sign-in for the resident and staff mini-programs, and what each app
is configured with.

The two mini-programs have their own appids, so one WeChat user has a different openid in each:
an account binds one openid per app and keeps its sessions per app. Signing in to (or out of)
one app never touches the other, and a change of phone keeps both. Over CloudBase the app is
the one the platform names (``WX_APPID`` / ``userInfo.appId``); over HTTP the session token
carries the app named at login. Staff rights come only through the staff app: in the resident
app a staff member is a resident (``me`` shows ``staff: null`` there).

``config`` (the resident app) and ``staff_config`` (the staff app) need no sign-in: they hold
nothing personal, only what the property company configures (agreements, categories and
types, subscription-message templates) and the labels of every code. Call them at start-up;
``revision`` tells whether anything changed since.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caiyun.clock import iso
from caiyun.domain import appconfig, signin
from caiyun.runtime import Account, Action, Call, CloudFunction, anyone, lazy_import, signed_in

# The type checker reads the modules themselves; at run time they load on first use.
if TYPE_CHECKING:
    from caiyun.contract import common
    from caiyun.contract import login as api
else:
    api = lazy_import("caiyun.contract.login")
    common = lazy_import("caiyun.contract.common")


def check_account(call: Call, req: api.CheckAccount) -> api.CheckAccountReply:
    exists = signin.check_account(call.services, call.rate_key, req.phone)
    return api.CheckAccountReply(exists=exists)


def send_code(call: Call, req: api.SendCode) -> api.SendCodeReply:
    caller = call.account if req.purpose != "login" else None
    issued = signin.send_code(call.services, call.rate_key, caller, req.phone, req.purpose)
    return api.SendCodeReply(resend_after_s=issued.resend_after_s, expires_in_s=issued.expires_in_s)


def login(call: Call, req: api.Login) -> api.LoginReply:
    app = signin.signing_in_app(req.app, call.platform_app)
    done = signin.login(
        call.services, req.phone, req.code, app, call.invocation.openid, req.js_code
    )
    return api.LoginReply(
        account=api.AccountSummary(**signin.summary(call.services, done.account, done.houses)),
        session_token=done.session.token,
        expires_at=iso(done.session.expires_at),
        first_login=done.first_login,
    )


def logout(call: Call, req: common.Empty, account: Account) -> api.LogoutReply:
    inv = call.invocation
    signin.logout(call.services, account, call.require_app(), inv.openid, inv.bearer)
    return api.LogoutReply(logged_out=True)


def me(call: Call, req: common.Empty, account: Account) -> api.AccountSummary:
    return api.AccountSummary(**signin.summary(call.services, account))


def config(call: Call, req: common.Empty) -> api.ResidentConfig:
    return api.ResidentConfig.model_validate(appconfig.for_app(call.services, "resident"))


def staff_config(call: Call, req: common.Empty) -> api.StaffConfig:
    return api.StaffConfig.model_validate(appconfig.for_app(call.services, "staff"))


def actions() -> dict[str, Action]:
    return {
        "check_account": Action(anyone, check_account, ("RATE_LIMITED",)),
        "send_code": Action(
            anyone,
            send_code,
            (
                "ACCOUNT_NOT_FOUND",
                "UNAUTHENTICATED",
                "FORBIDDEN",
                "RATE_LIMITED",
                "CONFLICT",
                "UNAVAILABLE",
            ),
        ),
        "login": Action(anyone, login, ("ACCOUNT_NOT_FOUND", "CODE_INVALID", "FORBIDDEN")),
        "logout": Action(signed_in, logout),
        "me": Action(signed_in, me),
        "config": Action(anyone, config),
        "staff_config": Action(anyone, staff_config),
    }


main_handler = CloudFunction("login", actions)

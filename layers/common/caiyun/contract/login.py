"""The login function: phone + SMS code sign-in for both mini-programs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import StrictStr, StringConstraints

from caiyun.contract.common import Phone, Reply, Request, SmsCode


class CheckAccount(Request):
    """Is there an account for this phone? (The resident app asks before sending a code.)"""

    phone: Phone


class CheckAccountReply(Reply):
    exists: bool


class SendCode(Request):
    """Send a verification code by SMS."""

    phone: Phone
    purpose: Literal["login", "change_phone_old", "change_phone_new"] = "login"


class SendCodeReply(Reply):
    resend_after_s: int
    expires_in_s: int


class Login(Request):
    """Sign in with the code to one mini-program. Over CloudBase the app is the one the platform
    names (its appid) and ``app``, if sent, must agree; over HTTP ``app`` names it (default
    ``resident``). ``js_code`` (from ``wx.login``) binds the WeChat user over HTTP. Signing in
    to one app never signs the other out."""

    phone: Phone
    code: SmsCode
    app: Literal["resident", "staff"] | None = None
    js_code: Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)] | None = None


class StaffSummary(Reply):
    role: Literal["admin", "repairman", "guard"]
    community_ids: list[str]
    all_communities: bool


class HouseRole(Reply):
    house_id: str
    community_id: str
    role: Literal["owner", "family", "tenant"]


class AccountSummary(Reply):
    account_id: str
    phone: str
    name: str | None
    nickname: str | None
    avatar: str | None
    realname_verified: bool
    houses: list[HouseRole]
    staff: StaffSummary | None


class LoginReply(Reply):
    account: AccountSummary
    session_token: str
    expires_at: str
    first_login: bool


class LogoutReply(Reply):
    logged_out: bool

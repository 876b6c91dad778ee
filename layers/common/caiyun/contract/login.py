"""The login function: phone + SMS code sign-in for both mini-programs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import StrictStr, StringConstraints

from caiyun.contract.common import Option, Phone, Reply, Request, SmsCode


class CheckAccount(Request):
    """Is there an account for this phone? (The resident app asks before sending a code.)"""

    phone: Phone


class CheckAccountReply(Reply):
    exists: bool


class SendCode(Request):
    """Send a verification code by SMS. ``login`` needs no sign-in. The two ``change_phone_*``
    purposes are for a signed-in caller (``UNAUTHENTICATED`` otherwise): ``change_phone_old``
    goes only to the phone the account holds now (``FORBIDDEN`` for any other),
    ``change_phone_new`` only to a phone no account holds (``CONFLICT``)."""

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


class CommunityRef(Reply):
    """A community by id and name."""

    community_id: str
    name: str


class StaffSummary(Reply):
    """The caller's staff role and the communities it covers (``communities``: ids with names;
    a company-wide admin, ``all_communities``, covers every community, listed too)."""

    role: Literal["admin", "repairman", "guard"]
    role_name: str
    community_ids: list[str]
    communities: list[CommunityRef]
    all_communities: bool


class HouseRole(Reply):
    """A house the account is bound to, and its role there."""

    house_id: str
    community_id: str
    role: Literal["owner", "family", "tenant"]
    role_name: str


class AccountSummary(Reply):
    """The signed-in account: who it is, its houses and, for staff, its role and communities."""

    account_id: str
    phone: str
    name: str | None
    nickname: str | None
    avatar: str | None
    avatar_url: str | None
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


AgreementCode = Literal["wallet_service", "autodebit", "privacy"]
AgreementTrigger = Literal["card", "wallet", "autodebit"]


class AgreementText(Reply):
    """One agreement a resident reads and signs: the text of ``version``, the one a signature
    records. ``required_when``: ``card`` or ``wallet`` (real-name verification by that method)
    and ``autodebit`` (turning auto-debit on) each require it."""

    code: AgreementCode
    title: str
    version: str
    text: str
    required_when: list[AgreementTrigger]


class RegionCity(Reply):
    city: str
    districts: list[str]


class RegionProvince(Reply):
    """A province with its cities and their districts, for the binding picker (省 → 市 → 区)."""

    province: str
    cities: list[RegionCity]


ResidentTemplate = Literal["bill", "payment", "reminder", "repair", "complaint", "visitor"]
StaffTemplate = Literal["repair_assigned", "repair_filed", "complaint_filed"]


class ResidentConfig(Reply):
    """What the resident app needs before anyone signs in: the agreements to show and sign,
    the subscription-message template ids to request by purpose (only those configured; pass
    the accepted ones to ``notify.subscribe``), the repair categories and complaint types in
    force, the regions that have communities (for ``bind_house.communities``) and every
    enumeration's labels. ``revision`` changes whenever the property company changes the
    configuration."""

    revision: int
    agreements: list[AgreementText]
    templates: dict[ResidentTemplate, str]
    repair_categories: list[Option]
    complaint_types: list[Option]
    regions: list[RegionProvince]
    labels: dict[str, list[Option]]


class StaffConfig(Reply):
    """What the staff app needs before anyone signs in: its subscription-message template ids
    by purpose, the repair categories and complaint types in force (the list filters) and every
    enumeration's labels."""

    revision: int
    templates: dict[StaffTemplate, str]
    repair_categories: list[Option]
    complaint_types: list[Option]
    labels: dict[str, list[Option]]

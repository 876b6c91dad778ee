"""Signing in by phone and SMS code, and what a signed-in account looks like."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from caiyun import labels
from caiyun.adapters.wechat import WeChatError, WeChatUnavailable
from caiyun.domain import accounts, profiles, rate_limits, sessions, sms_codes, staff
from caiyun.errors import AppError
from caiyun.labels import App
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import communities as community_store
from caiyun.stores import memberships as membership_store
from caiyun.stores.accounts import Account
from caiyun.stores.communities import COMMUNITIES
from caiyun.stores.memberships import Membership
from caiyun.stores.staff import StaffRecord


def check_account(services: Services, caller_key: str, phone: str) -> bool:
    """Whether an account exists for ``phone``; limited against enumeration per caller, per
    queried phone and for everyone together (a new openid per ask passes only the first), all
    three counted in one command."""
    settings, now = services.settings, services.clock.now()
    rate_limits.take_all(
        services.db,
        [
            rate_limits.per_window(
                f"check_account:{caller_key}", settings.check_account_per_minute, 60, now
            ),
            rate_limits.per_window(
                f"check_account-phone:{phone}", settings.check_account_per_phone_per_hour, 3600, now
            ),
            rate_limits.per_window(
                "check_account-all", settings.check_account_global_per_minute, 60, now
            ),
        ],
        now,
    )
    return account_store.by_phone(services.db, phone) is not None


def send_code(
    services: Services,
    caller_key: str,
    caller: Account | None,
    phone: str,
    purpose: sms_codes.Purpose,
) -> sms_codes.IssuedCode:
    """Send a code for ``purpose`` after checking the phone fits it; no SMS on a refusal.

    Every call counts against the caller's per-minute limit, refusals included (so phones
    cannot be probed for accounts); a sent code takes that count in the same command as the
    code's own limits.
    """
    now = services.clock.now()
    per_minute = rate_limits.per_window(
        f"send_code:{caller_key}", services.settings.send_code_per_minute, 60, now
    )
    refusal = _send_refusal(services, caller, phone, purpose)
    if refusal is not None:
        # Over the limit is what the caller hears, as if the limit had been checked first.
        rate_limits.take_all(services.db, [per_minute], now)
        raise refusal
    return sms_codes.issue(services, phone, purpose, per_minute)


def _send_refusal(
    services: Services, caller: Account | None, phone: str, purpose: sms_codes.Purpose
) -> AppError | None:
    if purpose == "login":
        if account_store.by_phone(services.db, phone) is None:
            return AppError("ACCOUNT_NOT_FOUND")
        return None
    if caller is None:
        return AppError("UNAUTHENTICATED")
    if purpose == "change_phone_old" and phone != caller["phone"]:
        return AppError("FORBIDDEN", "请使用当前绑定的手机号接收验证码")
    if purpose == "change_phone_new" and account_store.by_phone(services.db, phone) is not None:
        return AppError("CONFLICT", "该手机号已被其他账号使用")
    return None


@dataclass(frozen=True)
class SignedIn:
    """The outcome of a successful login."""

    account: Account
    houses: list[Membership]
    session: sessions.Session
    first_login: bool


def _openid_from_js_code(services: Services, app: App, js_code: str) -> str:
    try:
        return services.wechat.code2session(app, js_code).openid
    except WeChatUnavailable:
        raise AppError("UNAVAILABLE", "微信服务暂时不可用，请稍后重试") from None
    except WeChatError:
        raise AppError(
            "INVALID_ARGUMENT",
            "微信登录凭证无效，请重新进入小程序",
            {"fields": {"js_code": "无效"}},
        ) from None


def signing_in_app(requested: App | None, platform_app: App | None) -> App:
    """The mini-program a login is for: the one the platform names (CloudBase), else the one the
    request names (HTTP), else the resident app. A request naming another app than the platform
    is refused: binding a staff-app openid as the resident app's (or the reverse) would sign the
    person out of the app they really use."""
    if platform_app is not None and requested is not None and requested != platform_app:
        raise AppError(
            "INVALID_ARGUMENT",
            "登录的小程序与调用的小程序不一致",
            {"fields": {"app": "须为调用的小程序"}},
        )
    return platform_app or requested or "resident"


def login(
    services: Services,
    phone: str,
    code: str,
    app: App,
    openid: str | None,
    js_code: str | None,
) -> SignedIn:
    """Verify the code, bind the caller's WeChat openid for ``app`` and open a session there.

    Only ``app``'s openid and sessions change: the account stays signed in to the other app.
    """
    db = services.db
    account, links = account_store.for_login(db, phone)
    if account is None:
        raise AppError("ACCOUNT_NOT_FOUND")
    # Checked before the code is spent, so a resident who opened the staff app by mistake can
    # still use the same code in the resident app.
    if app == "staff" and account[account_store.STAFF_JOINED] is None:
        raise AppError("FORBIDDEN", "该账号不是物业工作人员")
    if openid is None and js_code is not None:
        openid = _openid_from_js_code(services, app, js_code)
    sms_codes.verify(services, phone, "login", code)
    # Already bound here (the common case of signing in again): nothing to move, and the
    # unique index meant no other account held it when the account was read.
    if openid is not None and account.get("wx", {}).get(app) != openid:
        accounts.bind_openid(db, account["_id"], app, openid)
    session, before = sessions.open_session(services, account["_id"], app)
    # The login changed only sessions and openids, none of which the reply shows: the account
    # as it was just before is current for the reply, so it is not read again. Staff rights
    # show only in the staff app.
    record = account[account_store.STAFF_JOINED] if app == "staff" else None
    return SignedIn(
        account={**before, account_store.STAFF_JOINED: record},
        houses=links,
        session=session,
        first_login=before.get("last_login_at") is None,
    )


def logout(
    services: Services,
    account: Account,
    app: App,
    openid: str | None,
    token: str | None,
) -> None:
    """Sign out of ``app`` only: unbind the caller's openid there and revoke the session token
    the call came with; the other app stays signed in."""
    if openid is not None:
        accounts.unbind_openid(services.db, account, app, openid)
    if token is not None:
        data = sessions.claims(services, token)
        if data is not None and data["sub"] == account["_id"] and data["app"] == app:
            account_store.end_session(services.db, account["_id"], app, data["sid"])


def summary(
    services: Services, account: Account, houses: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The account as the caller sees it: identity, houses with roles, staff role with the
    communities it covers (ids and names).

    ``houses`` are the account's memberships when the caller already holds them (a login);
    otherwise they are read. A scoped staff record carries its communities' names; a
    company-wide admin's are every community's, read in the same command as the memberships
    when those are read too.
    """
    db = services.db
    record = staff.of_account(db, account)
    everywhere = record is not None and bool(record.get("all_communities"))
    names: dict[str, str] | None = None
    links: Sequence[Mapping[str, Any]]
    if houses is None and everywhere:
        names, links = _every_community_and_links(db, account["_id"])
    else:
        links = membership_store.of_account(db, account["_id"]) if houses is None else houses
    return {
        **accounts.identity(account, profiles.avatar_url(services, account)),
        "houses": [
            {
                "house_id": m["house_id"],
                "community_id": m["community_id"],
                "role": m["role"],
                "role_name": labels.name("resident_role", m["role"]),
            }
            for m in links
        ],
        "staff": None if record is None else _staff_summary(db, record, names),
    }


def _staff_summary(db: Any, record: StaffRecord, names: dict[str, str] | None) -> dict[str, Any]:
    ids = record.get("community_ids", [])
    if names is None and record.get("all_communities"):
        names = community_store.every_name(db)
    elif names is None:
        # Records written before names were kept look them up.
        names = record.get("community_names") or community_store.names(db, ids)
        names = {cid: names.get(cid, "") for cid in ids}
    return {
        "role": record["role"],
        "role_name": labels.name("staff_role", record["role"]),
        "community_ids": record.get("community_ids", []),
        "communities": [{"community_id": cid, "name": name} for cid, name in names.items()],
        "all_communities": bool(record.get("all_communities")),
    }


def _every_community_and_links(
    db: Any, account_id: str
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    # Every community's name, with the account's memberships joined to the one grouped row:
    # one command where reading both would be two. No community means no house either.
    rows = list(
        db[COMMUNITIES].aggregate(
            [
                {"$sort": {"name": 1}},
                {"$group": {"_id": None, "found": {"$push": {"_id": "$_id", "name": "$name"}}}},
                {"$set": {"_me": {"$literal": account_id}}},
                {
                    "$lookup": {
                        "from": membership_store.MEMBERSHIPS,
                        "localField": "_me",
                        "foreignField": "account_id",
                        "as": "links",
                    }
                },
            ]
        )
    )
    if not rows:
        return {}, []
    names = {c["_id"]: c["name"] for c in rows[0]["found"]}
    return names, sorted(rows[0]["links"], key=lambda m: m["_id"])

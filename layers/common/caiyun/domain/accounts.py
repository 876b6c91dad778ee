"""Accounts' rules: which app a caller acts in and what its lookup joins in for that app, who
the account holder is shown to be, and that a WeChat user's subscription consents follow its
openid from account to account.

The record (one per phone, an openid and sessions per app) is kept by
``caiyun.stores.accounts``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from caiyun.domain.messaging import follow_bind, follow_unbind
from caiyun.labels import App
from caiyun.stores import accounts as store
from caiyun.stores.accounts import Account


def caller_by_openid(db: Any, app: App, openid: str) -> Account | None:
    """The account bound to this openid of ``app``, with what that app's checks need joined
    in (see :func:`caller_with_session`)."""
    # Staff rights come only through the staff app: in the resident app a staff member is a
    # resident like any other, so the staff record is not even read; the houses the resident
    # owns are joined in instead (their lists show what family and tenants filed there).
    return store.by_openid(db, app, openid, staff=app == "staff")


def caller_with_session(
    db: Any, app: App, account_id: str, sid: str, now: datetime
) -> Account | None:
    """The account if ``sid`` is one of its live sessions in ``app``: with its staff record in
    the staff app, with the houses it owns in the resident app."""
    return store.with_live_session(db, app, account_id, sid, now, staff=app == "staff")


def app_for_appid(settings: Any, appid: str | None) -> App:
    """Which of our mini-programs a platform appid is: the staff app only when it is the staff
    app's appid; any other caller (the resident appid, or none named) is the resident app."""
    staff_appid = settings.wechat_staff_appid
    return "staff" if staff_appid and appid == staff_appid else "resident"


def identity(account: Account, avatar_url: str | None = None) -> dict[str, Any]:
    """Who the account is, as the account holder sees it (their own phone unmasked), with
    the display URL of its avatar."""
    return {
        "account_id": account["_id"],
        "phone": account["phone"],
        "name": account.get("name"),
        "nickname": account.get("nickname"),
        "avatar": account.get("avatar"),
        "avatar_url": avatar_url,
        "realname_verified": bool(account.get("realname_verified")),
    }


def bind_openid(db: Any, account_id: str, app: App, openid: str) -> None:
    """Bind ``openid`` to this account, taking it from any account that held it before.

    Subscription consents follow: only those this openid gave this account stay spendable.
    """
    # Consents first: dying between the two writes then leaves the openid's consents for its
    # previous account unspendable, never spendable for an account it has left.
    follow_bind(db, account_id, app, openid)
    store.bind_openid(db, account_id, app, openid)


def unbind_openid(db: Any, account: Account, app: App, openid: str) -> None:
    """Unbind ``openid`` from this account's ``app`` if it is bound there (the other app's
    binding stays); its consents stop being spendable (they are kept for a later sign-in by
    the same WeChat user)."""
    if account.get("wx", {}).get(app) == openid and store.unbind_openid(
        db, account["_id"], app, openid
    ):
        follow_unbind(db, account["_id"], openid)

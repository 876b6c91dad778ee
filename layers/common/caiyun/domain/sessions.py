"""Session tokens for the HTTP path: signed, expiring, revocable by logout.

A token is an HS256 JWT naming the account, the mini-program it was opened in and a session id;
the session id must still be among that app's sessions on the account, so logout revokes a token
at once, and a token of the resident app never carries staff rights. Expiry is checked against
the injectable clock (the sandbox clock moves every time rule together), not the wall clock.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from caiyun.domain import accounts
from caiyun.labels import APPS, App
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores.accounts import Account

_ISSUER = "caiyun"
_ALGORITHM = "HS256"


@dataclass(frozen=True)
class Session:
    """A session just opened."""

    sid: str
    token: str
    expires_at: datetime


def open_session(services: Services, account_id: str, app: App) -> tuple[Session, Account]:
    """Open a session of ``app`` for the account; returns it with the account as it was before.

    The token names the app: a call over HTTP acts in that app (staff rights only in the staff
    app) and knows which of the account's openids is the caller's.
    """
    import jwt

    now = services.clock.now()
    expires_at = now + timedelta(seconds=services.settings.session_ttl_s)
    sid = secrets.token_urlsafe(16)
    payload: dict[str, Any] = {
        "iss": _ISSUER,
        "sub": account_id,
        "sid": sid,
        "app": app,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    token = jwt.encode(
        payload,
        services.settings.token_secret.get_secret_value(),
        algorithm=_ALGORITHM,
    )
    before = account_store.record_login(services.db, account_id, app, sid, now, expires_at)
    return Session(sid=sid, token=token, expires_at=expires_at), before


def claims(services: Services, token: str) -> dict[str, Any] | None:
    """The verified claims of a token, or None if it is forged, malformed or expired."""
    import jwt

    try:
        data = jwt.decode(
            token,
            services.settings.token_secret.get_secret_value(),
            algorithms=[_ALGORITHM],
            issuer=_ISSUER,
            # Time claims are checked against the injectable clock below, not the wall clock.
            options={
                "require": ["exp", "sub", "sid", "iss", "app"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError:
        return None
    if not isinstance(data.get("sub"), str) or not isinstance(data.get("sid"), str):
        return None
    if data["app"] not in APPS:
        return None
    if data["exp"] <= services.clock.now().timestamp():
        return None
    return data


def caller_for_token(services: Services, token: str) -> tuple[App | None, Account | None]:
    """The app a live session token was opened in, and the account it belongs to (with, in the
    staff app, its staff record joined in); (None, None) for a dead or forged token."""
    data = claims(services, token)
    if data is None:
        return None, None
    account = accounts.caller_with_session(
        services.db, data["app"], data["sub"], data["sid"], services.clock.now()
    )
    return data["app"], account

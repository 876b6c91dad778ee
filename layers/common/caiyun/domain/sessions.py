"""Session tokens for the HTTP path: signed, expiring, revocable by logout.

A token is an HS256 JWT naming the account and a session id; the session id must still be on
the account, so logout revokes a token at once. Expiry is checked against the injectable clock
(the sandbox clock moves every time rule together), not the wall clock.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from caiyun.domain import accounts
from caiyun.services import Services

_ISSUER = "caiyun"
_ALGORITHM = "HS256"


@dataclass(frozen=True)
class Session:
    """A session just opened."""

    sid: str
    token: str
    expires_at: datetime


def open_session(
    services: Services, account_id: str, app: accounts.App | None = None
) -> tuple[Session, dict[str, Any]]:
    """Open a session for the account; returns it with the account as it was before.

    ``app`` is the mini-program signing in: the token names it, so a call over HTTP knows
    which of the account's openids is the caller's.
    """
    import jwt

    now = services.clock.now()
    expires_at = now + timedelta(seconds=services.settings.session_ttl_s)
    sid = secrets.token_urlsafe(16)
    payload: dict[str, Any] = {
        "iss": _ISSUER,
        "sub": account_id,
        "sid": sid,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    if app is not None:
        payload["app"] = app
    token = jwt.encode(
        payload,
        services.settings.token_secret.get_secret_value(),
        algorithm=_ALGORITHM,
    )
    before = accounts.record_login(services.db, account_id, sid, now, expires_at)
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
                "require": ["exp", "sub", "sid", "iss"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError:
        return None
    if not isinstance(data.get("sub"), str) or not isinstance(data.get("sid"), str):
        return None
    if data["exp"] <= services.clock.now().timestamp():
        return None
    return data


def caller_for_token(services: Services, token: str) -> accounts.Caller:
    """The account (and staff record) a live session token belongs to."""
    data = claims(services, token)
    if data is None:
        return None, None
    return accounts.caller_with_session(services.db, data["sub"], data["sid"], services.clock.now())

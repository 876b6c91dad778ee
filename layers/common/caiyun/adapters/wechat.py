"""The WeChat server API: login codes, the access token and subscription messages.

The resident app and the staff app are two mini-programs with their own appid and secret; every
call names which one it is for. Errors carry WeChat's ``errcode`` and whether a later retry may
succeed, and their messages never contain a secret, a login code or an access token.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from caiyun.clock import Clock
from caiyun.data.schema import declare

if TYPE_CHECKING:
    import requests

    from caiyun.settings import Settings

App = Literal["resident", "staff"]

# One document per appid: {_id: appid, token, expires_at, updated_at}. Shared by every warm
# container so they do not each fetch a token of their own.
WECHAT_TOKENS = declare("wechat_tokens")

# Refresh ahead of expiry so a token never dies between our check and WeChat's.
_REFRESH_MARGIN = timedelta(seconds=300)

_SYSTEM_BUSY = -1
_RATE_LIMITED = 45011
_NO_CONSENT = 43101
# 40014 is "invalid access_token" in older documentation; treat it like 40001.
_TOKEN_REJECTED = frozenset({40001, 40014, 42001})
_ERRMSG_MAX = 200


class WeChatError(Exception):
    """WeChat refused a call, or the call failed.

    ``errcode`` is WeChat's code (``None`` when no reply came); ``retryable`` tells whether the
    same call may succeed later.
    """

    def __init__(self, message: str, errcode: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.retryable = retryable


class WeChatUnavailable(WeChatError):
    """WeChat could not be reached, answered 5xx or reported itself busy (-1)."""

    def __init__(self, message: str, errcode: int | None = None) -> None:
        super().__init__(message, errcode, retryable=True)


class WeChatRateLimited(WeChatError):
    """WeChat's rate limit was hit (45011); the call may succeed after a pause."""

    def __init__(self, message: str, errcode: int | None = _RATE_LIMITED) -> None:
        super().__init__(message, errcode, retryable=True)


class WeChatNoConsent(WeChatError):
    """The user has no one-time consent left for this template (43101)."""

    def __init__(self, message: str, errcode: int | None = _NO_CONSENT) -> None:
        super().__init__(message, errcode, retryable=False)


@dataclass(frozen=True)
class WxSession:
    """Who a mini-program login code belongs to. The session key is deliberately not kept."""

    openid: str
    unionid: str | None


class WeChatClient:
    """The WeChat server API for both mini-programs, with the access token cached.

    The token is cached in this object's memory (one client per warm container) and in the
    ``wechat_tokens`` collection, so other containers reuse it instead of fetching their own.
    """

    def __init__(
        self,
        settings: Settings,
        db: Any,
        clock: Clock,
        session: requests.Session | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._clock = clock
        self._session = session
        self._base = settings.wechat_api_base.rstrip("/")
        self._tokens: dict[str, tuple[str, datetime]] = {}
        self._refresh_lock = threading.Lock()

    def code2session(self, app: App, js_code: str) -> WxSession:
        """Exchange a ``wx.login`` code for the user's openid (and unionid when bound)."""
        appid, secret = self._credentials(app)
        reply = self._call(
            "GET",
            "/sns/jscode2session",
            "jscode2session",
            params={
                "appid": appid,
                "secret": secret,
                "js_code": js_code,
                "grant_type": "authorization_code",
            },
            hide=(secret, js_code),
        )
        openid = reply.get("openid")
        if not isinstance(openid, str) or not openid:
            raise WeChatUnavailable("WeChat jscode2session answered without an openid")
        unionid = reply.get("unionid")
        return WxSession(openid=openid, unionid=unionid if isinstance(unionid, str) else None)

    def access_token(self, app: App) -> str:
        """A valid access token for the app, fetched only when the cached one is near expiry."""
        appid, _ = self._credentials(app)
        cached = self._fresh(self._tokens.get(appid))
        if cached is not None:
            return cached
        with self._refresh_lock:
            # Another thread may have refreshed while this one waited for the lock.
            cached = self._fresh(self._tokens.get(appid))
            if cached is not None:
                return cached
            stored = self._db[WECHAT_TOKENS].find_one({"_id": appid})
            if stored is not None:
                entry = (stored["token"], _aware(stored["expires_at"]))
                if self._fresh(entry) is not None:
                    self._tokens[appid] = entry
                    return entry[0]
            token, expires_at = self._fetch_token(app)
            self._db[WECHAT_TOKENS].update_one(
                {"_id": appid},
                {"$set": {"token": token, "expires_at": expires_at, "updated_at": self._now()}},
                upsert=True,
            )
            self._tokens[appid] = (token, expires_at)
            return token

    def send_subscribe(
        self,
        app: App,
        touser: str,
        template_id: str,
        page: str,
        data: dict[str, str],
        state: str = "formal",
    ) -> None:
        """Send one subscription message, spending one of the user's consents for the template.

        ``data`` maps the template's keys to plain values; ``state`` is ``developer``, ``trial``
        or ``formal``. Raises :class:`WeChatNoConsent` when the user has no consent left.
        """
        body = {
            "touser": touser,
            "template_id": template_id,
            "page": page,
            "data": {key: {"value": value} for key, value in data.items()},
            "miniprogram_state": state,
            "lang": "zh_CN",
        }
        self._post_with_token(app, "/cgi-bin/message/subscribe/send", "subscribeMessage.send", body)

    def temp_file_urls(
        self, env: str, file_ids: list[str], max_age_s: int
    ) -> dict[str, str | None]:
        """Temporary download URLs of CloudBase files (``tcb/batchdownloadfile``, what
        ``wx.cloud.getTempFileURL`` calls; at most 50 ids), valid ``max_age_s`` seconds; None
        for a file WeChat could not sign (its ``status`` is not 0). The CloudBase environment
        belongs to the resident mini-program, whose token makes the call.
        """
        reply = self._post_with_token(
            "resident",
            "/tcb/batchdownloadfile",
            "tcb.batchdownloadfile",
            {
                "env": env,
                "file_list": [{"fileid": fid, "max_age": max_age_s} for fid in file_ids],
            },
        )
        urls: dict[str, str | None] = dict.fromkeys(file_ids)
        for item in reply.get("file_list") or []:
            if not isinstance(item, dict) or item.get("fileid") not in urls:
                continue
            url = item.get("download_url")
            if item.get("status") == 0 and isinstance(url, str) and url.startswith("https://"):
                urls[item["fileid"]] = url
        return urls

    def _post_with_token(
        self, app: App, path: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        def post(token: str) -> dict[str, Any]:
            return self._call(
                "POST", path, name, params={"access_token": token}, json=body, hide=(token,)
            )

        token = self.access_token(app)
        try:
            return post(token)
        except WeChatError as error:
            if error.errcode not in _TOKEN_REJECTED:
                raise
        # A token WeChat rejects (revoked, or refreshed by another container) is dropped and
        # the call made once more with a fresh one.
        self._forget_token(app, token)
        return post(self.access_token(app))

    def _credentials(self, app: App) -> tuple[str, str]:
        if app == "resident":
            appid, secret = self._settings.wechat_appid, self._settings.wechat_secret
        elif app == "staff":
            appid, secret = self._settings.wechat_staff_appid, self._settings.wechat_staff_secret
        else:
            raise WeChatError(f"unknown mini-program {app!r}")
        if not appid or not secret.get_secret_value():
            raise WeChatError(f"the {app} mini-program has no appid/secret configured")
        return appid, secret.get_secret_value()

    def _fetch_token(self, app: App) -> tuple[str, datetime]:
        appid, secret = self._credentials(app)
        reply = self._call(
            "POST",
            "/cgi-bin/stable_token",
            "stable_token",
            json={
                "grant_type": "client_credential",
                "appid": appid,
                "secret": secret,
                "force_refresh": False,
            },
            hide=(secret,),
        )
        token, expires_in = reply.get("access_token"), reply.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int):
            raise WeChatUnavailable("WeChat stable_token answered without a token")
        return token, self._now() + timedelta(seconds=expires_in)

    def _forget_token(self, app: App, token: str) -> None:
        appid, _ = self._credentials(app)
        with self._refresh_lock:
            if self._tokens.get(appid, ("",))[0] == token:
                del self._tokens[appid]
            # Only this token: another container may already have stored a newer one.
            self._db[WECHAT_TOKENS].delete_one({"_id": appid, "token": token})

    def _fresh(self, entry: tuple[str, datetime] | None) -> str | None:
        if entry is None or entry[1] - self._now() < _REFRESH_MARGIN:
            return None
        return entry[0]

    def _now(self) -> datetime:
        return _aware(self._clock.now())

    def _call(
        self,
        method: str,
        path: str,
        name: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        hide: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        try:
            if self._session is None:
                # Made on the first WeChat call, not at start-up: requests is not loaded by a
                # cold start that never talks to WeChat.
                self._session = _new_session()
            response = self._session.request(
                method,
                self._base + path,
                params=params,
                json=json,
                timeout=self._settings.wechat_timeout_s,
            )
        except _request_errors() as error:
            # The exception text holds the URL, whose query carries the secret, code or token:
            # report only its type, and drop it as the cause so tracebacks don't print it.
            raise WeChatUnavailable(f"WeChat {name} unreachable ({type(error).__name__})") from None
        if response.status_code >= 500:
            raise WeChatUnavailable(f"WeChat {name} answered HTTP {response.status_code}")
        try:
            reply = response.json()
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            if response.status_code != 200:
                raise WeChatError(f"WeChat {name} answered HTTP {response.status_code}")
            raise WeChatUnavailable(f"WeChat {name} answered with something other than JSON")
        errcode = reply.get("errcode", 0)
        if errcode in (0, None):
            return reply
        errmsg = _redact(str(reply.get("errmsg", "")), hide)
        message = f"WeChat {name} refused: errcode {errcode} ({errmsg})"
        if not isinstance(errcode, int):
            raise WeChatUnavailable(message)
        if errcode == _SYSTEM_BUSY:
            raise WeChatUnavailable(message, errcode)
        if errcode == _RATE_LIMITED:
            raise WeChatRateLimited(message, errcode)
        if errcode == _NO_CONSENT:
            raise WeChatNoConsent(message, errcode)
        raise WeChatError(message, errcode)


def _redact(text: str, hide: tuple[str, ...]) -> str:
    for value in hide:
        if value:
            text = text.replace(value, "***")
    return text[:_ERRMSG_MAX]


def _aware(moment: datetime) -> datetime:
    # A MongoDB client opened without tz_aware hands back naive UTC datetimes.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _new_session() -> requests.Session:
    # requests is imported on first use: a function that never calls WeChat need not load it.
    import requests

    return requests.Session()


def _request_errors() -> type[Exception]:
    import requests

    return requests.RequestException

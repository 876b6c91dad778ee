"""A sandbox over one data directory: its settings (every outside endpoint pinned to a local
fake), its clock (saved in the directory, so every process working on it shares the time), its
database and services, and the fake WeChat and ICBC they talk to.

`caiyun dev` serves it over HTTP (``server.py``); `caiyun admin`, `import`, `invoke` and
`selfcheck` open it directly.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import SecretStr

from caiyun.catalog import open_database
from caiyun.clock import OffsetClock
from caiyun.data.embedded import clash_report
from caiyun.data.embedded_handles import EmbeddedDatabase
from caiyun.errors import AppError
from caiyun.sandbox.fake_wechat import FakeWeChat
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.services import Services, build_services
from caiyun.settings import Settings

# The two mini-programs as the sandbox's fake WeChat knows them.
SANDBOX_APPID = "wx-sandbox-resident"
SANDBOX_SECRET = "sandbox-wechat-secret-resident"
SANDBOX_STAFF_APPID = "wx-sandbox-staff"
SANDBOX_STAFF_SECRET = "sandbox-wechat-secret-staff"

CLOCK_FILE = "clock.json"
# How far ahead of the real time the sandbox may run in total: far enough for any time rule (a
# 3-day repair, a year of bills), short of datetime overflow.
MAX_OFFSET_S = 10 * 366 * 24 * 3600


class SandboxError(Exception):
    """The sandbox cannot start or act as asked; the message is shown to the developer."""


class SandboxRefused(SandboxError):
    """A non-sandbox (production) profile was handed to the sandbox server."""


def sandbox_settings(data_dir: str | Path, wechat_api_base: str) -> Settings:
    """The sandbox profile over the embedded database in ``data_dir``.

    The database, SMS, storage and WeChat endpoints are pinned here, so a production variable
    left in the shell (``MONGODB_URI``, ``CAIYUN_SMS_PROVIDER``...) can never point the sandbox,
    and its ``/dev`` routes, at real data, real phones or real files.
    """
    return Settings(
        env="sandbox",
        data_dir=str(data_dir),
        mongodb_uri=None,
        sms_provider="sandbox",
        storage_provider="sandbox",
        wechat_api_base=wechat_api_base,
        wechat_appid=SANDBOX_APPID,
        wechat_secret=SecretStr(SANDBOX_SECRET),
        wechat_staff_appid=SANDBOX_STAFF_APPID,
        wechat_staff_secret=SecretStr(SANDBOX_STAFF_SECRET),
    )


def load_clock(data_dir: str | Path, start: datetime | None = None) -> OffsetClock:
    """The sandbox clock, moved as far as ``/dev/clock`` last left it in ``data_dir``.

    A data directory with no clock yet gets one that starts at ``start`` (default: the real
    time), saved at once so `caiyun admin` and `caiyun import` on the same directory share it.
    """
    path = Path(data_dir) / CLOCK_FILE
    if not path.exists():
        clock = OffsetClock(start=start)
        if start is not None:
            save_clock(data_dir, clock)
        return clock
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        offset, base = saved["offset_s"], saved.get("base_s", 0)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        offset = base = None
    if (
        not _is_seconds(offset)
        or offset > MAX_OFFSET_S
        or not _is_number(base)
        or abs(base) > MAX_OFFSET_S
    ):
        raise SandboxError(f"沙箱时钟文件无效，请删除后重试 / invalid sandbox clock file: {path}")
    return OffsetClock.resumed(float(offset), float(base))


def save_clock(data_dir: str | Path, clock: OffsetClock) -> None:
    """Persist the clock's offset (and where it started) so the next start keeps the time."""
    path = Path(data_dir) / CLOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{CLOCK_FILE}.{os.getpid()}.tmp")
    saved = {"offset_s": clock.offset_s, "base_s": clock.base_s}
    temporary.write_text(json.dumps(saved), encoding="utf-8")
    # A rename is atomic: a reader never sees half a file.
    os.replace(temporary, path)


def _is_number(value: Any) -> bool:
    """A finite number (JSON ``true`` is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_seconds(value: Any) -> bool:
    """A finite, non-negative number of seconds."""
    return _is_number(value) and value >= 0


def _close_database(db: Any) -> None:
    if isinstance(db, EmbeddedDatabase):
        db.engine.close()


@dataclass
class Sandbox:
    """Sandbox services over one data directory, with the fake WeChat and ICBC they talk to."""

    data_dir: Path
    services: Services
    clock: OffsetClock
    wechat: FakeWeChat
    icbc: FakeIcbc
    # Two /dev/clock calls at once must not both pass the ten-year check on the old offset.
    _clock_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def close(self) -> None:
        """Stop the fake services and release the database file."""
        self.icbc.stop()
        self.wechat.stop()
        _close_database(self.services.db)

    def advance_clock(self, seconds: Any) -> None:
        """Move the sandbox clock forward by ``seconds`` and persist the new offset.

        INVALID_ARGUMENT for a negative or non-numeric amount, or one that would put the sandbox
        more than ten years ahead of the real time.
        """
        with self._clock_lock:
            clock = self.clock
            if not _is_seconds(seconds) or clock.offset_s + seconds > MAX_OFFSET_S:
                why = "须为不小于 0 的秒数，且沙箱时间最多快于真实时间十年"
                raise AppError("INVALID_ARGUMENT", details={"fields": {"advance_seconds": why}})
            clock.advance(float(seconds))
            save_clock(self.data_dir, clock)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _wechat_apps(settings: Settings | None) -> dict[str, str]:
    """The ``appid -> secret`` pairs the fake WeChat accepts."""
    if settings is None:
        return {SANDBOX_APPID: SANDBOX_SECRET, SANDBOX_STAFF_APPID: SANDBOX_STAFF_SECRET}
    pairs = {
        settings.wechat_appid: settings.wechat_secret.get_secret_value(),
        settings.wechat_staff_appid: settings.wechat_staff_secret.get_secret_value(),
    }
    return {appid: secret for appid, secret in pairs.items() if appid}


def warn_clashes(db: Any) -> None:
    """Tell the operator on stderr about documents breaking a unique rule (a data directory
    written before those rules held across processes), and how to remove them."""
    for line in clash_report(db):
        print(f"警告 / warning: {line}", file=sys.stderr)


def production_environment() -> bool:
    """True when the shell asks for another profile than the sandbox (``CAIYUN_ENV``, read
    case-insensitively as the settings read it): the sandbox server pins its own settings, so it
    must look itself before it serves /dev routes to a production configuration."""
    asked = [v for k, v in os.environ.items() if k.upper() == "CAIYUN_ENV"]
    return any(value.strip().lower() not in ("", "sandbox") for value in asked)


def open_sandbox(
    data_dir: str | Path,
    settings: Settings | None = None,
    *,
    clock_start: datetime | None = None,
    db: Any = None,
) -> Sandbox:
    """Sandbox services on ``data_dir`` (``settings``: a sandbox profile to start from;
    ``clock_start``: where a new data directory's clock starts, default the real time; ``db``:
    a database to use instead of the data directory's, as `caiyun selfcheck` does).

    Raises SandboxRefused for a production profile, before any database is opened.
    """
    if settings is not None and not settings.is_sandbox:
        raise SandboxRefused("生产配置不能启动沙箱 / the sandbox refuses a production profile")
    root = Path(data_dir).resolve()
    clock = load_clock(root, clock_start)
    wechat = FakeWeChat(_wechat_apps(settings))
    wechat.start()
    icbc: FakeIcbc | None = None
    try:
        if settings is None:
            base = sandbox_settings(root, wechat.url)
        else:
            base = settings.model_copy(
                update={"data_dir": str(root), "wechat_api_base": wechat.url}
            )
        if db is None:
            db = open_database(base, clock)
            warn_clashes(db)
        # The local ICBC keeps its key pair under the data dir, so its signatures (and ours,
        # which it verifies) stay valid across restarts.
        icbc = FakeIcbc(db, clock, key_dir=root / "icbc")
        icbc.start()
        # The local bank posts its notifies to the server that asks it to settle an order
        # (/dev/icbc/complete); the notify URL orders carry only has to be a URL, as ICBC's
        # field sheet wants one.
        notify_url = base.icbc_notify_url or "http://127.0.0.1/icbc/notify"
        final = base.model_copy(update={**icbc.settings_overrides(), "icbc_notify_url": notify_url})
        services = build_services(final, clock=clock, db=db)
    except BaseException:
        if icbc is not None:
            icbc.stop()
        wechat.stop()
        raise
    return Sandbox(data_dir=root, services=services, clock=clock, wechat=wechat, icbc=icbc)

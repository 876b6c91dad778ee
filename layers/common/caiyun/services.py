"""The outside world one warm container talks to, built once and shared by every call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from caiyun.clock import Clock, SystemClock

if TYPE_CHECKING:
    from caiyun.adapters.icbc import IcbcClient
    from caiyun.adapters.sms import SmsSender
    from caiyun.adapters.storage import Storage
    from caiyun.adapters.wechat import WeChatClient
    from caiyun.settings import Settings


@dataclass
class Services:
    """Settings, database, clock and adapters of this container."""

    settings: Settings
    db: Any
    clock: Clock
    sms: SmsSender
    wechat: WeChatClient
    storage: Storage
    icbc: IcbcClient
    # Slow-changing documents this container keeps between calls (the app configuration),
    # by key: (valid until, value).
    memo: dict[str, tuple[Any, Any]] = field(default_factory=dict)


_current: Services | None = None
_lock = threading.Lock()


def build_services(settings: Settings, clock: Clock | None = None, *, db: Any) -> Services:
    """Assemble the services a settings profile asks for (real or sandbox adapters) over ``db``
    (``caiyun.catalog.open_database`` opens the one the settings name)."""
    # Late: every domain module imports this one, and the clients load at the first call.
    from caiyun.adapters.icbc import IcbcClient
    from caiyun.adapters.sms import SandboxSms, TencentSms
    from caiyun.adapters.storage import build_storage
    from caiyun.adapters.wechat import WeChatClient

    clock = clock or SystemClock()
    sms: SmsSender = (
        TencentSms(settings) if settings.sms_provider == "tencent" else SandboxSms(db, clock)
    )
    wechat = WeChatClient(settings, db, clock)
    return Services(
        settings=settings,
        db=db,
        clock=clock,
        sms=sms,
        wechat=wechat,
        storage=build_storage(settings, wechat, clock),
        icbc=IcbcClient(settings, clock),
    )


def current_services(open_database: Callable[[Settings], Any]) -> Services:
    """This container's services, created on first use (the cold start) over the database
    ``open_database`` opens for the settings."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                # Late: the Settings model is built at the first call, not at import.
                from caiyun.settings import get_settings

                settings = get_settings()
                _current = build_services(settings, db=open_database(settings))
    return _current


def install_services(services: Services | None) -> None:
    """Replace this process's services (the sandbox and the tests do; a deploy never does)."""
    global _current
    with _lock:
        _current = services

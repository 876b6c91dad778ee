"""Time, injectable so the sandbox and the tests can move every time-based rule together."""

from __future__ import annotations

import threading
from datetime import date, datetime, time, timedelta, timezone
from typing import Protocol
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


class Clock(Protocol):
    """Anything that tells the current time as an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        """Current aware UTC time, truncated to milliseconds as MongoDB stores it."""
        now = datetime.now(timezone.utc)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)


class OffsetClock:
    """The real time moved forward by an offset that only grows (the sandbox's `/dev/clock`)."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self._offset = timedelta(seconds=offset_s)
        self._lock = threading.Lock()

    @property
    def offset_s(self) -> float:
        """How far ahead of the real time this clock runs."""
        return self._offset.total_seconds()

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward and return the new now."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        return self.now()

    def now(self) -> datetime:
        """Real time plus the offset."""
        return SystemClock().now() + self._offset


def business_date(moment: datetime) -> date:
    """The Asia/Shanghai calendar date of a moment."""
    return moment.astimezone(SHANGHAI).date()


def end_of_business_day(day: date) -> datetime:
    """The moment an Asia/Shanghai calendar day ends (midnight starting the next)."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=SHANGHAI)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with the Shanghai offset, as the contract shows times."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(SHANGHAI).isoformat(timespec="seconds")

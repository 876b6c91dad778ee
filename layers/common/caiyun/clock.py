"""Time, injectable so the sandbox and the tests can move every time-based rule together."""

from __future__ import annotations

import threading
from datetime import date, datetime, time, timedelta, timezone
from typing import Protocol, overload
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
    """The real time moved forward by an offset that only grows (the sandbox's `/dev/clock`).

    With ``start``, the clock begins at that moment instead of the real time and then runs at
    the real pace: the tests start every clock at one stated moment, so no rule they prove
    depends on the hour, weekday or date the suite happens to run at.
    """

    def __init__(self, offset_s: float = 0.0, *, start: datetime | None = None) -> None:
        self._offset = timedelta(seconds=offset_s)
        self._base = timedelta(0) if start is None else start - SystemClock().now()
        self._lock = threading.Lock()

    @classmethod
    def resumed(cls, offset_s: float, base_s: float) -> OffsetClock:
        """A clock saved as its advance and its distance from the real time (``base_s``)."""
        clock = cls(offset_s)
        clock._base = timedelta(seconds=base_s)
        return clock

    @property
    def offset_s(self) -> float:
        """How far this clock has been moved forward since it started."""
        return self._offset.total_seconds()

    @property
    def base_s(self) -> float:
        """How far the moment it started at lies from the real time then (0: it started now)."""
        return self._base.total_seconds()

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward and return the new now."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        return self.now()

    def now(self) -> datetime:
        """Real time, shifted to the start moment, plus the offset."""
        return SystemClock().now() + self._base + self._offset


def business_date(moment: datetime) -> date:
    """The Asia/Shanghai calendar date of a moment."""
    return moment.astimezone(SHANGHAI).date()


def end_of_business_day(day: date) -> datetime:
    """The moment an Asia/Shanghai calendar day ends (midnight starting the next)."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=SHANGHAI)


@overload
def iso(moment: datetime) -> str: ...
@overload
def iso(moment: None) -> None: ...
@overload
def iso(moment: datetime | None) -> str | None: ...


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with the Shanghai offset, as the contract shows times (None stays None)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(SHANGHAI).isoformat(timespec="seconds")

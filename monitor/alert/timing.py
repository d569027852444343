"""When alerts may go out: digest schedules and quiet hours, in the desk's time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DAILY = re.compile(r"^daily\s+(\d{1,2}):(\d{2})(?:\s+(\S+))?$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _clock(text: str) -> time:
    m = _CLOCK.match(text.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"bad time {text!r}: write it like 08:00")
    return time(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class DigestSchedule:
    """`hourly`, or `daily HH:MM [Area/City]` (UTC when no zone is given)."""

    spec: str
    at: time | None  # None: hourly
    zone: ZoneInfo

    @classmethod
    def parse(cls, spec: str) -> DigestSchedule:
        text = " ".join(spec.split())
        if text == "hourly":
            return cls(text, None, _zone("UTC"))
        m = _DAILY.match(text)
        if not m:
            raise ValueError(
                f"bad digest schedule {spec!r}: write 'hourly' or 'daily 08:00 Europe/London'"
            )
        return cls(text, _clock(f"{m.group(1)}:{m.group(2)}"), _zone(m.group(3)))

    def last_boundary(self, now: datetime) -> datetime:
        """The latest scheduled time at or before `now` (aware, UTC)."""
        local = now.astimezone(self.zone)
        if self.at is None:
            return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        today = datetime.combine(local.date(), self.at, tzinfo=self.zone)
        if today > local:
            today = datetime.combine(local.date() - timedelta(days=1), self.at, tzinfo=self.zone)
        return today.astimezone(UTC)


@dataclass(frozen=True)
class QuietHours:
    """From `start` to `end` local time, wrapping midnight when end < start."""

    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, start: str, end: str, tz: str | None) -> QuietHours:
        return cls(_clock(start), _clock(end), _zone(tz))

    def active(self, now: datetime) -> bool:
        local = now.astimezone(self.zone).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

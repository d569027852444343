"""Feed health: what state each feed is in, and telling operators once when that changes.

States, most urgent first: failing (errors in a row), stale (no new item for far longer
than its usual cadence), slow (the last fetch took over SLOW), redirected (moved
permanently away from the URL in feeds.yaml), ok.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from monitor.config import Settings
from monitor.models import FeedRow, utcnow
from monitor.redact import redact

if TYPE_CHECKING:
    from monitor.feeds import FeedStore
    from monitor.notices import Notices

log = logging.getLogger(__name__)

SLOW = timedelta(seconds=5)
STALE_CADENCES = 10  # silent for this many usual gaps between items


@dataclass(frozen=True)
class FeedHealth:
    name: str
    state: str
    url: str
    last_fetch_at: datetime | None
    last_success_at: datetime | None
    last_status: int | None
    errors_in_row: int
    items_seen: int
    items_per_day: float
    next_due_at: datetime
    last_error: str | None
    cadence: timedelta | None  # the usual gap between new items


def assess(row: FeedRow, now: datetime, settings: Settings) -> FeedHealth:
    age = max(now - row.created_at, timedelta(days=1))
    cadence = age / row.items_seen if row.items_seen else None
    stale_after = max(settings.health.stale_after, (cadence or timedelta(0)) * STALE_CADENCES)
    quiet_since = row.last_new_at or row.created_at
    if row.errors_in_row:
        state = "failing"
    elif row.last_success_at is not None and now - quiet_since > stale_after:
        state = "stale"
    elif row.last_duration_ms is not None and row.last_duration_ms > SLOW.total_seconds() * 1000:
        state = "slow"
    elif row.config_url and row.url != row.config_url:
        state = "redirected"
    else:
        state = "ok"
    return FeedHealth(
        name=row.name,
        state=state,
        url=redact(row.url),  # for people: `monitor feeds`, never the fetcher
        last_fetch_at=row.last_fetch_at,
        last_success_at=row.last_success_at,
        last_status=row.last_status,
        errors_in_row=row.errors_in_row,
        items_seen=row.items_seen,
        items_per_day=row.items_seen / (age / timedelta(days=1)),
        next_due_at=row.next_due_at,
        last_error=redact(row.last_error) if row.last_error else None,
        cadence=cadence,
    )


@dataclass(frozen=True)
class Notice:
    """One message for the ops channel about one feed's change of state."""

    feed: str
    alerted: str | None  # what the feed's health_alerted becomes
    key: str
    text: str


def notices(rows: list[FeedRow], now: datetime, settings: Settings) -> list[Notice]:
    """Messages due: a feed failing longer than `failing_after` or gone stale, once; and
    once more when it recovers. Never one per poll."""
    out = []
    for row in rows:
        health = assess(row, now, settings)
        failing_long = (
            health.state == "failing"
            and row.failing_since is not None
            and now - row.failing_since >= settings.health.failing_after
        )
        if failing_long and row.health_alerted != "failing":
            since = row.failing_since or now
            out.append(
                Notice(
                    row.name,
                    "failing",
                    f"health|{row.name}|failing|{since:%s}",
                    f"Feed {row.name} has been failing since {since:%Y-%m-%d %H:%M} "
                    f"UTC ({row.errors_in_row} tries): {health.last_error}",
                )
            )
        elif health.state == "stale" and row.health_alerted != "stale":
            since = row.last_new_at or row.created_at
            usual = f"; it usually has one every {_span(health.cadence)}" if health.cadence else ""
            out.append(
                Notice(
                    row.name,
                    "stale",
                    f"health|{row.name}|stale|{since:%s}",
                    f"Feed {row.name} has had no new item since {since:%Y-%m-%d %H:%M} UTC{usual}",
                )
            )
        elif row.health_alerted and health.state not in ("failing", "stale"):
            out.append(
                Notice(
                    row.name,
                    None,
                    f"health|{row.name}|recovered|{now:%s}",
                    f"Feed {row.name} has recovered ({row.health_alerted} before)",
                )
            )
    return out


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f}h" if hours < 48 else f"{hours / 24:.0f}d"


def check(store: FeedStore, ops: Notices, names: Iterable[str], settings: Settings) -> int:
    """Logs each named feed's change of health and queues one ops message for it."""
    wanted = set(names)
    rows = [r for r in store.rows() if r.name in wanted]
    found = notices(rows, utcnow(), settings)
    for notice in found:
        log.warning(
            "feed health",
            extra={"feed": notice.feed, "state": notice.alerted or "ok", "notice": notice.text},
        )
    return ops.record(found, settings.ops_channel)

"""Digests: held deliveries gathered into one message each schedule boundary, or when
quiet hours end; and floods, a cycle's too many alerts for one channel, gathered into
one message as soon as they are seen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from monitor.config import Watchlist
from monitor.db import Database
from monitor.models import DeliveryKind, DeliveryRow, DeliveryStatus, as_utc, utcnow
from monitor.outbox import log_muted, mute_followups

DIGEST_PART = 20  # stories per digest message (and listed in a flood); Slack allows 50 blocks


@dataclass(frozen=True)
class Flood:
    delivery_id: int
    channel: str
    watchlist: str
    alerts: int


class Digests(Database):
    def make(self, watchlists: Sequence[Watchlist], now: datetime) -> int:
        """Gathers held rows into digest deliveries: at each schedule boundary for digest
        watchlists, and when quiet hours end for the others; a follow-up of a story the
        desk muted since it was held is muted instead, not listed. Returns digests made."""
        made = 0
        for wl in watchlists:
            if wl.delivery == "digest":
                until = wl.schedule.last_boundary(now)
                label = f"until {until.astimezone(wl.schedule.zone):%a %H:%M %Z}"
            elif wl.quiet is not None and wl.quiet.hours.active(now):
                continue
            else:
                until, label = now, "held during quiet hours"
            with self._session() as s:
                held = (
                    s.execute(
                        select(DeliveryRow)
                        .where(
                            col(DeliveryRow.watchlist) == wl.name,
                            col(DeliveryRow.status) == DeliveryStatus.HELD,
                            col(DeliveryRow.created_at) < until,
                        )
                        .order_by(col(DeliveryRow.id))
                    )
                    .scalars()
                    .all()
                )
                moved = mute_followups(s, held)
                muted = {ids["delivery_id"] for ids in moved}
                by_channel: dict[str, list[DeliveryRow]] = {}
                for row in (r for r in held if r.id not in muted):
                    by_channel.setdefault(row.channel, []).append(row)
                for channel, rows in by_channel.items():
                    parts = [rows[i : i + DIGEST_PART] for i in range(0, len(rows), DIGEST_PART)]
                    for part, chunk in enumerate(parts):
                        suffix = f" ({part + 1}/{len(parts)})" if len(parts) > 1 else ""
                        digest = DeliveryRow(
                            # named by its first row, not its part: a row committed after
                            # this boundary's digest was made gets a digest of its own
                            key=f"{wl.name}|digest|{until.isoformat()}|{channel}|{chunk[0].id}",
                            kind=DeliveryKind.DIGEST,
                            watchlist=wl.name,
                            channel=channel,
                            label=label + suffix,
                            status=DeliveryStatus.PENDING,
                            next_attempt_at=utcnow(),  # due at once, whatever `now` was
                            created_at=utcnow(),
                        )
                        s.add(digest)
                        s.flush()
                        s.execute(
                            update(DeliveryRow)
                            .where(col(DeliveryRow.id).in_([r.id for r in chunk]))
                            .values(
                                status=DeliveryStatus.HELD.to(DeliveryStatus.DIGESTED),
                                digest_id=digest.id,
                            )
                        )
                        made += 1
            log_muted(moved)
        return made

    def floods(
        self, now: datetime, threshold: int, window: timedelta, channel: str | None = None
    ) -> list[Flood]:
        """Gathers floods into one message each (in one channel, if given): more than
        `threshold` alerts for a channel, never tried yet, created within `window` of the
        first of them, i.e. from one poll cycle, whichever process or worker stored them.
        Those already sent stay sent; what a later cycle brings counts afresh. A follow-up
        of a story the desk muted since it was queued is muted, neither counted nor listed."""
        fresh = (
            col(DeliveryRow.status) == DeliveryStatus.PENDING,
            col(DeliveryRow.kind) == DeliveryKind.ALERT,
            col(DeliveryRow.attempts) == 0,
            col(DeliveryRow.next_attempt_at) <= now,
        )
        busy = select(col(DeliveryRow.channel)).where(*fresh)
        if channel is not None:
            busy = busy.where(col(DeliveryRow.channel) == channel)
        busy = busy.group_by(col(DeliveryRow.channel)).having(func.count() > threshold)
        made: list[Flood] = []
        moved: list[dict[str, Any]] = []
        with self._session() as s:
            for name in s.execute(busy).scalars().all():
                created = col(DeliveryRow.created_at)
                waiting = (*fresh, col(DeliveryRow.channel) == name)
                times = s.execute(select(created).where(*waiting).order_by(created)).scalars()
                for start in _cycles([as_utc(t) for t in times], threshold, window):
                    cycle = (*waiting, created >= start, created < start + window)
                    flood = self._flood(s, name, cycle, threshold, moved)
                    if flood is not None:
                        made.append(flood)
        log_muted(moved)
        return made

    def _flood(
        self,
        s: Session,
        channel: str,
        cycle: tuple[Any, ...],
        threshold: int,
        moved: list[dict[str, Any]],
    ) -> Flood | None:
        """One flood message for the rows `cycle` selects, if they are still more than
        `threshold` once the follow-ups of muted stories are muted (added to `moved`),
        unless another deliverer has just gathered them (its message has the key of
        their first row)."""
        moved += mute_followups(s, s.execute(select(DeliveryRow).where(*cycle)).scalars().all())
        first, count = s.execute(
            select(func.min(col(DeliveryRow.id)), func.count()).where(*cycle)
        ).one()
        if first is None or count <= threshold:
            return None
        names = s.execute(select(col(DeliveryRow.watchlist)).where(*cycle).distinct())
        watchlist = ", ".join(sorted(names.scalars()))[:200]
        made = s.execute(
            self._insert(DeliveryRow)
            .values(
                key=f"flood|{channel}|{first}",
                kind=DeliveryKind.FLOOD,
                watchlist=watchlist,
                channel=channel,
                mentions=[],
                status=DeliveryStatus.PENDING,
                next_attempt_at=utcnow(),
                created_at=utcnow(),
            )
            .on_conflict_do_nothing()
            .returning(DeliveryRow.id)
        ).scalar()
        if made is None:
            return None
        result: Any = s.execute(
            update(DeliveryRow)
            .where(*cycle)
            .values(status=DeliveryStatus.PENDING.to(DeliveryStatus.DIGESTED), digest_id=made)
        )
        alerts = int(result.rowcount)
        s.execute(
            update(DeliveryRow)
            .where(col(DeliveryRow.id) == made)
            .values(label=f"{alerts} alerts in one poll cycle")
        )
        unsent = [status for status in DeliveryStatus if status.unsent]
        # their stories' follow-ups have no thread to go to: the flood message stands for them
        gathered = select(col(DeliveryRow.key)).where(col(DeliveryRow.digest_id) == made)
        followups = (col(DeliveryRow.thread_of).in_(gathered), col(DeliveryRow.status).in_(unsent))
        moved += mute_followups(s, s.execute(select(DeliveryRow).where(*followups)).scalars().all())
        s.execute(
            update(DeliveryRow)
            .where(*followups)
            .values(status=DeliveryStatus.HELD.to(DeliveryStatus.DIGESTED), digest_id=made)
        )
        return Flood(made, channel, watchlist, alerts)


def _cycles(times: Sequence[datetime], threshold: int, window: timedelta) -> list[datetime]:
    """The start of each run of more than `threshold` times within `window` of its first."""
    starts, i = [], 0
    while i < len(times):
        j = i + 1
        while j < len(times) and times[j] < times[i] + window:
            j += 1
        if j - i > threshold:
            starts.append(times[i])
        i = j
    return starts

"""Digests: held deliveries gathered into one message each schedule boundary, or when
quiet hours end."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlmodel import col

from monitor.config import Watchlist
from monitor.db import Database
from monitor.models import DeliveryRow, utcnow

DIGEST_PART = 20  # stories per digest message; Slack allows 50 blocks


class Digests(Database):
    def make(self, watchlists: Sequence[Watchlist], now: datetime) -> int:
        """Gathers held rows into digest deliveries: at each schedule boundary for digest
        watchlists, and when quiet hours end for the others. Returns digests made."""
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
                            col(DeliveryRow.status) == "held",
                            col(DeliveryRow.created_at) < until,
                        )
                        .order_by(col(DeliveryRow.id))
                    )
                    .scalars()
                    .all()
                )
                by_channel: dict[str, list[DeliveryRow]] = {}
                for row in held:
                    by_channel.setdefault(row.channel, []).append(row)
                for channel, rows in by_channel.items():
                    parts = [rows[i : i + DIGEST_PART] for i in range(0, len(rows), DIGEST_PART)]
                    for part, chunk in enumerate(parts):
                        suffix = f" ({part + 1}/{len(parts)})" if len(parts) > 1 else ""
                        digest = DeliveryRow(
                            key=f"{wl.name}|digest|{until.isoformat()}|{channel}|{part}",
                            kind="digest",
                            watchlist=wl.name,
                            channel=channel,
                            label=label + suffix,
                            status="pending",
                            next_attempt_at=utcnow(),  # due at once, whatever `now` was
                            created_at=utcnow(),
                        )
                        s.add(digest)
                        s.flush()
                        s.execute(
                            update(DeliveryRow)
                            .where(col(DeliveryRow.id).in_([r.id for r in chunk]))
                            .values(status="digested", digest_id=digest.id)
                        )
                        made += 1
        return made

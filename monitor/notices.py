"""Messages for operators in `ops_channel`: a feed's change of health, a rejected config
edit. Each is queued in the outbox once, by its key."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import update
from sqlmodel import Session, col

from monitor.db import Database
from monitor.health import Notice
from monitor.models import DeliveryKind, DeliveryRow, DeliveryStatus, FeedRow, utcnow


class Notices(Database):
    def record(self, notices: Sequence[Notice], channel: str | None) -> int:
        """Marks each feed's new health state and, with an ops channel, queues its message,
        in one transaction: a notice is never lost and never queued twice."""
        queued = 0
        with self._session() as s:
            for notice in notices:
                s.execute(
                    update(FeedRow)
                    .where(col(FeedRow.name) == notice.feed)
                    .values(health_alerted=notice.alerted)
                )
                if channel:
                    queued += self._notice(s, notice.key, channel, notice.text)
        return queued

    def queue(self, key: str, channel: str, text: str) -> int:
        """One message for operators (a rejected config edit, say), once per key."""
        with self._session() as s:
            return self._notice(s, key, channel, text)

    def _notice(self, s: Session, key: str, channel: str, text: str) -> int:
        stmt = (
            self._insert(DeliveryRow)
            .values(
                key=key,
                kind=DeliveryKind.NOTICE,
                watchlist="",
                channel=channel,
                mentions=[],
                label=text[:400],
                status=DeliveryStatus.PENDING,
                next_attempt_at=utcnow(),
                created_at=utcnow(),
            )
            .on_conflict_do_nothing()
            .returning(DeliveryRow.id)
        )
        return len(s.execute(stmt).all())

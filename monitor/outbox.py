"""The delivery outbox: what must be sent, what was, and what to do about the rest.

Rows are written in the same transaction as their match (see Store.save, which calls
`queue`). A deliverer claims a row (pending -> sending, one attempt counted) before
it sends and records the outcome after, so a crash between the two leaves a row in
"sending": the next deliverer checks Slack for it (the message carries the row's key
in its metadata) before posting again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from monitor.config import Watchlist
from monitor.db import Database
from monitor.models import (
    ArticleRow,
    ChannelRow,
    DeliveryRow,
    FeedRow,
    MatchRow,
    Outgoing,
    Sent,
    Story,
    utcnow,
)


@dataclass(frozen=True)
class Policy:
    """How a watchlist wants its matches delivered, decided at the time they are stored."""

    hold: bool  # for a digest (scheduled, or at the end of quiet hours)
    followups: str  # thread | ignore | separate
    mentions: tuple[str, ...] = ()


def policies(watchlists: Iterable[Watchlist], now: datetime) -> dict[str, Policy]:
    return {
        wl.name: Policy(
            hold=wl.delivery == "digest" or (wl.quiet is not None and wl.quiet.hours.active(now)),
            followups=wl.followups,
            mentions=tuple(wl.notify),
        )
        for wl in watchlists
    }


def alert_key(watchlist: str, story_key: str, channel: str) -> str:
    return f"{watchlist}|{story_key}|{channel}"


def queue(
    session: Session,
    insert: Callable[[type[DeliveryRow]], Any],
    *,
    match_id: int,
    watchlist: str,
    channel: str,
    story_key: str,
    article_id: int,
    strength: str,
    policy: Policy,
    now: datetime,
) -> int:
    """Adds the delivery a new match calls for; returns 1 if one was queued.

    The first match of a story gets the story's alert. A later copy (another outlet, or
    near-identical text) becomes a thread follow-up, a separate alert, or nothing, as
    the watchlist's `followups` says.
    """
    parent_key = alert_key(watchlist, story_key, channel)
    parent = session.execute(
        select(col(DeliveryRow.status)).where(col(DeliveryRow.key) == parent_key)
    ).scalar()
    status = "held" if policy.hold else "pending"
    values: dict[str, Any] = {
        "key": parent_key,
        "kind": "alert",
        "thread_of": None,
        "mentions": list(policy.mentions) if strength == "about" else [],
    }
    if parent is not None:
        if policy.followups == "ignore":
            return 0
        if policy.followups == "separate":
            values["key"] = f"{parent_key}|{article_id}"
        else:
            values = {
                "key": f"{parent_key}|also|{article_id}",
                "kind": "followup",
                "thread_of": parent_key,
                "mentions": [],
            }
            if parent in ("held", "digested"):
                status = "held"
    stmt = (
        insert(DeliveryRow)
        .values(
            match_id=match_id,
            watchlist=watchlist,
            story_key=story_key,
            channel=channel,
            status=status,
            next_attempt_at=now,
            created_at=now,
            **values,
        )
        .on_conflict_do_nothing()
        .returning(DeliveryRow.id)
    )
    return len(session.execute(stmt).all())


class Outbox(Database):
    def due(self, now: datetime, limit: int = 100, channel: str | None = None) -> list[Outgoing]:
        """Pending rows whose time has come (in one channel, if given); a follow-up waits
        until its parent is sent."""
        out: list[Outgoing] = []
        stmt = select(DeliveryRow).where(
            col(DeliveryRow.status) == "pending", col(DeliveryRow.next_attempt_at) <= now
        )
        if channel is not None:
            stmt = stmt.where(col(DeliveryRow.channel) == channel)
        with self._session() as s:
            rows = s.execute(stmt.order_by(col(DeliveryRow.id)).limit(limit)).scalars().all()
            for row in rows:
                thread_ts = None
                if row.thread_of:
                    parent = s.execute(
                        select(DeliveryRow).where(col(DeliveryRow.key) == row.thread_of)
                    ).scalar()
                    if parent is not None and parent.status in ("pending", "sending"):
                        continue
                    if parent is not None and parent.status == "sent":
                        thread_ts = parent.slack_ts
                out.append(self._outgoing(s, row, thread_ts))
        return out

    def _outgoing(self, s: Session, row: DeliveryRow, thread_ts: str | None) -> Outgoing:
        if row.kind == "notice":
            stories: list[Story] = []
        elif row.kind == "digest":
            children = select(col(DeliveryRow.match_id)).where(col(DeliveryRow.digest_id) == row.id)
            stories = self._stories(s, children)
        else:
            stories = self._stories(s, [row.match_id])
        return Outgoing(
            delivery_id=row.id or 0,
            key=row.key,
            kind=row.kind,
            watchlist=row.watchlist,
            channel=row.channel,
            stories=stories,
            attempts=row.attempts,
            thread_ts=thread_ts,
            mentions=list(row.mentions),
            label=row.label,
            channel_id=known.channel_id if (known := s.get(ChannelRow, row.channel)) else None,
        )

    def _stories(self, s: Session, match_ids: Any) -> list[Story]:
        stmt = (
            select(MatchRow, ArticleRow, col(FeedRow.name))
            .join(ArticleRow, col(ArticleRow.id) == MatchRow.article_id)
            .join(FeedRow, col(FeedRow.id) == ArticleRow.feed_id)
            .where(col(MatchRow.id).in_(match_ids))
            .order_by(col(MatchRow.id))
        )
        return [
            Story(
                title=a.title,
                url=a.url,
                feed=feed,
                published=a.published_at,
                matched=list(m.matched),
                snippet=m.snippet,
                highlights=[(h[0], h[1]) for h in m.highlights],
                strength=m.strength,
            )
            for m, a, feed in s.execute(stmt)
        ]

    def claim(self, delivery_id: int) -> bool:
        """pending -> sending, counting the attempt; False if another deliverer has it."""
        with self._session() as s:
            result: Any = s.execute(
                update(DeliveryRow)
                .where(col(DeliveryRow.id) == delivery_id, col(DeliveryRow.status) == "pending")
                .values(
                    status="sending",
                    attempt_started_at=utcnow(),
                    attempts=col(DeliveryRow.attempts) + 1,
                )
            )
            return bool(result.rowcount == 1)

    def sent(self, delivery_id: int, channel: str, sent: Sent) -> None:
        with self._session() as s:
            s.execute(
                update(DeliveryRow)
                .where(col(DeliveryRow.id) == delivery_id)
                .values(
                    status="sent",
                    slack_ts=sent.ts,
                    channel_id=sent.channel_id,
                    sent_at=utcnow(),
                    attempt_started_at=None,
                    last_error=None,
                )
            )
            if sent.channel_id and not s.get(ChannelRow, channel):
                s.add(ChannelRow(name=channel, channel_id=sent.channel_id))

    def failed(self, delivery_id: int, error: str, *, dead: bool, retry_at: datetime) -> None:
        with self._session() as s:
            s.execute(
                update(DeliveryRow)
                .where(col(DeliveryRow.id) == delivery_id)
                .values(
                    status="dead" if dead else "pending",
                    last_error=error[:2000],
                    next_attempt_at=retry_at,
                    attempt_started_at=None,
                )
            )

    def release(self, delivery_id: int) -> None:
        """Back to pending after a lost send was looked for and not found."""
        with self._session() as s:
            s.execute(
                update(DeliveryRow)
                .where(col(DeliveryRow.id) == delivery_id, col(DeliveryRow.status) == "sending")
                .values(status="pending", attempt_started_at=None, next_attempt_at=utcnow())
            )

    def unconfirmed(
        self, started_before: datetime | None, channel: str | None = None
    ) -> list[tuple[Outgoing, datetime]]:
        """Rows left in "sending" (all of them, or those older than a lease; in one channel,
        if given)."""
        with self._session() as s:
            stmt = select(DeliveryRow).where(col(DeliveryRow.status) == "sending")
            if started_before is not None:
                stmt = stmt.where(col(DeliveryRow.attempt_started_at) < started_before)
            if channel is not None:
                stmt = stmt.where(col(DeliveryRow.channel) == channel)
            out = []
            for row in s.execute(stmt.order_by(col(DeliveryRow.id))).scalars().all():
                thread_ts = None
                if row.thread_of:
                    thread_ts = s.execute(
                        select(col(DeliveryRow.slack_ts)).where(
                            col(DeliveryRow.key) == row.thread_of
                        )
                    ).scalar()
                out.append((self._outgoing(s, row, thread_ts), row.attempt_started_at or utcnow()))
            return out

    def channels_due(self, now: datetime, started_before: datetime) -> list[str]:
        """Channels with a row to send now, or one left unconfirmed longer than a lease."""
        status, started = col(DeliveryRow.status), col(DeliveryRow.attempt_started_at)
        stmt = (
            select(col(DeliveryRow.channel))
            .where(
                ((status == "pending") & (col(DeliveryRow.next_attempt_at) <= now))
                | ((status == "sending") & (started < started_before))
            )
            .distinct()
        )
        with self._session() as s:
            return sorted(s.execute(stmt).scalars())

    def last_sent_at(self, channel: str) -> datetime | None:
        """When the channel last got a message, from any worker: pacing carries across them."""
        stmt = select(func.max(col(DeliveryRow.sent_at))).where(col(DeliveryRow.channel) == channel)
        with self._session() as s:
            return s.execute(stmt).scalar()

    def listing(
        self,
        statuses: Sequence[str] | None,
        watchlist: str | None,
    ) -> list[dict[str, Any]]:
        with self._session() as s:
            stmt = select(DeliveryRow).order_by(col(DeliveryRow.id))
            if statuses:
                stmt = stmt.where(col(DeliveryRow.status).in_(statuses))
            if watchlist:
                stmt = stmt.where(col(DeliveryRow.watchlist) == watchlist)
            return [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "watchlist": r.watchlist,
                    "channel": r.channel,
                    "status": r.status,
                    "attempts": r.attempts,
                    "last_error": r.last_error,
                    "slack_ts": r.slack_ts,
                    "key": r.key,
                    "created_at": r.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                for r in s.execute(stmt).scalars().all()
            ]

    def retry_dead(self, watchlist: str | None) -> int:
        with self._session() as s:
            stmt = update(DeliveryRow).where(col(DeliveryRow.status) == "dead")
            if watchlist:
                stmt = stmt.where(col(DeliveryRow.watchlist) == watchlist)
            result: Any = s.execute(
                stmt.values(status="pending", attempts=0, next_attempt_at=utcnow())
            )
            return int(result.rowcount)

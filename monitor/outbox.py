"""The delivery outbox: what must be sent, what was, and what to do about the rest.

Rows are written in the same transaction as their match (see Store.save, which calls
`queue`): one per (watchlist, story, channel), and one per other article of the story
(a follow-up); another feed's copy of the same article adds none. A deliverer claims a
row (pending -> sending, one attempt counted) before it sends and records the outcome
after, so a crash between the two leaves a row sending: a deliverer checks Slack
for it (the message carries the row's key in its metadata) before posting again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from monitor.config import Watchlist
from monitor.db import Database
from monitor.dedupe import canonical_url, content_hash
from monitor.feedback import muted
from monitor.models import (
    ArticleRow,
    ChannelRow,
    DeliveryKind,
    DeliveryRow,
    DeliveryStatus,
    FeedbackRow,
    FeedRow,
    Item,
    MatchHold,
    MatchRow,
    Outgoing,
    Sent,
    Story,
    Strength,
    as_utc,
    utcnow,
)

log = logging.getLogger(__name__)


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


UNSENT = tuple(s for s in DeliveryStatus if s.unsent)
# how last_error begins for a delivery that waits out a rate limit: Slack's own word on
# when to come back, which neither a probe nor the end of a fault overrides
RATE_LIMITED = "rate limited: "


def article_identity(url: str | None, title: str, body: str) -> str:
    """What makes two stored articles the same article: the canonical link, or for an
    article without one, its text. Copies of one article from several feeds share it."""
    link = canonical_url(url) if url else None
    if link:
        return f"url:{link}"
    return "hash:" + content_hash(Item(title, None, None, body, "", None))


@dataclass(frozen=True)
class _Copy:
    """One delivery of a story in a channel, with the article it names."""

    delivery_id: int
    key: str
    status: DeliveryStatus | None  # None: the new article, not delivered yet
    digest_id: int | None
    match_id: int
    article_id: int
    strength: str
    published: datetime | None
    identity: str


def _earlier(a: datetime | None, b: datetime | None) -> bool:
    return a is not None and b is not None and as_utc(a) < as_utc(b)


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

    The first match of a story gets the story's alert. A copy of an article already in
    the story (the same canonical link from another feed) is never posted again; an
    unsent delivery takes it instead when it was published earlier, so the alert names
    the earliest copy. A different article of the story (another outlet's link, or
    near-identical text) becomes a thread follow-up, a separate alert, or nothing, as
    the watchlist's `followups` says (none while the desk has the story muted: the
    match is marked so); published before the story's unsent alert, it
    takes the alert's place, and the article it displaces becomes that follow-up.
    """
    parent_key = alert_key(watchlist, story_key, channel)
    status = DeliveryStatus.HELD if policy.hold else DeliveryStatus.PENDING
    row = {
        "watchlist": watchlist,
        "story_key": story_key,
        "channel": channel,
        "next_attempt_at": now,
        "created_at": now,
    }

    def add(values: dict[str, Any]) -> int:
        stmt = insert(DeliveryRow).values(**row, **values).on_conflict_do_nothing()
        return len(session.execute(stmt.returning(DeliveryRow.id)).all())

    mentions = list(policy.mentions)
    alert = {"key": parent_key, "kind": DeliveryKind.ALERT, "thread_of": None, "status": status}
    named = mentions if strength == Strength.ABOUT else []  # a passing mention calls nobody
    if add({**alert, "match_id": match_id, "mentions": named}):
        return 1
    copies = _story(session, watchlist, story_key, channel, match_id)
    new = next(c for c in copies if c.delivery_id == 0)
    known = [c for c in copies if c.delivery_id != 0]
    parent = next((c for c in known if c.key == parent_key), None)
    if parent is None or _flooded(session, parent):
        return 0  # (a copy of a story posted in a flood message adds nothing to it)
    same = next((c for c in known if c.identity == new.identity), None)
    if same is not None:
        if same.status in UNSENT and _earlier(new.published, same.published):
            _rename(session, same, new, mentions if same.key == parent_key else [])
        return 0
    copy = new
    earlier = parent.status in UNSENT and _earlier(new.published, parent.published)
    if earlier and _rename(session, parent, new, mentions):
        copy = parent  # the article the alert named now follows it
    if policy.followups == "ignore":
        return 0
    mute = muted(session, watchlist, story_key)
    if mute is not None:  # the desk muted the story: stored, shown as muted, never posted
        _hold_muted(session, copy.match_id, mute)
        return 0
    if policy.followups == "separate":
        values = {
            **alert,
            "key": f"{parent_key}|{copy.article_id}",
            "mentions": mentions if copy.strength == Strength.ABOUT else [],
        }
    else:
        values = {
            "key": f"{parent_key}|also|{copy.article_id}",
            "kind": DeliveryKind.FOLLOWUP,
            "thread_of": parent_key,
            "mentions": [],
            "status": DeliveryStatus.HELD
            if parent.status in (DeliveryStatus.HELD, DeliveryStatus.DIGESTED)
            else status,
        }
    return add({**values, "match_id": copy.match_id})


def _hold_muted(s: Session, match_id: int, mute: FeedbackRow) -> None:
    """Marks a follow-up's match held back by the desk's Mute story, saying whose."""
    when = f"{as_utc(mute.created_at):%Y-%m-%d %H:%M} UTC"
    why = f"story muted by feedback #{mute.id} ({mute.user_name or mute.user_id}, {when})"
    s.execute(
        update(MatchRow)
        .where(col(MatchRow.id) == match_id)
        .values(held=MatchHold.MUTED, held_why=why)
    )


def _followup(row: DeliveryRow) -> bool:
    """Whether a delivery is a follow-up of its story (in the thread, or a separate
    alert), which a Mute story holds back: never the story's own alert."""
    if row.match_id is None or not row.story_key:
        return False
    kind = DeliveryKind(row.kind)
    own = alert_key(row.watchlist, row.story_key, row.channel)
    return kind is DeliveryKind.FOLLOWUP or (kind is DeliveryKind.ALERT and row.key != own)


def mute_followups(s: Session, rows: Iterable[DeliveryRow]) -> list[dict[str, Any]]:
    """Moves each unsent row that is a follow-up of a story the desk muted (pending or
    held) to muted, its match held as one muted when stored, in the caller's
    transaction: a claim, a flood or a digest takes the others and never this one.
    Each story's mute is read once (a digest may gather many follow-ups of one story).
    Returns the ids of those moved, for `log_muted` once the transaction is committed."""
    moved: list[dict[str, Any]] = []
    mutes: dict[tuple[str, str], FeedbackRow | None] = {}
    for row in rows:
        if not _followup(row):
            continue
        story = (row.watchlist, row.story_key)
        if story not in mutes:
            mutes[story] = muted(s, *story)
        mute = mutes[story]
        if mute is None:
            continue
        assert row.match_id is not None  # _followup asked for it
        was = DeliveryStatus(row.status)
        result: Any = s.execute(
            update(DeliveryRow)
            .where(col(DeliveryRow.id) == row.id, col(DeliveryRow.status) == was)
            .values(status=was.to(DeliveryStatus.MUTED))
        )
        if result.rowcount != 1:
            continue  # another deliverer took it meanwhile
        _hold_muted(s, row.match_id, mute)
        moved.append(
            {
                "delivery_id": row.id,
                "match_id": row.match_id,
                "feedback_id": mute.id,
                "watchlist": row.watchlist,
                "channel": row.channel,
            }
        )
    return moved


def log_muted(moved: Iterable[dict[str, Any]]) -> None:
    for ids in moved:
        log.info("follow-up not posted: its story is muted", extra=ids)


def _story(s: Session, watchlist: str, story_key: str, channel: str, match_id: int) -> list[_Copy]:
    """The story's deliveries in the channel, and the new article (delivery_id 0)."""
    rows = s.execute(
        select(DeliveryRow, MatchRow, ArticleRow)
        .join(MatchRow, col(MatchRow.id) == DeliveryRow.match_id)
        .join(ArticleRow, col(ArticleRow.id) == MatchRow.article_id)
        .where(
            col(DeliveryRow.watchlist) == watchlist,
            col(DeliveryRow.story_key) == story_key,
            col(DeliveryRow.channel) == channel,
            col(DeliveryRow.kind).in_((DeliveryKind.ALERT, DeliveryKind.FOLLOWUP)),
        )
    ).all()
    new = s.execute(
        select(MatchRow, ArticleRow)
        .join(ArticleRow, col(ArticleRow.id) == MatchRow.article_id)
        .where(col(MatchRow.id) == match_id)
    ).one()
    return [
        _Copy(
            delivery_id=(d.id or 0) if d is not None else 0,
            key=d.key if d is not None else "",
            status=DeliveryStatus(d.status) if d is not None else None,
            digest_id=d.digest_id if d is not None else None,
            match_id=m.id or 0,
            article_id=a.id or 0,
            strength=m.strength,
            published=a.published_at,
            identity=article_identity(a.url, a.title, a.body),
        )
        for d, m, a in [*rows, (None, *new)]
    ]


def _flooded(s: Session, parent: _Copy) -> bool:
    if parent.status is not DeliveryStatus.DIGESTED or parent.digest_id is None:
        return False
    kind = s.execute(select(col(DeliveryRow.kind)).where(col(DeliveryRow.id) == parent.digest_id))
    return kind.scalar() == DeliveryKind.FLOOD


def _rename(s: Session, delivery: _Copy, copy: _Copy, mentions: list[str]) -> bool:
    """Points an unsent delivery at an earlier copy; False if it went out meanwhile."""
    values: dict[str, Any] = {"match_id": copy.match_id}
    if copy.strength == Strength.ABOUT and mentions:
        values["mentions"] = mentions  # never drops a mention the delivery had
    result: Any = s.execute(
        update(DeliveryRow)
        .where(col(DeliveryRow.id) == delivery.delivery_id, col(DeliveryRow.status).in_(UNSENT))
        .values(**values)
    )
    return bool(result.rowcount == 1)


def _held_by_failure() -> Any:
    """A pending delivery's failed attempt (not a rate limit) set its next attempt."""
    error = col(DeliveryRow.last_error)
    return error.is_not(None) & ~error.startswith(RATE_LIMITED)


def _outgoing(s: Session, row: DeliveryRow, thread_ts: str | None) -> Outgoing:
    """A delivery row read out with the stories a sink renders."""
    kind = DeliveryKind(row.kind)
    if kind is DeliveryKind.NOTICE:
        stories: list[Story] = []
    elif kind in (DeliveryKind.DIGEST, DeliveryKind.FLOOD):
        children = select(col(DeliveryRow.match_id)).where(
            col(DeliveryRow.digest_id) == row.id, col(DeliveryRow.kind) == DeliveryKind.ALERT
        )
        # a flood message lists its first ones; its thread lists them all (alert/slack.py)
        stories = _stories(s, children.order_by(col(DeliveryRow.id)))
    else:
        stories = _stories(s, [row.match_id])
    return Outgoing(
        delivery_id=row.id or 0,
        key=row.key,
        kind=kind,
        watchlist=row.watchlist,
        channel=row.channel,
        stories=stories,
        attempts=row.attempts,
        thread_ts=thread_ts,
        mentions=list(row.mentions),
        label=row.label,
        channel_id=known.channel_id if (known := s.get(ChannelRow, row.channel)) else None,
    )


def _stories(s: Session, match_ids: Any) -> list[Story]:
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
            match_id=m.id,
        )
        for m, a, feed in s.execute(stmt)
    ]


class Outbox(Database):
    def due(
        self, now: datetime, limit: int = 100, channel: str | None = None, held: bool = False
    ) -> list[Outgoing]:
        """Pending rows whose time has come (in one channel, if given); a follow-up waits
        until its parent is sent. `held`: instead, rows a failed attempt holds back until a
        later time, soonest first (see retries.py)."""
        out: list[Outgoing] = []
        pending = col(DeliveryRow.status) == DeliveryStatus.PENDING
        at = col(DeliveryRow.next_attempt_at)
        if held:
            stmt = select(DeliveryRow).where(pending, at > now, _held_by_failure())
            stmt = stmt.order_by(at, col(DeliveryRow.id))
        else:
            stmt = select(DeliveryRow).where(pending, at <= now).order_by(col(DeliveryRow.id))
        if channel is not None:
            stmt = stmt.where(col(DeliveryRow.channel) == channel)
        with self._session() as s:
            rows = s.execute(stmt.limit(limit)).scalars().all()
            for row in rows:
                thread_ts = None
                if row.thread_of:
                    parent = s.execute(
                        select(DeliveryRow).where(col(DeliveryRow.key) == row.thread_of)
                    ).scalar()
                    waiting = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
                    if parent is not None and parent.status in waiting:
                        continue
                    if parent is not None and parent.status == DeliveryStatus.SENT:
                        thread_ts = parent.slack_ts
                out.append(_outgoing(s, row, thread_ts))
        return out

    def claim(self, delivery_id: int, thread_ts: str | None = None) -> Outgoing | None:
        """pending -> sending, counting the attempt; None if another deliverer has it (or
        it went into a flood message), or if it is a follow-up of a story the desk muted
        since it was queued: then pending -> muted in the same transaction, so a crash
        cannot both post it and mark it. The delivery comes back as claimed: a copy
        stored since it was read may have changed the article it names."""
        with self._session() as s:
            unclaimed = (col(DeliveryRow.id) == delivery_id) & (
                col(DeliveryRow.status) == DeliveryStatus.PENDING
            )
            row = s.execute(select(DeliveryRow).where(unclaimed)).scalar()
            if row is None:
                return None
            moved = mute_followups(s, [row])
            if not moved:
                result: Any = s.execute(
                    update(DeliveryRow)
                    .where(unclaimed)
                    .values(
                        status=DeliveryStatus.PENDING.to(DeliveryStatus.SENDING),
                        attempt_started_at=utcnow(),
                        attempts=col(DeliveryRow.attempts) + 1,
                    )
                )
                if result.rowcount != 1:
                    return None
                # read again: on PostgreSQL a copy committed since the SELECT above may
                # have renamed the row the UPDATE claimed (tests/test_store.py)
                s.refresh(row)
                return _outgoing(s, row, thread_ts)
        log_muted(moved)
        return None

    def sent(self, delivery_id: int, channel: str, sent: Sent) -> None:
        with self._session() as s:
            s.execute(
                update(DeliveryRow)
                .where(col(DeliveryRow.id) == delivery_id)
                .values(
                    status=DeliveryStatus.SENDING.to(DeliveryStatus.SENT),
                    slack_ts=sent.ts,
                    channel_id=sent.channel_id,
                    sent_at=utcnow(),
                    attempt_started_at=None,
                    last_error=None,
                )
            )
            if sent.channel_id and not s.get(ChannelRow, channel):
                s.add(ChannelRow(name=channel, channel_id=sent.channel_id))

    def failed(
        self,
        delivery_id: int,
        error: str,
        *,
        dead: bool,
        retry_at: datetime,
        refund: bool = False,
        rate_limited: bool = False,
    ) -> None:
        """Records a failed attempt as retries.after decided it; `refund`: it spends none
        (a probe); `rate_limited`: `retry_at` is the sink's word, kept whatever happens
        meanwhile."""
        values: dict[str, Any] = {
            "status": DeliveryStatus.SENDING.to(
                DeliveryStatus.DEAD if dead else DeliveryStatus.PENDING
            ),
            "last_error": ((RATE_LIMITED if rate_limited else "") + error)[:2000],
            "next_attempt_at": retry_at,
            "attempt_started_at": None,
        }
        if refund:
            values["attempts"] = col(DeliveryRow.attempts) - 1
        with self._session() as s:
            s.execute(update(DeliveryRow).where(col(DeliveryRow.id) == delivery_id).values(values))

    def retry_now(self, now: datetime) -> int:
        """Every delivery a failed attempt holds back is due now: the fault has cleared
        (retries.py)."""
        with self._session() as s:
            result: Any = s.execute(
                update(DeliveryRow)
                .where(
                    col(DeliveryRow.status) == DeliveryStatus.PENDING,
                    col(DeliveryRow.next_attempt_at) > now,
                    _held_by_failure(),
                )
                .values(next_attempt_at=now)
            )
            return int(result.rowcount)

    def release(self, delivery_id: int, attempts: int) -> bool:
        """Back to pending after a lost send was looked for and not found; only if no one
        has claimed it again since (its attempts still count `attempts`)."""
        with self._session() as s:
            result: Any = s.execute(
                update(DeliveryRow)
                .where(
                    col(DeliveryRow.id) == delivery_id,
                    col(DeliveryRow.status) == DeliveryStatus.SENDING,
                    col(DeliveryRow.attempts) == attempts,
                )
                .values(
                    status=DeliveryStatus.SENDING.to(DeliveryStatus.PENDING),
                    attempt_started_at=None,
                    next_attempt_at=utcnow(),
                )
            )
            return bool(result.rowcount == 1)

    def unconfirmed(
        self, started_before: datetime | None, channel: str | None = None
    ) -> list[tuple[Outgoing, datetime]]:
        """Rows left sending (all of them, or those older than a lease; in one channel,
        if given)."""
        with self._session() as s:
            stmt = select(DeliveryRow).where(col(DeliveryRow.status) == DeliveryStatus.SENDING)
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
                out.append((_outgoing(s, row, thread_ts), row.attempt_started_at or utcnow()))
            return out

    def channels_due(
        self, now: datetime, started_before: datetime, held: bool = False
    ) -> list[str]:
        """Channels with a row to send now, or one left unconfirmed longer than a lease;
        `held`: or one a failed attempt holds back (a delivery job may probe with it)."""
        status, started = col(DeliveryRow.status), col(DeliveryRow.attempt_started_at)
        waiting = (status == DeliveryStatus.PENDING) & (col(DeliveryRow.next_attempt_at) <= now)
        if held:
            waiting = (status == DeliveryStatus.PENDING) & (
                (col(DeliveryRow.next_attempt_at) <= now) | _held_by_failure()
            )
        stmt = (
            select(col(DeliveryRow.channel))
            .where(waiting | ((status == DeliveryStatus.SENDING) & (started < started_before)))
            .distinct()
        )
        with self._session() as s:
            return sorted(s.execute(stmt).scalars())

    def last_sent_at(self, channel: str) -> datetime | None:
        """When the channel last got a message, from any worker: pacing carries across them."""
        stmt = select(func.max(col(DeliveryRow.sent_at))).where(col(DeliveryRow.channel) == channel)
        with self._session() as s:
            return s.execute(stmt).scalar()


class Deliveries(Database):
    """Deliveries as an operator sees them (`monitor alerts`): listed, the dead queued
    again."""

    def listing(
        self,
        statuses: Sequence[str] | None,
        watchlist: str | None,
    ) -> list[dict[str, Any]]:
        """Deliveries, oldest first, each with its story's title and link (a digest or a
        notice has its label instead): which story is that dead letter?"""
        with self._session() as s:
            stmt = (
                select(DeliveryRow, col(ArticleRow.title), col(ArticleRow.url))
                .outerjoin(MatchRow, col(MatchRow.id) == DeliveryRow.match_id)
                .outerjoin(ArticleRow, col(ArticleRow.id) == MatchRow.article_id)
                .order_by(col(DeliveryRow.id))
            )
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
                    "title": title or r.label or None,
                    "url": url,
                }
                for r, title, url in s.execute(stmt).all()
            ]

    def retry_dead(self, watchlist: str | None) -> int:
        """Every dead delivery (of one watchlist, if given) due again, its attempts anew."""
        with self._session() as s:
            stmt = update(DeliveryRow).where(col(DeliveryRow.status) == DeliveryStatus.DEAD)
            if watchlist:
                stmt = stmt.where(col(DeliveryRow.watchlist) == watchlist)
            result: Any = s.execute(
                stmt.values(
                    status=DeliveryStatus.DEAD.to(DeliveryStatus.PENDING),
                    attempts=0,
                    next_attempt_at=utcnow(),
                )
            )
            return int(result.rowcount)

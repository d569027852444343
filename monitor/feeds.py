"""The feeds' rows: feeds.yaml synced in, each feed's fetch state (validators, due time,
errors in a row) read out for a cycle and written back after it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, func, select, update
from sqlmodel import SQLModel, col

from monitor.config import FeedConfig, FullText
from monitor.db import Database, take_turns
from monitor.models import ArticleRow, FeedRow, FetchResult, as_utc, utcnow
from monitor.redact import redact

log = logging.getLogger(__name__)
_SYNC_LOCK = 0x6D6F6E66  # PostgreSQL advisory lock held while syncing feeds.yaml
_FEEDS = SQLModel.metadata.tables["feed"]
# A feed's fetch state as FeedState holds it: read as plain rows, not as FeedRow objects,
# so a start (and each tick of `monitor run`) builds no ORM object for an unchanged feed.
_STATE = [
    _FEEDS.c[name]
    for name in ("id", "name", "url", "etag", "last_modified", "last_success_at", "errors_in_row")
]


@dataclass(frozen=True)
class FeedState:
    """A feed as the pipeline needs it: config joined with its fetch state."""

    id: int
    name: str
    url: str
    interval: timedelta
    backfill: timedelta
    etag: str | None
    last_modified: str | None
    last_success_at: datetime | None
    errors_in_row: int
    full_text: FullText | None = None  # as feeds.yaml says; None: monitor.yaml's full_text


def next_due(
    feed: FeedState,
    now: datetime,
    errors: int,
    max_interval: timedelta,
    hint: timedelta | None = None,
) -> datetime:
    """When a feed is fetched next: its own interval after a success or a first failure
    (a blip must not cost a story); then doubling per error in a row, up to max_interval
    (or the interval itself when that is longer). A failing feed is never given up on.
    The publisher's hint (ttl, max-age, Expires, Retry-After) can only lengthen the wait,
    and never beyond max_interval."""
    wait = feed.interval
    if errors:
        wait = min(feed.interval * (1 << min(errors - 1, 16)), max(max_interval, feed.interval))
    if hint is not None:
        wait = max(wait, min(hint, max_interval))
    return now + wait


@dataclass(frozen=True)
class Schedule:
    """When fetching happens next: said at start, so a quiet service does not look hung."""

    due_now: int
    next_due_at: datetime | None  # the earliest feed not due now; None when all are

    def describe(self, now: datetime) -> dict[str, Any]:
        """The schedule as log fields and /healthz keys."""
        wait = None if self.next_due_at is None else self.next_due_at - now
        return {
            "feeds_due_now": self.due_now,
            "next_fetch_at": None
            if self.next_due_at is None
            else self.next_due_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "next_fetch_in": None if wait is None else _span(wait),
        }


def _span(wait: timedelta) -> str:
    minutes, seconds = divmod(max(0, round(wait.total_seconds())), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class FeedStore(Database):
    def sync(
        self,
        feeds: Sequence[FeedConfig],
        interval: Any,
        backfill: Any,
    ) -> list[FeedState]:
        """Makes the table agree with feeds.yaml (by name) and returns the configured feeds.
        When it agrees already (every start but the first after an edit) that is one read,
        without the write lock; else workers starting together take turns (an advisory
        lock on PostgreSQL, the write lock on SQLite)."""
        with self._session() as s:
            stored = {
                row.name: row
                for row in s.connection().execute(select(_FEEDS.c.config_url, *_STATE))
            }
        if all(_agrees(stored.get(cfg.name), cfg) for cfg in feeds):
            return [
                _state(stored[cfg.name], interval(cfg), backfill(cfg), cfg.full_text)
                for cfg in feeds
            ]
        with self._session() as s:
            take_turns(s, _SYNC_LOCK)
            rows = {r.name: r for r in s.execute(select(FeedRow)).scalars()}
            mine = []
            for cfg in feeds:
                row = rows.get(cfg.name)
                if row is None:
                    row = FeedRow(name=cfg.name, url=cfg.url, config_url=cfg.url)
                    s.add(row)
                elif not _agrees(row, cfg):
                    row.url, row.config_url = cfg.url, cfg.url
                    row.etag, row.last_modified = None, None
                mine.append((cfg, row))
            s.flush()  # once, for the new rows' ids: nothing to write when nothing changed
            return [_state(row, interval(cfg), backfill(cfg), cfg.full_text) for cfg, row in mine]

    def states(
        self,
        feeds: Sequence[FeedState],
        due_by: datetime | None = None,
        queued: bool = False,
    ) -> list[FeedState]:
        """The feeds' current fetch state, read afresh; only those due by `due_by`, or
        (`queued`) claimed for a poll that has not been recorded yet, if asked."""
        ids = {f.id: f for f in feeds}
        if not ids:
            return []
        c = _FEEDS.c
        stmt = select(*_STATE).where(c.id.in_(ids))
        if due_by is not None:
            stmt = stmt.where(c.next_due_at <= due_by)
        if queued:
            stmt = stmt.where(c.queued_at.is_not(None))
        with self._session() as s:
            rows = s.connection().execute(stmt.order_by(c.next_due_at))
            return [_refreshed(row, ids[row.id]) for row in rows]

    def schedule(self, feeds: Sequence[FeedState], now: datetime) -> Schedule:
        """How many of the feeds are due now, and when the next of the others is."""
        ids = [f.id for f in feeds]
        if not ids:
            return Schedule(0, None)
        due_at = col(FeedRow.next_due_at)
        mine = col(FeedRow.id).in_(ids)
        with self._session() as s:
            due = s.execute(select(func.count()).where(mine, due_at <= now)).scalar_one()
            later = s.execute(select(func.min(due_at)).where(mine, due_at > now)).scalar_one()
        return Schedule(due, as_utc(later) if later else None)

    def claim_due(self, feeds: Sequence[FeedState], now: datetime, lease: timedelta) -> list[int]:
        """The ids of the feeds due by `now`, each marked queued and moved `lease` ahead in
        the same statement, so two schedulers never both queue a feed; its poll's record
        then clears the mark and sets the real next due time, and a feed whose poll was
        lost comes due again when the lease runs out. Ids, not rows: the poll job reads
        its feeds' state when it starts."""
        ids = [f.id for f in feeds]
        if not ids:
            return []
        with self._session() as s:
            return list(
                s.execute(
                    update(FeedRow)
                    .where(col(FeedRow.id).in_(ids), col(FeedRow.next_due_at) <= now)
                    .values(next_due_at=now + lease, queued_at=now)
                    .returning(col(FeedRow.id))
                ).scalars()
            )

    def record_fetches(self, results: Sequence[FetchResult]) -> None:
        """Many feeds' poll results in one transaction: a cycle of 304s costs one commit,
        and unchanged feeds one prepared UPDATE executed for all of them."""
        if not results:
            return
        unchanged: list[FetchResult] = []
        others: list[FetchResult] = []
        for r in results:
            plain = r.status == 304 and r.error is None and not r.moved_to
            (unchanged if plain else others).append(r)
        now = utcnow()
        with self._session() as s:
            if unchanged:
                s.connection().execute(
                    update(_FEEDS)
                    .where(_FEEDS.c.id == bindparam("fid"))
                    .values(
                        last_fetch_at=now,
                        last_success_at=now,
                        last_status=304,
                        next_due_at=bindparam("due"),
                        last_duration_ms=bindparam("ms"),
                        last_error=None,
                        errors_in_row=0,
                        failing_since=None,
                        queued_at=None,
                    ),
                    [
                        {
                            "fid": r.feed_id,
                            "due": r.next_due,
                            "ms": None if r.elapsed is None else int(r.elapsed * 1000),
                        }
                        for r in unchanged
                    ],
                )
            if others:
                ids = [r.feed_id for r in others]
                rows = {
                    row.id: row
                    for row in s.execute(select(FeedRow).where(col(FeedRow.id).in_(ids))).scalars()
                }
                for result in others:
                    if result.feed_id in rows:
                        record(rows[result.feed_id], result)

    def page_counts(self, since: datetime) -> dict[int, dict[str, int]]:
        """Feed id -> how reading its items' linked pages went since `since`, by outcome
        (a page is read when its item is first stored)."""
        outcome = col(ArticleRow.page_outcome)
        stmt = (
            select(col(ArticleRow.feed_id), outcome, func.count())
            .where(col(ArticleRow.seen_at) >= since, outcome.is_not(None))
            .group_by(col(ArticleRow.feed_id), outcome)
        )
        counts: dict[int, dict[str, int]] = {}
        with self._session() as s:
            for feed_id, kind, n in s.execute(stmt):
                counts.setdefault(feed_id, {})[kind] = n
        return counts

    def rows(self) -> list[FeedRow]:
        with self._session() as s:
            return list(s.execute(select(FeedRow).order_by(FeedRow.name)).scalars())


def record(row: FeedRow, result: FetchResult) -> None:
    now = utcnow()
    row.last_fetch_at = now
    row.queued_at = None
    row.last_status = result.status
    row.next_due_at = result.next_due
    if result.elapsed is not None:
        row.last_duration_ms = int(result.elapsed * 1000)
    if result.error is not None:
        row.last_error = result.error[:2000]
        row.errors_in_row += 1
        row.failing_since = row.failing_since or now
        return
    row.last_success_at = now
    row.last_error = None
    row.errors_in_row = 0
    row.failing_since = None
    row.items_seen += result.new_items
    if result.held_back is not None:
        row.held_back, row.held_back_matching = result.held_back, result.held_back_matching
    if result.new_items:
        row.last_new_at = now
    if result.status != 304:
        row.etag, row.last_modified = result.etag, result.last_modified
    if result.moved_to and result.moved_to != row.url:
        log.info(
            "feed moved permanently",
            extra={
                "feed": row.name,
                "feed_id": row.id,
                "from": redact(row.url),
                "to": redact(result.moved_to),
            },
        )
        row.url = result.moved_to


def _agrees(row: FeedRow | Row[Any] | None, cfg: FeedConfig) -> bool:
    """Whether a feed's row is there and is for the URL feeds.yaml gives it now (it is
    fetched where it moved to, but a new URL in feeds.yaml is a new start)."""
    return row is not None and (row.config_url or row.url) == cfg.url


def _state(
    row: FeedRow | Row[Any],
    interval: timedelta,
    backfill: timedelta,
    full_text: FullText | None,
) -> FeedState:
    return FeedState(
        id=row.id or 0,
        name=row.name,
        url=row.url,
        interval=interval,
        backfill=backfill,
        etag=row.etag,
        last_modified=row.last_modified,
        last_success_at=row.last_success_at,
        errors_in_row=row.errors_in_row,
        full_text=full_text,
    )


def _refreshed(row: FeedRow | Row[Any], known: FeedState) -> FeedState:
    """The row's fetch state, with the config of the feed's state as it was known."""
    return _state(row, known.interval, known.backfill, known.full_text)

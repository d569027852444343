"""Store stage: feeds, articles and matches.

Articles, matches and their deliveries (see outbox.py) are written in one
transaction, so a match can never exist without its outbox row. Inserts skip rows
that unique constraints already hold, which makes every write safe to repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlmodel import Session, SQLModel, col

from monitor.config import FeedConfig
from monitor.db import Database, take_turns
from monitor.dedupe import BANDS, NEAR_DUPLICATE, NEAR_DUPLICATE_WINDOW, lsh_bands, similarity
from monitor.models import (
    ArticleRow,
    DeliveryRow,
    Entry,
    FeedRow,
    FetchResult,
    Item,
    MatchResult,
    MatchRow,
    utcnow,
)
from monitor.outbox import Policy, queue

log = logging.getLogger(__name__)
_CHUNK = 400
_SYNC_LOCK = 0x6D6F6E66  # PostgreSQL advisory lock held while syncing feeds.yaml
_BANDS = tuple(f"band{i}" for i in range(BANDS))
_ARTICLES = SQLModel.metadata.tables["article"]
_FEEDS = SQLModel.metadata.tables["feed"]


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


class Store(Database):
    def sync_feeds(
        self,
        feeds: Sequence[FeedConfig],
        interval: Any,
        backfill: Any,
    ) -> list[FeedState]:
        """Makes the table agree with feeds.yaml (by name) and returns the configured feeds.
        Workers starting together on PostgreSQL take turns (an advisory lock)."""
        out = []
        with self._session() as s:
            take_turns(s, _SYNC_LOCK)
            rows = {r.name: r for r in s.execute(select(FeedRow)).scalars()}
            for cfg in feeds:
                row = rows.get(cfg.name)
                if row is None:
                    row = FeedRow(name=cfg.name, url=cfg.url, config_url=cfg.url)
                    s.add(row)
                elif (row.config_url or row.url) != cfg.url:
                    row.url, row.config_url = cfg.url, cfg.url
                    row.etag, row.last_modified = None, None
                s.flush()
                out.append(_state(row, interval(cfg), backfill(cfg)))
        return out

    def states(
        self,
        feeds: Sequence[FeedState],
        due_by: datetime | None = None,
        unpolled_since: datetime | None = None,
    ) -> list[FeedState]:
        """The feeds' current fetch state, read afresh; only those due by `due_by`, or not
        polled since `unpolled_since`, if given."""
        ids = {f.id: f for f in feeds}
        if not ids:
            return []
        stmt = select(FeedRow).where(col(FeedRow.id).in_(ids))
        if due_by is not None:
            stmt = stmt.where(col(FeedRow.next_due_at) <= due_by)
        if unpolled_since is not None:
            polled = col(FeedRow.last_fetch_at)
            stmt = stmt.where(polled.is_(None) | (polled < unpolled_since))
        with self._session() as s:
            rows = s.execute(stmt.order_by(col(FeedRow.next_due_at))).scalars()
            return [_state(r, ids[r.id or 0].interval, ids[r.id or 0].backfill) for r in rows]

    def claim_due(
        self, feeds: Sequence[FeedState], now: datetime, lease: timedelta
    ) -> list[FeedState]:
        """The feeds due by `now`, each moved `lease` ahead in the same statement, so two
        schedulers never both queue a feed; its poll then sets the real next due time, and
        a feed whose poll was lost comes due again when the lease runs out."""
        ids = {f.id: f for f in feeds}
        if not ids:
            return []
        with self._session() as s:
            rows = s.execute(
                update(FeedRow)
                .where(col(FeedRow.id).in_(ids), col(FeedRow.next_due_at) <= now)
                .values(next_due_at=now + lease)
                .returning(FeedRow)
            ).scalars()
            return [_state(r, ids[r.id or 0].interval, ids[r.id or 0].backfill) for r in rows]

    def seen_keys(self, feed_id: int, keys: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(keys))
        seen: set[str] = set()
        with self._session() as s:
            for i in range(0, len(wanted), _CHUNK):
                stmt = select(col(ArticleRow.key)).where(
                    col(ArticleRow.feed_id) == feed_id,
                    col(ArticleRow.key).in_(wanted[i : i + _CHUNK]),
                )
                seen.update(s.execute(stmt).scalars())
        return seen

    def save(
        self,
        feed_id: int,
        entries: Sequence[Entry],
        alertable: set[str],
        matches: Sequence[tuple[Entry, list[MatchResult]]],
        policies: Mapping[str, Policy],
        fetch: FetchResult | None = None,
    ) -> int:
        """Stores new entries, their matches, their deliveries and the poll's result in one
        transaction.

        An entry whose text nearly equals a recent article's joins that article's story.
        Returns how many deliveries were queued.
        """
        now = utcnow()
        queued = 0
        with self._session() as s:
            bands = {e.key: lsh_bands(e.minhash) for e in entries if e.minhash is not None}
            stories = self._near_duplicates(s, entries, bands, now)
            ids: dict[str, int] = {}
            rows = [
                {
                    "feed_id": feed_id,
                    "key": e.key,
                    "story_key": stories.get(e.key, e.story_key),
                    "title": e.item.title[:2000],
                    "url": e.link,
                    "body": e.item.body,
                    "published_at": e.item.published,
                    "seen_at": now,
                    "alertable": e.key in alertable,
                    **_band_columns(e, bands.get(e.key)),
                }
                for e in entries
            ]
            if rows:  # one cached Core statement, executed for many rows
                stmt = self._insert(_ARTICLES).on_conflict_do_nothing()
                stmt = stmt.returning(_ARTICLES.c.id, _ARTICLES.c.key)
                ids.update({r.key: r.id for r in s.connection().execute(stmt, rows)})
            for entry, results in matches:
                article_id = ids.get(entry.key)
                if article_id is None:
                    continue  # another worker stored it first and owns its matches
                story_key = stories.get(entry.key, entry.story_key)
                for m in results:
                    stmt = (
                        self._insert(MatchRow)
                        .values(
                            watchlist=m.watchlist,
                            story_key=story_key,
                            article_id=article_id,
                            matched=m.matched,
                            hits=[asdict(h) for h in m.hits],
                            snippet=m.snippet,
                            strength=m.strength,
                            highlights=[list(h) for h in m.highlights],
                            created_at=now,
                        )
                        .on_conflict_do_nothing()
                        .returning(MatchRow.id)
                    )
                    match_id = s.execute(stmt).scalar()
                    if match_id is None:
                        continue
                    queued += queue(
                        s,
                        self._insert,
                        match_id=match_id,
                        watchlist=m.watchlist,
                        channel=m.channel,
                        story_key=story_key,
                        article_id=article_id,
                        strength=m.strength,
                        policy=policies[m.watchlist],
                        now=now,
                    )
            row = s.get(FeedRow, fetch.feed_id) if fetch is not None else None
            if fetch is not None and row is not None:
                _record(row, fetch)
        return queued

    def _near_duplicates(
        self,
        s: Session,
        entries: Sequence[Entry],
        bands: Mapping[str, tuple[int, ...]],
        now: datetime,
    ) -> dict[str, str]:
        """Entry key -> story key of a recent article with nearly the same text.

        One query for the whole batch: candidates share an LSH band with some entry."""
        keyed = []
        for e in entries:
            if e.minhash is not None and e.key in bands:
                keyed.append((e, e.minhash, bands[e.key]))
        if not keyed:
            return {}
        columns = [col(getattr(ArticleRow, b)) for b in _BANDS]
        wanted = [sorted({keys[i] for _, _, keys in keyed}) for i in range(BANDS)]
        stmt = select(col(ArticleRow.story_key), col(ArticleRow.signature), *columns).where(
            col(ArticleRow.seen_at) >= now - NEAR_DUPLICATE_WINDOW,
            or_(*(c.in_(values) for c, values in zip(columns, wanted, strict=True))),
        )
        by_band: dict[tuple[int, int], list[tuple[str, list[int]]]] = {}
        for row in s.execute(stmt):
            story_key, signature = row[0], row[1]
            for i, key in enumerate(row[2:]):
                by_band.setdefault((i, key), []).append((story_key, signature))
        out: dict[str, str] = {}
        for e, signature, keys in keyed:
            for i, key in enumerate(keys):
                match = next(
                    (
                        story
                        for story, sig in by_band.get((i, key), [])
                        if story != e.story_key
                        and sig
                        and similarity(signature, sig) >= NEAR_DUPLICATE
                    ),
                    None,
                )
                if match:
                    out[e.key] = match
                    break
        return out

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
                        _record(rows[result.feed_id], result)

    def matches(
        self,
        watchlist: str | None,
        since: datetime | None,
    ) -> list[dict[str, Any]]:
        with self._session() as s:
            stmt = (
                select(MatchRow, ArticleRow, FeedRow, DeliveryRow)
                .join(ArticleRow, col(ArticleRow.id) == MatchRow.article_id)
                .join(FeedRow, col(FeedRow.id) == ArticleRow.feed_id)
                .outerjoin(DeliveryRow, col(DeliveryRow.match_id) == MatchRow.id)
                .order_by(col(MatchRow.created_at).desc(), col(MatchRow.id).desc())
            )
            if watchlist:
                stmt = stmt.where(col(MatchRow.watchlist) == watchlist)
            if since:
                stmt = stmt.where(col(MatchRow.created_at) >= since)
            return [
                {
                    "watchlist": m.watchlist,
                    "title": a.title,
                    "url": a.url,
                    "feed": f.name,
                    "matched": list(m.matched),
                    "snippet": m.snippet,
                    "strength": m.strength,
                    "published_at": _iso(a.published_at),
                    "created_at": _iso(m.created_at),
                    "delivery": d.status if d else None,
                    "slack_ts": d.slack_ts if d else None,
                }
                for m, a, f, d in s.execute(stmt)
            ]

    def prune(self, older_than: datetime, *, dry_run: bool = False) -> dict[str, int]:
        """Deletes what retention no longer needs: matches and their sent or dead
        deliveries older than the cut-off, then articles nothing refers to. Each feed's
        newest articles are kept, whatever their age, so items still in a feed are never
        taken for new; pending deliveries and what they refer to are never touched."""
        with self._session() as s:
            old_matches = select(col(MatchRow.id)).where(col(MatchRow.created_at) < older_than)
            live = select(col(DeliveryRow.match_id)).where(
                col(DeliveryRow.status).notin_(["sent", "dead", "digested"]),
                col(DeliveryRow.match_id).is_not(None),
            )
            matches = [
                m for m in s.execute(old_matches.where(col(MatchRow.id).notin_(live))).scalars()
            ]
            keep = select(col(ArticleRow.id)).where(col(ArticleRow.seen_at) >= older_than)
            newest = select(func.max(ArticleRow.id)).group_by(col(ArticleRow.feed_id))
            referenced = select(col(MatchRow.article_id)).where(col(MatchRow.id).notin_(matches))
            articles = [
                a
                for a in s.execute(
                    select(col(ArticleRow.id)).where(
                        col(ArticleRow.id).notin_(keep),
                        col(ArticleRow.id).notin_(newest),
                        col(ArticleRow.id).notin_(referenced),
                    )
                ).scalars()
            ]
            counts = {"matches": len(matches), "articles": len(articles)}
            if dry_run:
                return counts
            for i in range(0, len(matches), _CHUNK):
                chunk = matches[i : i + _CHUNK]
                s.execute(delete(DeliveryRow).where(col(DeliveryRow.match_id).in_(chunk)))
                s.execute(delete(MatchRow).where(col(MatchRow.id).in_(chunk)))
            still_listed = select(col(DeliveryRow.digest_id)).where(
                col(DeliveryRow.digest_id).is_not(None)
            )
            s.execute(
                delete(DeliveryRow).where(
                    col(DeliveryRow.kind) == "digest",
                    col(DeliveryRow.status) == "sent",
                    col(DeliveryRow.id).notin_(still_listed),
                )
            )
            for i in range(0, len(articles), _CHUNK):
                s.execute(
                    delete(ArticleRow).where(col(ArticleRow.id).in_(articles[i : i + _CHUNK]))
                )
            return counts

    def count_articles(self, since: datetime) -> int:
        with self._session() as s:
            stmt = (
                select(func.count()).select_from(ArticleRow).where(col(ArticleRow.seen_at) >= since)
            )
            return int(s.execute(stmt).scalar_one())

    def iter_articles(self, since: datetime, batch: int = 500) -> Iterator[list[tuple[str, Entry]]]:
        """Stored articles as (feed name, entry), oldest first, a batch at a time."""
        last_id = 0
        while True:
            with self._session() as s:
                stmt = (
                    select(ArticleRow, col(FeedRow.name))
                    .join(FeedRow, col(FeedRow.id) == ArticleRow.feed_id)
                    .where(col(ArticleRow.seen_at) >= since, col(ArticleRow.id) > last_id)
                    .order_by(col(ArticleRow.id))
                    .limit(batch)
                )
                rows = list(s.execute(stmt))
            if not rows:
                return
            last_id = rows[-1][0].id or last_id
            yield [(name, _entry(a)) for a, name in rows]

    def feeds(self) -> list[FeedRow]:
        with self._session() as s:
            return list(s.execute(select(FeedRow).order_by(FeedRow.name)).scalars())


def _record(row: FeedRow, result: FetchResult) -> None:
    now = utcnow()
    row.last_fetch_at = now
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
    if result.new_items:
        row.last_new_at = now
    if result.status != 304:
        row.etag, row.last_modified = result.etag, result.last_modified
    if result.moved_to and result.moved_to != row.url:
        log.info(
            "feed moved permanently feed=%s feed_id=%d from=%s to=%s",
            row.name,
            row.id,
            row.url,
            result.moved_to,
        )
        row.url = result.moved_to


def _band_columns(e: Entry, bands: tuple[int, ...] | None) -> dict[str, object]:
    if e.minhash is None or bands is None:
        return {"signature": None, **dict.fromkeys(_BANDS)}
    return {"signature": list(e.minhash), **dict(zip(_BANDS, bands, strict=True))}


def _state(row: FeedRow, interval: timedelta, backfill: timedelta) -> FeedState:
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
    )


def _entry(a: ArticleRow) -> Entry:
    item = Item(
        title=a.title, link=a.url, guid=None, summary=a.body, content="", published=a.published_at
    )
    return Entry(item=item, key=a.key, story_key=a.story_key, link=a.url)


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None

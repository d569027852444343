"""Store stage: new articles, their matches and their deliveries, in one transaction, so a
match can never exist without its outbox row. Inserts skip rows that unique constraints
already hold, which makes every write safe to repeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, or_, select
from sqlmodel import Session, SQLModel, col

from monitor.db import CHUNK, Database, WriteTurn
from monitor.dedupe import BANDS, NEAR_DUPLICATE, NEAR_DUPLICATE_WINDOW, lsh_bands, similarity
from monitor.events import Reader
from monitor.feeds import record
from monitor.models import ArticleRow, Entry, FeedRow, FetchResult, MatchResult, MatchRow, utcnow
from monitor.outbox import Policy, queue
from monitor.recent import Recent, RecentStories, Vectors

_BANDS = tuple(f"band{i}" for i in range(BANDS))
_ARTICLES = SQLModel.metadata.tables["article"]


class Store(Database):
    def __init__(self, engine: Engine, meaning: Reader) -> None:
        """`meaning` reads gists' vectors, only where a new article may join a story."""
        super().__init__(engine)
        self._recent = Recent()  # the events window's gists, parsed once per process
        self._meaning = meaning
        self._turn = WriteTurn(engine)  # SQLite's writers wake in turn, not by polling

    def seen_keys(self, feed_id: int, keys: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(keys))
        seen: set[str] = set()
        with self._session() as s:
            for i in range(0, len(wanted), CHUNK):
                stmt = select(col(ArticleRow.key)).where(
                    col(ArticleRow.feed_id) == feed_id,
                    col(ArticleRow.key).in_(wanted[i : i + CHUNK]),
                )
                seen.update(s.execute(stmt).scalars())
        return seen

    def page_texts(self, story_keys: Iterable[str]) -> dict[str, str]:
        """Story key (the canonical link) -> the article text stored for that link, for
        the links that have one: their pages are not fetched again."""
        wanted = list(dict.fromkeys(k for k in story_keys if k.startswith("url:")))
        found: dict[str, str] = {}
        with self._session() as s:
            for i in range(0, len(wanted), CHUNK):
                stmt = select(col(ArticleRow.page_key), col(ArticleRow.page_text)).where(
                    col(ArticleRow.page_key).in_(wanted[i : i + CHUNK]),
                    col(ArticleRow.page_text).is_not(None),
                )
                found.update({key: text for key, text in s.execute(stmt)})
        return found

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

        An entry whose text nearly equals a recent article's joins that article's story;
        one whose gist reports a recent story's event, that story (read by the meaning
        model before the transaction, and only where it may: recent.py).
        Returns how many deliveries were queued.
        """
        now = utcnow()
        queued = 0
        vectors = Vectors(self._meaning)
        if any(m.held is None and m.gist is not None for _, rs in matches for m in rs):
            with self._session() as s:  # a short read: the model is read after it
                gists, unread = self._recent.screen(s, feed_id, matches, now)
            vectors.fill(gists, unread)
            if vectors.unwritten:  # kept at once, in a transaction that locks nothing else
                with self._turn.held(), self._session() as s:
                    vectors.write_back(s)
        with self._turn.held(), self._session() as s:
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
                    "page_outcome": e.page,
                    "page_text": e.item.article or None,
                    "page_key": e.story_key if e.item.article and e.link else None,
                    **_band_columns(e, bands.get(e.key)),
                }
                for e in entries
            ]
            if rows:  # one cached Core statement, executed for many rows
                stmt = self._insert(_ARTICLES).on_conflict_do_nothing()
                stmt = stmt.returning(_ARTICLES.c.id, _ARTICLES.c.key)
                ids.update({r.key: r.id for r in s.connection().execute(stmt, rows)})
            recent = RecentStories(s, now, self._recent, vectors)
            for entry, results in matches:
                article_id = ids.get(entry.key)
                if article_id is None:
                    continue  # another worker stored it first and owns its matches
                for m in results:
                    story_key = stories.get(entry.key, entry.story_key)
                    joined = recent.event_of(m.watchlist, story_key, m.gist, feed_id)
                    if joined is not None:
                        story_key = joined.story_key
                    extra: dict[str, Any] = {"joined": str(joined)} if joined else {}
                    if m.held is not None:  # stored for the record; never posted, so
                        # no gist: no later article may join a story nobody was shown
                        extra |= {"held": m.held, "held_why": m.held_why}
                    elif m.gist is not None:
                        extra["gist"] = vectors.filled(m.gist).stored()
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
                            contexts=dict(m.contexts) or None,
                            created_at=now,
                            **extra,
                        )
                        .on_conflict_do_nothing()
                        .returning(MatchRow.id)
                    )
                    match_id = s.execute(stmt).scalar()
                    if match_id is None or m.held is not None:
                        continue
                    if m.gist is not None:
                        recent.add(m.watchlist, story_key)
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
            vectors.write_back(s)  # read in this transaction (rarely: see recent.py)
            row = s.get(FeedRow, fetch.feed_id) if fetch is not None else None
            if fetch is not None and row is not None:
                record(row, fetch)
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


def _band_columns(e: Entry, bands: tuple[int, ...] | None) -> dict[str, object]:
    if e.minhash is None or bands is None:
        return {"signature": None, **dict.fromkeys(_BANDS)}
    return {"signature": list(e.minhash), **dict(zip(_BANDS, bands, strict=True))}

"""Store stage: new articles, their matches and their deliveries, in one transaction, so a
match can never exist without its outbox row. Inserts skip rows that unique constraints
already hold, which makes every write safe to repeat.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, or_, select
from sqlmodel import Session, SQLModel, col

from monitor.db import Database
from monitor.dedupe import BANDS, NEAR_DUPLICATE, NEAR_DUPLICATE_WINDOW, lsh_bands, similarity
from monitor.events import PER_NAME, SAME_DAY, Joined, earliest_event, stored_gist
from monitor.events import WINDOW as EVENT_WINDOW
from monitor.feeds import record
from monitor.models import (
    ArticleRow,
    Entry,
    FeedRow,
    FetchResult,
    Gist,
    MatchResult,
    MatchRow,
    utcnow,
)
from monitor.outbox import Policy, queue

CHUNK = 400  # values in one IN (...) list
# Rounding room for the similarity prefilter: a story is compared in full (events.py)
# when its similarity is within this of the lowest bar its shared names could make.
_SLACK = 1e-3
_BANDS = tuple(f"band{i}" for i in range(BANDS))
_ARTICLES = SQLModel.metadata.tables["article"]
_MATCHES = SQLModel.metadata.tables["match"]

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


class Store(Database):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._recent = _Recent()  # the events window's gists, parsed once per process

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
            recent = _RecentStories(s, now, self._recent)
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
                        extra["gist"] = m.gist.stored()
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
                    recent.add(m.watchlist, story_key, m.gist, feed_id)
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


@dataclass(frozen=True, eq=False)
class _Story:
    """One recent alerting match as events.py compares it: its story, its gist's vector
    (float64, exactly the stored numbers), names, terms and time, and its article's feed."""

    key: str
    vector: NDArray[np.float64]
    names: frozenset[str]
    terms: frozenset[str]
    at: datetime | None
    feed_id: int

    def gist(self) -> Gist:
        return Gist(tuple(self.vector.tolist()), self.names, self.terms, self.at)


class _Recent:
    """Each watchlist's alerting matches within the events window, kept between saves by
    match id: a save reads the window's ids (an index range) and parses only the rows it
    has not seen, instead of every gist of the window again (the cost that grew with every
    alert of a cycle and with the database). Ids, not a high-water mark, so a row that
    another process commits late (PostgreSQL) is still read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_watchlist: dict[str, dict[int, _Story | None]] = {}  # None: no gist
        self._read_at: dict[str, datetime] = {}  # when each watchlist's window was last read

    def stories(self, s: Session, watchlist: str, now: datetime) -> list[_Story]:
        import numpy as np  # only where an article alerts: a quiet poll never loads it

        window = (
            col(MatchRow.watchlist) == watchlist,
            col(MatchRow.created_at) >= now - 2 * EVENT_WINDOW,
        )  # read from the index alone: a row's gist is kilobytes (rows without are kept as None)
        stmt = select(_MATCHES.c.id).where(*window).order_by(_MATCHES.c.id)
        ids: list[int] = list(s.connection().execute(stmt).scalars())  # Core: no ORM rows
        with self._lock:
            known = self._by_watchlist.setdefault(watchlist, {})
            missing = [i for i in ids if i not in known]
        fresh: dict[int, _Story | None] = dict.fromkeys(missing)
        for i in range(0, len(missing), CHUNK):
            rows = (
                select(
                    col(MatchRow.id),
                    col(MatchRow.story_key),
                    col(MatchRow.gist),
                    col(MatchRow.matched),
                    col(ArticleRow.published_at),
                    col(ArticleRow.seen_at),
                    col(ArticleRow.feed_id),
                )
                .join(ArticleRow, col(ArticleRow.id) == col(MatchRow.article_id))
                .where(col(MatchRow.id).in_(missing[i : i + CHUNK]))
            )
            for match_id, key, gist, matched, published, seen, feed in s.connection().execute(rows):
                if gist:
                    old = stored_gist(gist, matched, published or seen)
                    vector = np.asarray(old.vector, dtype=np.float64)
                    fresh[match_id] = _Story(key, vector, old.names, old.terms, old.at, feed)
        with self._lock:
            known.update(fresh)
            for gone in known.keys() - set(ids):
                del known[gone]
            self._read_at[watchlist] = now
            # a watchlist not read for a window's length (removed from the config, or
            # silent) holds only stories out of the window by now: forgotten, not kept
            for idle in [w for w, at in self._read_at.items() if at < now - 2 * EVENT_WINDOW]:
                del self._read_at[idle], self._by_watchlist[idle]
            return [story for i in ids if (story := known.get(i)) is not None]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(known) for known in self._by_watchlist.values())


class _RecentStories:
    """The stories each watchlist alerted within the events window, with their articles'
    gists and feeds, read once per watchlist per save (through the store's `_Recent`): a
    new article is compared with every one from another feed (an outlet's own next story
    on an event is a development it chose to publish apart, not another outlet's write-up
    of it). Only the stories whose similarity could reach the bar are compared in full."""

    def __init__(self, s: Session, now: datetime, cache: _Recent) -> None:
        self._s = s
        self._now = now
        self._cache = cache
        self._by_watchlist: dict[str, list[_Story]] = {}
        # (watchlist, vector length) -> its stories of that length and their vectors as
        # the rows of one matrix: after a change of meaning model the window holds gists
        # of two lengths, and only those of the new gist's model are comparable
        self._screens: dict[tuple[str, int], tuple[list[_Story], NDArray[np.float64]]] = {}
        self._added: dict[str, list[tuple[str, Gist, int]]] = {}

    def event_of(
        self, watchlist: str, story_key: str, new: Gist | None, feed_id: int
    ) -> Joined | None:
        """The earlier story of another outlet's article whose event `new` reports, if any."""
        import numpy as np

        stories = self._stories(watchlist)
        added = self._added.get(watchlist, [])
        if new is None or any(st.key == story_key for st in stories):
            return None  # its own story is already alerted: it joins that one
        if any(key == story_key for key, _, _ in added):
            return None
        floor = SAME_DAY - PER_NAME * len(new.names) - _SLACK
        near: list[tuple[str, Gist]] = []
        alike, rows = self._screen(watchlist, len(new.vector))
        if alike:
            similar = rows @ np.asarray(new.vector, dtype=np.float64) >= floor
            near = [
                (st.key, st.gist())
                for st, close in zip(alike, similar.tolist(), strict=True)
                if close and st.feed_id != feed_id
            ]
        near += [(k, g) for k, g, feed in added if feed != feed_id]
        return earliest_event(new, near)

    def add(self, watchlist: str, story_key: str, new: Gist | None, feed_id: int) -> None:
        if new is not None:
            self._added.setdefault(watchlist, []).append((story_key, new, feed_id))

    def _stories(self, watchlist: str) -> list[_Story]:
        if watchlist not in self._by_watchlist:
            self._by_watchlist[watchlist] = self._cache.stories(self._s, watchlist, self._now)
        return self._by_watchlist[watchlist]

    def _screen(self, watchlist: str, length: int) -> tuple[list[_Story], NDArray[np.float64]]:
        import numpy as np

        if (watchlist, length) not in self._screens:
            alike = [st for st in self._stories(watchlist) if len(st.vector) == length]
            rows = np.stack([st.vector for st in alike]) if alike else np.zeros((0, length))
            self._screens[watchlist, length] = (alike, rows)
        return self._screens[watchlist, length]


def _band_columns(e: Entry, bands: tuple[int, ...] | None) -> dict[str, object]:
    if e.minhash is None or bands is None:
        return {"signature": None, **dict.fromkeys(_BANDS)}
    return {"signature": list(e.minhash), **dict(zip(_BANDS, bands, strict=True))}

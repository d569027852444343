"""The events window as the store reads it (events.py): each watchlist's alerting
matches of the last two days, kept between saves, and the meaning model read only for
the gists a new article could join.

A save first screens its new gists against the window with the conditions that need no
model (`events.may_join`), in a short read of its own; reads the vectors the survivors
lack in one call of the model, outside any transaction (on SQLite a save's transaction
holds the only write lock, and every other process's save would wait out the model);
then writes, deciding in full. A story that came into the window between the two reads
is screened again in the write and, rarely, read there. A stored gist's vector, once
read, is kept in the window and written back to its match row at once, in a transaction
of its own (on PostgreSQL one that holds no other row's lock), so no process reads it
twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlmodel import Session, SQLModel, col

from monitor.db import CHUNK
from monitor.events import (
    WINDOW,
    Joined,
    Reader,
    earliest_event,
    may_join,
    stored_gist,
    watched_words,
)
from monitor.models import ArticleRow, Entry, Gist, MatchResult, MatchRow

_MATCHES = SQLModel.metadata.tables["match"]


@dataclass(eq=False)
class Story:
    """One recent alerting match as events.py compares it: its story, its article's gist
    (its vector set once read) and feed."""

    id: int  # its match row's
    key: str
    gist: Gist
    feed_id: int


def candidates(new: Gist, stories: Iterable[Story], feed_id: int) -> list[Story]:
    """The stories of another feed that `new` may join, as far as can be told without
    the meaning model, in the window's order (by match id)."""
    names = new.names - watched_words(new)  # may_join's test of names, its words read once
    return [
        st
        for st in stories
        if st.feed_id != feed_id and not names.isdisjoint(st.gist.names) and may_join(new, st.gist)
    ]


class Recent:
    """Each watchlist's alerting matches within the events window, kept between saves by
    match id: a save reads the window's ids (an index range) and parses only the rows it
    has not seen, instead of every gist of the window again (the cost that grew with every
    alert of a cycle and with the database). Ids, not a high-water mark, so a row that
    another process commits late (PostgreSQL) is still read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_watchlist: dict[str, dict[int, Story | None]] = {}  # None: no gist
        self._read_at: dict[str, datetime] = {}  # when each watchlist's window was last read

    def stories(self, s: Session, watchlist: str, now: datetime) -> list[Story]:
        window = (
            col(MatchRow.watchlist) == watchlist,
            col(MatchRow.created_at) >= now - 2 * WINDOW,
        )  # read from the index alone: rows without a gist are kept as None
        stmt = select(_MATCHES.c.id).where(*window).order_by(_MATCHES.c.id)
        ids: list[int] = list(s.connection().execute(stmt).scalars())  # Core: no ORM rows
        with self._lock:
            known = self._by_watchlist.setdefault(watchlist, {})
            missing = [i for i in ids if i not in known]
        fresh: dict[int, Story | None] = dict.fromkeys(missing)
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
                    fresh[match_id] = Story(
                        match_id, key, stored_gist(gist, matched, published or seen), feed
                    )
        with self._lock:
            known.update(fresh)
            for gone in known.keys() - set(ids):
                del known[gone]
            self._read_at[watchlist] = now
            # a watchlist not read for a window's length (removed from the config, or
            # silent) holds only stories out of the window by now: forgotten, not kept
            for idle in [w for w, at in self._read_at.items() if at < now - 2 * WINDOW]:
                del self._read_at[idle], self._by_watchlist[idle]
            return [story for i in ids if (story := known.get(i)) is not None]

    def screen(
        self,
        s: Session,
        feed_id: int,
        matches: Sequence[tuple[Entry, list[MatchResult]]],
        now: datetime,
    ) -> tuple[list[Gist], list[Story]]:
        """The new gists of a save that may join a story of the window, and those stories
        (their vectors taken from their rows where another process has read them)."""
        gists: list[Gist] = []
        found: dict[int, Story] = {}
        by_watchlist: dict[str, list[Story]] = {}
        for entry, results in matches:
            for m in results:
                if m.held is not None or m.gist is None:
                    continue
                if m.watchlist not in by_watchlist:
                    by_watchlist[m.watchlist] = self.stories(s, m.watchlist, now)
                stories = by_watchlist[m.watchlist]
                if any(st.key == entry.story_key for st in stories):
                    continue  # its own story is alerted: it joins that one
                near = candidates(m.gist, stories, feed_id)
                if near:
                    gists.append(m.gist)
                    found |= {st.id: st for st in near}
        unread = [st for st in found.values() if st.gist.vector is None]
        stored_vectors(s, unread)
        return gists, unread

    def __len__(self) -> int:
        with self._lock:
            return sum(len(known) for known in self._by_watchlist.values())


def stored_vectors(s: Session, stories: Sequence[Story]) -> None:
    """Sets the vectors of `stories` that their match rows hold by now."""
    ids = [st.id for st in stories]
    by_id = {st.id: st for st in stories}
    for i in range(0, len(ids), CHUNK):
        stmt = select(_MATCHES.c.id, _MATCHES.c.gist).where(_MATCHES.c.id.in_(ids[i : i + CHUNK]))
        for match_id, stored in s.connection().execute(stmt):
            if stored and "v" in stored:
                st = by_id[match_id]
                st.gist = replace(st.gist, vector=tuple(stored["v"]))


class Vectors:
    """The gist vectors one save reads: in one call of the model for all it needs where
    it can, each text once; those of stored gists are written back to their rows."""

    def __init__(self, read: Reader) -> None:
        self._read = read
        self._by_text: dict[str, tuple[float, ...]] = {}
        self._read_for: dict[int, Story] = {}  # stored gists read, not written back yet

    def fill(self, gists: Sequence[Gist], stories: Sequence[Story]) -> None:
        """Reads the vectors `gists` and `stories` lack, and sets the stories'."""
        texts = [g.text for g in gists if g.vector is None]
        texts += [st.gist.text for st in stories if st.gist.vector is None]
        todo = [t for t in dict.fromkeys(texts) if t not in self._by_text]
        if todo:
            self._by_text.update(zip(todo, self._read(todo), strict=True))
        for st in stories:
            if st.gist.vector is None:
                st.gist = replace(st.gist, vector=self._by_text[st.gist.text])
                self._read_for[st.id] = st

    def filled(self, g: Gist) -> Gist:
        """`g` with its vector, if this save read it."""
        if g.vector is not None or g.text not in self._by_text:
            return g
        return replace(g, vector=self._by_text[g.text])

    @property
    def unwritten(self) -> bool:
        return bool(self._read_for)

    def write_back(self, s: Session) -> None:
        """The stored gists read since the last write-back, vectors and all, into their
        match rows (in id order: two saves writing the same rows lock them in one order)."""
        rows = [
            {"match_id": i, "kept": st.gist.stored()} for i, st in sorted(self._read_for.items())
        ]
        self._read_for.clear()
        if rows:
            stmt = update(_MATCHES).where(_MATCHES.c.id == bindparam("match_id"))
            s.connection().execute(stmt.values(gist=bindparam("kept")), rows)


class RecentStories:
    """The stories each watchlist alerted within the events window, with their articles'
    gists and feeds, read once per watchlist per save (through the store's `Recent`): a
    new article is compared with every one from another feed (an outlet's own next story
    on an event is a development it chose to publish apart, not another outlet's write-up
    of it). Only the stories it may join (`candidates`) are compared in full, and their
    vectors read for that."""

    def __init__(self, s: Session, now: datetime, cache: Recent, vectors: Vectors) -> None:
        self._s = s
        self._now = now
        self._cache = cache
        self._vectors = vectors
        self._by_watchlist: dict[str, list[Story]] = {}
        self._added: dict[str, set[str]] = {}  # stories alerted in this save

    def event_of(
        self, watchlist: str, story_key: str, new: Gist | None, feed_id: int
    ) -> Joined | None:
        """The earlier story of another outlet's article whose event `new` reports, if any.
        (A story alerted in this save is this feed's own: one save is one feed's.)"""
        stories = self._stories(watchlist)
        if new is None or any(st.key == story_key for st in stories):
            return None  # its own story is already alerted: it joins that one
        if story_key in self._added.get(watchlist, set()):
            return None
        near = candidates(new, stories, feed_id)
        if not near:
            return None
        unread = [st for st in near if st.gist.vector is None]
        if unread:  # came into the window after the screen (or another process read it)
            stored_vectors(self._s, unread)
        self._vectors.fill([new], near)
        return earliest_event(self._vectors.filled(new), [(st.key, st.gist) for st in near])

    def add(self, watchlist: str, story_key: str) -> None:
        """A story alerted in this save, with a gist: its later articles join no other."""
        self._added.setdefault(watchlist, set()).add(story_key)

    def _stories(self, watchlist: str) -> list[Story]:
        if watchlist not in self._by_watchlist:
            self._by_watchlist[watchlist] = self._cache.stories(self._s, watchlist, self._now)
        return self._by_watchlist[watchlist]

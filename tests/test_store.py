"""The store and the outbox on a real SQLite file and, where one runs, a real PostgreSQL."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import spacy
from sqlalchemy import event, text, update
from sqlmodel import Session, col, select

from monitor.archive import Archive
from monitor.config import FeedConfig, Watchlist
from monitor.db import Database, FileLock, Locks, WriteTurn, make_engine, migrate
from monitor.dedupe import fingerprint, identify
from monitor.deliver import Senders
from monitor.digests import Digests
from monitor.errors import StoreError
from monitor.events import (
    earliest_event,
    gist,
    gist_text,
    may_join,
    reader,
    stored_gist,
    watched_words,
)
from monitor.feeds import FeedStore
from monitor.match import Matcher
from monitor.match.matcher import default_meaning
from monitor.meaning import Meaning
from monitor.models import (
    ArticleRow,
    DeliveryRow,
    DeliveryStatus,
    Entry,
    FetchResult,
    Gist,
    Hit,
    Item,
    MatchHold,
    MatchResult,
    MatchRow,
    Sent,
    utcnow,
)
from monitor.outbox import Deliveries, Outbox, Policy
from monitor.recent import Story, candidates
from monitor.store import Store

NOW_POLICY = {
    "us-china": Policy(hold=False, followups="thread"),
    "other": Policy(hold=False, followups="thread"),
}
BODY = (
    "Foreign Minister Qin Gang has not been seen in public for three weeks, and the "
    "ministry in Beijing declined on Tuesday to say where he was or when he would "
    "return, fuelling speculation about his health and his standing with the leadership."
)


def entry(
    guid: str,
    link: str | None,
    title: str = "Qin Gang missing",
    body: str = "s",
    published: datetime = datetime(2023, 7, 24, tzinfo=UTC),
) -> Entry:
    """A matched entry, fingerprinted as the pipeline does for matches."""
    item = Item(title=title, link=link, guid=guid, summary=body, content="", published=published)
    return fingerprint(identify(item))


def result(
    watchlist: str = "us-china", channel: str = "#china-desk", strength: str = "about"
) -> MatchResult:
    hit = Hit("Qin Gang", "entity", "name", "Qin Gang", "title", 0, 8)
    return MatchResult(watchlist, channel, (hit,), "Qin Gang missing", ((0, 8),), strength)


@pytest.fixture
def db(any_db_url: str) -> Iterator[tuple[Store, Outbox]]:
    engine = make_engine(any_db_url)
    migrate(engine)
    yield Store(engine, reader(default_meaning)), Outbox(engine)
    engine.dispose()


def feeds(store: Database, *names: str) -> list[int]:
    cfgs = [FeedConfig(name=n, url=f"https://{n}.example/rss") for n in names]
    states = FeedStore(store.engine).sync(
        cfgs, lambda f: timedelta(minutes=10), lambda f: timedelta(days=1)
    )
    return [s.id for s in states]


def save(
    store: Store,
    feed: int,
    e: Entry,
    *results: MatchResult,
    policies: dict[str, Policy] | None = None,
) -> int:
    return store.save(
        feed, [e], {e.key}, [(e, list(results or [result()]))], policies or NOW_POLICY
    )


def test_save_is_idempotent_and_queues_once(db: tuple[Store, Outbox]) -> None:
    store, outbox = db
    [feed] = feeds(store, "world")
    e = entry("1", "https://n.example/qin")
    assert save(store, feed, e) == 1
    assert save(store, feed, e) == 0
    assert store.seen_keys(feed, [e.key, "guid:other"]) == {e.key}
    [out] = outbox.due(utcnow())
    [story] = out.stories
    assert out.kind == "alert" and out.channel == "#china-desk" and out.attempts == 0
    assert story.title == "Qin Gang missing" and story.feed == "world"
    assert story.highlights == [(0, 8)] and story.matched == ["Qin Gang"]
    assert story.published == datetime(2023, 7, 24, tzinfo=UTC) and story.strength == "about"


def test_the_same_article_from_another_feed_is_never_posted_again(
    db: tuple[Store, Outbox],
) -> None:
    """The same canonical link from a second (and a third) feed is the same article: the
    story's alert covers it, in no form is it posted again. Another watchlist that had
    no alert for it yet gets one."""
    store, outbox = db
    world, asia, wire = feeds(store, "world", "asia", "wire")
    a = entry("w1", "https://n.example/qin?utm_source=rss")
    b = entry("a1", "https://www.n.example/qin#top", title="Where is Qin Gang?")
    assert save(store, world, a) == 1
    assert save(store, asia, b, result(), result("other", "#other")) == 1
    due = outbox.due(utcnow())
    assert [(o.watchlist, o.kind) for o in due] == [("us-china", "alert"), ("other", "alert")]
    parent = due[0]
    assert outbox.claim(parent.delivery_id)
    outbox.sent(parent.delivery_id, parent.channel, Sent("111.1", "C1"))
    assert save(store, wire, entry("x1", "http://n.example/qin")) == 0  # same, once sent
    assert [o.watchlist for o in outbox.due(utcnow())] == ["other"]
    assert [r["kind"] for r in Deliveries(outbox.engine).listing(None, "us-china")] == ["alert"]


def test_a_different_article_of_the_story_becomes_a_followup(db: tuple[Store, Outbox]) -> None:
    """Trap for the rule above: another outlet's link with near-identical text is a
    different article of the same story, and is followed up in the thread."""
    store, outbox = db
    world, asia = feeds(store, "world", "asia")
    a = entry("w1", "https://one.example/qin", body=BODY)
    b = entry("a1", "https://two.example/qin-gang", title="Where is Qin Gang?", body=BODY)
    assert save(store, world, a) == 1
    assert save(store, asia, b) == 1
    [parent] = outbox.due(utcnow())  # the follow-up waits for its parent
    assert outbox.claim(parent.delivery_id)
    outbox.sent(parent.delivery_id, parent.channel, Sent("111.1", "C1"))
    [followup] = outbox.due(utcnow())
    assert followup.kind == "followup" and followup.thread_ts == "111.1"
    assert followup.stories[0].feed == "asia"
    assert followup.channel_id == "C1"  # learnt from the parent's answer


def at(hour: int) -> datetime:
    return datetime(2023, 7, 24, hour, tzinfo=UTC)


def test_the_alert_names_the_earliest_published_copy(db: tuple[Store, Outbox]) -> None:
    """A copy published earlier, stored while the alert still waits, becomes what the
    alert shows, also for a deliverer that read the alert before the copy came; once the
    alert is out, a later copy changes nothing."""
    store, outbox = db
    world, asia, wire = feeds(store, "world", "asia", "wire")
    save(store, world, entry("w1", "https://n.example/qin", published=at(10)))
    [read_before] = outbox.due(utcnow())
    assert read_before.stories[0].feed == "world"
    assert save(store, asia, entry("a1", "https://n.example/qin?ref_src=x", published=at(9))) == 0
    [due] = outbox.due(utcnow())
    assert due.stories[0].feed == "asia"
    claimed = outbox.claim(read_before.delivery_id, read_before.thread_ts)
    assert claimed is not None and claimed.stories[0].feed == "asia"
    outbox.sent(claimed.delivery_id, claimed.channel, Sent("1.1", "C1"))
    assert save(store, wire, entry("x1", "https://n.example/qin", published=at(8))) == 0
    [row] = Deliveries(outbox.engine).listing(None, "us-china")
    assert row["status"] == "sent"
    assert [m["feed"] for m in Archive(store.engine).matches("us-china", None)] == [
        "wire",
        "asia",
        "world",
    ]  # every copy is stored and listed; one was posted


def test_a_claim_returns_the_copy_stored_between_its_read_and_its_update(pg_url: str) -> None:
    """On PostgreSQL a copy committed after the claim read its row, but before the claim's
    UPDATE took it, is in the row the UPDATE claims (it re-reads it as committed): the
    claim must return that row as the database now has it, not as it read it."""
    engine, other = make_engine(pg_url), make_engine(pg_url)
    try:
        migrate(engine)
        store, outbox = Store(other, reader(default_meaning)), Outbox(engine)
        world, asia = feeds(store, "world", "asia")
        save(store, world, entry("w1", "https://n.example/qin", published=at(10)))
        [due] = outbox.due(utcnow())
        earlier = entry("a1", "https://n.example/qin?ref_src=x", published=at(9))
        stored: list[int] = []

        def between(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.startswith("UPDATE delivery SET status") and not stored:
                stored.append(save(store, asia, earlier))  # committed, on another connection

        event.listen(engine, "before_cursor_execute", between)
        claimed = outbox.claim(due.delivery_id)
        assert stored == [0]  # the earlier copy took the waiting alert: no new delivery
        assert claimed is not None and claimed.stories[0].feed == "asia"
    finally:
        engine.dispose()
        other.dispose()


def test_an_earlier_different_article_takes_the_alert_and_the_other_follows(
    db: tuple[Store, Outbox],
) -> None:
    store, outbox = db
    world, asia = feeds(store, "world", "asia")
    save(store, world, entry("w1", "https://one.example/qin", body=BODY, published=at(10)))
    later = entry("a1", "https://two.example/qin", title="Qin?", body=BODY, published=at(9))
    assert save(store, asia, later) == 1
    [parent] = outbox.due(utcnow())
    assert parent.kind == "alert" and parent.stories[0].feed == "asia"
    assert outbox.claim(parent.delivery_id)
    outbox.sent(parent.delivery_id, parent.channel, Sent("1.1", "C1"))
    [followup] = outbox.due(utcnow())
    assert followup.kind == "followup" and followup.stories[0].feed == "world"


@pytest.mark.parametrize(("mode", "queued"), [("ignore", 0), ("separate", 1)])
def test_followup_modes(db: tuple[Store, Outbox], mode: str, queued: int) -> None:
    store, outbox = db
    world, asia, wire = feeds(store, "world", "asia", "wire")
    policy = {"us-china": Policy(hold=False, followups=mode)}
    save(store, world, entry("w1", "https://one.example/qin", body=BODY), policies=policy)
    other = entry("a1", "https://two.example/qin", title="Where?", body=BODY)
    assert save(store, asia, other, policies=policy) == queued
    same = entry("x1", "https://two.example/qin", title="Where?", body=BODY)
    assert save(store, wire, same, policies=policy) == 0  # never in any form
    kinds = [o.kind for o in outbox.due(utcnow())]
    assert kinds == ["alert"] * (1 + queued)


def test_near_identical_text_joins_the_story(db: tuple[Store, Outbox]) -> None:
    store, outbox = db
    world, asia = feeds(store, "world", "asia")
    a = entry("w1", "https://one.example/qin", body=BODY)
    b = entry(
        "a1",
        "https://two.example/2023/07/qin-gang",
        title="Qin Gang missing (update)",
        body=BODY.replace("Tuesday", "Wednesday"),
    )
    c = entry("c1", "https://three.example/x", title="Weather", body=BODY[::-1])
    assert a.story_key != b.story_key and a.minhash is not None
    save(store, world, a)
    save(store, asia, b)
    save(store, asia, c)
    kinds = sorted((o.kind, o.stories[0].feed) for o in outbox.due(utcnow()))
    assert kinds == [("alert", "asia"), ("alert", "world")]  # b waits for a as a follow-up
    with store._session() as s:
        rows = dict(s.execute(text("SELECT key, story_key FROM article")).all())
    assert rows[b.key] == rows[a.key] != rows[c.key]


def test_delivery_outcomes(db: tuple[Store, Outbox]) -> None:
    store, outbox = db
    [feed] = feeds(store, "world")
    save(store, feed, entry("1", "https://n.example/qin"))
    [out] = outbox.due(utcnow())
    assert outbox.claim(out.delivery_id) and not outbox.claim(out.delivery_id)
    assert outbox.due(utcnow()) == []  # being sent
    outbox.failed(
        out.delivery_id, "slack: boom", dead=False, retry_at=utcnow() + timedelta(minutes=1)
    )
    assert outbox.due(utcnow()) == []
    [again] = outbox.due(utcnow() + timedelta(minutes=2))
    assert again.attempts == 1
    assert outbox.claim(again.delivery_id)
    outbox.failed(again.delivery_id, "slack: not_in_channel", dead=True, retry_at=utcnow())
    assert [r["status"] for r in Deliveries(outbox.engine).listing(["dead"], None)] == ["dead"]
    assert Deliveries(outbox.engine).retry_dead("us-china") == 1
    [third] = outbox.due(utcnow())
    assert outbox.claim(third.delivery_id)
    outbox.sent(third.delivery_id, third.channel, Sent("1700000000.000001", "C1"))
    assert outbox.due(utcnow() + timedelta(days=1)) == []
    [row] = Archive(store.engine).matches("us-china", None)
    assert row["delivery"] == "sent" and row["slack_ts"] == "1700000000.000001"


def test_unconfirmed_sends_are_listed_after_their_lease(db: tuple[Store, Outbox]) -> None:
    store, outbox = db
    [feed] = feeds(store, "world")
    save(store, feed, entry("1", "https://n.example/qin"))
    [out] = outbox.due(utcnow())
    outbox.claim(out.delivery_id)
    assert outbox.unconfirmed(utcnow() - timedelta(minutes=1)) == []
    [(lost, started)] = outbox.unconfirmed(utcnow() + timedelta(seconds=1))
    assert lost.delivery_id == out.delivery_id and started <= utcnow()
    assert not outbox.release(out.delivery_id, lost.attempts - 1)  # claimed again since
    assert outbox.release(out.delivery_id, lost.attempts)
    assert [o.delivery_id for o in outbox.due(utcnow())] == [out.delivery_id]


def _hourly_digest() -> Watchlist:
    return Watchlist.model_validate(
        {
            "name": "us-china",
            "channel": "#china-desk",
            "topics": [{"name": "t"}],
            "delivery": "digest",
            "digest": "hourly",
        }
    )


def test_digests_gather_held_deliveries(db: tuple[Store, Outbox]) -> None:
    store, outbox = db
    [feed] = feeds(store, "world")
    held = {"us-china": Policy(hold=True, followups="thread")}
    for i in range(25):
        save(
            store,
            feed,
            entry(str(i), f"https://n.example/{i}", title=f"Qin Gang {i}"),
            policies=held,
        )
    assert outbox.due(utcnow()) == []
    wl = _hourly_digest()
    assert Digests(outbox.engine).make([wl], utcnow()) == 0  # held after the last boundary
    later = utcnow() + timedelta(hours=1)
    assert Digests(outbox.engine).make([wl], later) == 2  # 25 stories: 20 + 5
    assert Digests(outbox.engine).make([wl], later) == 0
    parts = outbox.due(later)
    assert [len(p.stories) for p in parts] == [20, 5]
    assert all(p.kind == "digest" and p.label.endswith(("(1/2)", "(2/2)")) for p in parts)


def test_a_held_row_stored_late_gets_a_digest_of_its_own(db: tuple[Store, Outbox]) -> None:
    """A store whose transaction began before a digest boundary can commit after that
    boundary's digest was made: its row is gathered into one more digest, and making it
    must not collide with the first (the key is unique) and stop all delivery."""
    store, outbox = db
    [feed] = feeds(store, "world")
    held = {"us-china": Policy(hold=True, followups="thread")}
    wl = _hourly_digest()
    later = utcnow() + timedelta(hours=1)
    save(store, feed, entry("1", "https://n.example/1", title="Qin Gang 1"), policies=held)
    assert Digests(outbox.engine).make([wl], later) == 1
    save(store, feed, entry("2", "https://n.example/2", title="Qin Gang 2"), policies=held)
    assert Digests(outbox.engine).make([wl], later) == 1  # same boundary, a second digest
    assert sorted(len(p.stories) for p in outbox.due(later)) == [1, 1]


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/wal.db")
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    engine.dispose()


def test_feed_state_and_due_times(db: tuple[Store, Outbox]) -> None:
    store = FeedStore(db[0].engine)
    a, b = feeds(store, "a", "b")
    now = utcnow()
    store.record_fetches(
        [
            FetchResult(
                a,
                status=200,
                error=None,
                etag='"e"',
                last_modified="lm",
                next_due=now + timedelta(minutes=10),
                new_items=5,
            ),
            FetchResult(b, status=500, error="HTTP 500", next_due=now - timedelta(seconds=1)),
        ]
    )
    states = FeedStore(store.engine).sync(
        [
            FeedConfig(name="a", url="https://a.example/rss"),
            FeedConfig(name="b", url="https://b.example/rss"),
        ],
        lambda f: timedelta(minutes=10),
        lambda f: timedelta(days=1),
    )
    [due] = store.states(states, due_by=utcnow())
    assert {s.name: s.etag for s in store.states(states)} == {"a": '"e"', "b": None}
    assert due.name == "b" and due.errors_in_row == 1 and due.last_success_at is None
    rows = {r.name: r for r in FeedStore(store.engine).rows()}
    assert rows["a"].etag == '"e"' and rows["a"].items_seen == 5 and rows["a"].last_status == 200
    assert rows["b"].last_error == "HTTP 500"


def test_changed_url_forgets_validators(db: tuple[Store, Outbox]) -> None:
    store = FeedStore(db[0].engine)
    [a] = feeds(store, "a")
    store.record_fetches([FetchResult(a, status=200, error=None, etag='"e"', next_due=utcnow())])
    FeedStore(store.engine).sync(
        [FeedConfig(name="a", url="https://moved.example/rss")],
        lambda f: timedelta(minutes=10),
        lambda f: timedelta(days=1),
    )
    [row] = FeedStore(store.engine).rows()
    assert row.url == "https://moved.example/rss" and row.etag is None


def test_a_start_with_feeds_yaml_unchanged_writes_nothing_and_takes_no_turn(
    db: tuple[Store, Outbox],
) -> None:
    """Only a start that has feeds to add or move takes the write lock (SQLite) or the
    advisory lock (PostgreSQL); any other reads the feeds' states, the same states."""
    engine = db[0].engine
    configured = [FeedConfig(name=n, url=f"https://{n}.example/rss") for n in ("a", "b")]

    def sync() -> tuple[list[Any], list[str]]:
        said: list[str] = []

        def heard(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            said.append(statement)

        event.listen(engine, "before_cursor_execute", heard)
        try:
            states = FeedStore(engine).sync(
                configured, lambda f: timedelta(minutes=10), lambda f: timedelta(days=1)
            )
        finally:
            event.remove(engine, "before_cursor_execute", heard)
        return states, said

    first, said = sync()
    assert any(s.startswith("INSERT") for s in said)
    again, said = sync()
    assert again == first
    assert said and all(s.lstrip().startswith("SELECT") for s in said), said
    configured[1] = FeedConfig(name="b", url="https://b.example/moved")
    moved, said = sync()
    assert any("advisory" in s or "BEGIN IMMEDIATE" in s for s in said)
    assert moved[1].url == "https://b.example/moved" and moved[0] == first[0]


def test_unchanged_feeds_are_recorded_in_bulk(db: tuple[Store, Outbox]) -> None:
    store = FeedStore(db[0].engine)
    a, b = feeds(store, "a", "b")
    later = utcnow() + timedelta(minutes=10)
    store.record_fetches([FetchResult(a, status=500, error="HTTP 500", next_due=utcnow())])
    store.record_fetches(
        [
            FetchResult(a, status=304, error=None, next_due=later, elapsed=0.25),
            FetchResult(b, status=304, error=None, next_due=later),
        ]
    )
    rows = {r.name: r for r in FeedStore(store.engine).rows()}
    assert rows["a"].errors_in_row == 0 and rows["a"].last_error is None
    assert rows["a"].last_status == 304 and rows["a"].last_duration_ms == 250
    assert rows["a"].next_due_at == later and rows["a"].last_success_at is not None
    assert rows["b"].last_status == 304 and rows["b"].last_duration_ms is None


def test_a_due_feed_is_claimed_once_until_its_lease_runs_out(db: tuple[Store, Outbox]) -> None:
    store = FeedStore(db[0].engine)
    feeds(store, "a", "b")
    states = FeedStore(store.engine).sync(
        [FeedConfig(name=n, url=f"https://{n}.example/rss") for n in ("a", "b")],
        lambda f: timedelta(minutes=10),
        lambda f: timedelta(days=1),
    )
    now = utcnow()
    lease = timedelta(minutes=15)
    ids = {s.name: s.id for s in states}
    assert sorted(store.claim_due(states, now, lease)) == [ids["a"], ids["b"]]
    assert store.claim_due(states, now + timedelta(minutes=1), lease) == []  # a 2nd scheduler
    assert sorted(s.name for s in store.states(states, queued=True)) == ["a", "b"]
    a = next(s for s in states if s.name == "a")
    store.record_fetches([FetchResult(a.id, status=304, error=None, next_due=now + lease * 2)])
    # a poll job of their group started after that poll finds `a` done; `b` still waits
    assert [s.name for s in store.states(states, queued=True)] == ["b"]
    # a lost poll: `b` comes due again when its lease runs out, `a` keeps its own time
    assert store.claim_due(states, now + lease, lease) == [ids["b"]]
    b = next(s for s in states if s.name == "b")
    store.record_fetches([FetchResult(b.id, status=500, error="HTTP 500", next_due=now)])
    assert store.states(states, queued=True) == []  # a failed poll is recorded: done too


def test_channels_with_work_and_their_last_send(db: tuple[Store, Outbox]) -> None:
    store, outbox = db
    [feed] = feeds(store, "world")
    save(store, feed, entry("1", "https://n.example/1"), result(channel="#a"))
    save(store, feed, entry("2", "https://n.example/2"), result(channel="#b"))
    now = utcnow()
    assert outbox.channels_due(now, now - timedelta(minutes=2)) == ["#a", "#b"]
    assert outbox.last_sent_at("#a") is None
    [out] = outbox.due(now, channel="#a")
    assert out.channel == "#a" and outbox.claim(out.delivery_id)
    assert outbox.channels_due(now, now - timedelta(minutes=2)) == ["#b"]  # #a is being sent
    assert outbox.channels_due(now, now + timedelta(seconds=1)) == ["#a", "#b"]  # lease over
    outbox.sent(out.delivery_id, "#a", Sent("1700000000.000001", "CA"))
    sent_at = outbox.last_sent_at("#a")
    assert sent_at is not None
    sent_at = sent_at if sent_at.tzinfo else sent_at.replace(tzinfo=UTC)  # SQLite is naive
    assert abs((utcnow() - sent_at).total_seconds()) < 5
    assert outbox.unconfirmed(None, channel="#b") == []


def crashed_send(store: Store, outbox: Outbox, link: str = "https://n.example/qin") -> int:
    """A delivery claimed and never confirmed, as a sender killed mid-send leaves it."""
    [feed] = feeds(store, "world")
    save(store, feed, entry(link, link))
    [out] = [o for o in outbox.due(utcnow()) if o.stories[0].url == link]
    assert outbox.claim(out.delivery_id)
    return out.delivery_id


def test_the_first_sender_to_find_none_alive_settles_what_dead_ones_left(
    db: tuple[Store, Outbox],
) -> None:
    store, outbox = db
    lost = crashed_send(store, outbox)
    first = Senders(outbox, Locks(store.engine), timedelta(0))
    second = Senders(outbox, Locks(store.engine), timedelta(0))
    try:
        assert [o.delivery_id for o, _ in first.join().sends] == [lost]
        assert first.join().sends == ()  # at its start, once
        assert second.join().sends == ()  # the first is alive: its sends are not orphans
        first.close()
        third = Senders(outbox, Locks(store.engine), timedelta(0))
        assert third.join().sends == ()  # the second is alive
        third.close()
        second.close()
        fourth = Senders(outbox, Locks(store.engine), timedelta(0))
        assert [o.delivery_id for o, _ in fourth.join().sends] == [lost]
        fourth.close()
    finally:
        first.close()
        second.close()


def test_a_channel_turn_settles_what_a_dead_worker_left_in_it(db: tuple[Store, Outbox]) -> None:
    store, outbox = db
    lost = crashed_send(store, outbox)
    worker = Senders(outbox, Locks(store.engine), timedelta(0))
    other = Senders(outbox, Locks(store.engine), timedelta(0))
    single = Senders(outbox, Locks(store.engine), timedelta(0))
    try:
        with worker.turn("#china-desk") as orphans:
            assert [o.delivery_id for o, _ in orphans.sends] == [lost]
            with other.turn("#china-desk") as meanwhile:
                assert meanwhile.sends == ()  # the channel's turn is taken: not orphans
        with other.turn("#elsewhere") as orphans:
            assert orphans.sends == ()
        single.join()  # a single-host sender is alive: it may be the one sending
        with worker.turn("#china-desk") as orphans:
            assert orphans.sends == ()
        single.close()
        with other.turn("#china-desk") as orphans:
            assert [o.delivery_id for o, _ in orphans.sends] == [lost]
    finally:
        for senders in (worker, other, single):
            senders.close()


def test_a_lost_send_settled_by_two_is_posted_by_one(db: tuple[Store, Outbox]) -> None:
    store, outbox = db
    crashed_send(store, outbox)
    [(seen, _)] = outbox.unconfirmed(None)
    assert outbox.release(seen.delivery_id, seen.attempts)
    assert outbox.claim(seen.delivery_id)  # the first settler posts it again
    assert not outbox.release(seen.delivery_id, seen.attempts)  # the second is too late
    assert [o.delivery_id for o, _ in outbox.unconfirmed(None)] == [seen.delivery_id]


def text_of(n: int) -> str:
    """A text of its own for each n: no two are near-identical."""
    return " ".join(random.Random(n).choices(BODY.split(), k=60))


def test_a_flood_is_the_alerts_of_one_cycle_window(db: tuple[Store, Outbox]) -> None:
    store, outbox = db
    world, asia = feeds(store, "world", "asia")
    digests = Digests(store.engine)
    for i in range(30):
        save(store, world, entry(f"w{i}", f"https://n.example/{i}", body=text_of(i)))
    with store._session() as s:  # the first 15 came an hour before the rest
        s.execute(
            update(DeliveryRow)
            .where(col(DeliveryRow.id) <= 15)
            .values(created_at=utcnow() - timedelta(hours=1))
        )
    window = timedelta(minutes=1)
    assert digests.floods(utcnow(), 20, window) == []  # two cycles of 15
    for i in range(30, 40):
        save(store, world, entry(f"w{i}", f"https://n.example/{i}", body=text_of(i)))
    [flood] = digests.floods(utcnow(), 20, window)
    assert (flood.channel, flood.watchlist, flood.alerts) == ("#china-desk", "us-china", 25)
    due = outbox.due(utcnow())
    assert sorted(o.kind for o in due) == ["alert"] * 15 + ["flood"]
    [message] = [o for o in due if o.kind == "flood"]
    # it carries every story it stands for: its message shows the first, its thread all
    assert message.label == "25 alerts in one poll cycle" and len(message.stories) == 25
    # a copy of a flooded story has no thread to join: the flood message stands for it
    copy = entry("a1", "https://two.example/35", title="Qin Gang?", body=text_of(35))
    assert save(store, asia, copy) == 0
    assert digests.floods(utcnow(), 20, window) == []  # what is left is not a flood
    assert outbox.claim(message.delivery_id)
    outbox.sent(message.delivery_id, message.channel, Sent("1.1", "C1"))
    Archive(store.engine).prune(utcnow() + timedelta(days=1))
    kinds = [r["kind"] for r in Deliveries(outbox.engine).listing(None, None)]
    assert "flood" not in kinds  # pruned with the alerts it listed


def test_a_lock_session_that_drops_takes_its_shared_locks_again(pg_url: str) -> None:
    app = f"monitor-test-{uuid.uuid4().hex[:8]}"  # to find this test's sessions, and no other
    engine = make_engine(f"{pg_url}&application_name={app}")
    migrate(engine)
    outbox = Outbox(engine)
    worker = Senders(outbox, Locks(engine), timedelta(0))
    single = Senders(outbox, Locks(engine), timedelta(0))
    try:
        with worker.turn("#a"):
            pass
        with engine.connect() as conn:  # the database ends the worker's lock session
            [pid] = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                    "AND query LIKE 'SELECT pg_advisory_unlock(%' AND application_name = :app"
                ),
                {"app": app},
            ).scalars()
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(StoreError), worker.turn("#a"):
            pass
        with worker.turn("#a"):  # a new session, holding "queue-worker" again
            pass
        crashed_send(Store(engine, reader(default_meaning)), outbox)
        assert single.join().sends == ()  # a queue worker is alive: nothing is proven
    finally:
        worker.close()
        single.close()
        engine.dispose()


def test_the_delivery_state_machine() -> None:
    """What the outbox may write, and what it may not: sent and digested are final, and
    nothing skips the claim (pending -> sending) on its way out."""
    status = DeliveryStatus
    assert status.PENDING.to(status.SENDING) is status.SENDING
    assert status.SENDING.to(status.PENDING) is status.PENDING  # a failed or lost send
    for final in (status.SENT, status.DIGESTED):
        with pytest.raises(ValueError, match="cannot go from"):
            final.to(status.PENDING)
    with pytest.raises(ValueError, match="cannot go from held to sending"):
        status.HELD.to(status.SENDING)
    assert [s for s in status if s.unsent] == [status.HELD, status.PENDING]


def _gist(rng: random.Random, centre: list[float], spread: float, at: datetime) -> Gist:
    """A gist near `centre` (unit length, rounded as events.gist rounds), naming Beijing."""
    raw = [c + rng.gauss(0, spread) for c in centre]
    norm = sum(x * x for x in raw) ** 0.5
    vector = tuple(round(x / norm, 4) for x in raw)
    return Gist("", frozenset({"beijing"}), frozenset({"Qin Gang"}), at, vector)


def test_events_join_as_a_full_comparison_would_across_saves_and_stores(
    db: tuple[Store, Outbox],
) -> None:
    """Each save compares a new gist with the window's stories kept from earlier saves,
    and only those similar enough to reach the bar in full: the story each article joins
    is the one a comparison with every earlier story of another feed picks, whichever of
    two stores (two pass workers) wrote the earlier ones."""
    store, _ = db
    other = Store(store.engine, reader(default_meaning))
    feed_ids = feeds(store, "a", "b", "c")
    rng = random.Random(3)
    centres = []
    for _ in range(6):
        centres.append([rng.gauss(0, 1) for _ in range(32)])
    at = utcnow().replace(tzinfo=UTC)
    earlier: list[tuple[str, Gist, int]] = []
    joins = 0
    for n in range(60):
        g = _gist(rng, rng.choice(centres), rng.choice([0.1, 0.3, 0.45, 0.6, 1.0]), at)
        feed = rng.choice(feed_ids)
        e = entry(f"g{n}", f"https://n.example/{n}", published=at)
        expected = earliest_event(g, [(k, old) for k, old, f in earlier if f != feed])
        res = replace(result(), gist=g)
        (store if n % 2 else other).save(feed, [e], {e.key}, [(e, [res])], NOW_POLICY)
        with Session(store.engine) as s:
            row = s.exec(select(MatchRow).order_by(col(MatchRow.id).desc())).first()
        assert row is not None
        assert row.joined == (str(expected) if expected else None), n
        story = expected.story_key if expected else e.story_key
        assert row.story_key == story
        earlier.append((story, g, feed))
        joins += expected is not None
    assert 5 < joins < 55  # the gists straddle the bar: both outcomes are exercised


# Headline and lead of one event each, {0} its place: two of one event at one place
# are alike; any two at one place share a name, so only their meaning tells them apart.
_EVENTS = [
    (
        "Qin Gang holds trade talks in {0}",
        "Qin Gang met his counterpart in {0} for talks on trade.",
    ),
    ("Trade talks for Qin Gang in {0}", "Qin Gang discussed tariffs with his counterpart in {0}."),
    (
        "Qin Gang misses the forum in {0}",
        "Qin Gang did not appear at a forum in {0}, officials said.",
    ),
    ("Qin Gang absent from {0} forum", "The minister Qin Gang skipped the forum in {0}, unwell."),
    ("Qin Gang signs an energy deal in {0}", "Qin Gang signed an energy agreement in {0}."),
]


class _Counted:
    """The real meaning model's loader, counting what is read through it: `load` is what
    a matcher is given, `read` (events.reader over it) what a store is, as in service.py."""

    def __init__(self) -> None:
        self.loads = 0
        self.calls: list[list[str]] = []

    def load(self) -> Meaning:
        self.loads += 1
        return default_meaning()

    def read(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        self.calls.append(list(texts))
        return reader(self.load)(texts)

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


def test_events_join_as_a_full_comparison_would_when_gists_are_read_lazily(
    db: tuple[Store, Outbox],
) -> None:
    """As above with real headlines whose vectors the stores read only where a story may
    join, some stored with a vector already (rows of before): each joins the story a
    comparison of every vector picks, and no gist is read twice by either store."""
    store, _ = db
    counted = _Counted()
    one, two = Store(store.engine, counted.read), Store(store.engine, counted.read)
    feed_ids = feeds(store, "a", "b", "c")
    rng = random.Random(5)
    at = utcnow().replace(tzinfo=UTC)
    earlier: list[tuple[str, Gist, int]] = []
    joins = 0
    for n in range(40):
        title, lead = rng.choice(_EVENTS)
        place = rng.choice(["Beijing", "Jakarta", "Geneva", "Nairobi"])
        text = f"{title.format(place)}. {lead.format(place)} Report {n}."
        g = replace(gist(_item(text), text), terms=frozenset({"Qin Gang"}))
        [vector] = reader(default_meaning)([text])  # for the full comparison (not counted)
        if n % 4 == 0:
            g = replace(g, vector=vector)
        feed = rng.choice(feed_ids)
        e = entry(f"l{n}", f"https://n.example/l{n}", published=at)
        whole = replace(g, vector=vector)
        expected = earliest_event(whole, [(k, old) for k, old, f in earlier if f != feed])
        (one if n % 3 else two).save(
            feed, [e], {e.key}, [(e, [replace(result(), gist=g)])], NOW_POLICY
        )
        with Session(store.engine) as s:
            row = s.exec(select(MatchRow).order_by(col(MatchRow.id).desc())).first()
        assert row is not None and row.gist is not None
        assert row.joined == (str(expected) if expected else None), n
        assert row.gist["t"] == text
        earlier.append((expected.story_key if expected else e.story_key, whole, feed))
        joins += expected is not None
    assert 3 < joins < 30, joins
    print("joins", joins, "read", len(counted.texts))  # both outcomes are exercised
    assert len(counted.texts) == len(set(counted.texts)) < 40  # each read once, not all


def _item(text: str) -> Item:
    return Item(title=text, link=None, guid=None, summary="", content="", published=None)


def _matcher(counted: _Counted) -> Matcher:
    """A desk watching one name, with no senses: matching alone never reads the model."""
    wl = Watchlist.model_validate(
        {"name": "us-china", "channel": "#china-desk", "entities": [{"name": "Qin Gang"}]}
    )
    return Matcher([wl], spacy.blank("en"), lambda: None, meaning=counted.load)


def _poll(store: Store, matcher: Matcher, feed: int, *articles: tuple[str, str]) -> list[str]:
    """One feed's new articles (title, lead) matched and stored in one save, as the
    pipeline does; their gist texts."""
    at = utcnow().replace(tzinfo=UTC)
    es = [entry(title, f"https://n.example/{title}", title, lead, at) for title, lead in articles]
    matches = matcher.match(es)
    assert len(matches) == len(es)
    store.save(feed, es, {e.key for e in es}, matches, NOW_POLICY)
    return [gist_text(e.item) for e in es]


def _gists(store: Store) -> dict[str, dict[str, Any]]:
    """Each stored match's gist, by its gist text."""
    with Session(store.engine) as s:
        return {r.gist["t"]: r.gist for r in s.exec(select(MatchRow)) if r.gist}


@pytest.mark.parametrize("term", ["José Jerí", "Jose Jeri"])
def test_a_watched_name_is_one_name_to_the_window_and_to_events_however_spelt(
    term: str,
) -> None:
    """Gists' names are folded ("jose", "jeri"), and so are the words of a watched term,
    with its accents or without, in the events' test of shared names and in the window's
    screen before it alike: the trap is a story that shares only the watched name (kept
    out by both), beside one that shares a place too (kept by both: the screen never
    leaves out a story that events would join)."""
    at = datetime(2026, 3, 1, tzinfo=UTC)

    def story(i: int, *names: str) -> Story:
        return Story(i, f"url:{i}", Gist("", frozenset(names), frozenset([term]), at), feed_id=1)

    new = Gist("", frozenset({"jose", "jeri", "lima", "cusco"}), frozenset([term]), at)
    only_him, and_lima = story(1, "jose", "jeri", "arequipa"), story(2, "jose", "jeri", "lima")
    assert watched_words(new) == {"jose", "jeri"}
    assert not may_join(new, only_him.gist) and may_join(new, and_lima.gist)
    assert candidates(new, [only_him, and_lima], feed_id=2) == [and_lima]


def test_alerts_no_story_may_join_read_no_gist(db: tuple[Store, Outbox]) -> None:
    """The trap: alerting articles of one watchlist within the window, in one batch and
    across saves, that share only the watched name with another feed's, or a place with
    their own feed's: none may join a story, so the meaning model is never read (neither
    by the matcher, whose watchlist declares no senses, nor by the store)."""
    store, _ = db
    counted = _Counted()
    mine = Store(store.engine, counted.read)
    m = _matcher(counted)
    a, b = feeds(store, "a", "b")
    _poll(
        mine,
        m,
        a,
        ("Qin Gang misses the forum in Beijing", "the minister was not seen there."),
        ("Qin Gang signs an energy deal in Beijing", "the deal covers gas and oil."),
    )
    _poll(mine, m, b, ("Qin Gang meets envoys in Jakarta", "the talks went on for hours."))
    _poll(mine, m, a, ("Qin Gang still absent in Beijing", "no word on where he is."))
    gists = _gists(store)
    assert len(gists) == 4 and not any("v" in g for g in gists.values())
    assert counted.loads == 0
    # it can fail: another feed's article naming Beijing may join one, and is read
    _poll(mine, m, b, ("Qin Gang still unseen in Beijing", "the ministry would not comment."))
    assert counted.loads == 1


def test_a_story_that_may_join_reads_both_gists_once_and_keeps_the_older(
    db: tuple[Store, Outbox],
) -> None:
    """An article that may join an earlier story of another feed: both gists are read in
    one call of the model, and the earlier one's vector is written back to its row, so no
    store reads it again: not this one, nor another (another process) that held the story
    in its window before it was read."""
    store, _ = db
    counted = _Counted()
    one, two = Store(store.engine, counted.read), Store(store.engine, counted.read)
    m = _matcher(counted)
    a, b, c, d = feeds(store, "a", "b", "c", "d")
    [first] = _poll(one, m, a, ("Qin Gang misses the forum in Beijing", "he was not seen."))
    _poll(two, m, d, ("Qin Gang meets envoys in Jakarta", "the talks went on for hours."))
    assert counted.calls == []  # and `two` holds the first story, unread
    [second] = _poll(one, m, b, ("Qin Gang absent from Beijing forum", "he skipped it."))
    assert [sorted(call) for call in counted.calls] == [sorted([first, second])]
    gists = _gists(store)
    [vector] = reader(default_meaning)([first])
    assert gists[first]["v"] == list(vector) and "v" in gists[second]
    [third] = _poll(two, m, c, ("Forum in Beijing goes on without Qin Gang", "none said why."))
    assert counted.calls[1:] == [[third]]


def test_a_story_stored_while_the_model_reads_is_compared_too(db: tuple[Store, Outbox]) -> None:
    """A save reads the model between its screen's short read and its write, in no
    transaction: another process's save goes through meanwhile (on SQLite it would wait
    out the write lock otherwise, and fail). A story that one stores that the new article
    may join is read in the write, and the article joins as a full comparison says."""
    store, _ = db
    counted = _Counted()
    m = _matcher(counted)
    two = Store(store.engine, counted.read)
    a, b = feeds(store, "a", "b")
    meanwhile: list[tuple[str, str]] = []
    stored: list[str] = []

    def read(texts: Sequence[str]) -> list[tuple[float, ...]]:
        if meanwhile:  # another process saves, from feed a: nothing for it to read
            stored.extend(_poll(two, m, a, meanwhile.pop()))
        return counted.read(texts)

    one = Store(store.engine, read)
    [first] = _poll(one, m, a, ("Qin Gang misses the forum in Beijing", "he was not seen."))
    meanwhile.append(("Qin Gang not at the forum in Beijing", "the minister was not there."))
    [second] = _poll(one, m, b, ("Qin Gang absent from Beijing forum", "he skipped it."))
    [third] = stored
    assert [sorted(c) for c in counted.calls] == [sorted([second, first]), [third]]
    with Session(store.engine) as s:
        rows = s.exec(
            select(MatchRow, ArticleRow)
            .join(ArticleRow, col(ArticleRow.id) == col(MatchRow.article_id))
            .order_by(col(MatchRow.id))
        ).all()
    assert all(r.gist and "v" in r.gist for r, _ in rows)
    g = {
        r.gist["t"]: (r.story_key, stored_gist(r.gist, r.matched, at.published_at))
        for r, at in rows
        if r.gist
    }
    expected = earliest_event(g[second][1], [g[first], g[third]])
    assert expected is not None and rows[2][0].joined == str(expected)


def test_a_gist_of_another_meaning_model_is_no_event_and_no_error(
    db: tuple[Store, Outbox],
) -> None:
    """After the meaning model is changed (its vectors have another length), the window
    still holds the old model's gists: a new article is compared only with gists of its
    own model, and its save does not fail on the others."""
    store, _ = db
    a, b, c = feeds(store, "a", "b", "c")
    at = utcnow().replace(tzinfo=UTC)
    old = Gist("", frozenset({"beijing"}), frozenset({"Qin Gang"}), at, (1.0, 0.0, 0.0))
    new = Gist("", frozenset({"beijing"}), frozenset({"Qin Gang"}), at, (0.0, 1.0, 0.0, 0.0))
    for n, (feed, g) in enumerate([(a, old), (b, new), (c, new)]):
        e = entry(f"m{n}", f"https://n.example/m{n}", published=at)
        store.save(feed, [e], {e.key}, [(e, [replace(result(), gist=g)])], NOW_POLICY)
    with Session(store.engine) as s:
        rows = s.exec(select(MatchRow).order_by(col(MatchRow.id))).all()
    assert [r.joined is not None for r in rows] == [False, False, True]
    assert rows[2].story_key == rows[1].story_key


def test_a_suppressed_story_is_no_event_for_a_later_article(db: tuple[Store, Outbox]) -> None:
    """A match held back by the desk's feedback was never posted: another outlet's report
    of the same event, in this save or a later one, starts a story of its own rather
    than going into the thread of a message nobody saw."""
    store, _ = db
    a, b, c = feeds(store, "a", "b", "c")
    at = utcnow().replace(tzinfo=UTC)
    g = Gist("", frozenset({"beijing"}), frozenset({"Qin Gang"}), at, (1.0, 0.0, 0.0))
    held = replace(result(), gist=g, held=MatchHold.SUPPRESSED, held_why="resembles #1")
    for n, (feed, res) in enumerate([(a, held), (b, replace(result(), gist=g)), (c, held)]):
        e = entry(f"s{n}", f"https://n.example/s{n}", published=at)
        store.save(feed, [e], {e.key}, [(e, [res])], NOW_POLICY)
    with Session(store.engine) as s:
        rows = s.exec(select(MatchRow).order_by(col(MatchRow.id))).all()
    assert [r.joined is not None for r in rows] == [False, False, True]  # the trap: c joins b
    assert rows[0].gist is None and rows[1].gist is not None


def test_the_events_cache_forgets_a_watchlist_no_longer_read(db: tuple[Store, Outbox]) -> None:
    """A watchlist taken out of the config is never read again: what the store keeps of
    its window must go once the window has passed, or a long-running service grows."""
    store, _ = db
    (feed,) = feeds(store, "a")
    at = utcnow().replace(tzinfo=UTC)
    g = Gist("", frozenset({"beijing"}), frozenset({"Qin Gang"}), at, (1.0, 0.0))
    res = replace(result("other", "#other"), gist=g)
    for n in range(2):  # the second save reads (and keeps) the first one's story
        e = entry(f"w{n}", f"https://n.example/w{n}", published=at)
        store.save(feed, [e], {e.key}, [(e, [res])], NOW_POLICY)
    assert len(store._recent) == 1
    later = utcnow() + timedelta(days=5)
    with Session(store.engine) as s:
        store._recent.stories(s, "us-china", later)
    assert len(store._recent) == 0


def _blocked_on(path: Path) -> bool:
    """Whether /proc/locks shows a process or thread waiting for a flock(2) on `path`."""
    inode = f":{os.stat(path).st_ino} "
    with open("/proc/locks") as locks:
        return any("->" in line and inode in line for line in locks)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads Linux's /proc/locks")
def test_a_save_to_a_sqlite_file_waits_its_turn_and_goes_on_when_it_is_free(
    tmp_path: Path,
) -> None:
    """Writers of one SQLite file take turns on a lock file beside it (db.WriteTurn), so
    the next is woken as the last lets go, not by SQLite's busy handler's sleeps: a save
    begun while another writer's turn is held waits on the file, then stores."""
    engine = make_engine(f"sqlite:///{tmp_path}/turns.db")
    migrate(engine)
    store = Store(engine, reader(default_meaning))
    [feed] = feeds(store, "world")
    other = WriteTurn(engine)  # another writer's: its own open file, so flock parts them
    assert other.path == Path(f"{tmp_path}/turns.db.write.lock")
    e = entry("1", "https://n.example/qin")
    queued: list[int] = []
    with other.held():
        saver = threading.Thread(target=lambda: queued.append(save(store, feed, e)))
        saver.start()
        deadline = time.monotonic() + 30
        while not _blocked_on(other.path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _blocked_on(other.path), "the save did not wait for the turn"
        assert store.seen_keys(feed, [e.key]) == set() and not queued
    saver.join()
    assert queued == [1] and store.seen_keys(feed, [e.key]) == {e.key}
    engine.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_a_forked_child_holds_a_lock_file_through_its_own_descriptor(tmp_path: Path) -> None:
    """flock(2) holds belong to an open file, which fork shares: the trap is a child that
    takes its parent's lock through the inherited descriptor, and so holds it alongside
    the parent instead of finding it taken."""
    lock = FileLock(tmp_path / "x.lock")
    assert lock.try_exclusive()
    with warnings.catch_warnings():  # fork in a threaded process: the child only flocks
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if not lock.try_exclusive() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lock.release()
    again = FileLock(tmp_path / "x.lock")
    assert again.try_exclusive()
    again.release()


def test_no_write_turns_where_the_database_parts_writers_itself() -> None:
    """PostgreSQL locks rows, and SQLite in memory has one process: no lock file, and
    holding the turn takes nothing (nor does it wait)."""
    for url in ("sqlite://", "sqlite:///:memory:", "postgresql://nobody@127.0.0.1:1/none"):
        turn = WriteTurn(make_engine(url))
        assert turn.path is None
        with turn.held(), turn.held():  # nothing taken: not even this thread waits
            pass

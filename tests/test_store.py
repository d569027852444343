"""The store on a real SQLite file and, where one runs, a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from monitor.config import FeedConfig
from monitor.dedupe import identify
from monitor.models import Hit, Item, MatchResult, utcnow
from monitor.store import Store, make_engine


def entry(guid: str, link: str, title: str = "Qin Gang missing") -> object:
    return identify(
        Item(
            title=title,
            link=link,
            guid=guid,
            summary="s",
            content="",
            published=datetime(2023, 7, 24, tzinfo=UTC),
        )
    )


def result(watchlist: str = "us-china", channel: str = "#china-desk") -> MatchResult:
    hit = Hit("Qin Gang", "entity", "name", "Qin Gang", "title", 0, 8)
    return MatchResult(watchlist, channel, (hit,), "Qin Gang missing", ((0, 8),))


@pytest.fixture
def store(any_db_url: str) -> Store:
    s = Store(make_engine(any_db_url))
    yield s
    s.engine.dispose()


def feeds(store: Store, *names: str) -> list[int]:
    cfgs = [FeedConfig(name=n, url=f"https://{n}.example/rss") for n in names]
    states = store.sync_feeds(cfgs, lambda f: timedelta(minutes=10), lambda f: timedelta(days=1))
    return [s.id for s in states]


def test_save_is_idempotent_and_queues_once(store: Store) -> None:
    [feed] = feeds(store, "world")
    e = entry("1", "https://n.example/qin")
    assert store.save(feed, [e], {e.key}, [(e, [result()])]) == 1
    assert store.save(feed, [e], {e.key}, [(e, [result()])]) == 0
    assert store.seen_keys(feed, [e.key, "guid:other"]) == {e.key}
    [alert] = store.pending(utcnow())
    assert alert.title == "Qin Gang missing" and alert.feed == "world"
    assert alert.highlights == [(0, 8)] and alert.matched == ["Qin Gang"]
    assert alert.published == datetime(2023, 7, 24, tzinfo=UTC)


def test_same_story_from_two_feeds_alerts_once_per_watchlist(store: Store) -> None:
    world, asia = feeds(store, "world", "asia")
    a = entry("w1", "https://n.example/qin?utm_source=rss")
    b = entry("a1", "https://www.n.example/qin#top", title="Where is Qin Gang?")
    assert store.save(world, [a], {a.key}, [(a, [result()])]) == 1
    assert store.save(asia, [b], {b.key}, [(b, [result(), result("other", "#other")])]) == 1
    assert sorted(x.watchlist for x in store.pending(utcnow())) == ["other", "us-china"]


def test_delivery_outcomes(store: Store) -> None:
    [feed] = feeds(store, "world")
    e = entry("1", "https://n.example/qin")
    store.save(feed, [e], {e.key}, [(e, [result()])])
    [alert] = store.pending(utcnow())
    store.mark_failed(
        alert.delivery_id, "slack: boom", dead=False, retry_at=utcnow() + timedelta(minutes=1)
    )
    assert store.pending(utcnow()) == []
    [again] = store.pending(utcnow() + timedelta(minutes=2))
    assert again.attempts == 1
    store.mark_sent(again.delivery_id, "1700000000.000001")
    assert store.pending(utcnow() + timedelta(days=1)) == []
    [row] = store.matches("us-china", None)
    assert row["delivery"] == "sent" and row["slack_ts"] == "1700000000.000001"


def test_feed_state_and_due_times(store: Store) -> None:
    a, b = feeds(store, "a", "b")
    now = utcnow()
    store.record_fetch(
        a,
        status=200,
        error=None,
        etag='"e"',
        last_modified="lm",
        next_due=now + timedelta(minutes=10),
        new_items=5,
    )
    store.record_fetch(b, status=500, error="HTTP 500", next_due=now - timedelta(seconds=1))
    states = store.sync_feeds(
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
    rows = {r.name: r for r in store.feeds()}
    assert rows["a"].etag == '"e"' and rows["a"].items_seen == 5 and rows["a"].last_status == 200
    assert rows["b"].last_error == "HTTP 500"


def test_changed_url_forgets_validators(store: Store) -> None:
    [a] = feeds(store, "a")
    store.record_fetch(a, status=200, error=None, etag='"e"', next_due=utcnow())
    store.sync_feeds(
        [FeedConfig(name="a", url="https://moved.example/rss")],
        lambda f: timedelta(minutes=10),
        lambda f: timedelta(days=1),
    )
    [row] = store.feeds()
    assert row.url == "https://moved.example/rss" and row.etag is None


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/wal.db")  # type: ignore[str-bytes-safe]
    Store(engine)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    engine.dispose()

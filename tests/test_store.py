"""The store and the outbox on a real SQLite file and, where one runs, a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from monitor.archive import Archive
from monitor.config import FeedConfig, Watchlist
from monitor.db import Database, make_engine, migrate
from monitor.dedupe import fingerprint, identify
from monitor.digests import Digests
from monitor.feeds import FeedStore
from monitor.models import Entry, FetchResult, Hit, Item, MatchResult, Sent, utcnow
from monitor.outbox import Outbox, Policy
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


def entry(guid: str, link: str | None, title: str = "Qin Gang missing", body: str = "s") -> Entry:
    """A matched entry, fingerprinted as the pipeline does for matches."""
    item = Item(
        title=title,
        link=link,
        guid=guid,
        summary=body,
        content="",
        published=datetime(2023, 7, 24, tzinfo=UTC),
    )
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
    yield Store(engine), Outbox(engine)
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


def test_a_copy_from_another_feed_becomes_a_followup(db: tuple[Store, Outbox]) -> None:
    store, outbox = db
    world, asia = feeds(store, "world", "asia")
    a = entry("w1", "https://n.example/qin?utm_source=rss")
    b = entry("a1", "https://www.n.example/qin#top", title="Where is Qin Gang?")
    assert save(store, world, a) == 1
    assert save(store, asia, b, result(), result("other", "#other")) == 2
    due = outbox.due(utcnow())
    assert [(o.watchlist, o.kind) for o in due] == [("us-china", "alert"), ("other", "alert")]
    parent = due[0]
    assert outbox.claim(parent.delivery_id)
    outbox.sent(parent.delivery_id, parent.channel, Sent("111.1", "C1"))
    [followup] = [o for o in outbox.due(utcnow()) if o.kind == "followup"]
    assert followup.thread_ts == "111.1" and followup.stories[0].feed == "asia"
    assert followup.channel_id == "C1"  # learnt from the parent's answer


@pytest.mark.parametrize(("mode", "queued"), [("ignore", 0), ("separate", 1)])
def test_followup_modes(db: tuple[Store, Outbox], mode: str, queued: int) -> None:
    store, outbox = db
    world, asia = feeds(store, "world", "asia")
    policy = {"us-china": Policy(hold=False, followups=mode)}
    save(store, world, entry("w1", "https://n.example/qin"), policies=policy)
    assert save(store, asia, entry("a1", "https://n.example/qin"), policies=policy) == queued
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
    assert [r["status"] for r in outbox.listing(["dead"], None)] == ["dead"]
    assert outbox.retry_dead("us-china") == 1
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
    outbox.release(out.delivery_id)
    assert [o.delivery_id for o in outbox.due(utcnow())] == [out.delivery_id]


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
    wl = Watchlist.model_validate(
        {
            "name": "us-china",
            "channel": "#china-desk",
            "topics": [{"name": "t"}],
            "delivery": "digest",
            "digest": "hourly",
        }
    )
    assert Digests(outbox.engine).make([wl], utcnow()) == 0  # held after the last boundary
    later = utcnow() + timedelta(hours=1)
    assert Digests(outbox.engine).make([wl], later) == 2  # 25 stories: 20 + 5
    assert Digests(outbox.engine).make([wl], later) == 0
    parts = outbox.due(later)
    assert [len(p.stories) for p in parts] == [20, 5]
    assert all(p.kind == "digest" and p.label.endswith(("(1/2)", "(2/2)")) for p in parts)


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
    assert sorted(s.name for s in store.claim_due(states, now, lease)) == ["a", "b"]
    assert store.claim_due(states, now + timedelta(minutes=1), lease) == []  # a 2nd scheduler
    queued_at = now
    a = next(s for s in states if s.name == "a")
    store.record_fetches([FetchResult(a.id, status=304, error=None, next_due=now + lease * 2)])
    # a poll job for `a` queued before that poll finds it done; `b` still waits for its poll
    assert [s.name for s in store.states(states, unpolled_since=queued_at)] == ["b"]
    # a lost poll: `b` comes due again when its lease runs out, `a` keeps its own time
    assert [s.name for s in store.claim_due(states, now + lease, lease)] == ["b"]


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

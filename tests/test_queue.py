"""Queue mode: several `monitor run --workers-mode queue` processes on one real PostgreSQL,
a feed server and a fake Slack, as an operator would run them on several hosts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from monitor import config as config_mod
from monitor.config import QueueSettings
from monitor.db import conninfo
from monitor.errors import UsageError
from monitor.models import FeedOutcome
from monitor.runtime.executor import Executor
from monitor.runtime.queue import DELIVER, POLL, Polls, every
from monitor.service import Service, build
from tests.conftest import write_config
from tests.servers import FakeSlack, FeedServer, Reply, Route, rss
from tests.test_run import wait_for

PEOPLE = ["Qin Gang", "Wang Yi", "Li Shangfu", "Antony Blinken"]
FEEDS = 200


def desk_config(
    root: Path,
    server: FeedServer,
    delay: float = 0.0,
    count: int = FEEDS,
    delivery: dict[str, Any] | None = None,
) -> Path:
    """`count` feeds, each with one article about one of four people; one watchlist (and
    one channel) per person, so each channel gets a quarter of the alerts, one by one
    (not as a flood message)."""
    feeds = []
    for i in range(count):
        person = PEOPLE[i % len(PEOPLE)]
        item = {"title": f"{person} story {i}", "link": f"https://n.example/{i}", "guid": f"g{i}"}
        server.routes[f"/f{i}.xml"] = Route(rss([item]), etag=f'"{i}"', delay=delay)
        feeds.append({"name": f"feed-{i:03}", "url": server.url(f"/f{i}.xml"), "interval": "1h"})
    return write_config(root, feeds, desks(), settings=fast_queue(delivery))


def desks(people: list[str] = PEOPLE) -> list[dict[str, Any]]:
    """One watchlist (and one channel) per person."""
    return [
        {"name": f"desk-{k}", "channel": f"#desk-{k}", "entities": [{"name": person}]}
        for k, person in enumerate(people)
    ]


def fast_queue(delivery: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings that make queue mode's leases, heartbeats and pacing short enough for a
    test to see a stall, a kill and a retry in seconds."""
    return {
        "delivery": {
            "channel_interval": "100ms",
            "max_per_second": 200,
            "lease": "2s",
            "retry_base": "1s",
            "flood_threshold": 1000,
            **(delivery or {}),
        },
        "queue": {"heartbeat": "1s", "stalled_after": "3s", "feed_lease": "30s"},
    }


def start_worker(cfg: Path, slack: FakeSlack, db: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_URL": slack.api_url,
        "MONITOR_DATABASE_URL": db,
    }
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the worker
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor",
                "--config",
                str(cfg),
                "run",
                "--workers-mode",
                "queue",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def polled_feeds(log: Path) -> set[str]:
    return set(re.findall(r"feed polled feed=(feed-\d+)", log.read_text(errors="replace")))


def alerts(slack: FakeSlack) -> Counter[tuple[str, str]]:
    with slack.lock:
        return Counter((m["channel"], m["text"].split(" https")[0]) for m in slack.messages)


def expected_alerts(count: int = FEEDS) -> Counter[tuple[str, str]]:
    return Counter(
        (f"#desk-{i % len(PEOPLE)}", f"{PEOPLE[i % len(PEOPLE)]} story {i}") for i in range(count)
    )


def scalar(db: str, sql: str) -> Any:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def nothing_left_to_post(db: str) -> bool:
    """No delivery that may still be sent, and no poll or delivery job waiting or
    running: nothing is left in the outbox or the queue that could post another copy."""
    unsent = scalar(
        db, "SELECT count(*) FROM delivery WHERE status IN ('pending', 'sending', 'held')"
    )
    jobs = scalar(
        db,
        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing') "
        f"AND task_name IN ('{POLL}', '{DELIVER}')",
    )
    return unsent == 0 and jobs == 0


@pytest.mark.slow  # workers as processes, over several ticks
def test_three_workers_share_200_feeds_and_alert_each_story_once(
    feed_server: FeedServer, slack: FakeSlack, pg_url: str, tmp_path: Path
) -> None:
    cfg = desk_config(tmp_path / "c", feed_server)
    # a second post in a channel within 100 ms of the last is answered 429, and the workers
    # pace at 100 ms: from each answer, so no jitter on a loaded machine brings two closer
    slack.min_interval = 0.1
    logs = [tmp_path / f"worker{n}.log" for n in range(3)]
    procs = [start_worker(cfg, slack, pg_url, log) for log in logs]
    try:
        assert wait_for(lambda: sum(alerts(slack).values()) >= FEEDS, timeout=90), (
            f"{sum(alerts(slack).values())} alerts of {FEEDS}"
        )
        assert wait_for(lambda: nothing_left_to_post(pg_url))
    finally:
        stop_all(procs)
    assert alerts(slack) == expected_alerts()
    assert slack.rate_limited == 0, "two workers posted to one channel at once"
    shares = [polled_feeds(log) for log in logs]
    assert set().union(*shares) == {f"feed-{i:03}" for i in range(FEEDS)}
    assert sum(len(s) for s in shares) == FEEDS, "a feed was polled twice"
    assert all(len(s) >= 10 for s in shares), [len(s) for s in shares]
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert "xoxb-test-token" not in log.read_text()
    assert scalar(pg_url, "SELECT count(*) FROM delivery WHERE status <> 'sent'") == 0


@pytest.mark.slow  # workers as processes, over several ticks
def test_a_killed_worker_leaves_its_feeds_to_the_others(
    feed_server: FeedServer, slack: FakeSlack, pg_url: str, tmp_path: Path
) -> None:
    cfg = desk_config(tmp_path / "c", feed_server, delay=0.5)
    logs = [tmp_path / f"worker{n}.log" for n in range(3)]
    procs = [start_worker(cfg, slack, pg_url, log) for log in logs]
    try:
        # kill one worker while it has polls in flight (each fetch takes 0.5 s)
        assert wait_for(lambda: len(polled_feeds(logs[0])) >= 5, timeout=60)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        killed_share = polled_feeds(logs[0])
        assert wait_for(lambda: sum(alerts(slack).values()) >= FEEDS, timeout=90), (
            f"{sum(alerts(slack).values())} alerts of {FEEDS}"
        )
        assert wait_for(lambda: nothing_left_to_post(pg_url))
    finally:
        stop_all(procs)
    assert alerts(slack) == expected_alerts()
    survivors = polled_feeds(logs[1]) | polled_feeds(logs[2])
    assert len(killed_share) < FEEDS and len(survivors) > FEEDS // 2
    took_over = "".join(log.read_text() for log in logs[1:])
    requeued = re.findall(
        r"stalled job action=requeued .* task=monitor:poll_feeds lock=feeds:(\d+)", took_over
    )
    assert requeued, "the killed worker's polls were never taken over"
    # (a poll the killed worker committed just before dying is found done, not repeated)
    assert scalar(pg_url, "SELECT count(*) FROM feed WHERE last_fetch_at IS NULL") == 0
    assert scalar(pg_url, "SELECT count(*) FROM delivery WHERE status <> 'sent'") == 0


@pytest.mark.slow  # workers as processes, over several ticks
def test_a_worker_killed_while_posting_never_doubles_an_alert(
    feed_server: FeedServer, slack: FakeSlack, pg_url: str, tmp_path: Path
) -> None:
    cfg = desk_config(tmp_path / "c", feed_server, count=40)
    slack.every = {1: Reply(hang=0.4)}  # every post takes 0.4 s to answer
    logs = [tmp_path / f"worker{n}.log" for n in range(3)]
    first = start_worker(cfg, slack, pg_url, logs[0])
    procs = [first]
    try:
        # the only worker is killed with a post in flight: Slack will have it, the
        # worker never learns its ts
        assert wait_for(lambda: len(slack.messages) >= 3 and slack.calls > len(slack.messages))
        first.send_signal(signal.SIGKILL)
        first.wait()
        procs += [start_worker(cfg, slack, pg_url, log) for log in logs[1:]]
        assert wait_for(lambda: sum(alerts(slack).values()) >= 40, timeout=90), (
            f"{sum(alerts(slack).values())} alerts of 40"
        )
        assert wait_for(lambda: nothing_left_to_post(pg_url))
    finally:
        stop_all(procs)
    assert alerts(slack) == expected_alerts(40)
    took_over = "".join(log.read_text() for log in logs[1:])
    assert "stalled job" in took_over  # requeued, or dropped for a newer job of its channel
    assert "lost send found in slack" in took_over
    assert scalar(pg_url, "SELECT count(*) FROM delivery WHERE status <> 'sent'") == 0


def test_queue_mode_refuses_sqlite_with_a_clear_message(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="queue mode needs PostgreSQL, not sqlite"):
        conninfo(f"sqlite:///{tmp_path / 'x.db'}")
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    log = tmp_path / "w.log"
    proc = start_worker(cfg, slack, f"sqlite:///{tmp_path / 'x.db'}", log)
    assert proc.wait(timeout=30) == 2
    assert "queue mode needs PostgreSQL, not sqlite" in log.read_text()


def test_conninfo_and_tick_cron() -> None:
    assert conninfo("postgresql+psycopg://u:p@h:5433/db?options=-csearch_path%3Ds") == (
        "postgresql://u:p@h:5433/db?options=-csearch_path%3Ds"
    )
    assert every(QueueSettings().heartbeat) == "* * * * * */10"
    from datetime import timedelta

    assert every(timedelta(minutes=5)) == "*/5 * * * *"


def test_workers_starting_together_create_the_queue_tables_once(pg_url: str) -> None:
    import threading

    import procrastinate

    from monitor.db import make_engine, migrate
    from monitor.runtime.queue import prepare

    engines = [make_engine(pg_url) for _ in range(3)]
    errors: list[BaseException] = []

    def start(engine: Any) -> None:
        try:
            migrate(engine)
            prepare(engine)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    prepare(engines[0])  # and again at a restart: nothing to do
    for engine in engines:
        engine.dispose()
    assert errors == []
    assert scalar(pg_url, "SELECT version FROM monitor_queue_schema") == procrastinate.__version__
    assert scalar(pg_url, "SELECT count(*) FROM procrastinate_jobs") == 0


@pytest.mark.slow  # workers as processes, over several ticks
def test_a_queue_worker_applies_an_edited_watchlist_without_a_restart(
    feed_server: FeedServer, slack: FakeSlack, pg_url: str, tmp_path: Path
) -> None:
    import yaml

    qin_only = {"name": "desk", "channel": "#china-desk", "entities": [{"name": "Qin Gang"}]}
    items = [{"title": "Li Shangfu sacked", "link": "https://n.example/1", "guid": "1"}]
    feed_server.routes["/f.xml"] = Route(rss(items))
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml"), "interval": "1s"}],
        [qin_only],
    )
    log = tmp_path / "w.log"
    proc = start_worker(cfg, slack, pg_url, log)
    try:
        assert wait_for(lambda: feed_server.hits.get("/f.xml", 0) >= 2)
        assert slack.messages == []
        (cfg / "watchlists" / "desk.yaml").write_text(
            yaml.safe_dump({**qin_only, "entities": [{"name": "Qin Gang"}, {"name": "Li Shangfu"}]})
        )
        assert wait_for(lambda: "config reloaded" in log.read_text())
        items.append({"title": "Li Shangfu in Moscow", "link": "https://n.example/2", "guid": "2"})
        feed_server.routes["/f.xml"] = Route(rss(items))
        assert wait_for(lambda: len(slack.messages) == 1)
    finally:
        stop_all([proc])
    assert slack.messages[0]["text"].startswith("Li Shangfu in Moscow")
    assert proc.returncode == 0, log.read_text()[-2000:]


def test_failed_jobs_are_kept_three_days_then_forgotten(pg_url: str, tmp_path: Path) -> None:
    import asyncio
    from types import SimpleNamespace

    from monitor import config as config_mod
    from monitor.db import make_engine, migrate
    from monitor.runtime.queue import _forget_old_jobs, make_app, prepare

    engine = make_engine(pg_url)
    migrate(engine)
    prepare(engine)
    engine.dispose()
    cfg = write_config(tmp_path / "c", [], settings={"database_url": pg_url})
    app = make_app(config_mod.load(cfg).settings)
    with app.open():
        old, recent = (app.tasks[POLL].configure(lock=f"feeds:{n}").defer(group=n) for n in (1, 2))
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE procrastinate_jobs SET status = 'failed'"))
        conn.execute(
            text(
                "UPDATE procrastinate_events SET at = now() - interval '4 days' WHERE job_id = :j"
            ),
            {"j": old},
        )
    engine.dispose()

    async def forget() -> None:
        async with app.open_async():
            await _forget_old_jobs(SimpleNamespace(app=app), 0)  # type: ignore[arg-type]

    asyncio.run(forget())
    assert scalar(pg_url, "SELECT array_agg(id) FROM procrastinate_jobs") == [recent]


@pytest.mark.slow  # workers as processes, over several ticks
def test_a_worker_killed_in_a_rate_limit_wait_is_replaced_and_its_alert_comes_once_soon(
    feed_server: FeedServer, slack: FakeSlack, pg_url: str, tmp_path: Path
) -> None:
    """The worker dies while Slack has it wait 10 min: its post never landed. Once its
    heartbeat is known to have stopped, its channel's job goes to the next worker, which
    finds the channel free of live senders and posts at once, not after the 10 min lease
    nor the 10 min wait (both far beyond the test's own timeout, so no clock is read)."""
    delivery = {"lease": "10m", "in_flight": "1s"}
    cfg = desk_config(tmp_path / "c", feed_server, count=1, delivery=delivery)
    slack.script = [Reply(status=429, retry_after=600)]
    slack.channels.add("desk-0")  # the bot is in it: it can look for the lost send
    logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
    first = start_worker(cfg, slack, pg_url, logs[0])
    procs = [first]
    try:
        assert wait_for(lambda: slack.calls >= 1, timeout=60), "the alert was never sent"
        assert wait_for(lambda: slack.answered >= 1)  # the 429 is back: the worker waits
        first.send_signal(signal.SIGKILL)
        first.wait()
        procs.append(start_worker(cfg, slack, pg_url, logs[1]))
        assert wait_for(lambda: len(slack.messages) >= 1, timeout=60), "the alert never came"
        assert wait_for(lambda: nothing_left_to_post(pg_url))
    finally:
        stop_all(procs)
    assert alerts(slack) == expected_alerts(1)
    taken_over = logs[1].read_text()
    assert "cannot check" not in taken_over and "unconfirmed send will be posted" in taken_over


@pytest.mark.slow  # workers as processes, over several ticks
def test_a_flood_is_one_message_in_queue_mode(
    feed_server: FeedServer, slack: FakeSlack, pg_url: str, tmp_path: Path
) -> None:
    items = [
        {"title": f"Qin Gang story {i}", "link": f"https://n.example/{i}", "guid": f"g{i}"}
        for i in range(30)
    ]
    feed_server.routes["/f.xml"] = Route(rss(items))
    desk = {"name": "desk", "channel": "#china-desk", "entities": [{"name": "Qin Gang"}]}
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}], [desk])
    log = tmp_path / "w.log"
    proc = start_worker(cfg, slack, pg_url, log)
    try:
        assert wait_for(lambda: len(slack.messages) >= 1, timeout=60)
        assert wait_for(lambda: nothing_left_to_post(pg_url))
    finally:
        stop_all([proc])
    [flood] = slack.top_level()
    assert flood["blocks"][0]["text"]["text"] == "desk: 30 alerts in one poll cycle"
    assert len(set(slack.listed_in_thread(flood))) == 30
    assert "alert flood gathered into one message channel=#china-desk" in log.read_text()


def test_the_queue_talks_to_postgresql_without_transactions_around_its_calls(
    pg_url: str, tmp_path: Path
) -> None:
    """Each procrastinate call is one statement: a BEGIN and a COMMIT around it would be
    two more round trips per fetch and finish, so its connections are autocommit, opened
    by the async pool and by the sync one alike."""
    import asyncio

    from monitor import config as config_mod
    from monitor.runtime.queue import make_app

    cfg = write_config(tmp_path / "c", [], settings={"database_url": pg_url})
    app = make_app(config_mod.load(cfg).settings)

    async def pooled() -> bool:
        async with app.open_async(), app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            return bool(conn.autocommit)

    assert asyncio.run(pooled())
    with app.open():
        sync = app.connector.get_sync_connector()
        with sync.pool.connection() as conn:  # type: ignore[attr-defined]
            assert conn.autocommit


def test_a_dispatch_hands_the_owed_message_updates_over_once_not_once_a_channel(
    feed_server: FeedServer,
    slack: FakeSlack,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One dispatch queues a delivery job for each of four channels and asks the Slack
    app for its owed message updates once; the delivery jobs do not ask again."""
    import threading
    from types import SimpleNamespace
    from typing import cast

    from monitor import config as config_mod
    from monitor import cycle
    from monitor.runtime.queue import QueueWorker, prepare
    from monitor.service import build
    from monitor.slackapp import SlackApp

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("SLACK_API_URL", slack.api_url)
    monkeypatch.setenv("MONITOR_DATABASE_URL", pg_url)
    cfg = desk_config(tmp_path / "c", feed_server, count=len(PEOPLE))
    service = build(config_mod.load(cfg))
    asked: list[bool] = []
    service.slack = cast(SlackApp, SimpleNamespace(catch_up=lambda: asked.append(True)))
    try:
        cycle.poll(service, service.deps.feeds.states(service.feeds))
        prepare(service.deps.store.engine)
        worker = QueueWorker(service, threading.Event())
        with worker.app.open():
            worker.dispatch()
        queued = scalar(
            pg_url,
            "SELECT array_agg(args->>'channel' ORDER BY args->>'channel') "
            f"FROM procrastinate_jobs WHERE task_name = '{DELIVER}'",
        )
        assert queued == [f"#desk-{k}" for k in range(len(PEOPLE))]
        assert asked == [True]
        for channel in queued:
            worker.deliver(channel)
        assert alerts(slack) == expected_alerts(len(PEOPLE))
        assert asked == [True]
    finally:
        service.slack = None
        service.close()


def polled_service(
    root: Path, server: FeedServer, count: int, delay: float = 0.0, **settings: Any
) -> Service:
    """A service of `count` feeds of one story each (nothing any watchlist matches), on
    its own SQLite file: Polls needs no queue, only a service."""
    feeds = []
    for i in range(count):
        item = {"title": f"story {i}", "link": f"https://n.example/p{i}", "guid": f"p{i}"}
        server.routes[f"/p{i}.xml"] = Route(rss([item]), delay=delay)
        feeds.append({"name": f"p{i}", "url": server.url(f"/p{i}.xml")})
    database = {"database_url": f"sqlite:///{root / 'm.db'}"}
    return build(config_mod.load(write_config(root / "c", feeds, [], {**database, **settings})))


def within(seconds: float, work: Callable[[], list[FeedOutcome]]) -> list[FeedOutcome]:
    """A poll job run in a thread: one that never ends fails the test, not hangs it."""
    done: list[list[FeedOutcome]] = []
    threading.Thread(target=lambda: done.append(work()), daemon=True).start()
    assert wait_for(lambda: bool(done), timeout=seconds), (
        f"a poll job still waits after {seconds} s"
    )
    return done[0]


def test_a_workers_poll_jobs_share_its_executor_each_given_its_own_feeds_outcomes(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    service = polled_service(tmp_path, feed_server, 6)
    polls = Polls(service, threading.Event())
    got: dict[int, list[str]] = {}

    def job(k: int) -> None:
        got[k] = sorted(o.feed for o in polls.poll(service.feeds[k::2]) if o.ok)

    for k in (0, 1):
        threading.Thread(target=job, args=(k,), daemon=True).start()
    assert wait_for(lambda: len(got) == 2, timeout=30)
    polls.close()
    rows = service.deps.feeds.rows()
    service.close()
    assert got == {0: ["p0", "p2", "p4"], 1: ["p1", "p3", "p5"]}
    assert [r.last_status for r in rows] == [200] * 6  # each job's records written before it ends


def test_a_poll_job_ends_at_a_stop_and_its_feeds_not_begun_stay_unpolled(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    service = polled_service(tmp_path, feed_server, 4, delay=0.5, http={"concurrency": 1})
    stop = threading.Event()
    polls = Polls(service, stop)
    threading.Timer(0.2, stop.set).start()  # one fetch under way, three not begun
    outcomes = within(20, lambda: polls.poll(service.feeds))
    polls.close()
    rows = service.deps.feeds.rows()
    service.close()
    assert len(outcomes) <= 1
    assert sum(r.last_fetch_at is None for r in rows) == 4 - len(outcomes)


def test_a_failing_poll_executor_ends_its_jobs_and_the_next_polls_again(
    feed_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = polled_service(tmp_path, feed_server, 2)
    step = Executor.step
    calls = 0

    def failing_once(self: Executor, timeout: float | None = None) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return step(self, timeout)

    monkeypatch.setattr(Executor, "step", failing_once)
    polls = Polls(service, threading.Event())
    assert within(20, lambda: polls.poll(service.feeds)) == []  # ends; the feeds stay queued
    assert sorted(o.feed for o in within(20, lambda: polls.poll(service.feeds))) == ["p0", "p1"]
    polls.close()
    service.close()

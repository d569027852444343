"""Riding out faults (issue 25): a private PostgreSQL stopped and restarted under running
queue workers and under the single-host service, Slack answering 500 for a while, and a
SQLite file locked past its busy timeout. The processes stay up, say once that the
database went and once that it is back, answer 503 on /healthz meanwhile, and every
alert goes out exactly once, soon after the fault ends."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from monitor.config import DeliverySettings
from monitor.db import Database, make_engine, migrate
from monitor.deliver import Deliverer
from monitor.digests import Digests
from monitor.errors import AlertError, DatabaseUnavailable
from monitor.events import reader
from monitor.match.matcher import default_meaning
from monitor.models import Outgoing, Sent, utcnow
from monitor.outage import DbState, unavailable, watch_of
from monitor.outbox import Outbox
from monitor.retries import Recovery
from monitor.store import Store
from tests.conftest import write_config
from tests.pgcluster import PrivatePostgres, binaries, free_port
from tests.servers import FakeSlack, FeedServer, Reply, Route, rss
from tests.test_queue import desks, fast_queue, stop_all
from tests.test_run import wait_for
from tests.test_store import entry, feeds, result, save

# one person, watchlist and channel per feed: another feed's story on the same person
# would join the first as a follow-up (events.py), and these tests count top-level alerts
PEOPLE = ["Qin Gang", "Wang Yi", "Li Shangfu", "Antony Blinken", "Janet Yellen", "Gina Raimondo"]
FEEDS = len(PEOPLE)
# after the database answers again: a tick to notice, a worker restart (probe backoff of
# at most 5 s), stalled jobs handed back (3 s), a poll and the pacing; generous, for a
# loaded 2-core machine
AFTER_FAULT = 45.0


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    found = binaries()
    if found is None:
        pytest.skip("no PostgreSQL binaries under /usr/lib/postgresql")
    pg = PrivatePostgres(found)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.destroy()


class Desk:
    """FEEDS feeds, each gaining one article per round about its own person. Knows which
    alerts each round must bring."""

    def __init__(self, server: FeedServer) -> None:
        self.server = server
        self.items: dict[int, list[dict[str, str]]] = {i: [] for i in range(FEEDS)}
        self.rounds = 0

    def publish(self) -> None:
        n = self.rounds
        self.rounds += 1
        for i, items in self.items.items():
            person = PEOPLE[i]
            k = n * FEEDS + i
            items.append(
                {"title": f"{person} story {k}", "link": f"https://n.example/{k}", "guid": f"g{k}"}
            )
            self.server.routes[f"/f{i}.xml"] = Route(rss(list(items)), etag=f'"{k}"')

    def expected(self) -> Counter[tuple[str, str]]:
        return Counter(
            (f"#desk-{i}", f"{PEOPLE[i]} story {n * FEEDS + i}")
            for n in range(self.rounds)
            for i in range(FEEDS)
        )

    def config(self, root: Path, settings: dict[str, Any] | None = None) -> Path:
        feeds = [
            {"name": f"feed-{i}", "url": self.server.url(f"/f{i}.xml"), "interval": "1s"}
            for i in range(FEEDS)
        ]
        return write_config(
            root, feeds, desks(PEOPLE), settings={**fast_queue(), **(settings or {})}
        )


def alerts(slack: FakeSlack) -> Counter[tuple[str, str]]:
    with slack.lock:
        return Counter((m["channel"], m["text"].split(" https")[0]) for m in slack.messages)


def landed_after(slack: FakeSlack, since: float, round_: int) -> list[float]:
    """Seconds from `since` to each alert of a round landing in Slack."""
    numbers = {str(round_ * FEEDS + i) for i in range(FEEDS)}
    with slack.lock:
        return [
            float(m["ts"]) - since
            for m in slack.messages
            if m["text"].split(" https")[0].rsplit(" ", 1)[-1] in numbers
        ]


def start(cfg: Path, slack: FakeSlack, db: str, log: Path, port: int, *mode: str) -> Any:
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_URL": slack.api_url,
        "MONITOR_DATABASE_URL": db,
    }
    command = [sys.executable, "-m", "monitor", "--config", str(cfg), "run", *mode]
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall it
        return subprocess.Popen(
            [*command, "--http", f"127.0.0.1:{port}"], env=env, stdout=out, stderr=out
        )


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            json.loads(resp.read())
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def ride_out(
    pg: PrivatePostgres,
    desk: Desk,
    slack: FakeSlack,
    procs: list[Any],
    ports: list[int],
    logs: list[Path],
) -> list[float]:
    """Round 0 goes out; the database stops (round 1 is published meanwhile, /healthz
    turns 503), starts again; then a `pg_ctl restart -m fast` with round 2. Returns the
    seconds from the database's return to each alert of rounds 1 and 2."""
    desk.publish()
    assert wait_for(lambda: alerts(slack) == desk.expected(), timeout=90), alerts(slack)
    assert wait_for(lambda: all(healthz(p) == 200 for p in ports), timeout=60)
    pg.stop()
    desk.publish()
    assert wait_for(lambda: all(healthz(p) == 503 for p in ports), timeout=60), [
        healthz(p) for p in ports
    ]
    assert wait_for(
        lambda: all("database unreachable" in log.read_text() for log in logs), timeout=60
    )
    time.sleep(3)  # an outage of some seconds, as a restart that takes a while
    pg.start()
    back = time.time()
    assert wait_for(lambda: alerts(slack) == desk.expected(), timeout=AFTER_FAULT + 30), (
        alerts(slack) - desk.expected()
    )
    latencies = landed_after(slack, back, 1)
    assert wait_for(lambda: all(healthz(p) == 200 for p in ports), timeout=60)
    desk.publish()
    pg.restart()
    back = time.time()
    assert wait_for(lambda: alerts(slack) == desk.expected(), timeout=AFTER_FAULT + 30)
    latencies += landed_after(slack, back, 2)
    assert wait_for(lambda: all(healthz(p) == 200 for p in ports), timeout=60)
    time.sleep(2)  # room for a second copy, if there were one
    assert [p.poll() for p in procs] == [None] * len(procs), "a process exited"
    return latencies


def check_logs(logs: list[Path]) -> None:
    for log in logs:
        text = log.read_text()
        gone = text.count("database unreachable")
        back = re.findall(r"database back database=\S+ down_seconds=([\d.]+)", text)
        # the stop, and the restart if this process met it, once each
        assert 1 <= gone <= 2 and len(back) == gone, text[-3000:]
        assert max(float(s) for s in back) >= 3.0, back
        assert "Task exception was never retrieved" not in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert "xoxb-test-token" not in text


def rode_out(
    mode: str,
    slack: FakeSlack,
    desk: Desk,
    latencies: list[float],
    procs: list[subprocess.Popen[str]],
    logs: list[Path],
) -> None:
    """What both runtimes must show after the faults: every alert once, each promptly
    after the database's return, the outages logged, and a clean exit."""
    assert alerts(slack) == desk.expected()
    assert max(latencies) <= AFTER_FAULT, sorted(latencies)
    check_logs(logs)
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log.read_text()[-3000:]
    print(f"{mode}: seconds from the database's return to each alert: {sorted(latencies)}")


@pytest.mark.slow
@pytest.mark.postgres
def test_queue_workers_ride_out_a_database_restart(
    private_pg: PrivatePostgres, feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    slack.channels |= {
        f"desk-{i}" for i in range(FEEDS)
    }  # the bot is in them: lost sends can be found
    desk = Desk(feed_server)
    cfg = desk.config(tmp_path / "c")
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    ports = [free_port() for _ in logs]
    procs = [
        start(cfg, slack, private_pg.url, log, port, "--workers-mode", "queue")
        for log, port in zip(logs, ports, strict=True)
    ]
    try:
        latencies = ride_out(private_pg, desk, slack, procs, ports, logs)
    finally:
        stop_all(procs)
    rode_out("queue", slack, desk, latencies, procs, logs)


@pytest.mark.slow
@pytest.mark.postgres
def test_the_single_host_service_rides_out_a_database_restart(
    private_pg: PrivatePostgres, feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    slack.channels |= {f"desk-{i}" for i in range(FEEDS)}
    desk = Desk(feed_server)
    cfg = desk.config(tmp_path / "c")
    logs = [tmp_path / "service.log"]
    ports = [free_port()]
    procs = [start(cfg, slack, private_pg.url, logs[0], ports[0])]
    try:
        latencies = ride_out(private_pg, desk, slack, procs, ports, logs)
    finally:
        stop_all(procs)
    rode_out("single", slack, desk, latencies, procs, logs)


@pytest.mark.slow
def test_alerts_held_up_by_a_slack_outage_go_out_promptly_when_it_ends(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    """Slack answers 500 for a while: each alert's backoff grows (retry_base 5 s, doubling,
    up to 10 min) and would hold it up to 40 s past the outage's end. Probes and the
    reset on the first send that lands bring them all out within a tick or two plus
    pacing."""
    desk = Desk(feed_server)
    cfg = desk.config(tmp_path / "c", {"delivery": {"retry_base": "5s", "retry_max": "10m"}})
    log = tmp_path / "service.log"
    slack.down = Reply(status=500)
    proc = start(cfg, slack, f"sqlite:///{tmp_path / 'm.db'}", log, free_port())
    try:
        desk.publish()
        # the alerts failed three times each on average: their next tries are up to 40 s away
        assert wait_for(lambda: len(re.findall("alert failed", log.read_text())) >= 3 * FEEDS, 120)
        slack.down = None
        back = time.time()
        assert wait_for(lambda: alerts(slack) == desk.expected(), timeout=60), alerts(slack)
        time.sleep(2)
        assert proc.poll() is None
    finally:
        stop_all([proc])
    assert alerts(slack) == desk.expected()
    latencies = landed_after(slack, back, 0)
    # tick 1 s (a probe at most each), pacing 100 ms per channel: 10 s is room to spare
    assert max(latencies) <= 10, sorted(latencies)
    text = log.read_text()
    assert "deliveries held back by a failure are due again" in text
    assert "alert dead" not in text
    print(f"slack outage: seconds from its end to each alert: {sorted(latencies)}")


def test_a_locked_sqlite_file_is_an_outage_said_once_and_its_end_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "m.db"
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2})
    watch = watch_of(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x int)"))
    db = Database(engine)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    caplog.set_level(logging.INFO, logger="monitor.outage")
    for _ in range(3):
        with pytest.raises(DatabaseUnavailable), db._session() as s:
            s.execute(text("INSERT INTO t VALUES (1)"))
    assert watch.state is DbState.DOWN
    holder.rollback()
    holder.close()
    with db._session() as s:
        s.execute(text("INSERT INTO t VALUES (1)"))
    assert watch.state is DbState.UP
    events = [r.getMessage() for r in caplog.records if r.name == "monitor.outage"]
    assert events == ["database unreachable", "database back"]
    engine.dispose()


def test_only_a_database_out_of_reach_counts_as_an_outage() -> None:
    import psycopg

    assert unavailable(sqlite3.OperationalError("database is locked"))
    assert not unavailable(sqlite3.OperationalError("no such table: t"))
    assert unavailable(psycopg.OperationalError("connection refused"))  # no SQLSTATE
    assert not unavailable(psycopg.errors.LockNotAvailable("lock timeout"))  # 55P03
    assert unavailable(psycopg.errors.AdminShutdown("terminating connection"))
    wrapped = RuntimeError("job failed")
    wrapped.__cause__ = psycopg.errors.CannotConnectNow("the database system is starting up")
    assert unavailable(wrapped)


class Flaky:
    """A sink that fails every send with `fail` while it is set, as Slack in an outage."""

    name = "flaky"
    paced = False

    def __init__(self) -> None:
        self.fail: AlertError | None = None
        self.landed: list[int] = []

    def send(self, out: Outgoing) -> Sent:
        if self.fail is not None:
            raise self.fail
        self.landed.append(out.delivery_id)
        return Sent(f"{1700000000 + len(self.landed)}.000001", "C1")

    def find(self, out: Outgoing, since: datetime) -> Sent | None:
        return None


def test_held_deliveries_are_probed_for_free_and_all_due_once_a_send_lands(
    tmp_path: Path,
) -> None:
    """deliver.py's rule, step by step: a path fault backs off; a probe that fails spends
    no attempt; the first send that lands makes every delivery held by a failure due at
    once, but not one waiting out a rate limit."""
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    store, outbox = Store(engine, reader(default_meaning)), Outbox(engine)
    [feed] = feeds(store, "world")
    save(store, feed, entry("1", "https://n.example/a", "Qin Gang missing"))
    save(store, feed, entry("2", "https://n.example/b", "Rates"), result("other", "#other"))
    sink = Flaky()
    policy = DeliverySettings(retry_base=timedelta(minutes=10), retry_max=timedelta(hours=1))
    deliverer = Deliverer(
        outbox, sink, policy, Digests(outbox.engine), recovery=Recovery(timedelta(0))
    )
    first, second = (o.delivery_id for o in outbox.due(utcnow()))

    sink.fail = AlertError("slack: internal_error (HTTP 500)")
    report = deliverer.run()
    assert report.failed == 1  # the pass ends at the fault: the other was not tried
    assert [o.delivery_id for o in outbox.due(utcnow())] == [second]
    sink.fail = AlertError("slack: ratelimited (HTTP 429)", retry_after=600)
    no_probe = Recovery(timedelta(hours=1))
    assert no_probe.may_probe()  # its one probe this hour, spent
    Deliverer(outbox, sink, policy, Digests(outbox.engine), recovery=no_probe).run()
    assert outbox.due(utcnow()) == []
    # both held: the 500 one by a failure, the 429 one by Slack's word
    [held] = outbox.due(utcnow(), held=True)
    assert held.delivery_id == first and held.attempts == 1
    sink.fail = AlertError("slack: internal_error (HTTP 500)")
    assert deliverer.run().failed == 1  # the probe
    [held] = outbox.due(utcnow(), held=True)
    assert held.attempts == 1, "a failed probe spends no attempt"

    sink.fail = None
    save(store, feed, entry("3", "https://n.example/c", "Qin Gang back"))
    report = deliverer.run()
    # the new one lands, and the one held by the 500 goes right after it
    assert report.sent == 2 and sink.landed[1:] == [first] and second not in sink.landed
    assert outbox.due(utcnow()) == []  # the rate-limited one waits out its Retry-After
    assert [o.delivery_id for o in outbox.due(utcnow() + timedelta(hours=2))] == [second]
    engine.dispose()

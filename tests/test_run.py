"""`monitor run` as an operator runs it: a real process, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import write_config
from tests.servers import FakeSlack, FeedServer, Route, rss

pytestmark = pytest.mark.slow  # `monitor run` as a process, over several ticks

ITEMS = [
    {"title": f"Qin Gang update {i}", "link": f"https://n.example/{i}", "guid": str(i)}
    for i in range(3)
]


def wait_for(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def start_service(
    cfg: Path,
    slack: FakeSlack,
    db: Path,
    token: str = "xoxb-test-token",
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": token,
        "SLACK_API_URL": slack.api_url,
        "MONITOR_DATABASE_URL": f"sqlite:///{db}",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "--config", str(cfg), "run", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def poll_once(cfg: Path, slack: FakeSlack, db: Path) -> str:
    """One `monitor poll` on the service's database: a whole cycle, with its delivery
    pass, run to its end; returns its log."""
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_URL": slack.api_url,
        "MONITOR_DATABASE_URL": f"sqlite:///{db}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "--config", str(cfg), "poll"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def stop_service(proc: subprocess.Popen[str]) -> tuple[str, float]:
    """SIGTERM, as systemd stops it; returns stderr and how long the exit took."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    return err, time.monotonic() - started


def reap(proc: subprocess.Popen[str]) -> None:
    """Kills a service a failed test left running, and reaps it and closes its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_run_polls_on_schedule_alerts_once_and_stops_on_sigterm(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    feed_server.routes["/f.xml"] = Route(rss(ITEMS), etag='"1"')
    cfg = write_config(
        tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml"), "interval": "1s"}]
    )
    proc = start_service(cfg, slack, tmp_path / "run.db", token="xoxb-secret-token")
    try:
        assert wait_for(lambda: len(slack.messages) == 3), "alerts never arrived"
        # the feed is polled again on its 1s interval, conditionally
        assert wait_for(lambda: feed_server.hits.get("/f.xml", 0) >= 3)
        feed_server.routes["/f.xml"] = Route(
            rss([*ITEMS, {"title": "Qin Gang later", "link": "https://n.example/9", "guid": "9"}]),
            etag='"2"',
        )
        assert wait_for(lambda: len(slack.messages) == 4), "new item never alerted"
        err, elapsed = stop_service(proc)
    finally:
        reap(proc)
    assert proc.returncode == 0, err
    assert elapsed < 10
    assert len(slack.messages) == 4
    assert "signal received signal=SIGTERM" in err and "stopped" in err
    assert "xoxb-secret-token" not in err
    conditional = [h for path, h in feed_server.requests if path == "/f.xml"]
    assert any(h.get("if-none-match") == '"1"' for h in conditional)


def test_run_exits_quickly_even_while_a_fetch_hangs(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    feed_server.routes["/hang.xml"] = Route(rss(ITEMS), delay=30)
    cfg = write_config(
        tmp_path / "c",
        [{"name": "hang", "url": feed_server.url("/hang.xml")}],
        settings={"http": {"connect_timeout": "30s", "read_timeout": "60s"}},
    )
    proc = start_service(cfg, slack, tmp_path / "hang.db")
    try:
        assert wait_for(lambda: feed_server.hits.get("/hang.xml", 0) >= 1)
        err, elapsed = stop_service(proc)
    finally:
        reap(proc)
    assert proc.returncode == 0, err
    assert elapsed < 10, err


def test_edited_watchlists_apply_without_a_restart(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    qin_only = {"name": "desk", "channel": "#china-desk", "entities": [{"name": "Qin Gang"}]}
    items = [{"title": "Li Shangfu sacked", "link": "https://n.example/1", "guid": "1"}]
    feed_server.routes["/f.xml"] = Route(rss(items))
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml"), "interval": "1s"}],
        [qin_only],
        settings={"ops_channel": "#ops"},
    )
    watchlist = cfg / "watchlists" / "desk.yaml"
    proc = start_service(cfg, slack, tmp_path / "reload.db")
    try:
        assert wait_for(lambda: feed_server.hits.get("/f.xml", 0) >= 2)
        assert slack.messages == []
        # she adds Li Shangfu; the next article about him alerts, with no restart
        watchlist.write_text(
            yaml.safe_dump({**qin_only, "entities": [{"name": "Qin Gang"}, {"name": "Li Shangfu"}]})
        )
        time.sleep(1.5)
        items.append({"title": "Li Shangfu in Moscow", "link": "https://n.example/2", "guid": "2"})
        feed_server.routes["/f.xml"] = Route(rss(items))
        assert wait_for(lambda: len(slack.in_channel("#china-desk")) == 1)
        # a broken edit is rejected where it stands and the last good config stays
        watchlist.write_text("name: desk\nchannel: '#china-desk'\nentities: [\n")
        assert wait_for(lambda: len(slack.in_channel("#ops")) == 1)
        items.append({"title": "Qin Gang returns", "link": "https://n.example/3", "guid": "3"})
        feed_server.routes["/f.xml"] = Route(rss(items))
        assert wait_for(lambda: len(slack.in_channel("#china-desk")) == 2)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        reap(proc)
    [ops] = slack.in_channel("#ops")
    assert ops["text"].startswith("Config edit rejected, the last good config stays in force:")
    assert f"{watchlist}:4:1: YAML syntax:" in ops["text"]
    assert "config reloaded feeds=1 watchlists=1" in err
    assert f"config edit rejected, keeping the last good config: {watchlist}:4:1" in err
    assert "signal received signal=SIGHUP" in err
    assert [m["text"].split(" https")[0] for m in slack.in_channel("#china-desk")] == [
        "Li Shangfu in Moscow",
        "Qin Gang returns",
    ]


def test_http_endpoint_reports_health_and_metrics(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    feed_server.routes["/f.xml"] = Route(rss(ITEMS), etag='"1"')
    cfg = write_config(
        tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml"), "interval": "1s"}]
    )
    proc = start_service(cfg, slack, tmp_path / "http.db", extra=("--http", f"127.0.0.1:{port}"))

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    try:
        assert wait_for(lambda: len(slack.messages) == 3 and get("/healthz")[0] == 200)
        assert wait_for(lambda: feed_server.hits.get("/f.xml", 0) >= 3)
        status, body = get("/healthz")
        report = json.loads(body)
        assert status == 200 and report["database"] == "ok"
        assert report["scheduler"] == "running" and report["last_cycle_age_seconds"] < 5
        status, page = get("/metrics")
        assert status == 200
        assert 'monitor_feeds{state="ok"} 1' in page
        assert "monitor_articles 3" in page
        assert 'monitor_matches{watchlist="us-china"} 3' in page
        assert 'monitor_deliveries{status="sent"} 3' in page
        assert 'monitor_fetches_total{outcome="not_modified"}' in page
        assert "monitor_fetch_seconds_count" in page and "monitor_last_cycle_seconds" in page
        kinds = {f.name: f.type for f in text_string_to_metric_families(page)}
        assert {
            "monitor_feeds": "gauge",
            "monitor_articles": "gauge",
            "monitor_matches": "gauge",
            "monitor_deliveries": "gauge",
            "monitor_fetches": "counter",  # exposed as monitor_fetches_total
            "monitor_fetch_seconds": "histogram",
            "monitor_last_cycle_seconds": "gauge",
            "process_cpu_seconds": "counter",
            "process_resident_memory_bytes": "gauge",
        }.items() <= kinds.items()
        assert get("/nothing")[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)


def test_a_slow_feed_holds_up_no_other_feed_nor_its_alerts(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    """Polling is continuous: while one fetch hangs, the other feeds are polled on their
    interval and a new item of theirs alerts at once. The hang (90 s) outlasts both waits
    with room to spare on a loaded machine, so only a poll that waits for it fails."""
    feed_server.routes["/slow.xml"] = Route(rss(ITEMS), delay=90)
    feed_server.routes["/a.xml"] = Route(rss([]), etag='"a"')
    feed_server.routes["/b.xml"] = Route(rss([]), etag='"b1"')
    slow_host = f"localhost:{feed_server.port}"  # another host: no per-host slot shared
    cfg = write_config(
        tmp_path / "c",
        [
            {"name": "slow", "url": f"http://{slow_host}/slow.xml", "interval": "1s"},
            {"name": "a", "url": feed_server.url("/a.xml"), "interval": "1s"},
            {"name": "b", "url": feed_server.url("/b.xml"), "interval": "1s"},
        ],
        settings={"http": {"connect_timeout": "30s", "read_timeout": "120s"}},
    )
    proc = start_service(cfg, slack, tmp_path / "slow.db")
    try:
        assert wait_for(lambda: feed_server.in_flight.get(slow_host) == 1)
        polled = feed_server.hits.get("/a.xml", 0)
        # the other feeds go on being polled every second while the slow fetch hangs
        assert wait_for(lambda: feed_server.hits.get("/a.xml", 0) >= polled + 3, timeout=30)
        news = {"title": "Qin Gang is back", "link": "https://n.example/back", "guid": "back"}
        feed_server.routes["/b.xml"] = Route(rss([news]), etag='"b2"')
        assert wait_for(lambda: len(slack.messages) == 1, timeout=30), "b's alert waited"
        assert feed_server.in_flight.get(slow_host) == 1, "the slow fetch is still under way"
        assert feed_server.hits.get("/slow.xml") == 1, "a feed in flight is not fetched again"
        err, _ = stop_service(proc)
    finally:
        reap(proc)
    assert slack.messages[0]["text"].startswith("Qin Gang is back")
    assert "maximum number of running instances" not in err


def test_the_command_as_a_process_keeps_its_exit_code_and_all_its_output(
    tmp_path: Path,
) -> None:
    """`monitor` leaves without the interpreter's teardown (cli.run): what it printed
    into a pipe's buffer must still all come out, and its exit code be its own."""
    feeds = [{"name": f"f{i}", "url": f"not a url {i}"} for i in range(3000)]
    cfg = write_config(tmp_path / "c", feeds)
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "--config", str(cfg), "check"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},  # as cron runs it
    )
    assert done.returncode == 2, done.stderr
    problems = [line for line in done.stdout.splitlines() if "feeds.yaml" in line]
    assert len(problems) == 3000, done.stdout[-500:]
    assert "Traceback" not in done.stderr

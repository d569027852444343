"""`monitor run` as an operator runs it: a real process, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import write_config
from tests.servers import FakeSlack, FeedServer, Route, rss

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
    cfg: Path, slack: FakeSlack, db: Path, token: str = "xoxb-test-token"
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": token,
        "SLACK_API_URL": slack.api_url,
        "MONITOR_DATABASE_URL": f"sqlite:///{db}",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "--config", str(cfg), "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


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
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
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
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert elapsed < 10, err

"""Delivery guarantees, end to end through slack-sdk and a fake Slack: pacing, flaky
answers, crashes mid-send, digests, quiet hours and mentions."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor import config as config_mod
from monitor.cli import main
from monitor.pipeline import run_feeds
from monitor.service import build
from tests.conftest import US_CHINA, write_config
from tests.servers import FakeSlack, FeedServer, Reply, Route, rss


def qin_items(n: int, prefix: str = "Qin Gang story") -> list[dict[str, Any]]:
    return [
        {
            "title": f"{prefix} {i}",
            "guid": f"{prefix}-{i}",
            "link": f"https://n.example/{prefix.replace(' ', '-')}/{i}",
        }
        for i in range(n)
    ]


def titles(slack: FakeSlack) -> Counter[str]:
    return Counter(str(m["text"]).split(" https://")[0] for m in slack.messages)


def test_a_burst_is_paced_per_channel_and_never_rate_limited(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    other = {**US_CHINA, "name": "climate", "channel": "#climate"}
    feed_server.routes["/f.xml"] = Route(rss(qin_items(100)))
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml")}],
        [US_CHINA, other],
        settings={"delivery": {"channel_interval": "30ms", "max_per_second": 100, "lease": "1s"}},
    )
    slack_env.min_interval = 0.025  # Slack's per-channel limit, scaled down
    started = time.monotonic()
    assert main(["--config", str(cfg), "poll"]) == 0
    took = time.monotonic() - started
    assert slack_env.rate_limited == 0
    assert len(slack_env.in_channel("#china-desk")) == 100
    assert len(slack_env.in_channel("#climate")) == 100
    assert set(titles(slack_env).values()) == {2}  # each story once in each channel
    # channels take turns: the first ten posts are not all in one channel
    assert {m["channel"] for m in slack_env.messages[:10]} == {"#china-desk", "#climate"}
    assert took >= 100 * 0.03 * 0.9  # the pace held: 100 posts a channel at 30ms apart


def test_flaky_slack_ends_with_every_message_exactly_once(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    feed_server.routes["/f.xml"] = Route(rss(qin_items(45)))
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    slack_env.every = {3: Reply(status=429, retry_after=0), 5: Reply(status=500)}
    for _ in range(10):
        main(["--config", str(cfg), "poll"])
        if len(slack_env.messages) >= 45:
            break
        time.sleep(1.1)  # retries wait for their backoff (retry_base 1s in tests)
    assert slack_env.calls > 45  # Slack really did fail
    assert titles(slack_env) == {f"Qin Gang story {i}": 1 for i in range(45)}


def test_a_lost_answer_is_found_in_the_channel_not_posted_twice(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    feed_server.routes["/f.xml"] = Route(rss(qin_items(3)))
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    slack_env.script = [Reply(), Reply(lose=True)]
    assert main(["--config", str(cfg), "poll"]) == 0
    assert titles(slack_env) == {f"Qin Gang story {i}": 1 for i in range(3)}
    service = build(config_mod.load(cfg))
    rows = service.deps.outbox.listing(None, None)
    service.close()
    assert {r["status"] for r in rows} == {"sent"}
    assert all(r["slack_ts"] for r in rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_during_delivery_then_restart_sends_each_message_once(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    feed_server.routes["/f.xml"] = Route(rss(qin_items(30)))
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml")}],
        settings={
            "delivery": {
                "channel_interval": "20ms",
                "lease": "1s",
                "retry_base": "1s",
                "max_per_second": 100,
            }
        },
    )
    slack.every = {
        3: Reply(status=429, retry_after=0),
        5: Reply(status=500),
        7: Reply(lose=True),
        2: Reply(hang=0.05),
    }
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_URL": slack.api_url,
        "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'kill.db'}",
    }
    command = [sys.executable, "-m", "monitor", "--config", str(cfg), "poll"]
    kills = 0
    for _ in range(3):  # killed at a random point while it delivers
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while slack.calls < 3 + kills * 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=10)
    for _ in range(15):  # restarts until nothing is left to send
        time.sleep(1.1)
        subprocess.run(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )
        if sum(titles(slack).values()) >= 30:
            pending = subprocess.run(
                [sys.executable, "-m", "monitor", "--config", str(cfg), "alerts", "--pending"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if not pending.strip():
                break
    assert kills >= 1
    assert titles(slack) == {f"Qin Gang story {i}": 1 for i in range(30)}


def _quiet_now(active: bool) -> dict[str, str]:
    now = datetime.now(UTC)
    if active:
        start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    else:
        start, end = now + timedelta(hours=1), now + timedelta(hours=2)
    return {"from": f"{start:%H:%M}", "to": f"{end:%H:%M}", "tz": "UTC"}


def test_quiet_hours_hold_matches_for_one_digest(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    feed_server.routes["/f.xml"] = Route(rss(qin_items(4)))
    quiet = {**US_CHINA, "quiet": _quiet_now(active=True)}
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}], [quiet])
    assert main(["--config", str(cfg), "poll"]) == 0
    assert slack_env.messages == []  # held while quiet
    write_config(
        cfg,
        [{"name": "f", "url": feed_server.url("/f.xml")}],
        [{**US_CHINA, "quiet": _quiet_now(active=False)}],
    )
    assert main(["--config", str(cfg), "poll"]) == 0
    [digest] = slack_env.messages
    assert digest["blocks"][0]["type"] == "header"
    assert digest["blocks"][0]["text"]["text"] == ("us-china: 4 stories held during quiet hours")
    assert digest["blocks"][1]["text"]["text"].startswith("*Qin Gang* (4)")
    assert main(["--config", str(cfg), "poll"]) == 0
    assert len(slack_env.messages) == 1


def test_digest_watchlist_sends_nothing_until_its_schedule(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    feed_server.routes["/f.xml"] = Route(rss(qin_items(3)))
    wl = {**US_CHINA, "delivery": "digest", "digest": "daily 08:00 Europe/London"}
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}], [wl])
    assert main(["--config", str(cfg), "poll"]) == 0
    assert slack_env.messages == []
    service = build(config_mod.load(cfg))
    tomorrow = datetime.now(UTC) + timedelta(days=1, hours=1)
    assert service.deps.digests.make(service.config.watchlists, tomorrow) == 1
    report = service.deliverer().run()
    service.close()
    assert report.sent == 1 and len(slack_env.messages) == 1
    assert "3 stories until" in slack_env.messages[0]["blocks"][0]["text"]["text"]


def test_notify_mentions_only_stories_about_the_watchlist(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    filler = "Delegates discussed trade, shipping and the weather at length on Monday. "
    items = [
        {"title": "Qin Gang removed", "guid": "1", "link": "https://n.example/1"},
        {
            "title": "Summit opens",
            "guid": "2",
            "link": "https://n.example/2",
            "description": filler * 3 + "Among them, briefly, was Wang Yi.",
        },
    ]
    feed_server.routes["/f.xml"] = Route(rss(items))
    wl = {**US_CHINA, "notify": ["U0123ABCD"]}
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}], [wl])
    assert main(["--config", str(cfg), "poll"]) == 0
    by_title = {m["text"].replace("<@U0123ABCD> ", ""): m["text"] for m in slack_env.messages}
    assert by_title["Qin Gang removed https://n.example/1"].startswith("<@U0123ABCD> ")
    assert not by_title["Summit opens https://n.example/2"].startswith("<@")


def test_dead_deliveries_are_listed_and_retried(
    feed_server: FeedServer,
    slack_env: FakeSlack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed_server.routes["/f.xml"] = Route(rss(qin_items(2)))
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    slack_env.script = [Reply(error="not_in_channel")] * 2
    assert main(["--config", str(cfg), "poll"]) == 0
    assert slack_env.messages == []
    capsys.readouterr()
    assert main(["--config", str(cfg), "alerts", "--failed"]) == 0
    out = capsys.readouterr().out
    assert out.count(" dead ") == 2 and "invite it (/invite @your-bot)" in out
    assert main(["--config", str(cfg), "alerts", "--retry"]) == 0
    assert "2 dead deliveries queued again" in capsys.readouterr().out
    assert main(["--config", str(cfg), "poll"]) == 0
    assert titles(slack_env) == {"Qin Gang story 0": 1, "Qin Gang story 1": 1}


def test_run_feeds_then_deliver_keeps_parent_before_thread(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    story = {"title": "Qin Gang missing", "link": "https://n.example/qin"}
    feed_server.routes["/a.xml"] = Route(rss([{**story, "guid": "a"}]))
    feed_server.routes["/b.xml"] = Route(rss([{**story, "guid": "b", "title": "Qin Gang gone"}]))
    cfg = write_config(
        tmp_path / "c",
        [
            {"name": "a", "url": feed_server.url("/a.xml")},
            {"name": "b", "url": feed_server.url("/b.xml")},
        ],
    )
    service = build(config_mod.load(cfg))
    run_feeds(service.feeds, service.deps)
    service.deliverer().run()
    service.close()
    parent, reply = slack_env.messages
    assert "thread_ts" not in parent and reply["thread_ts"] == parent["ts"]


def test_a_channel_is_paced_from_its_last_send_whoever_made_it(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    """Queue mode hands a channel to one worker after another; each new deliverer waits
    out the channel's interval from the last send in the database."""
    feed_server.routes["/f.xml"] = Route(rss(qin_items(4)))
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml")}],
        settings={"delivery": {"channel_interval": "300ms", "max_per_second": 100, "lease": "1s"}},
    )
    slack_env.min_interval = 0.25
    service = build(config_mod.load(cfg))
    deliverers = 0
    try:
        run_feeds(service.deps.feeds.states(service.feeds), service.deps)
        deadline = time.monotonic() + 20
        while len(slack_env.messages) < 4 and time.monotonic() < deadline:
            # a fresh deliverer each time, with a turn too short to wait out the interval
            service.deliverer(channel="#china-desk").run(until=time.monotonic() + 0.05)
            deliverers += 1
            time.sleep(0.01)
    finally:
        service.close()
    assert len(slack_env.in_channel("#china-desk")) == 4
    assert slack_env.rate_limited == 0
    assert deliverers > 4  # some turns ended waiting, rather than posting too soon

"""Delivery guarantees, end to end through slack-sdk and a fake Slack: pacing, flaky
answers, crashes mid-send, digests, quiet hours and mentions."""

from __future__ import annotations

import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from monitor import config as config_mod
from monitor.alert.console import ConsoleAlerter
from monitor.alert.slack import SlackAlerter
from monitor.cli import main
from monitor.outbox import Deliveries
from monitor.pipeline import run_feeds
from monitor.service import build
from tests.conftest import US_CHINA, write_config
from tests.servers import FakeSlack, FeedServer, Reply, Route, rss
from tests.test_run import poll_once, start_service, stop_service, wait_for

PACED = {"channel_interval": "30ms", "max_per_second": 100, "lease": "1s"}
NO_FLOOD = {"flood_threshold": 1000}  # for tests of many single alerts


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


@pytest.mark.slow  # over 5 s: services as processes, kills, restarts or paced sends
def test_a_burst_is_paced_per_channel_and_never_rate_limited(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    """Every third post is held up on its way in, as a loaded machine holds requests up
    at random; the pace runs from each answer, so Slack never sees two posts in a channel
    closer than `channel_interval`, with no margin needed (the fake's limit is the same)."""
    other = {**US_CHINA, "name": "climate", "channel": "#climate"}
    feed_server.routes["/f.xml"] = Route(rss(qin_items(60)))
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml")}],
        [US_CHINA, other],
        settings={"delivery": {**PACED, "flood_threshold": 1000}},
    )
    slack_env.min_interval = 0.03  # Slack's per-channel limit, scaled down: the same pace
    slack_env.every = {3: Reply(lag=0.02)}
    started = time.monotonic()
    assert main(["--config", str(cfg), "poll"]) == 0
    took = time.monotonic() - started
    assert slack_env.rate_limited == 0
    assert len(slack_env.in_channel("#china-desk")) == 60
    assert len(slack_env.in_channel("#climate")) == 60
    assert set(titles(slack_env).values()) == {2}  # each story once in each channel
    # channels take turns: the first ten posts are not all in one channel
    assert {m["channel"] for m in slack_env.messages[:10]} == {"#china-desk", "#climate"}
    assert took >= 60 * 0.03  # the pace held: 60 posts a channel at 30ms apart


@pytest.mark.slow  # over 5 s: services as processes, kills, restarts or paced sends
def test_flaky_slack_ends_with_every_message_exactly_once(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    feed_server.routes["/f.xml"] = Route(rss(qin_items(45)))
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml")}],
        settings={"delivery": {"channel_interval": "10ms", "retry_base": "1s", **NO_FLOOD}},
    )
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
    rows = Deliveries(service.deps.outbox.engine).listing(None, None)
    service.close()
    assert {r["status"] for r in rows} == {"sent"}
    assert all(r["slack_ts"] for r in rows)


@pytest.mark.slow  # a soak: about a minute and a half each
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
                **NO_FLOOD,
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
    [digest] = slack_env.top_level()
    assert digest["blocks"][0]["type"] == "header"
    assert digest["blocks"][0]["text"]["text"] == ("us-china: 4 stories held during quiet hours")
    assert digest["blocks"][1]["text"]["text"].startswith("*Qin Gang* (4)")
    assert len(slack_env.listed_in_thread(digest)) == 4
    assert main(["--config", str(cfg), "poll"]) == 0
    assert len(slack_env.top_level()) == 1


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
    [digest] = slack_env.top_level()
    assert report.sent == 1 and "3 stories until" in digest["blocks"][0]["text"]["text"]


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
    assert out.count(" dead ") == 2 and "invite it (/invite @your-bot)" in " ".join(out.split())
    assert main(["--config", str(cfg), "alerts", "--retry"]) == 0
    assert "2 dead deliveries queued again" in capsys.readouterr().out
    assert main(["--config", str(cfg), "poll"]) == 0
    assert titles(slack_env) == {"Qin Gang story 0": 1, "Qin Gang story 1": 1}


QIN_TEXT = (
    "Foreign Minister Qin Gang has not been seen in public for three weeks, and the ministry "
    "in Beijing declined on Tuesday to say where he was or when he would return, fuelling "
    "speculation about his health and his standing with the leadership."
)


def two_copies(
    feed_server: FeedServer, tmp_path: Path, a: dict[str, Any], b: dict[str, Any]
) -> Path:
    feed_server.routes["/a.xml"] = Route(rss([{**a, "guid": "a"}]))
    feed_server.routes["/b.xml"] = Route(rss([{**b, "guid": "b"}]))
    return write_config(
        tmp_path / "c",
        [
            {"name": "a", "url": feed_server.url("/a.xml")},
            {"name": "b", "url": feed_server.url("/b.xml")},
        ],
    )


def test_the_same_link_from_two_feeds_is_one_message_naming_the_earliest_copy(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    story = {"title": "Qin Gang missing", "link": "https://n.example/qin?utm_source=a"}
    early = {**story, "title": "Qin Gang gone", "link": "https://www.n.example/qin#top"}
    cfg = two_copies(
        feed_server,
        tmp_path,
        {**story, "published": now - timedelta(minutes=5)},
        {**early, "published": now - timedelta(minutes=50)},
    )
    assert main(["--config", str(cfg), "poll"]) == 0
    [message] = slack_env.messages
    assert message["text"] == "Qin Gang gone https://www.n.example/qin#top"  # feed b's copy
    assert message["blocks"][1]["elements"][0]["text"].startswith("b · ")
    feed_server.routes["/c.xml"] = Route(rss([{**story, "guid": "c", "title": "Qin again"}]))
    write_config(
        cfg,
        [{"name": n, "url": feed_server.url(f"/{n}.xml")} for n in ("a", "b", "c")],
    )
    assert main(["--config", str(cfg), "poll"]) == 0
    assert len(slack_env.messages) == 1  # a third feed's copy, after the alert: nothing


def test_run_feeds_then_deliver_keeps_parent_before_thread(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    """A different article of the story (near-identical text, its own link) is followed
    up in the story's thread."""
    cfg = two_copies(
        feed_server,
        tmp_path,
        {"title": "Qin Gang missing", "link": "https://one.example/qin", "description": QIN_TEXT},
        {"title": "Qin Gang missing!", "link": "https://two.example/q", "description": QIN_TEXT},
    )
    service = build(config_mod.load(cfg))
    run_feeds(service.feeds, service.deps)
    service.deliverer().run()
    service.close()
    parent, reply = slack_env.messages
    assert "thread_ts" not in parent and reply["thread_ts"] == parent["ts"]
    assert reply["text"].startswith("Also reported by ")


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


def statuses(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return [row[0] for row in conn.execute("SELECT status FROM delivery ORDER BY id")]


def crash_mid_send(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path, reply: Reply, in_flight: str
) -> str:
    """`monitor run` killed with SIGKILL while its one alert is claimed and not confirmed,
    and started again at once; returns the restarted process's log. The alert must come
    within the wait below, far sooner than the 10 min lease would let it: no clock is read."""
    feed_server.routes["/f.xml"] = Route(rss(qin_items(1)))
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml"), "interval": "1h"}],
        settings={"delivery": {"lease": "10m", "in_flight": in_flight, "retry_base": "1s"}},
    )
    db = tmp_path / "run.db"
    slack.script = [reply]
    first = start_service(cfg, slack, db)
    try:
        assert wait_for(lambda: slack.calls >= 1), "the alert was never sent"
        # the answer is back (a 429: the client waits it out) or hangs
        assert wait_for(lambda: slack.answered + slack.hanging >= 1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
    second = start_service(cfg, slack, db)
    try:
        assert wait_for(lambda: len(slack.messages) >= 1, timeout=30), "the alert never came"
        assert wait_for(lambda: statuses(db) == ["sent"]), statuses(db)
    finally:
        err, _ = stop_service(second)
    poll_once(cfg, slack, db)  # one more delivery pass, to its end: a second copy shows
    assert titles(slack) == {"Qin Gang story 0": 1}, err[-3000:]
    assert "cannot check a lost send" not in err and "dead sender sends=1" in err
    return err


@pytest.mark.parametrize(
    "reply",
    [
        # Slack answered 429 "retry after 10 min"; the process died waiting. Nothing
        # landed, and the restart knows no other sender is alive: it looks, finds nothing,
        # posts (at once: the wait below is far shorter than the 10 min).
        pytest.param(Reply(status=429, retry_after=600), id="during-a-rate-limit-wait"),
        pytest.param(Reply(status=500, hang=5), id="while-a-post-hangs-unanswered"),
    ],
)
@pytest.mark.slow  # over 5 s: services as processes, kills, restarts or paced sends
def test_killed_mid_send_the_alert_comes_once_soon_after_restart(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path, reply: Reply
) -> None:
    err = crash_mid_send(feed_server, slack, tmp_path, reply, in_flight="1s")
    assert "unconfirmed send will be posted again" in err


@pytest.mark.slow  # over 5 s: services as processes, kills, restarts or paced sends
def test_killed_while_a_post_is_landing_the_restart_finds_it_and_posts_nothing(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    # The post lands 1.5 s after it reached Slack, after its sender died: the restart
    # looks for it only once `in_flight` has passed, finds it, and posts nothing.
    err = crash_mid_send(feed_server, slack, tmp_path, Reply(hang=1.5), in_flight="3s")
    assert "lost send found in slack" in err


def test_alerts_to_the_console_are_not_paced(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    """A pace of one message an hour holds Slack to one post, and the console to none."""
    feed_server.routes["/f.xml"] = Route(rss(qin_items(15)))
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml")}],
        settings={
            "database_url": f"sqlite:///{tmp_path / 'console.db'}",
            "delivery": {"channel_interval": "1h", "max_per_second": 0.001},
        },
    )
    stream = io.StringIO()
    service = build(config_mod.load(cfg), sink=ConsoleAlerter(stream))
    try:
        run_feeds(service.feeds, service.deps)
        report = service.deliverer().run(until=time.monotonic() + 30)
    finally:
        service.close()
    assert report.sent == 15 and len(stream.getvalue().splitlines()) == 15
    # trap: the same pace still holds a Slack sink back
    feed_server.routes["/f.xml"] = Route(rss(qin_items(15, "Qin Gang later")))
    client = WebClient(token="xoxb-test-token", base_url=slack.api_url)
    service = build(config_mod.load(cfg), sink=SlackAlerter(client))
    try:
        run_feeds(service.feeds, service.deps)
        report = service.deliverer().run(until=time.monotonic() + 2)
    finally:
        service.close()
    assert report.sent == 1 and len(slack.messages) == 1


def test_a_flood_is_one_message_and_a_later_cycle_starts_fresh(
    feed_server: FeedServer,
    slack_env: FakeSlack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed_server.routes["/f.xml"] = Route(rss(qin_items(30)))
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    assert main(["--config", str(cfg), "poll"]) == 0
    [flood] = slack_env.top_level()
    header, note, *listing = flood["blocks"]
    assert header["text"]["text"] == "us-china: 30 alerts in one poll cycle"
    assert "`monitor matches --watchlist us-china`" in note["elements"][0]["text"]
    assert "\n".join(b["text"]["text"] for b in listing).count("• <https://n.example/") == 20
    assert flood["text"].startswith("us-china: 30 alerts in one poll cycle: Qin Gang story 0 ")
    assert "alert flood gathered into one message channel=#china-desk" in capsys.readouterr().err
    # every one of the 30 is listed in the flood's thread, not only the first 20
    assert len(set(slack_env.listed_in_thread(flood))) == 30
    feed_server.routes["/f.xml"] = Route(rss(qin_items(30) + qin_items(3, "Qin Gang later")))
    assert main(["--config", str(cfg), "poll"]) == 0
    assert sorted(m["text"].split(" https")[0] for m in slack_env.top_level()[1:]) == [
        f"Qin Gang later {i}" for i in range(3)
    ]
    capsys.readouterr()
    assert main(["--config", str(cfg), "matches", "--watchlist", "us-china", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 33  # every one, flooded or not


def test_as_many_alerts_as_the_flood_threshold_go_one_by_one(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    feed_server.routes["/f.xml"] = Route(rss(qin_items(20)))
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    assert main(["--config", str(cfg), "poll"]) == 0
    assert titles(slack_env) == {f"Qin Gang story {i}": 1 for i in range(20)}

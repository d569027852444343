"""End to end: feeds served on 127.0.0.1 -> `monitor poll` -> a fake Slack, exactly once."""

from __future__ import annotations

import ast
import json
from concurrent.futures import Future
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor import config as config_mod
from monitor import cycle
from monitor.archive import Archive
from monitor.cli import main
from monitor.config import Config
from monitor.feeds import FeedState, next_due
from monitor.models import Body, FeedOutcome
from monitor.pipeline import refresh, run_feeds
from monitor.service import Processing, build
from tests.conftest import write_config
from tests.servers import FakeSlack, FeedServer, Reply, Route, rss

NOW = datetime.now(UTC)
QIN_TEXT = (
    "Foreign Minister Qin Gang has not been seen in public for three weeks, and the ministry "
    "in Beijing declined on Tuesday to say where he was or when he would return, fuelling "
    "speculation about his health and his standing with the leadership. Diplomats in the "
    "capital said his absence from a regional meeting in Jakarta, where a deputy attended "
    "in his place, had been noticed by every delegation present."
)

WORLD = [
    {
        "title": "Qin Gang absent from Beijing talks",
        "link": "https://news.example/qin?utm_source=rss",
        "guid": "w1",
        "description": QIN_TEXT,
        "published": NOW - timedelta(hours=1),
    },
    {
        "title": "Weather: rain in London",
        "link": "https://news.example/rain",
        "guid": "w2",
        "description": "Showers all week.",
    },
    {
        "title": "Pentagon seeks military dialogue",
        "link": "https://news.example/mil",
        "guid": "w3",
        "description": "US officials want to restore <b>military-to-military communication</b>.",
    },
    {
        "title": "Wang Yilong wins chess final",
        "link": "https://news.example/chess",
        "guid": "w4",
        "description": "The grandmaster Wang Yilong took the title.",
    },
]
ASIA = [
    # the same story as w1 through another outlet (near-identical text under its own
    # link): one alert per (watchlist, story), naming the earlier copy
    {
        "title": "Where is Qin Gang?",
        "link": "https://asia.example/2023/where-is-qin",
        "guid": "a1",
        "description": QIN_TEXT,
        "published": NOW - timedelta(minutes=30),
    },
    {
        "title": "FENTANYL TALKS RESUME",
        "link": "https://asia.example/fent",
        "guid": "a2",
        "description": "Drug control on the agenda.",
    },
]


@pytest.fixture
def two_feeds(feed_server: FeedServer, tmp_path: Path) -> Path:
    feed_server.routes["/world.xml"] = Route(rss(WORLD), etag='"w-1"')
    feed_server.routes["/asia.xml"] = Route(rss(ASIA), etag='"a-1"')
    return write_config(
        tmp_path / "config",
        [
            {"name": "world", "url": feed_server.url("/world.xml")},
            {"name": "asia", "url": feed_server.url("/asia.xml")},
        ],
    )


def posted_titles(slack: FakeSlack) -> list[str]:
    return sorted(str(m["text"]).split(" http")[0] for m in slack.top_level())


def test_poll_alerts_each_matching_story_once(
    two_feeds: Path, slack_env: FakeSlack, feed_server: FeedServer
) -> None:
    assert main(["--config", str(two_feeds), "poll"]) == 0
    # Both feeds carry the Qin story; whichever is processed first is the one alerted.
    titles = posted_titles(slack_env)
    assert len(titles) == 3
    assert titles[:2] == ["FENTANYL TALKS RESUME", "Pentagon seeks military dialogue"]
    assert titles[2] in ("Qin Gang absent from Beijing talks", "Where is Qin Gang?")
    message = next(m for m in slack_env.messages if "Qin Gang" in m["text"])
    assert message["channel"] == "#china-desk"
    assert message["unfurl_links"] is False and message["unfurl_media"] is False
    assert "news.example/qin" in message["text"]
    rendered = json.dumps(message["blocks"])
    assert "*Qin Gang*" in rendered  # the hit is bold in the snippet
    # the other outlet's copy went into the story's thread
    [reply] = [m for m in slack_env.messages if m.get("thread_ts")]
    assert reply["thread_ts"] == message["ts"] and reply["text"].startswith("Also reported by")
    assert slack_env.auth[0] == "Bearer xoxb-test-token"

    assert main(["--config", str(two_feeds), "poll"]) == 0
    assert len(slack_env.messages) == 4, "a second poll must not alert again"
    # the second poll was conditional: the server answered 304
    assert feed_server.requests[-1][1].get("if-none-match") in ('"w-1"', '"a-1"')


def test_matches_json_lists_what_was_stored(
    two_feeds: Path,
    slack_env: FakeSlack,
    feed_server: FeedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed_server.routes["/asia.xml"] = Route(rss(ASIA[1:]))  # the Qin story only once
    main(["--config", str(two_feeds), "poll"])
    capsys.readouterr()
    assert main(["--config", str(two_feeds), "matches", "--json", "--since", "1h"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_title = {r["title"]: r for r in rows}
    assert set(by_title) == {
        "Qin Gang absent from Beijing talks",
        "FENTANYL TALKS RESUME",
        "Pentagon seeks military dialogue",
    }
    qin = by_title["Qin Gang absent from Beijing talks"]
    assert qin["watchlist"] == "us-china" and qin["feed"] == "world"
    assert qin["matched"] == ["Qin Gang"] and qin["delivery"] == "sent"
    assert qin["created_at"].endswith("Z") and qin["url"].startswith("https://news.example/qin")
    assert main(["--config", str(two_feeds), "matches", "--json", "--watchlist", "other"]) == 2
    assert capsys.readouterr().err.endswith("no watchlist named 'other' (known: us-china)\n")


def test_feeds_table_shows_health(
    two_feeds: Path,
    slack_env: FakeSlack,
    feed_server: FeedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed_server.routes.pop("/asia.xml")
    main(["--config", str(two_feeds), "poll"])
    capsys.readouterr()
    assert main(["--config", str(two_feeds), "feeds"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["world"][1] == "ok" and lines["asia"][1] == "failing"
    assert main(["--config", str(two_feeds), "feeds", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["world"]["last_status"] == 200 and rows["world"]["items_seen"] == 4
    assert rows["world"]["items_per_day"] == 4.0 and rows["world"]["errors_in_row"] == 0
    assert rows["asia"]["last_status"] == 404 and rows["asia"]["errors_in_row"] == 1
    assert "HTTP 404" in rows["asia"]["last_error"]


def test_stored_but_unsent_alert_is_sent_once_after_restart(
    two_feeds: Path, slack_env: FakeSlack
) -> None:
    # First process: stores matches, then dies before delivering anything.
    service = build(config_mod.load(two_feeds))
    outcomes = run_feeds(service.feeds, service.deps)
    service.close()
    assert sum(o.queued for o in outcomes) == 4 and slack_env.messages == []
    # A new process finds the pending outbox rows and sends each exactly once.
    assert main(["--config", str(two_feeds), "poll"]) == 0
    assert len(slack_env.messages) == 4
    assert main(["--config", str(two_feeds), "poll"]) == 0
    assert len(slack_env.messages) == 4


def test_failed_send_is_kept_and_retried_on_a_later_pass(
    two_feeds: Path, slack_env: FakeSlack
) -> None:
    cfg = config_mod.load(two_feeds)
    service = build(cfg)
    run_feeds(service.feeds, service.deps)
    slack_env.script = [Reply(error="fatal_error")] * 3
    report = cycle.deliver(service, service.deliverer())
    # a fault of the path: the rest of the pass waits (deliver.py, "Retries after a fault")
    assert report.failed == 1 and slack_env.messages == []
    # Later passes probe with the one held (a failed probe spends no attempt) until Slack
    # answers; then every alert goes out, each exactly once.
    sent = 0
    for _ in range(10):
        with service.deps.store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE delivery SET next_attempt_at = '2000-01-01 00:00:00'")
        sent += cycle.deliver(service, service.deliverer()).sent
        if sent == 4:
            break
    assert sent == 4
    service.close()
    assert len(slack_env.messages) == 4


def test_headline_cannot_ping_the_channel(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    evil = [
        {
            "title": "<!channel> Qin Gang <@U123> & <https://evil.example|click here>",
            "link": "https://news.example/evil",
            "guid": "e1",
            "description": "Qin Gang said <!here> to everyone.",
        }
    ]
    feed_server.routes["/evil.xml"] = Route(rss(evil))
    cfg = write_config(tmp_path / "c", [{"name": "evil", "url": feed_server.url("/evil.xml")}])
    assert main(["--config", str(cfg), "poll"]) == 0
    [message] = slack_env.messages
    everything = message["text"] + json.dumps(message["blocks"])
    for raw in ("<!channel>", "<@U123>", "<!here>", "<https://evil.example"):
        assert raw not in everything
    assert message["text"].startswith("&lt;!channel&gt; Qin Gang &lt;@U123&gt; &amp; ")


def test_slow_feed_times_out_while_others_alert(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    feed_server.routes["/slow.xml"] = Route(rss(WORLD), delay=4)
    feed_server.routes["/asia.xml"] = Route(rss(ASIA))
    cfg = write_config(
        tmp_path / "c",
        [
            {"name": "slow", "url": feed_server.url("/slow.xml")},
            {"name": "asia", "url": feed_server.url("/asia.xml")},
        ],
        settings={"http": {"connect_timeout": "1s", "read_timeout": "1s"}},
    )
    assert main(["--config", str(cfg), "poll"]) == 0
    assert posted_titles(slack_env) == ["FENTANYL TALKS RESUME", "Where is Qin Gang?"]
    service = build(config_mod.load(cfg))
    slow = next(f for f in service.deps.feeds.rows() if f.name == "slow")
    service.close()
    assert slow.errors_in_row == 1 and "timed out" in (slow.last_error or "")


def test_first_fetch_only_alerts_within_backfill(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    items = [
        {
            "title": "Qin Gang old news",
            "link": "https://n.example/1",
            "guid": "1",
            "published": NOW - timedelta(days=3),
        },
        {
            "title": "Qin Gang fresh news",
            "link": "https://n.example/2",
            "guid": "2",
            "published": NOW - timedelta(hours=2),
        },
        {
            "title": "Qin Gang undated",
            "link": "https://n.example/3",
            "guid": "3",
            "published": None,
        },
    ]
    feed_server.routes["/f.xml"] = Route(rss(items))
    cfg = write_config(
        tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml"), "backfill": "1d"}]
    )
    main(["--config", str(cfg), "poll"])
    assert posted_titles(slack_env) == ["Qin Gang fresh news"]
    # After the first fetch every new item may alert, dated or not.
    items.append(
        {
            "title": "Qin Gang later, undated",
            "link": "https://n.example/4",
            "guid": "4",
            "published": None,
        }
    )
    feed_server.routes["/f.xml"] = Route(rss(items))
    main(["--config", str(cfg), "poll"])
    assert posted_titles(slack_env) == ["Qin Gang fresh news", "Qin Gang later, undated"]


def test_no_slack_configured_prints_one_line_per_alert(
    two_feeds: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for var in ("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "SLACK_API_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{tmp_path / 'out.db'}")
    assert main(["--config", str(two_feeds), "poll"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert sum("also reported by" in line for line in lines) == 1
    assert all(line.startswith("[us-china -> #china-desk] ") for line in lines)
    assert sum("Qin Gang" in line for line in lines) == 2


def test_webhook_transport(
    two_feeds: Path, slack: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{tmp_path / 'wh.db'}")
    assert main(["--config", str(two_feeds), "poll"]) == 0
    assert len(slack.messages) == 4  # a webhook cannot thread: the follow-up stands alone
    assert all(m["path"].startswith("/services/") for m in slack.messages)


def test_permanent_slack_error_makes_a_dead_delivery_that_is_not_retried(
    two_feeds: Path, slack_env: FakeSlack
) -> None:
    service = build(config_mod.load(two_feeds))
    run_feeds(service.feeds, service.deps)
    slack_env.script = [Reply(error="not_in_channel")] * 4
    report = cycle.deliver(service, service.deliverer())
    # the follow-up, its parent dead, is tried on its own and fails the same way
    assert report.dead == 4 and slack_env.messages == []
    with service.deps.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE delivery SET next_attempt_at = '2000-01-01 00:00:00'")
    assert cycle.deliver(service, service.deliverer()).sent == 0
    rows = Archive(service.deps.store.engine).matches(None, None)
    service.close()
    assert {r["delivery"] for r in rows} == {"dead"}


@pytest.mark.parametrize(
    ("interval", "errors", "expected"),
    [
        ("10m", 0, "10m"),
        ("10m", 1, "10m"),
        ("10m", 2, "20m"),
        ("10m", 3, "40m"),
        ("10m", 30, "6h"),
        ("30s", 0, "30s"),
        ("1d", 5, "1d"),
    ],
)
def test_backoff_schedule(interval: str, errors: int, expected: str) -> None:
    feed = FeedState(
        1,
        "f",
        "https://f.example/",
        config_mod.parse_duration(interval),
        timedelta(days=1),
        None,
        None,
        None,
        0,
    )
    got = next_due(feed, NOW, errors, timedelta(hours=6)) - NOW
    assert got == config_mod.parse_duration(expected)


def test_a_retitled_article_is_not_a_new_story(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    item = {"title": "Qin Gang missing", "guid": "q1", "link": "https://n.example/q1"}
    feed_server.routes["/f.xml"] = Route(rss([item]))
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    main(["--config", str(cfg), "poll"])
    feed_server.routes["/f.xml"] = Route(rss([{**item, "title": "Qin Gang removed from office"}]))
    main(["--config", str(cfg), "poll"])
    assert posted_titles(slack_env) == ["Qin Gang missing"]


def test_poll_end_to_end_on_postgresql(
    two_feeds: Path,
    slack_env: FakeSlack,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MONITOR_DATABASE_URL", pg_url)
    assert main(["--config", str(two_feeds), "poll"]) == 0
    assert main(["--config", str(two_feeds), "poll"]) == 0
    assert len(slack_env.top_level()) == 3 and len(slack_env.messages) == 4
    capsys.readouterr()
    assert main(["--config", str(two_feeds), "feeds", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["last_status"] for r in rows} == {304} and {r["state"] for r in rows} == {"ok"}


def test_near_identical_copies_under_other_links_join_the_story(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    body = (
        "Foreign Minister Qin Gang has not been seen in public for three weeks, and the "
        "ministry in Beijing declined on Tuesday to say where he was or when he would "
        "return, fuelling speculation about his health and his standing with the leadership."
    )
    feed_server.routes["/a.xml"] = Route(
        rss(
            [
                {
                    "title": "Qin Gang missing",
                    "guid": "a",
                    "link": "https://one.example/qin",
                    "description": body,
                }
            ]
        )
    )
    feed_server.routes["/b.xml"] = Route(
        rss(
            [
                {
                    "title": "Qin Gang still missing",
                    "guid": "b",
                    "link": "https://two.example/2023/qin-gang",
                    "description": body.replace("Tuesday", "Monday"),
                }
            ]
        )
    )
    cfg = write_config(tmp_path / "c", [{"name": "a", "url": feed_server.url("/a.xml")}])
    main(["--config", str(cfg), "poll"])
    write_config(
        cfg,
        [
            {"name": "a", "url": feed_server.url("/a.xml")},
            {"name": "b", "url": feed_server.url("/b.xml")},
        ],
    )
    main(["--config", str(cfg), "poll"])
    parent, reply = slack_env.messages
    assert parent["text"].startswith("Qin Gang missing")
    assert reply["thread_ts"] == parent["ts"] and reply["text"].startswith("Also reported by b")


class _StartingPool:
    """A pool whose one worker is still starting until it has been handed `starting`
    feeds; it processes each feed at once, here, and notes whether it came read."""

    enabled = True

    def __init__(self, processing: Processing, starting: int) -> None:
        self._processing = processing
        self._starting = starting
        self._ready: Future[None] = Future()
        self.started = False
        self.came_read: list[bool] = []

    def start(self) -> list[Future[None]]:
        self.started = True
        return [self._ready]

    def submit(self, feed: FeedState, body: Body) -> Future[FeedOutcome]:
        self.came_read.append(body.items is not None)
        if len(self.came_read) == self._starting:
            self._ready.set_result(None)
        done: Future[FeedOutcome] = Future()
        done.set_result(refresh(feed, body, self._processing))
        return done

    def configure(self, config: Config) -> None:
        pass

    def close(self) -> None:
        pass


def test_bodies_are_read_here_while_the_pass_workers_start(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """Parsing is most of a body's work: until the workers are ready the service parses
    and dedupes the bodies waiting for them; once they are, bodies go to them unread."""
    feeds = []
    for f in range(120):  # no ETags: 120 bodies sure to come, enough to start the pool
        items = [{"title": f"Rain {f}-{i}", "guid": f"{f}-{i}"} for i in range(3)]
        feed_server.routes[f"/f{f}.xml"] = Route(rss(items))
        feeds.append({"name": f"f{f}", "url": feed_server.url(f"/f{f}.xml")})
    cfg = config_mod.load(write_config(tmp_path / "c", feeds))
    service = build(cfg)
    pool = _StartingPool(service.deps, starting=5)
    deps = replace(service.deps, pool=pool)
    try:
        outcomes = run_feeds(deps.feeds.states(service.feeds), deps)
    finally:
        service.close()
    assert [o.new_items for o in outcomes if o.ok] == [3] * 120
    assert pool.came_read[:5] == [True] * 5 and not all(pool.came_read)


def _runtime_imports(path: Path) -> set[str]:
    """The modules a file imports when it runs (not those only the type checker reads)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_executor_imports_no_stage_and_is_handed_them(tmp_path: Path) -> None:
    """The executor runs what it is handed (pipeline.FeedStages); a stage it imported
    itself would tie the runtime to the pipeline again. Imports for the type checker
    alone do not count: the trap below has one and passes."""
    import monitor.runtime.executor as executor

    assert not {m for m in _runtime_imports(Path(executor.__file__)) if m.startswith("monitor")}
    trap = tmp_path / "trap.py"
    trap.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from monitor import fetch\n"
    )
    assert _runtime_imports(trap) == {"typing"}
    trap.write_text("from monitor import fetch\n")
    assert _runtime_imports(trap) == {"monitor"}


def _long_classes(root: Path, limit: int) -> list[str]:
    """Classes of more than `limit` lines under `root`, as path:name (lines)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.name}:{node.name} ({lines})")
    return found


def test_no_class_of_ours_is_over_200_lines(tmp_path: Path) -> None:
    """A class a newcomer must read whole stays short (issue 23); the trap is one that is not."""
    import monitor

    assert _long_classes(Path(monitor.__file__).parent, 200) == []
    (tmp_path / "big.py").write_text("class Big:\n" + "    x = 1\n" * 200)
    assert _long_classes(tmp_path, 200) == ["big.py:Big (201)"]

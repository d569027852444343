"""The Slack app against a fake Slack on 127.0.0.1: slack-sdk's real Socket Mode client
dials the fake's apps.connections.open and its websocket; Slack's HTTP requests reach
`monitor run --http`'s endpoint signed, badly signed and stale. Alerts are posted by a
real poll first, so every click names a stored match."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import create_engine, select
from sqlmodel import Session, col

from monitor import config as config_mod
from monitor import cycle, feedback
from monitor.archive import Archive
from monitor.cli import _describe, main
from monitor.metrics import Metrics, serve
from monitor.models import ArticleRow, DeliveryStatus, MatchHold, MatchRow, Verdict
from monitor.outbox import Deliveries
from monitor.renders import Renders
from monitor.service import Service, build, slack_app
from monitor.slackapp.access import same_channel
from monitor.slackapp.app import BUSY, WAITING
from tests.conftest import US_CHINA, write_config
from tests.servers import FakeSlack, FeedServer, Route, SocketServer, channel_id, rss

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APP_TOKEN = "xapp-1-A0APP-1-fake"
NOW = datetime.now(UTC)
QIN_TEXT = (
    "Foreign Minister Qin Gang has not been seen in public for three weeks, and the ministry "
    "in Beijing declined on Tuesday to say where he was or when he would return."
)
WORLD = [
    {
        "title": "Qin Gang absent from Beijing talks",
        "link": "https://news.example/qin",
        "guid": "w1",
        "description": QIN_TEXT,
        "published": NOW - timedelta(hours=1),
    },
    {
        "title": "Pentagon seeks military dialogue",
        "link": "https://news.example/mil",
        "guid": "w2",
        "description": "US officials want to restore military-to-military communication.",
    },
]
ASIA = [  # the Qin story again, near-identical under another link: a follow-up
    {
        "title": "Where is Qin Gang?",
        "link": "https://asia.example/where-is-qin",
        "guid": "a1",
        "description": QIN_TEXT,
        "published": NOW - timedelta(minutes=30),
    }
]
DESK = channel_id("#china-desk")


@pytest.fixture
def fake(slack: FakeSlack) -> FakeSlack:
    return slack.with_socket()


def desk_config(
    tmp_path: Path,
    feed_server: FeedServer,
    watchlist: dict[str, Any] | None = None,
    interval: str = "10m",
    settings: dict[str, Any] | None = None,
) -> Path:
    feed_server.routes["/world.xml"] = Route(rss(WORLD))
    feed_server.routes["/asia.xml"] = Route(rss(ASIA))
    return write_config(
        tmp_path / "config",
        [
            {"name": "world", "url": feed_server.url("/world.xml"), "interval": interval},
            {"name": "asia", "url": feed_server.url("/asia.xml"), "interval": interval},
        ],
        [watchlist or US_CHINA],
        settings,
    )


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, slack_env: FakeSlack, fake: FakeSlack) -> FakeSlack:
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("SLACK_TEAM_ID", fake.team)
    return fake


@dataclass
class Desk:
    slack: FakeSlack
    service: Service
    root: Path

    def alert(self, words: str) -> dict[str, Any]:
        """The top-level alert whose text has `words` (either feed may be polled first)."""
        return next(m for m in self.slack.messages if words in m["text"] and not m.get("thread_ts"))

    def marks(self, message: dict[str, Any]) -> tuple[feedback.Mark, ...]:
        return feedback.marks(self.service.deps.store.engine, match_of(message))


def running_desk(
    root: Path, fake: FakeSlack, describe: Callable[[Any], str] = _describe
) -> Iterator[Desk]:
    assert main(["--config", str(root), "poll"]) == 0
    service = build(config_mod.load(root))
    service.slack = slack_app(service, describe)
    assert service.slack is not None
    service.slack.start()
    try:
        yield Desk(fake, service, root)
    finally:
        fake.update_gate.set()  # a test that failed while Slack held chat.update
        service.close()


@pytest.fixture
def desk(tmp_path: Path, feed_server: FeedServer, app_env: FakeSlack) -> Iterator[Desk]:
    yield from running_desk(desk_config(tmp_path, feed_server), app_env)


@pytest.fixture
def any_db(any_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The desk's service on SQLite, and on PostgreSQL where it runs."""
    monkeypatch.setenv("MONITOR_DATABASE_URL", any_db_url)


@pytest.fixture
def any_desk(
    tmp_path: Path, feed_server: FeedServer, app_env: FakeSlack, any_db: None
) -> Iterator[Desk]:
    yield from running_desk(desk_config(tmp_path, feed_server), app_env)


def button(message: dict[str, Any], text: str, match_id: int | None = None) -> dict[str, Any]:
    """The message's first `text` button (of `match_id`'s story, in a listing page)."""
    for block in message["blocks"]:
        for element in block.get("elements") or []:
            if element.get("type") != "button" or element["text"]["text"] != text:
                continue
            if match_id is None or element["value"] == str(match_id):
                return dict(element, block_id=block.get("block_id"))
    raise AssertionError(f"no {text!r} button")


def match_of(message: dict[str, Any]) -> int:
    return int(button(message, "Not relevant")["value"])


def click_payload(
    slack: FakeSlack,
    message: dict[str, Any],
    text: str = "Not relevant",
    user: str = "U0DESK001",
    team: str | None = None,
    channel: tuple[str, str] = (DESK, "china-desk"),
    match_id: int | None = None,
) -> dict[str, Any]:
    """A click as Slack sends it (the Contract's fields, and the rest Slack adds)."""
    pressed = button(message, text, match_id)
    team = team or slack.team
    return {
        "type": "block_actions",
        "user": {"id": user, "username": f"user-{user[-3:]}", "name": "x", "team_id": team},
        "api_app_id": "A0APP",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel[0],
            "is_ephemeral": False,
        },
        "trigger_id": "1234.5678.abcd",
        "team": {"id": team, "domain": "desk"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel[0], "name": channel[1]},
        "message": {
            "type": "message",
            "ts": message["ts"],
            "text": message["text"],
            "blocks": message["blocks"],
        },
        "state": {"values": {}},
        "response_url": slack.respond_url(),
        "actions": [
            {
                "action_id": pressed["action_id"],
                "block_id": pressed["block_id"],
                "text": pressed["text"],
                "value": pressed["value"],
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def clicked(desk: Desk, payload: dict[str, Any]) -> dict[str, Any]:
    """Sends a click, waits for its ack and its chat.update; returns the update."""
    socket = desk.slack.socket
    assert socket is not None
    before = len(desk.slack.updates)
    envelope = socket.send("interactive", payload)
    assert socket.wait_ack(envelope), "the click was never acknowledged"
    assert desk.slack.wait_for(desk.slack.updated, lambda: len(desk.slack.updates) > before)
    return desk.slack.updates[-1]


def context_text(blocks: list[dict[str, Any]]) -> str:
    """Who did what: the context line the service adds under the alert."""
    return " ".join(
        e["text"]
        for b in blocks
        if str(b.get("block_id")).startswith("monitor_marks:")
        for e in b["elements"]
    )


def test_every_alert_and_followup_carries_the_buttons(desk: Desk) -> None:
    qin = desk.alert("Qin Gang")
    [followup] = [m for m in desk.slack.messages if m.get("thread_ts") == qin["ts"]]
    for message in (qin, desk.alert("Pentagon seeks"), followup):
        [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
        texts = [e["text"]["text"] for e in actions["elements"]]
        assert texts == ["Not relevant", "Mute story"]
        assert match_of(message) > 0
    assert match_of(qin) != match_of(followup)  # each names its own stored match


def test_socket_mode_opens_on_the_web_api_base_and_acks_first(desk: Desk) -> None:
    slack = desk.slack
    assert slack.opened == [APP_TOKEN]  # on the Web API base the bot's calls use
    qin = desk.alert("Qin Gang")
    slack.update_gate.clear()  # Slack is slow to answer chat.update
    socket = slack.socket
    assert socket is not None
    envelope = socket.send("interactive", click_payload(slack, qin))
    assert socket.wait_ack(envelope)
    # acknowledged although the click's update has not been answered: ack first, then work
    assert slack.updates == []
    assert slack.wait_for(slack.updated, lambda: slack.update_calls == 1)
    slack.update_gate.set()
    assert slack.wait_for(slack.updated, lambda: len(slack.updates) == 1)
    [update] = slack.updates
    assert (update["channel"], update["ts"]) == (DESK, qin["ts"])


def test_clicks_while_slack_is_slow_to_update_are_each_acknowledged_by_their_listener(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    """Bolt runs listeners on a few threads and answers an envelope only once its
    listener has acknowledged it: a click's slow work (chat.update held, rate-limited)
    must not hold those threads, or the next clicks' acks wait for bolt's timeout."""
    slack, socket = desk.slack, desk.slack.socket
    assert socket is not None
    caplog.set_level(logging.INFO, logger="monitor.slackapp")
    qin = desk.alert("Qin Gang")
    slack.update_gate.clear()  # Slack does not answer chat.update for now
    payload = click_payload(slack, qin)
    for n in range(8):
        payload = {**payload, "trigger_id": f"{n}.trigger"}
        assert socket.wait_ack(socket.send("interactive", payload))
    unanswered = [r for r in caplog.records if r.getMessage() == "slack envelope not handled"]
    assert unanswered == [], "an envelope waited for bolt's ack timeout"
    slack.update_gate.set()
    assert slack.wait_for(slack.updated, lambda: len(slack.updates) == 8)
    assert desk.marks(qin) == ()  # eight clicks of one user: in force, undone, ... undone


def test_a_click_updates_the_message_and_a_second_click_undoes_it(desk: Desk) -> None:
    slack = desk.slack
    qin = desk.alert("Qin Gang")
    update = clicked(desk, click_payload(slack, qin))
    assert (update["channel"], update["ts"]) == (DESK, qin["ts"])
    assert "Not relevant by @user-001" in context_text(update["blocks"])
    assert button(update, "Not relevant")["style"] == "primary"
    assert qin["blocks"][0] == update["blocks"][0]  # the alert itself stays
    [mark] = desk.marks(qin)
    assert (mark.verdict, mark.user_id) == (feedback.Verdict.NOT_RELEVANT, "U0DESK001")

    # Mute story by someone else: both show
    update = clicked(desk, click_payload(slack, update, "Mute story", user="U0DESK002"))
    assert context_text(update["blocks"]) == "Not relevant by @user-001 · Muted by @user-002"

    # clicking Not relevant again undoes it; the mute stays
    update = clicked(desk, click_payload(slack, update, "Not relevant"))
    assert context_text(update["blocks"]) == "Muted by @user-002"
    assert "style" not in button(update, "Not relevant")
    assert [m.verdict for m in desk.marks(qin)] == [feedback.Verdict.MUTE_STORY]
    assert len([b for b in update["blocks"] if b["type"] == "actions"]) == 1


def test_a_click_delivered_twice_is_applied_once(desk: Desk) -> None:
    qin = desk.alert("Qin Gang")
    payload = click_payload(desk.slack, qin)
    clicked(desk, payload)
    update = clicked(desk, payload)  # Slack retried the envelope: the same action_ts
    assert context_text(update["blocks"]) == "Not relevant by @user-001"
    assert len(desk.marks(qin)) == 1
    payload["actions"][0]["action_ts"] = f"{time.time() + 1:.6f}"  # trap: a new click undoes
    assert context_text(clicked(desk, payload)["blocks"]) == ""
    assert desk.marks(qin) == ()


def test_a_new_click_is_told_from_a_redelivery_by_its_trigger_too(desk: Desk) -> None:
    """Slack gives every click its own trigger_id: a second click stamped with the same
    action_ts (a sender with one clock tick, or a fixed one) still undoes."""
    qin = desk.alert("Qin Gang")
    payload = click_payload(desk.slack, qin)
    clicked(desk, payload)
    payload["trigger_id"] = "9999.8888.other"
    assert context_text(clicked(desk, payload)["blocks"]) == ""
    assert desk.marks(qin) == ()
    assert context_text(clicked(desk, payload)["blocks"]) == ""  # trap: its redelivery
    assert desk.marks(qin) == ()


def owed_renders(desk: Desk) -> list[Any]:
    return Renders(desk.service.deps.store.engine).owed(None)


def test_an_update_slack_refused_is_owed_until_a_later_render_lands(any_desk: Desk) -> None:
    """The click is stored with its message's render owed; a failed chat.update leaves it
    owed, held back by delivery's backoff, and it is rendered (once) later."""
    desk, slack = any_desk, any_desk.slack
    app = desk.service.slack
    assert app is not None
    qin, pentagon = desk.alert("Qin Gang"), desk.alert("Pentagon seeks")
    slack.update_errors.append("internal_error")
    socket = slack.socket
    assert socket is not None
    assert socket.wait_ack(socket.send("interactive", click_payload(slack, qin)))
    assert slack.wait_for(slack.updated, lambda: slack.update_calls == 1)
    # a click on another message goes after the failed render on the click thread
    barrier = clicked(desk, click_payload(slack, pentagon))
    assert slack.updates == [barrier] and barrier["ts"] == pentagon["ts"]
    assert wait(lambda: len(owed_renders(desk)) == 1)  # the other one is marked done
    [owed] = owed_renders(desk)
    assert (owed.shown.channel_id, owed.shown.ts, owed.attempts) == (DESK, qin["ts"], 1)
    app.catch_up()  # trap: not due yet, it waits out the backoff
    barrier = clicked(desk, click_payload(slack, barrier))
    assert [u["ts"] for u in slack.updates] == [pentagon["ts"]] * 2
    app.catch_up(everything=True)  # as at start
    assert slack.wait_for(slack.updated, lambda: len(slack.updates) == 3)
    update = slack.updates[-1]
    assert (update["channel"], update["ts"]) == (DESK, qin["ts"])
    assert context_text(update["blocks"]) == "Not relevant by @user-001"
    assert wait(lambda: owed_renders(desk) == [])
    app.catch_up(everything=True)  # trap: done, never rendered again
    clicked(desk, click_payload(slack, barrier))
    assert [u["ts"] for u in slack.updates].count(qin["ts"]) == 1


def test_a_click_whose_payload_lacks_the_blocks_still_updates_the_message(desk: Desk) -> None:
    qin = desk.alert("Qin Gang")
    payload = click_payload(desk.slack, qin)
    del payload["message"]["blocks"]
    update = clicked(desk, payload)
    assert (update["channel"], update["ts"]) == (DESK, qin["ts"])
    assert update["blocks"][0]["text"]["text"] == qin["text"]
    assert context_text(update["blocks"]) == "Not relevant by @user-001"
    assert button(update, "Not relevant")["value"] == str(match_of(qin))


def posted(desk: Desk, words: str) -> list[dict[str, Any]]:
    return [m for m in desk.slack.messages if words in m["text"]]


def queue_more(desk: Desk, feed_server: FeedServer, asia: list[dict[str, Any]]) -> None:
    """New articles in the asia feed, stored and queued by a poll, not yet delivered."""
    feed_server.routes["/asia.xml"] = Route(rss([*ASIA, *asia]))
    cycle.poll(desk.service, desk.service.deps.feeds.states(desk.service.feeds))


HOTLINE = {
    "title": "Pentagon and Beijing reopen military hotline",
    "link": "https://news.example/hotline",
    "guid": "w-hot",
    "description": (
        "Defense officials in Washington and Beijing agreed on Thursday to reopen the "
        "military hotline that China suspended last year, the first step toward restoring "
        "the military dialogue between the two armed forces after months of silence."
    ),
    "published": NOW - timedelta(minutes=40),
}


def qin_again(n: int) -> dict[str, Any]:
    """Another outlet's copy of the Qin story: a follow-up in its thread."""
    return {
        "title": f"Qin Gang still unseen ({n})",
        "link": f"https://asia.example/qin-{n}",
        "guid": f"a-qin-{n}",
        "description": QIN_TEXT,
        "published": NOW - timedelta(minutes=20 - n),
    }


def test_a_followup_queued_before_its_story_was_muted_is_not_posted(
    any_desk: Desk, feed_server: FeedServer
) -> None:
    """Mute story holds at send time too: a follow-up queued before the click is not
    posted, and is kept as muted (its match held, as one muted when stored)."""
    desk = any_desk
    qin = desk.alert("Qin Gang")
    # trap: another story, and its follow-up, queued with it, still go out
    feed_server.routes["/world.xml"] = Route(rss([*WORLD, HOTLINE]))
    hotline = {**HOTLINE, "link": "https://asia.example/hotline", "guid": "a-hot"}
    queue_more(desk, feed_server, [qin_again(1), hotline])
    assert {"Qin Gang still unseen (1)", HOTLINE["title"]} <= pending_titles(desk)
    update = clicked(desk, click_payload(desk.slack, qin, "Mute story"))
    assert "Muted by @user-001" in context_text(update["blocks"])
    cycle.deliver(desk.service, desk.service.deliverer())
    assert posted(desk, "Qin Gang still unseen (1)") == []
    alert, followup = posted(desk, HOTLINE["title"])
    assert followup["thread_ts"] == alert["ts"]
    state = {r["title"]: r for r in Archive(desk.service.deps.store.engine).matches(None, None)}
    muted_one = state["Qin Gang still unseen (1)"]
    assert (muted_one["delivery"], muted_one["held"]) == (DeliveryStatus.MUTED, MatchHold.MUTED)
    assert "story muted by feedback #" in muted_one["held_why"]

    # trap: muted, then undone before delivery: the follow-up goes out as before
    update = clicked(desk, click_payload(desk.slack, update, "Mute story"))  # undone
    queue_more(desk, feed_server, [qin_again(1), hotline, qin_again(2)])
    assert "Qin Gang still unseen (2)" in pending_titles(desk)
    update = clicked(desk, click_payload(desk.slack, update, "Mute story"))
    update = clicked(desk, click_payload(desk.slack, update, "Mute story"))  # undone
    assert context_text(update["blocks"]) == ""
    cycle.deliver(desk.service, desk.service.deliverer())
    [again] = posted(desk, "Qin Gang still unseen (2)")
    assert again["thread_ts"] == qin["ts"]
    assert posted(desk, "Qin Gang still unseen (1)") == []  # muted stays muted


ASIA_HOTLINE = {**HOTLINE, "link": "https://asia.example/hotline", "guid": "a-hot"}
OTHERS = [  # stories of their own, one each
    (
        "Wang Yi meets ASEAN ministers",
        "Wang Yi met foreign ministers in Jakarta on shipping lanes.",
    ),
    (
        "Antony Blinken to visit Manila",
        "Antony Blinken flies to Manila next week for defence talks.",
    ),
    ("Fentanyl shipment seized", "Police in Veracruz seized fentanyl bound for Texas on Friday."),
    (
        "Wang Yi urges calm at Munich",
        "Speaking in Munich, Wang Yi urged restraint after naval drills.",
    ),
    (
        "Antony Blinken hails accord",
        "In Lima, Antony Blinken said the customs accord was holding up.",
    ),
    ("Li Shangfu skips forum", "Li Shangfu missed the Shangri-La security forum in Singapore."),
    ("Fentanyl precursors curbed", "Chemical firms in Hubei must now register precursor exports."),
    ("Wang Yi visits Canberra", "Wang Yi arrived in Canberra for the first such trip in years."),
]


def other(n: int) -> dict[str, Any]:
    title, text = OTHERS[n]
    return {
        "title": title,
        "link": f"https://news.example/other-{n}",
        "guid": f"w-o-{n}",
        "description": text,
    }


def separate_config(tmp_path: Path, feed_server: FeedServer, **watchlist: Any) -> Path:
    """Follow-ups posted as alerts of their own; more than 3 alerts in a cycle flood."""
    wl = {**US_CHINA, "followups": "separate", **watchlist}
    return desk_config(tmp_path, feed_server, wl, settings={"delivery": {"flood_threshold": 3}})


@pytest.fixture
def separate_desk(
    tmp_path: Path, feed_server: FeedServer, app_env: FakeSlack, any_db: None
) -> Iterator[Desk]:
    yield from running_desk(separate_config(tmp_path, feed_server), app_env)


@pytest.fixture
def separate_digest_desk(
    tmp_path: Path, feed_server: FeedServer, app_env: FakeSlack, any_db: None
) -> Iterator[Desk]:
    digest = {"delivery": "digest", "digest": "daily 08:00 Europe/London"}
    yield from running_desk(separate_config(tmp_path, feed_server, **digest), app_env)


def mute_unposted(desk: Desk, title: str) -> None:
    """Mute story on a story whose own alert is not posted yet (as a click on another of
    its messages would: the mute is the story's, whichever match it names)."""
    with Session(desk.service.deps.store.engine) as s:
        stmt = select(MatchRow.id).join(ArticleRow, col(ArticleRow.id) == MatchRow.article_id)
        match_id = s.execute(stmt.where(col(ArticleRow.title) == title)).scalar_one()
    assert match_id is not None
    click = feedback.Click(
        Verdict.MUTE_STORY, match_id, "U0DESK003", "cy", desk.slack.team, DESK, datetime.now(UTC)
    )
    assert feedback.toggle(desk.service.deps.store.engine, click).on


def gathered(desk: Desk, since: int) -> tuple[dict[str, Any], set[str], str]:
    """The one flood or digest message posted since message `since`, the links its thread
    lists, and the text of everything posted since."""
    posts = desk.slack.messages[since:]
    [message] = [m for m in posts if not m.get("thread_ts")]
    return message, set(desk.slack.listed_in_thread(message)), json.dumps(posts)


def states(desk: Desk) -> dict[str, dict[str, Any]]:
    return {r["title"]: r for r in Archive(desk.service.deps.store.engine).matches(None, None)}


def test_a_flood_lists_no_separate_follow_up_of_a_muted_story(
    separate_desk: Desk, feed_server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A follow-up posted as an alert of its own, queued before its story was muted, is
    muted when a flood gathers the others: in neither the message nor its thread. The
    story's own first alert is gathered even when its story is muted after it was
    queued: Mute story means no more follow-ups, and a first alert is none."""
    desk = separate_desk
    caplog.set_level(logging.INFO, logger="monitor.outbox")
    qin = desk.alert("Qin Gang absent")
    feed_server.routes["/world.xml"] = Route(rss([*WORLD, HOTLINE, other(0), other(1)]))
    queue_more(desk, feed_server, [qin_again(1), ASIA_HOTLINE])
    assert {"Qin Gang still unseen (1)", HOTLINE["title"], OTHERS[0][0]} <= pending_titles(desk)
    update = clicked(desk, click_payload(desk.slack, qin, "Mute story"))
    mute_unposted(desk, OTHERS[0][0])  # trap: its own first alert, still listed
    since = len(desk.slack.messages)
    cycle.deliver(desk.service, desk.service.deliverer())
    flood, listed, posts = gathered(desk, since)
    assert flood["text"].startswith("us-china: 4 alerts in one poll cycle")
    links = [HOTLINE["link"], ASIA_HOTLINE["link"], other(0)["link"], other(1)["link"]]
    assert listed == set(links)
    assert "qin-1" not in posts and "Qin Gang still unseen" not in posts
    muted_one = states(desk)["Qin Gang still unseen (1)"]
    assert (muted_one["delivery"], muted_one["held"]) == (DeliveryStatus.MUTED, MatchHold.MUTED)
    assert "story muted by feedback #" in muted_one["held_why"]
    assert states(desk)[OTHERS[0][0]]["delivery"] == DeliveryStatus.DIGESTED
    [line] = [
        r for r in caplog.records if r.getMessage() == "follow-up not posted: its story is muted"
    ]
    assert line.match_id and line.delivery_id and line.feedback_id  # type: ignore[attr-defined]

    # trap: once the mute is undone, the story's next follow-up is gathered again
    update = clicked(desk, click_payload(desk.slack, update, "Mute story"))  # undone
    feed_server.routes["/world.xml"] = Route(rss([*WORLD, HOTLINE, *map(other, range(5))]))
    queue_more(desk, feed_server, [qin_again(1), ASIA_HOTLINE, qin_again(2)])
    since = len(desk.slack.messages)
    cycle.deliver(desk.service, desk.service.deliverer())
    flood, listed, posts = gathered(desk, since)
    assert listed == {"https://asia.example/qin-2", *(other(n)["link"] for n in (2, 3, 4))}
    assert "qin-1" not in posts  # muted stays muted

    # trap: a muted follow-up does not count towards a flood: 3 others go one by one
    feed_server.routes["/world.xml"] = Route(rss([*WORLD, HOTLINE, *map(other, range(8))]))
    queue_more(desk, feed_server, [qin_again(1), ASIA_HOTLINE, qin_again(2), qin_again(3)])
    clicked(desk, click_payload(desk.slack, update, "Mute story"))
    since = len(desk.slack.messages)
    cycle.deliver(desk.service, desk.service.deliverer())
    posts = json.dumps(desk.slack.messages[since:])
    assert all(len(posted(desk, title)) == 1 for title, _ in OTHERS[5:])
    assert "in one poll cycle" not in posts and "qin-3" not in posts
    assert states(desk)["Qin Gang still unseen (3)"]["delivery"] == DeliveryStatus.MUTED


def test_a_digest_lists_no_separate_follow_up_of_a_muted_story(
    separate_digest_desk: Desk, feed_server: FeedServer
) -> None:
    """The same for a digest: a held follow-up of a story muted from the last digest's
    thread is muted when the next digest is made, not listed; the others are."""
    desk = separate_digest_desk
    digests, watchlists = desk.service.deps.digests, desk.service.config.watchlists
    day = datetime.now(UTC) + timedelta(hours=1)
    assert digests.make(watchlists, day + timedelta(days=1)) == 1
    cycle.deliver(desk.service, desk.service.deliverer())
    first, listed, _ = gathered(desk, 0)
    assert "https://news.example/qin" in listed
    feed_server.routes["/world.xml"] = Route(rss([*WORLD, other(0), other(1)]))
    queue_more(desk, feed_server, [qin_again(1)])
    assert "Qin Gang still unseen (1)" not in pending_titles(desk)  # held for the digest
    [page] = [m for m in desk.slack.messages if m.get("thread_ts") == first["ts"]]
    entry = next(i for i, b in enumerate(page["blocks"]) if "Qin Gang absent" in json.dumps(b))
    qin = int(page["blocks"][entry + 1]["elements"][0]["value"])
    clicked(desk, click_payload(desk.slack, page, "Mute story", match_id=qin))
    mute_unposted(desk, OTHERS[0][0])  # trap: its own first alert, still listed
    assert digests.make(watchlists, day + timedelta(days=2)) == 1
    since = len(desk.slack.messages)
    cycle.deliver(desk.service, desk.service.deliverer())
    digest, listed, posts = gathered(desk, since)
    assert "2 stories" in digest["text"] and listed == {other(0)["link"], other(1)["link"]}
    assert "qin-1" not in posts and "Qin Gang still unseen" not in posts
    muted_one = states(desk)["Qin Gang still unseen (1)"]
    assert (muted_one["delivery"], muted_one["held"]) == (DeliveryStatus.MUTED, MatchHold.MUTED)

    # trap: once the mute is undone, the story's next follow-up is listed again
    page = desk.slack.updates[-1]
    clicked(desk, click_payload(desk.slack, page, "Mute story", match_id=qin))  # undone
    queue_more(desk, feed_server, [qin_again(1), qin_again(2)])
    assert digests.make(watchlists, day + timedelta(days=3)) == 1
    since = len(desk.slack.messages)
    cycle.deliver(desk.service, desk.service.deliverer())
    _, listed, posts = gathered(desk, since)
    assert listed == {"https://asia.example/qin-2"} and "qin-1" not in posts


def pending_titles(desk: Desk) -> set[str]:
    rows = Deliveries(desk.service.deps.store.engine).listing([DeliveryStatus.PENDING], None)
    return {str(r["title"]) for r in rows}


def refused(desk: Desk, payload: dict[str, Any]) -> dict[str, Any]:
    slack, socket = desk.slack, desk.slack.socket
    assert socket is not None
    before = len(slack.ephemerals)
    envelope = socket.send("interactive", payload)
    assert socket.wait_ack(envelope)
    assert slack.wait_for(slack.ephemeral, lambda: len(slack.ephemerals) > before)
    answer = slack.ephemerals[-1]
    assert answer["response_type"] == "ephemeral" and answer["via"] == "respond"
    return answer


def test_clicks_from_another_workspace_or_channel_are_refused(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    qin = desk.alert("Qin Gang")
    caplog.set_level(logging.WARNING, logger="monitor.slackapp.app")
    answer = refused(desk, click_payload(desk.slack, qin, team="T0OTHER99"))
    assert "own workspace" in answer["text"]
    answer = refused(desk, click_payload(desk.slack, qin, channel=("C0RANDOM01", "random")))
    assert "#china-desk" in answer["text"]
    assert desk.slack.updates == [] and desk.marks(qin) == ()
    refusals = [r for r in caplog.records if r.getMessage() == "slack action refused"]
    assert [r.team_id for r in refusals] == ["T0OTHER99", desk.slack.team]  # type: ignore[attr-defined]
    # trap: the same click from the channel, in the workspace, is taken
    clicked(desk, click_payload(desk.slack, qin))
    assert len(desk.marks(qin)) == 1


@pytest.mark.parametrize(
    ("channel_id", "channel", "clicked_in", "same"),
    [
        ("C0DESK0001", "#china-desk", ("C0DESK0001", "anything"), True),
        ("C0DESK0001", "#china-desk", ("C0OTHER001", "china-desk"), False),  # the ID decides
        (None, "C0DESK0001", ("C0DESK0001", ""), True),  # configured by ID
        (None, "C0DESK0001", ("C0OTHER001", "C0DESK0001"), False),
        (None, "#China-Desk", ("C0ANY00001", "china-desk"), True),  # by name, no ID known
        (None, "#china-desk", ("C0ANY00001", ""), False),  # trap: no name, no match
        ("C0DESK0001", "C0OLD00001", ("C0OLD00001", ""), False),  # Slack's answer wins
    ],
)
def test_the_channel_a_click_counts_in(
    channel_id: str | None, channel: str, clicked_in: tuple[str, str], same: bool
) -> None:
    target = feedback.Target(1, "us-china", channel, channel_id)
    assert same_channel(target, *clicked_in) is same


def test_a_click_on_a_flood_entry_counts_in_the_channel_slack_named(
    tmp_path: Path, feed_server: FeedServer, app_env: FakeSlack
) -> None:
    """An alert that went out in a flood was never posted itself: its channel's ID is the
    one Slack answered the flood with, so a click there counts whatever the channel is
    called now (renamed since, or named otherwise by the payload)."""
    root = desk_config(tmp_path, feed_server, settings={"delivery": {"flood_threshold": 1}})
    for desk in running_desk(root, app_env):
        [page] = [m for m in desk.slack.messages if m.get("thread_ts") and "Alerts 1" in m["text"]]
        update = clicked(desk, click_payload(desk.slack, page, channel=(DESK, "desk-renamed")))
        assert (update["channel"], update["ts"]) == (DESK, page["ts"])
        assert "Not relevant by @user-001" in context_text(update["blocks"])
        # trap: another channel is still refused
        refused(desk, click_payload(desk.slack, page, channel=("C0RANDOM01", "china-desk")))


def test_an_org_id_admits_the_clicks_of_its_workspaces(
    tmp_path: Path, feed_server: FeedServer, app_env: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """slack.team_id may name an Enterprise Grid org (E...): its workspaces' clicks carry
    their own team id, and the org's in `enterprise`."""
    monkeypatch.setenv("SLACK_TEAM_ID", "E0ORG0001")
    for desk in running_desk(desk_config(tmp_path, feed_server), app_env):
        qin = desk.alert("Qin Gang")
        payload = click_payload(desk.slack, qin)
        payload["enterprise"] = {"id": "E0ORG0001", "name": "org"}
        clicked(desk, payload)
        assert len(desk.marks(qin)) == 1
        other = click_payload(desk.slack, qin, team="T0OTHER99")  # trap: another org
        other["enterprise"] = {"id": "E0OTHER01", "name": "other"}
        assert "own workspace" in refused(desk, other)["text"]


@pytest.fixture
def strict_desk(tmp_path: Path, feed_server: FeedServer, app_env: FakeSlack) -> Iterator[Desk]:
    app_env.groups["S0EDITORS"] = ["U0EDIT001"]
    watchlist = {**US_CHINA, "feedback_from": ["U0CHIEF01", "S0EDITORS"]}
    yield from running_desk(desk_config(tmp_path, feed_server, watchlist), app_env)


def test_feedback_from_admits_its_users_and_groups_only(strict_desk: Desk) -> None:
    desk = strict_desk
    qin = desk.alert("Qin Gang")
    answer = refused(desk, click_payload(desk.slack, qin, user="U0DESK001"))
    assert "feedback_from" in answer["text"]
    assert desk.marks(qin) == () and desk.slack.updates == []
    update = clicked(desk, click_payload(desk.slack, qin, user="U0CHIEF01"))  # named
    update = clicked(desk, click_payload(desk.slack, update, "Mute story", user="U0EDIT001"))
    assert {m.user_id for m in desk.marks(qin)} == {"U0CHIEF01", "U0EDIT001"}  # via the group
    assert desk.slack.group_calls == 1  # the group's members, cached


def test_every_envelope_is_acknowledged(desk: Desk) -> None:
    socket = desk.slack.socket
    assert socket is not None
    event = {
        "type": "event_callback",
        "team_id": desk.slack.team,
        "event": {"type": "app_home_opened"},
    }
    assert socket.wait_ack(socket.send("events_api", event))


def why_payload(slack: FakeSlack, message: dict[str, Any], n: int = 2) -> dict[str, Any]:
    """The Why this alert? shortcut on a message, as Slack sends it."""
    return {
        "type": "message_action",
        "callback_id": "monitor_why",
        "trigger_id": f"1.2.{n}",
        "message_ts": message["ts"],
        "team": {"id": slack.team, "domain": "desk"},
        "user": {"id": "U0DESK001", "name": "ana"},
        "channel": {"id": DESK, "name": "china-desk"},
        "message": {
            "type": "message",
            "ts": message["ts"],
            "text": message["text"],
            "blocks": message["blocks"],
        },
        "response_url": slack.respond_url(n),
    }


def test_why_shortcut_and_slash_command_answer_ephemerally(desk: Desk) -> None:
    slack = desk.slack
    qin = desk.alert("Qin Gang")
    answer = refused(desk, why_payload(slack, qin))  # ephemeral, through the response URL
    text = json.dumps(answer["blocks"])
    assert "us-china: MATCH" in text and "Qin Gang" in text and "by " in text
    command = {
        "command": "/monitor",
        "text": "why <https://news.example/mil>",
        "team_id": slack.team,
        "user_id": "U0DESK001",
        "user_name": "ana",
        "channel_id": DESK,
        "channel_name": "china-desk",
        "response_url": slack.respond_url(3),
        "trigger_id": "1.2.4",
    }
    socket = slack.socket
    assert socket is not None
    before = len(slack.ephemerals)
    assert socket.wait_ack(socket.send("slash_commands", command))
    assert slack.wait_for(slack.ephemeral, lambda: len(slack.ephemerals) > before)
    assert "military dialogue" in json.dumps(slack.ephemerals[-1]["blocks"])


class Held:
    """An explanation held until `release` is set: a slow matcher run, as a barrier."""

    def __init__(self) -> None:
        self.explaining, self.release = threading.Event(), threading.Event()

    def describe(self, verdict: Any) -> str:
        self.explaining.set()
        self.release.wait()
        return _describe(verdict)


@pytest.fixture
def held_desk(
    tmp_path: Path, feed_server: FeedServer, app_env: FakeSlack
) -> Iterator[tuple[Desk, Held]]:
    held = Held()
    try:
        for desk in running_desk(desk_config(tmp_path, feed_server), app_env, held.describe):
            yield desk, held
    finally:
        held.release.set()


def _one_being_explained(
    held_desk: tuple[Desk, Held],
) -> tuple[FakeSlack, SocketServer, dict[str, Any], Held]:
    """The desk's Slack, its socket and an alert, with a why question on the alert being
    explained (held there until `held.release` is set)."""
    desk, held = held_desk
    slack, socket = desk.slack, desk.slack.socket
    assert socket is not None
    qin = desk.alert("Qin Gang")
    assert socket.wait_ack(socket.send("interactive", why_payload(slack, qin, 1)))
    assert held.explaining.wait(30)
    return slack, socket, qin, held


def test_why_questions_are_acknowledged_while_one_is_being_explained(
    held_desk: tuple[Desk, Held], caplog: pytest.LogCaptureFixture
) -> None:
    """An explanation runs the matcher, which may be slow: the questions after it are
    acknowledged by their listeners at once, more than bolt has listener threads; those
    beyond the bounded queue are told to try again, the queued ones answered in turn."""
    caplog.set_level(logging.INFO, logger="monitor.slackapp")
    slack, socket, qin, held = _one_being_explained(held_desk)
    asked = 1 + WAITING + 3  # more than bolt's 5 listener threads
    for n in range(2, asked + 1):
        envelope = socket.send("interactive", why_payload(slack, qin, n))
        assert socket.wait_ack(envelope), f"question {n} waited for the first"
    unanswered = [r for r in caplog.records if r.getMessage() == "slack envelope not handled"]
    assert unanswered == [], "a question waited for bolt's ack timeout"
    busy = asked - 1 - WAITING
    assert slack.wait_for(slack.ephemeral, lambda: len(slack.ephemerals) == busy)
    assert {e["text"] for e in slack.ephemerals} == {BUSY}
    held.release.set()
    assert slack.wait_for(slack.ephemeral, lambda: len(slack.ephemerals) == asked)
    answers = [e for e in slack.ephemerals if e["text"] != BUSY]
    assert len(answers) == 1 + WAITING  # trap: the queued ones are answered, not dropped
    assert all("us-china: MATCH" in json.dumps(e["blocks"]) for e in answers)


def test_questions_from_another_workspace_are_refused_at_once_and_take_no_room(
    held_desk: tuple[Desk, Held], caplog: pytest.LogCaptureFixture
) -> None:
    """The workspace is checked before a question is queued: another workspace's is
    refused while an explanation is under way, not after it, and takes no place in the
    bounded queue."""
    caplog.set_level(logging.WARNING, logger="monitor.slackapp.app")
    slack, socket, qin, held = _one_being_explained(held_desk)
    shortcut = {**why_payload(slack, qin, 2), "team": {"id": "T0OTHER99", "domain": "other"}}
    command = {
        "command": "/monitor",
        "text": "why <https://news.example/mil>",
        "team_id": "T0OTHER99",
        "user_id": "U0OTHER01",
        "user_name": "eve",
        "channel_id": DESK,
        "channel_name": "china-desk",
        "response_url": slack.respond_url(3),
        "trigger_id": "1.2.3",
    }
    assert socket.wait_ack(socket.send("interactive", shortcut))
    assert socket.wait_ack(socket.send("slash_commands", command))
    assert slack.wait_for(slack.ephemeral, lambda: len(slack.ephemerals) == 2)
    assert all("own workspace" in e["text"] for e in slack.ephemerals)
    refusals = [
        (r.action, r.team_id)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "slack action refused"
    ]
    assert sorted(refusals) == [("/monitor", "T0OTHER99"), ("monitor_why", "T0OTHER99")]
    # trap: they took no room, so as many questions as may wait are all queued
    for n in range(4, 4 + WAITING):
        assert socket.wait_ack(socket.send("interactive", why_payload(slack, qin, n)))
    held.release.set()
    assert slack.wait_for(slack.ephemeral, lambda: len(slack.ephemerals) == 2 + 1 + WAITING)
    assert BUSY not in {e["text"] for e in slack.ephemerals}


def signed(body: bytes, at: float, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(at))
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_http_requests_are_verified(desk: Desk, caplog: pytest.LogCaptureFixture) -> None:
    endpoint = serve("127.0.0.1:0", desk.service, Metrics(), lambda: True)
    url = f"http://127.0.0.1:{endpoint.server_address[1]}/slack/events"
    qin = desk.alert("Qin Gang")
    body = urlencode({"payload": json.dumps(click_payload(desk.slack, qin))}).encode()
    caplog.set_level(logging.WARNING, logger="monitor.slackapp")
    try:
        assert post(url, body, signed(body, time.time(), secret="0" * 32)) == 401
        assert post(url, body, signed(body, time.time() - 301)) == 401
        assert desk.marks(qin) == () and desk.slack.updates == []
        reasons = [r.reason for r in caplog.records if r.getMessage() == "slack request refused"]  # type: ignore[attr-defined]
        assert reasons == ["bad signature", "stale timestamp"]
        huge = http.client.HTTPConnection("127.0.0.1", endpoint.server_address[1], timeout=30)
        huge.putrequest("POST", "/slack/events")
        huge.putheader("Content-Length", str(2 << 20))  # answered before the body is sent
        huge.endheaders()
        assert huge.getresponse().status == 413
        huge.close()
        assert post(url, body, signed(body, time.time() - 200)) == 200  # within 5 minutes
        assert desk.slack.wait_for(desk.slack.updated, lambda: len(desk.slack.updates) == 1)
        assert len(desk.marks(qin)) == 1
    finally:
        endpoint.shutdown()
        endpoint.server_close()


def test_http_header_names_are_case_insensitive(desk: Desk) -> None:
    """HTTP/2 and many proxies lowercase header names: a well-signed request still counts."""
    endpoint = serve("127.0.0.1:0", desk.service, Metrics(), lambda: True)
    qin = desk.alert("Qin Gang")
    body = urlencode({"payload": json.dumps(click_payload(desk.slack, qin))}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.server_address[1], timeout=30)
    try:
        conn.putrequest("POST", "/slack/events")
        for name, value in signed(body, time.time()).items():
            conn.putheader(name.lower(), value)
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        assert conn.getresponse().status == 200
        assert desk.slack.wait_for(desk.slack.updated, lambda: len(desk.slack.updates) == 1)
        assert len(desk.marks(qin)) == 1
    finally:
        conn.close()
        endpoint.shutdown()
        endpoint.server_close()


# A kill between a click and its message update: the click is kept, and no alert is lost
# or sent twice when the service comes back.


def start_run(root: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "monitor", "--config", str(root), "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def wait(predicate: Any, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_kill_between_click_and_update_keeps_the_click_updates_after_restart_sends_once(
    tmp_path: Path, feed_server: FeedServer, fake: FakeSlack, db_url: str
) -> None:
    # a lease longer than the test: only the restart's catch-up can make the owed update
    delivery = {"channel_interval": "10ms", "max_per_second": 200, "lease": "10m"}
    root = desk_config(tmp_path, feed_server, interval="1s", settings={"delivery": delivery})
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_URL": fake.api_url,
        "SLACK_APP_TOKEN": APP_TOKEN,
        "SLACK_TEAM_ID": fake.team,
        "MONITOR_DATABASE_URL": db_url,
    }
    env.pop("SLACK_WEBHOOK_URL", None)
    log = tmp_path / "run.log"
    socket = fake.socket
    assert socket is not None
    proc = start_run(root, env, log)
    try:
        assert wait(lambda: len(fake.messages) == 3), log.read_text()  # 2 alerts, 1 follow-up
        assert socket.wait_connected()
        qin = next(m for m in fake.messages if "Qin Gang" in m["text"] and "thread_ts" not in m)
        fake.update_gate.clear()
        assert socket.wait_ack(socket.send("interactive", click_payload(fake, qin)))
        # chat.update has arrived, so the click was applied; it is never answered
        assert fake.wait_for(fake.updated, lambda: fake.update_calls == 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        fake.update_gate.set()  # the dead process's request lands; its answer is lost
        assert fake.wait_for(fake.updated, lambda: len(fake.updates) == 1)
        proc = start_run(root, env, log)
        assert wait(lambda: len(fake.opened) == 2), log.read_text()  # Socket Mode again
        assert socket.wait_connected()
        # the update the kill left owed is made by the new process, from the stored marks
        assert fake.wait_for(fake.updated, lambda: len(fake.updates) == 2), log.read_text()
        update = fake.updates[-1]
        assert (update["channel"], update["ts"]) == (DESK, qin["ts"])
        assert context_text(update["blocks"]) == "Not relevant by @user-001"
        # a new article after the restart is alerted: the service is delivering again
        fentanyl = {"title": "Fentanyl talks resume", "link": "https://news.example/fent"}
        feed_server.routes["/world.xml"] = Route(
            rss([*WORLD, {**WORLD[1], **fentanyl, "guid": "w3", "description": "fentanyl"}])
        )
        assert wait(lambda: any("Fentanyl" in m["text"] for m in fake.messages), 120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        fake.update_gate.set()
    tags = [m["metadata"]["event_payload"]["tag"] for m in fake.messages]
    assert len(tags) == len(set(tags)) == 4, "an alert was lost or sent twice"
    engine = create_engine(db_url)
    marks = feedback.marks(engine, match_of(qin))
    assert [m.verdict for m in marks] == [feedback.Verdict.NOT_RELEVANT]
    assert Renders(engine).owed(None) == []
    assert len(fake.updates) == 2, "an owed update was made twice"

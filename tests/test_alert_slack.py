"""The Slack sink through slack-sdk's real WebClient against a fake Slack Web API."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from slack_sdk import WebClient

from monitor.alert.slack import SlackAlerter, escape, render, retry_handlers
from monitor.errors import AlertError
from monitor.models import Alert
from tests.servers import FakeSlack, Reply

ALERT = Alert(
    delivery_id=1,
    watchlist="us-china",
    channel="#china-desk",
    title="Qin Gang <b>missing</b> & <!channel>",
    url="https://news.example/qin?a=1&b=2",
    feed="world",
    published=datetime(2023, 7, 24, 9, 30, tzinfo=UTC),
    matched=["Qin Gang", "military dialogue"],
    snippet="Questions grew over Qin Gang <@U1>.",
    highlights=[(20, 28)],
    attempts=0,
    strength="about",
)


def alerter(slack: FakeSlack) -> SlackAlerter:
    return SlackAlerter(
        WebClient(
            token="xoxb-test-token",
            base_url=slack.api_url,
            timeout=5,
            retry_handlers=retry_handlers(),
        )
    )


def test_escape() -> None:
    assert escape("a & <b> <!here>") == "a &amp; &lt;b&gt; &lt;!here&gt;"


def test_render_layout() -> None:
    text, blocks = render(ALERT)
    assert text == (
        "Qin Gang &lt;b&gt;missing&lt;/b&gt; &amp; &lt;!channel&gt; "
        "https://news.example/qin?a=1&amp;b=2"
    )
    assert blocks[0]["text"]["text"] == (
        "*<https://news.example/qin?a=1&amp;b=2|Qin Gang "
        "&lt;b&gt;missing&lt;/b&gt; &amp; &lt;!channel&gt;>*"
    )
    context = [e["text"] for e in blocks[1]["elements"]]
    assert context == ["world · 2023-07-24 09:30 UTC", "About: *Qin Gang*, *military dialogue*"]
    assert blocks[2]["text"]["text"] == "> Questions grew over *Qin Gang* &lt;@U1&gt;."


def test_render_says_when_it_is_only_a_mention() -> None:
    _, blocks = render(Alert(**{**ALERT.__dict__, "strength": "mention"}))
    assert blocks[1]["elements"][1]["text"] == "Mentions: *Qin Gang*, *military dialogue*"


def test_render_refuses_non_http_links_and_clips_long_text() -> None:
    alert = Alert(
        **{
            **ALERT.__dict__,
            "url": "javascript:alert(1)",
            "title": "x" * 5000,
            "snippet": "y" * 5000,
            "highlights": [],
        }
    )
    text, blocks = render(alert)
    assert "javascript" not in text + json.dumps(blocks)
    assert len(text) <= 3000
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")


def test_posts_through_the_web_api(slack: FakeSlack) -> None:
    ts = alerter(slack).send(ALERT)
    [message] = slack.messages
    assert ts == message["ts"]
    assert message["channel"] == "#china-desk"
    assert message["unfurl_links"] is False and message["unfurl_media"] is False
    assert message["blocks"] == render(ALERT)[1]


def test_rate_limited_then_success_honours_retry_after(slack: FakeSlack) -> None:
    slack.script = [Reply(status=429, retry_after=1)]
    started = time.monotonic()
    alerter(slack).send(ALERT)
    assert time.monotonic() - started >= 1.0  # waited as Slack asked
    assert slack.calls == 2 and len(slack.messages) == 1


def test_server_error_then_success(slack: FakeSlack) -> None:
    slack.script = [Reply(status=500)]
    alerter(slack).send(ALERT)
    assert slack.calls == 2 and len(slack.messages) == 1


def test_persistent_server_errors_become_a_retryable_failure(slack: FakeSlack) -> None:
    slack.script = [Reply(status=503)] * 5
    with pytest.raises(AlertError) as info:
        alerter(slack).send(ALERT)
    assert not info.value.permanent and "HTTP 503" in str(info.value)
    assert slack.messages == []


@pytest.mark.parametrize("code", ["channel_not_found", "not_in_channel", "invalid_auth"])
def test_permanent_errors_say_what_to_fix(slack: FakeSlack, code: str) -> None:
    slack.script = [Reply(error=code)]
    with pytest.raises(AlertError) as info:
        alerter(slack).send(ALERT)
    assert info.value.permanent and code in str(info.value) and "#china-desk" in str(info.value)
    assert "xoxb" not in str(info.value)


def test_unreachable_slack_is_a_retryable_failure() -> None:
    client = WebClient(
        token="xoxb-test-token",
        base_url="http://127.0.0.1:9/api/",
        timeout=2,
        retry_handlers=retry_handlers(max_retry=1),
    )
    with pytest.raises(AlertError) as info:
        SlackAlerter(client).send(ALERT)
    assert not info.value.permanent

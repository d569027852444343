"""The Slack sinks through slack-sdk's real clients against a fake Slack."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.models.blocks import MarkdownTextObject, SectionBlock
from slack_sdk.webhook import WebhookClient

from monitor import feedback
from monitor.alert.blocks import (
    BLOCKS_MAX,
    HEADER_MAX,
    SECTION_MAX,
    as_json,
    escape,
    marked,
    pages,
    render,
)
from monitor.alert.slack import SlackAlerter, WebhookAlerter, retry_handlers
from monitor.errors import AlertError
from monitor.models import Outgoing, Story
from tests.servers import FakeSlack, Reply, channel_id

STORY = Story(
    title="Qin Gang <b>missing</b> & <!channel>",
    url="https://news.example/qin?a=1&b=2",
    feed="world",
    published=datetime(2023, 7, 24, 9, 30, tzinfo=UTC),
    matched=["Qin Gang", "military dialogue"],
    snippet="Questions grew over Qin Gang <@U1>.",
    highlights=[(20, 28)],
    strength="about",
)
ALERT = Outgoing(
    delivery_id=1,
    key="us-china|url:https://news.example/qin|#china-desk",
    kind="alert",
    watchlist="us-china",
    channel="#china-desk",
    stories=[STORY],
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


def test_render_alert() -> None:
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


def test_render_mention_and_notify() -> None:
    mention = Outgoing(
        **{**ALERT.__dict__, "stories": [Story(**{**STORY.__dict__, "strength": "mention"})]}
    )
    assert render(mention)[1][1]["elements"][1]["text"].startswith("Mentions: ")
    notified = Outgoing(**{**ALERT.__dict__, "mentions": ["U0123ABCD", "S0123ABCD", "here"]})
    text, blocks = render(notified)
    assert text.startswith("<@U0123ABCD> <!subteam^S0123ABCD> <!here> Qin Gang")
    assert blocks[0]["text"]["text"].startswith("<@U0123ABCD> <!subteam^S0123ABCD> <!here> *<")


def test_render_followup() -> None:
    followup = Outgoing(
        **{
            **ALERT.__dict__,
            "kind": "followup",
            "thread_ts": "1.2",
            "stories": [Story(**{**STORY.__dict__, "feed": "asia"})],
        }
    )
    text, blocks = render(followup)
    assert text.startswith("Also reported by asia: Qin Gang &lt;b&gt;")
    assert blocks[0]["type"] == "context"
    assert "Also reported by *asia*" in blocks[0]["elements"][0]["text"]


def test_render_digest_groups_and_fits_slack_limits() -> None:
    stories = [
        Story(
            **{
                **STORY.__dict__,
                "title": f"Story {i} " + "x" * 200,
                "matched": ["Qin Gang" if i % 3 else "fentanyl"],
            }
        )
        for i in range(120)
    ]
    digest = Outgoing(
        delivery_id=9,
        key="d",
        kind="digest",
        watchlist="us-china",
        channel="#china-desk",
        stories=stories,
        label="until Mon 08:00 BST",
    )
    text, blocks = render(digest)
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == "us-china: 120 stories until Mon 08:00 BST"
    assert len(blocks[0]["text"]["text"]) <= HEADER_MAX
    assert len(blocks) <= BLOCKS_MAX
    assert all(len(b["text"]["text"]) <= SECTION_MAX for b in blocks if b["type"] == "section")
    assert blocks[1]["text"]["text"].startswith("*Qin Gang* (80)")
    assert any(b["text"]["text"].startswith("*fentanyl* (40)") for b in blocks[1:])
    assert len(text) <= 3000 and text.startswith("us-china: 120 stories")


def test_a_flood_lists_every_story_in_its_thread_in_pages_slack_accepts(
    slack: FakeSlack,
) -> None:
    stories = [
        Story(
            **{
                **STORY.__dict__,
                "title": f"Story {i} <&> " + "x" * 480,
                "url": f"https://n.example/{i}",
            }
        )
        for i in range(90)
    ]
    flood = Outgoing(9, "f", "flood", "us-china", "#china-desk", stories, label="90 alerts")
    SlackAlerter(WebClient(base_url=slack.api_url, token="xoxb-1")).send(flood)
    parent, *pages = slack.messages
    assert "thread_ts" not in parent and all(p["thread_ts"] == parent["ts"] for p in pages)
    assert [p["text"] for p in pages] == [
        f"Alerts {i + 1}–{min(i + 15, 90)} of 90" for i in range(0, 90, 15)
    ]
    listed = []
    for page in pages:
        assert len(page["blocks"]) <= BLOCKS_MAX
        sections = [b["text"]["text"] for b in page["blocks"] if b["type"] == "section"]
        assert all(len(t) <= SECTION_MAX for t in sections)
        listed += re.findall(r"<https://n\.example/(\d+)\|", "\n".join(sections))
    assert listed == [str(i) for i in range(90)]  # every one, in order, once
    # the message itself shows the first 20 and says where the rest are
    assert "all are listed in the thread" in json.dumps(parent["blocks"])
    assert json.dumps(parent["blocks"]).count("https://n.example/") == 20


def test_each_alert_in_a_thread_page_has_its_buttons_and_a_click_marks_only_it() -> None:
    stories = [Story(**{**STORY.__dict__, "match_id": 100 + i}) for i in range(15)]
    [(_, page)] = pages(stories)
    assert len(page) == 31 and [b["type"] for b in page[1:3]] == ["section", "actions"]
    values = [e["value"] for b in page if b["type"] == "actions" for e in b["elements"]]
    assert values == [str(100 + i) for i in range(15) for _ in range(2)]
    mark = feedback.Mark(feedback.Verdict.MUTE_STORY, "U1", "ana", datetime.now(UTC))
    clicked = marked(page, 103, [mark])
    assert clicked[:8] == page[:8] and clicked[10:] == page[9:]  # the others untouched
    assert clicked[8]["elements"][0]["text"] == "Muted by @ana"
    assert clicked[9]["block_id"] == "monitor_feedback:103"
    # every one of a full page marked: still within Slack's 50 blocks
    for story in stories:
        page = marked(page, story.match_id or 0, [mark])
    assert len(page) == 46 <= BLOCKS_MAX


def test_a_flood_of_a_page_or_less_is_listed_in_one_reply(slack: FakeSlack) -> None:
    flood = Outgoing(9, "f", "flood", "us-china", "#china-desk", [STORY] * 3, label="3 alerts")
    SlackAlerter(WebClient(base_url=slack.api_url, token="xoxb-1")).send(flood)
    assert [m.get("text") for m in slack.messages[1:]] == ["Alerts 1–3 of 3"]


def test_render_refuses_non_http_links_and_clips_long_text() -> None:
    story = Story(
        **{
            **STORY.__dict__,
            "url": "javascript:alert(1)",
            "title": "x" * 5000,
            "snippet": "y" * 5000,
            "highlights": [],
        }
    )
    text, blocks = render(Outgoing(**{**ALERT.__dict__, "stories": [story]}))
    assert "javascript" not in text + json.dumps(blocks)
    assert len(text) <= 3000
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")


def test_posts_through_the_web_api_with_its_tag(slack: FakeSlack) -> None:
    sent = alerter(slack).send(ALERT)
    [message] = slack.messages
    assert sent.ts == message["ts"] and sent.channel_id == channel_id("#china-desk")
    assert message["channel"] == "#china-desk"
    assert message["unfurl_links"] is False and message["unfurl_media"] is False
    assert message["blocks"] == render(ALERT)[1]
    assert message["metadata"] == {
        "event_type": "monitor_alert",
        "event_payload": {"tag": ALERT.tag},
    }


def test_followup_goes_into_the_thread(slack: FakeSlack) -> None:
    parent = alerter(slack).send(ALERT)
    followup = Outgoing(
        **{
            **ALERT.__dict__,
            "delivery_id": 2,
            "key": ALERT.key + "|also|7",
            "kind": "followup",
            "thread_ts": parent.ts,
        }
    )
    alerter(slack).send(followup)
    assert slack.messages[1]["thread_ts"] == parent.ts


def test_find_a_lost_send_by_its_tag(slack: FakeSlack) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    sink = alerter(slack)
    assert sink.find(ALERT, since) is None
    slack.script = [Reply(lose=True)]
    with pytest.raises(AlertError):
        sink.send(ALERT)  # posted, but the answer never came
    assert len(slack.messages) == 1
    found = alerter(slack).find(ALERT, since)  # a fresh process knows no channel IDs
    assert found is not None and found.ts == slack.messages[0]["ts"]
    other = Outgoing(**{**ALERT.__dict__, "key": "another"})
    assert alerter(slack).find(other, since) is None


def test_rate_limited_then_success_honours_retry_after(slack: FakeSlack) -> None:
    slack.script = [Reply(status=429, retry_after=1)]
    started = time.monotonic()
    alerter(slack).send(ALERT)
    assert time.monotonic() - started >= 1.0  # waited as Slack asked
    assert slack.calls == 2 and len(slack.messages) == 1


def test_rate_limit_outlasting_the_retries_reports_retry_after(slack: FakeSlack) -> None:
    client = WebClient(
        token="xoxb-test-token", base_url=slack.api_url, timeout=5, retry_handlers=[]
    )
    slack.script = [Reply(status=429, retry_after=7)]
    with pytest.raises(AlertError) as info:
        SlackAlerter(client).send(ALERT)
    assert info.value.retry_after == 7 and not info.value.permanent


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


def test_webhook(slack: FakeSlack) -> None:
    sink = WebhookAlerter(WebhookClient(slack.webhook_url, retry_handlers=retry_handlers()))
    sink.send(ALERT)
    assert slack.messages[0]["blocks"] == render(ALERT)[1]
    assert sink.find(ALERT, datetime.now(UTC)) is None


def mrkdwn_of(text: str, blocks: list[dict[str, Any]]) -> list[str]:
    """Every mrkdwn string of a message: the fallback text, sections, context elements."""
    out = [text]
    for block in blocks:
        if block["type"] == "section":
            out.append(block["text"]["text"])
        if block["type"] == "context":
            out += [e["text"] for e in block["elements"]]
    return out


def assert_well_formed(strings: list[str]) -> None:
    for s in strings:
        assert not re.search(r"&(?!amp;|lt;|gt;)", s), f"a cut escape in {s[-40:]!r}"
        body = s.removeprefix("> ")  # a quote's mark
        assert body.count("<") == body.count(">"), f"a cut link in {s[-60:]!r}"
        assert len(s) <= 3000


def test_clipping_never_cuts_an_escape_or_a_link() -> None:
    long_url = "https://news.example/" + "a&b" * 1200  # no section holds it whole
    for title in ("&" * 700, "Q&A: <Qin Gang> " * 60, "x" * 2990 + "&&&&"):
        story = Story(**{**STORY.__dict__, "title": title, "url": long_url, "snippet": "a&b" * 600})
        alert = Outgoing(**{**ALERT.__dict__, "stories": [story]})
        text, blocks = render(alert)
        assert_well_formed(mrkdwn_of(text, blocks))
        headline = blocks[0]["text"]["text"]
        assert "news.example" not in headline + text  # dropped, not cut
        assert headline.startswith("*" + escape(title[:3])) and headline.endswith("*")
        digest = Outgoing(**{**ALERT.__dict__, "kind": "digest", "stories": [story] * 3})
        assert_well_formed(mrkdwn_of(*render(digest)))


def test_a_link_that_fits_is_kept_whole() -> None:
    url = "https://news.example/" + "a" * 2000
    story = Story(**{**STORY.__dict__, "title": "Qin & Wang", "url": url})
    text, blocks = render(Outgoing(**{**ALERT.__dict__, "stories": [story]}))
    assert blocks[0]["text"]["text"] == f"*<{url}|Qin &amp; Wang>*"
    assert text == f"Qin &amp; Wang {url}"


def test_a_layout_slack_would_refuse_is_a_permanent_failure() -> None:
    notice = Outgoing(**{**ALERT.__dict__, "kind": "notice", "stories": [], "label": "x"})
    assert render(notice)[1] == [
        {"type": "section", "text": {"type": "mrkdwn", "text": ":warning: x"}}
    ]
    with pytest.raises(AlertError) as info:
        as_json([SectionBlock(text=MarkdownTextObject(text="y" * 3001))])
    assert info.value.permanent and "3000" in str(info.value)
    with pytest.raises(AlertError) as info:
        as_json([SectionBlock(text=MarkdownTextObject(text="y"))] * 51)
    assert info.value.permanent

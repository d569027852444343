"""Slack sinks: Block Kit messages through slack-sdk, with its retry handlers.

Every piece of feed text is escaped for mrkdwn before it is placed in a message, so
a headline can never ping `<!channel>`, mention someone or fake a link. Mentions come
only from the watchlist's `notify`. Each message carries its delivery's tag in
Slack message metadata, so a send whose answer was lost can be found again.
"""

from __future__ import annotations

import http.client
import re
from collections import defaultdict
from datetime import datetime
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient

from monitor.errors import AlertError
from monitor.models import Outgoing, Sent, Story

EVENT_TYPE = "monitor_alert"
# Errors that no retry can fix: someone has to change Slack or the config.
PERMANENT = {
    "channel_not_found": "the channel does not exist: check `channel` in the watchlist",
    "not_in_channel": "the bot is not in the channel: invite it (/invite @your-bot)",
    "is_archived": "the channel is archived",
    "invalid_auth": "the token is invalid: check SLACK_BOT_TOKEN",
    "not_authed": "no token was sent: set SLACK_BOT_TOKEN",
    "account_inactive": "the token belongs to a deactivated app or user",
    "token_revoked": "the token was revoked: issue a new one",
    "missing_scope": "the token lacks a scope (chat:write; channels:history and "
    "channels:read to check lost sends)",
    "msg_too_long": "the message is too long",
    "invalid_blocks": "Slack rejected the message layout",
    "restricted_action": "the workspace does not let this app post there",
}
SECTION_MAX = 3000  # characters in a section's text
HEADER_MAX = 150  # characters in a header
BLOCKS_MAX = 50  # blocks in a message
_TEXT_MAX = 3000
_CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{8,}$")


def escape(text: str) -> str:
    """Slack's three control characters; everything else is literal in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _safe_url(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return escape(url).replace("|", "%7C")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _title(story: Story) -> str:
    return _clip(" ".join(story.title.split()) or "(untitled)", 500)


def _link(story: Story) -> str:
    url = _safe_url(story.url)
    return f"<{url}|{escape(_title(story))}>" if url else escape(_title(story))


def _when(story: Story) -> str:
    return story.published.strftime("%Y-%m-%d %H:%M UTC") if story.published else "undated"


def _bold_hits(snippet: str, highlights: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for start, end in sorted(highlights):
        if start < pos or end > len(snippet):
            continue
        out.append(escape(snippet[pos:start]))
        out.append(f"*{escape(snippet[start:end])}*")
        pos = end
    out.append(escape(snippet[pos:]))
    return "".join(out)


def _mentions(ids: list[str]) -> str:
    """Slack's mention syntax for the watchlist's own notify list (never feed text)."""
    parts = []
    for ident in ids:
        if ident in ("here", "channel"):
            parts.append(f"<!{ident}>")
        elif ident.startswith("S"):
            parts.append(f"<!subteam^{ident}>")
        else:
            parts.append(f"<@{ident}>")
    return " ".join(parts)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SECTION_MAX)}}


def render(out: Outgoing) -> tuple[str, list[dict[str, Any]]]:
    """The notification fallback `text` (always title and URL) and the Block Kit `blocks`."""
    if out.kind == "digest":
        return _render_digest(out)
    if out.kind == "notice":
        return escape(out.label), [_section(f":warning: {escape(out.label)}")]
    [story] = out.stories[:1] or [Story("(story unavailable)", None, "", None, [], "", [])]
    url = _safe_url(story.url)
    if out.kind == "followup":
        text = _clip(
            f"Also reported by {escape(story.feed)}: {escape(_title(story))} {url or ''}".strip(),
            _TEXT_MAX,
        )
        return text, [
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _clip(
                            f"Also reported by *{escape(story.feed)}* · {_when(story)}: "
                            f"{_link(story)}",
                            SECTION_MAX,
                        ),
                    }
                ],
            }
        ]
    ping = _mentions(out.mentions)
    text = _clip(" ".join(p for p in (ping, escape(_title(story)), url or "") if p), _TEXT_MAX)
    headline = f"*{_link(story)}*"
    blocks: list[dict[str, Any]] = [_section(f"{ping} {headline}" if ping else headline)]
    what = "About" if story.strength == "about" else "Mentions"
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": _clip(f"{escape(story.feed)} · {_when(story)}", 300)},
                {
                    "type": "mrkdwn",
                    "text": _clip(
                        f"{what}: " + ", ".join(f"*{escape(m)}*" for m in story.matched), 300
                    ),
                },
            ],
        }
    )
    if story.snippet:
        quote = _bold_hits(_clip(story.snippet, 1000), story.highlights)
        blocks.append(_section("> " + quote.replace("\n", " ")))
    return text, blocks


def _render_digest(out: Outgoing) -> tuple[str, list[dict[str, Any]]]:
    count = len(out.stories)
    title = f"{out.watchlist}: {count} {'story' if count == 1 else 'stories'} {out.label}"
    groups: dict[str, list[Story]] = defaultdict(list)
    for story in out.stories:
        groups[story.matched[0] if story.matched else "other"].append(story)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, HEADER_MAX)}}
    ]
    for term, stories in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines = [f"*{escape(term)}* ({len(stories)})"]
        for story in stories:
            lines.append(f"• {_link(story)} — {escape(story.feed)}, {_when(story)}")
        text = ""
        for line in lines:  # one section per ~3,000 characters
            if len(text) + len(line) + 1 > SECTION_MAX:
                blocks.append(_section(text))
                text = ""
            text = f"{text}\n{line}" if text else line
        blocks.append(_section(text))
    if len(blocks) > BLOCKS_MAX:
        blocks = blocks[: BLOCKS_MAX - 1] + [_section("… more in `monitor matches`")]
    fallback = f"{escape(title)}: " + "; ".join(
        f"{escape(_title(s))} {_safe_url(s.url) or ''}".strip() for s in out.stories
    )
    return _clip(fallback, _TEXT_MAX), blocks


def message(out: Outgoing) -> dict[str, Any]:
    """The chat.postMessage arguments for `out`, tagged so a lost send can be found."""
    text, blocks = render(out)
    payload: dict[str, Any] = {
        "channel": out.channel,
        "text": text,
        "blocks": blocks,
        "unfurl_links": False,
        "unfurl_media": False,
        "metadata": {"event_type": EVENT_TYPE, "event_payload": {"tag": out.tag}},
    }
    if out.thread_ts:
        payload["thread_ts"] = out.thread_ts
    return payload


def retry_handlers(max_retry: int = 2) -> list[RetryHandler]:
    """Retries that cannot double a message: a refused connection (URLError: nothing was
    sent), 429 and 5xx. A connection dropped after the request went out is not retried
    here: the deliverer looks in the channel first (see `find`)."""
    return [
        ConnectionErrorRetryHandler(max_retry_count=max_retry, error_types=[URLError]),
        RateLimitErrorRetryHandler(max_retry_count=max_retry),
        ServerErrorRetryHandler(max_retry_count=max_retry),
    ]


def _failure(exc: Exception, channel: str) -> AlertError:
    if isinstance(exc, SlackApiError) and exc.response is not None:
        code = str(exc.response.get("error", ""))
        status = exc.response.status_code
        if code in PERMANENT:
            return AlertError(f"slack: {code} in {channel}: {PERMANENT[code]}", permanent=True)
        retry_after = None
        if status == 429:
            header = exc.response.headers.get("retry-after") or exc.response.headers.get(
                "Retry-After"
            )
            retry_after = float(header[0] if isinstance(header, list) else header or 30)
        return AlertError(
            f"slack: {code or 'error'} (HTTP {status}) in {channel}", retry_after=retry_after
        )
    unknown = isinstance(exc, ConnectionResetError | TimeoutError | http.client.HTTPException)
    return AlertError(f"slack: {type(exc).__name__}: {exc}", unknown_outcome=unknown)


class SlackAlerter:
    name = "slack"

    def __init__(self, client: WebClient) -> None:
        self._client = client
        self._ids: dict[str, str] = {}

    def send(self, out: Outgoing) -> Sent:
        try:
            resp = self._client.chat_postMessage(**message(out))
        except (SlackClientError, OSError) as exc:
            raise _failure(exc, out.channel) from exc
        channel_id = str(resp.get("channel") or "") or None
        if channel_id:
            self._ids[out.channel] = channel_id
        return Sent(ts=str(resp.get("ts") or "") or None, channel_id=channel_id)

    def find(self, out: Outgoing, since: datetime) -> Sent | None:
        """Searches the channel (or the thread) for a message carrying the delivery's tag."""
        try:
            channel_id = out.channel_id or self._channel_id(out.channel)
            oldest = f"{since.timestamp() - 60:.6f}"
            cursor = None
            while True:
                if out.thread_ts:
                    resp = self._client.conversations_replies(
                        channel=channel_id,
                        ts=out.thread_ts,
                        oldest=oldest,
                        limit=200,
                        include_all_metadata=True,
                        cursor=cursor,
                    )
                else:
                    resp = self._client.conversations_history(
                        channel=channel_id,
                        oldest=oldest,
                        limit=200,
                        include_all_metadata=True,
                        cursor=cursor,
                    )
                for message in resp.get("messages") or []:
                    payload = (message.get("metadata") or {}).get("event_payload") or {}
                    if payload.get("tag") == out.tag:
                        return Sent(ts=message.get("ts"), channel_id=channel_id)
                cursor = (resp.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    return None
        except (SlackClientError, OSError) as exc:
            raise _failure(exc, out.channel) from exc

    def _channel_id(self, channel: str) -> str:
        if _CHANNEL_ID.match(channel):
            return channel
        if channel in self._ids:
            return self._ids[channel]
        name = channel.lstrip("#")
        cursor = None
        while True:
            resp = self._client.conversations_list(
                types="public_channel,private_channel",
                exclude_archived=True,
                limit=1000,
                cursor=cursor,
            )
            for found in resp.get("channels") or []:
                if found.get("name") == name:
                    self._ids[channel] = str(found["id"])
                    return self._ids[channel]
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                raise AlertError(
                    f"slack: no channel named {channel} is visible to the bot", permanent=True
                )


class WebhookAlerter:
    """Incoming webhook: its channel is fixed by the URL, it cannot thread, and it cannot
    look for a lost send, so a crash mid-send may repeat that one message."""

    name = "webhook"

    def __init__(self, client: WebhookClient) -> None:
        self._client = client

    def send(self, out: Outgoing) -> Sent:
        text, blocks = render(out)
        try:
            resp = self._client.send(
                text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
            )
        except (SlackClientError, OSError) as exc:
            raise _failure(exc, out.channel) from exc
        if resp.status_code != 200:
            permanent = resp.status_code in (400, 403, 404, 410)
            raise AlertError(
                f"slack webhook: HTTP {resp.status_code} {resp.body}", permanent=permanent
            )
        return Sent()

    def find(self, out: Outgoing, since: datetime) -> Sent | None:
        return None

"""Slack sinks: Block Kit messages built from slack-sdk's typed blocks (which check
Slack's limits), sent through its clients with its retry handlers.

Every piece of feed text is escaped for mrkdwn as it is placed in a message, so a
headline can never ping `<!channel>`, mention someone or fake a link; text is clipped
before it is escaped and links are never cut. Mentions come only from the watchlist's
`notify`. Each message carries its delivery's tag in Slack message metadata, so a send
whose answer was lost can be found again.
"""

from __future__ import annotations

import http.client
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError, SlackObjectFormationError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.webhook import WebhookClient

from monitor.errors import AlertError
from monitor.models import DeliveryKind, Outgoing, Sent, Story

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
SECTION_MAX = 3000  # characters in a section's text (the SDK checks it too)
HEADER_MAX = 150  # characters in a header (the SDK checks it too)
BLOCKS_MAX = 50  # blocks in a message
CONTEXT_MAX = 300  # characters we allow one context element: a line, not a page
TEXT_MAX = 3000  # characters of the notification fallback `text`
TITLE_MAX = 500  # characters of a headline, before escaping
SNIPPET_MAX = 1000
_CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{8,}$")
_WIDTH = {"&": 5, "<": 4, ">": 4}  # what escaping makes of Slack's control characters


def escape(text: str) -> str:
    """Slack's three control characters; everything else is literal in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# A message's text is put together from pieces, then fitted to a limit: plain text is
# clipped before it is escaped (never `&am…`), our own markup and links are whole or
# absent (never `<https://news.example/aaa…`). A link that does not fit leaves its
# label, as plain text.


@dataclass(frozen=True)
class Plain:
    """Text from a feed, escaped when it is placed; clipped if it must be."""

    text: str
    bold: bool = False


@dataclass(frozen=True)
class Mark:
    """Our own markup (mentions, quote marks, separators), or a bare escaped URL: whole."""

    text: str


@dataclass(frozen=True)
class Link:
    url: str | None  # escaped, as _safe_url gives it; None for no link
    label: str
    bold: bool = False


Piece = Plain | Mark | Link


def _clip_escaped(text: str, room: int) -> str:
    """The longest start of `text` whose escaped form and an ellipsis fit `room`, for a
    text whose escaped form does not."""
    used = 0
    for end, char in enumerate(text):
        used += _WIDTH.get(char, 1)
        if used + 1 > room:
            return escape(text[:end].rstrip()) + "…"
    return escape(text)


def fit(pieces: Sequence[Piece], limit: int) -> str:
    """The pieces as mrkdwn, at most `limit` characters; what does not fit is left off
    (plain text clipped with an ellipsis)."""
    out: list[str] = []
    used = 0
    for piece in pieces:
        room = limit - used
        if isinstance(piece, Link) and piece.url:
            label = f"<{piece.url}|{escape(piece.label)}>"
            text = f"*{label}*" if piece.bold else label
            if len(text) <= room:
                out.append(text)
                used += len(text)
                continue
            piece = Plain(piece.label, piece.bold)  # the link is dropped, the label stays
        elif isinstance(piece, Link):
            piece = Plain(piece.label, piece.bold)
        if isinstance(piece, Mark):
            if len(piece.text) > room:
                break
            out.append(piece.text)
            used += len(piece.text)
            continue
        stars = "*" if piece.bold and piece.text.strip() else ""
        whole = escape(piece.text)
        if len(whole) + 2 * len(stars) <= room:
            out.append(f"{stars}{whole}{stars}")
            used += len(whole) + 2 * len(stars)
            continue
        if room > 2 * len(stars) + 1:
            out.append(f"{stars}{_clip_escaped(piece.text, room - 2 * len(stars))}{stars}")
        break
    return "".join(out).rstrip()


def _safe_url(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return escape(url).replace("|", "%7C")


def _plain_clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _title(story: Story) -> str:
    return _plain_clip(" ".join(story.title.split()) or "(untitled)", TITLE_MAX)


def _link(story: Story, bold: bool = False) -> Link:
    return Link(_safe_url(story.url), _title(story), bold)


def _when(story: Story) -> str:
    return story.published.strftime("%Y-%m-%d %H:%M UTC") if story.published else "undated"


def _bold_hits(snippet: str, highlights: list[tuple[int, int]]) -> list[Piece]:
    out: list[Piece] = []
    pos = 0
    for start, end in sorted(highlights):
        if start < pos or end > len(snippet):
            continue
        out += [Plain(snippet[pos:start]), Plain(snippet[start:end], bold=True)]
        pos = end
    out.append(Plain(snippet[pos:]))
    return [p for p in out if not isinstance(p, Plain) or p.text]


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


def _section(*pieces: Piece) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=fit(pieces, SECTION_MAX)))


def _context(*elements: tuple[Sequence[Piece], int]) -> ContextBlock:
    return ContextBlock(
        elements=[MarkdownTextObject(text=fit(pieces, limit)) for pieces, limit in elements]
    )


def _text(*stories: tuple[Sequence[Piece], Story]) -> str:
    """The notification fallback: each story's title and bare URL after its lead."""
    pieces: list[Piece] = []
    for lead, story in stories:
        if pieces:
            pieces.append(Mark("; "))
        pieces += [*lead, Plain(_title(story))]
        if url := _safe_url(story.url):
            pieces.append(Mark(f" {url}"))
    return fit(pieces, TEXT_MAX)


def render(out: Outgoing) -> tuple[str, list[dict[str, Any]]]:
    """The notification fallback `text` (always title and URL) and the Block Kit
    `blocks`, built as slack-sdk's typed blocks, which check Slack's limits."""
    text, blocks = _render(out)
    return text, as_json(blocks)


def as_json(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    """The blocks as Slack takes them, checked by slack-sdk against Slack's limits: a
    message Slack would refuse is a permanent failure, never sent to be refused."""
    if len(blocks) > BLOCKS_MAX:
        raise AlertError(f"cannot build the message: {len(blocks)} blocks", permanent=True)
    try:
        return [block.to_dict() for block in blocks]
    except SlackObjectFormationError as exc:
        raise AlertError(f"cannot build the message: {exc}", permanent=True) from exc


def _render(out: Outgoing) -> tuple[str, list[Block]]:
    if out.kind in (DeliveryKind.DIGEST, DeliveryKind.FLOOD):
        return _render_listing(out)
    if out.kind == DeliveryKind.NOTICE:
        return fit([Plain(out.label)], TEXT_MAX), [_section(Mark(":warning: "), Plain(out.label))]
    [story] = out.stories[:1] or [Story("(story unavailable)", None, "", None, [], "", [])]
    if out.kind == DeliveryKind.FOLLOWUP:
        also: list[Piece] = [
            Mark("Also reported by "),
            Plain(story.feed, bold=True),
            Mark(f" · {_when(story)}: "),
            _link(story),
        ]
        by: list[Piece] = [Mark("Also reported by "), Plain(story.feed), Mark(": ")]
        return _text((by, story)), [_context((also, SECTION_MAX))]
    ping = _mentions(out.mentions)
    lead: list[Piece] = [Mark(f"{ping} ")] if ping else []
    what = "About" if story.strength == "about" else "Mentions"
    terms: list[Piece] = [Mark(f"{what}: ")]
    for i, term in enumerate(story.matched):
        terms += [Mark(", ")] if i else []
        terms.append(Plain(term, bold=True))
    blocks: list[Block] = [
        _section(*lead, _link(story, bold=True)),
        _context(([Plain(f"{story.feed} · {_when(story)}")], CONTEXT_MAX), (terms, CONTEXT_MAX)),
    ]
    if story.snippet:
        snippet = _plain_clip(story.snippet, SNIPPET_MAX).replace("\n", " ")
        blocks.append(_section(Mark("> "), *_bold_hits(snippet, story.highlights)))
    return _text((lead, story)), blocks


def _lines(lines: Sequence[str]) -> list[Block]:
    """Lines of a list packed into as few sections as Slack's limit allows."""
    blocks: list[Block] = []
    text = ""
    for line in lines:
        if text and len(text) + len(line) + 1 > SECTION_MAX:
            blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
            text = ""
        text = f"{text}\n{line}" if text else line
    if text:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
    return blocks


def _entry(story: Story) -> str:
    return fit([Mark("• "), _link(story), Plain(f" — {story.feed}, {_when(story)}")], SECTION_MAX)


def _render_listing(out: Outgoing) -> tuple[str, list[Block]]:
    """A digest (the period's stories by entity or topic) or a flood (its count, then
    the first ones, and where to find them all)."""
    if out.kind == DeliveryKind.FLOOD:
        title = f"{out.watchlist}: {out.label}"
        listed = "`monitor matches`"
        if ", " not in out.watchlist:  # one watchlist (a flood may span a channel's several)
            listed = f"`monitor matches --watchlist {out.watchlist}`"
        note = f"The first {len(out.stories)} of them; all, and why they matched: {listed}"
        blocks: list[Block] = [
            HeaderBlock(text=PlainTextObject(text=_plain_clip(title, HEADER_MAX))),
            _context(([Mark(note)], CONTEXT_MAX)),
            *_lines([_entry(story) for story in out.stories]),
        ]
    else:
        count = len(out.stories)
        title = f"{out.watchlist}: {count} {'story' if count == 1 else 'stories'} {out.label}"
        groups: dict[str, list[Story]] = defaultdict(list)
        for story in out.stories:
            groups[story.matched[0] if story.matched else "other"].append(story)
        blocks = [HeaderBlock(text=PlainTextObject(text=_plain_clip(title, HEADER_MAX)))]
        for term, stories in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            heading = fit([Plain(term, bold=True), Mark(f" ({len(stories)})")], SECTION_MAX)
            blocks += _lines([heading, *(_entry(story) for story in stories)])
    if len(blocks) > BLOCKS_MAX:
        blocks = [*blocks[: BLOCKS_MAX - 1], _section(Mark("… more in `monitor matches`"))]
    if not out.stories:
        return fit([Plain(title)], TEXT_MAX), blocks
    first: list[Piece] = [Plain(title), Mark(": ")]
    return _text(*((first if i == 0 else [], story) for i, story in enumerate(out.stories))), blocks


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
    paced = True

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
    paced = True

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

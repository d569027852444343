"""Slack sink: Block Kit alerts through slack-sdk, with its retry handlers.

Every piece of feed text is escaped for mrkdwn before it is placed in a message, so
a headline can never ping `<!channel>`, mention someone or fake a link.
"""

from __future__ import annotations

from typing import Any
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
from monitor.models import Alert

# Errors that no retry can fix: someone has to change Slack or the config.
PERMANENT = {
    "channel_not_found": "the channel does not exist: check `channel` in the watchlist",
    "not_in_channel": "the bot is not in the channel: invite it (/invite @your-bot)",
    "is_archived": "the channel is archived",
    "invalid_auth": "the token is invalid: check SLACK_BOT_TOKEN",
    "not_authed": "no token was sent: set SLACK_BOT_TOKEN",
    "account_inactive": "the token belongs to a deactivated app or user",
    "token_revoked": "the token was revoked: issue a new one",
    "missing_scope": "the token lacks the chat:write scope",
    "msg_too_long": "the message is too long",
    "invalid_blocks": "Slack rejected the message layout",
    "restricted_action": "the workspace does not let this app post there",
}
_SECTION_MAX = 3000
_TEXT_MAX = 3000


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


def render(alert: Alert) -> tuple[str, list[dict[str, Any]]]:
    """The notification fallback `text` (title and URL) and the Block Kit `blocks`."""
    title = _clip(" ".join(alert.title.split()) or "(untitled)", 500)
    url = _safe_url(alert.url)
    text = _clip(f"{escape(title)} {url or ''}".strip(), _TEXT_MAX)
    headline = f"*<{url}|{escape(title)}>*" if url else f"*{escape(title)}*"
    when = alert.published.strftime("%Y-%m-%d %H:%M UTC") if alert.published else "undated"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(headline, _SECTION_MAX)}},
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": _clip(f"{escape(alert.feed)} · {when}", 300)},
                {
                    "type": "mrkdwn",
                    "text": _clip(
                        ("About: " if alert.strength == "about" else "Mentions: ")
                        + ", ".join(f"*{escape(m)}*" for m in alert.matched),
                        300,
                    ),
                },
            ],
        },
    ]
    if alert.snippet:
        quote = _bold_hits(_clip(alert.snippet, 1000), alert.highlights)
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip("> " + quote.replace("\n", " "), _SECTION_MAX),
                },
            }
        )
    return text, blocks


def retry_handlers(max_retry: int = 2) -> list[RetryHandler]:
    return [
        ConnectionErrorRetryHandler(max_retry_count=max_retry),
        RateLimitErrorRetryHandler(max_retry_count=max_retry),
        ServerErrorRetryHandler(max_retry_count=max_retry),
    ]


def _failure(exc: Exception, channel: str) -> AlertError:
    if isinstance(exc, SlackApiError):
        code = str(exc.response.get("error", "")) if exc.response is not None else ""
        status = getattr(exc.response, "status_code", None)
        if code in PERMANENT:
            return AlertError(f"slack: {code} in {channel}: {PERMANENT[code]}", permanent=True)
        return AlertError(f"slack: {code or 'error'} (HTTP {status}) in {channel}")
    return AlertError(f"slack: {type(exc).__name__}: {exc}")


class SlackAlerter:
    name = "slack"

    def __init__(self, client: WebClient) -> None:
        self._client = client

    def send(self, alert: Alert) -> str | None:
        text, blocks = render(alert)
        try:
            resp = self._client.chat_postMessage(
                channel=alert.channel,
                text=text,
                blocks=blocks,
                unfurl_links=False,
                unfurl_media=False,
            )
        except (SlackClientError, OSError) as exc:
            raise _failure(exc, alert.channel) from exc
        return str(resp.get("ts") or "") or None


class WebhookAlerter:
    """Incoming webhook: its channel is fixed by the URL, so `channel` is informational."""

    name = "webhook"

    def __init__(self, client: WebhookClient) -> None:
        self._client = client

    def send(self, alert: Alert) -> str | None:
        text, blocks = render(alert)
        try:
            resp = self._client.send(
                text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
            )
        except (SlackClientError, OSError) as exc:
            raise _failure(exc, alert.channel) from exc
        if resp.status_code != 200:
            permanent = resp.status_code in (400, 403, 404, 410)
            raise AlertError(
                f"slack webhook: HTTP {resp.status_code} {resp.body}", permanent=permanent
            )
        return None

"""Slack sinks: messages rendered by blocks.py, sent through slack-sdk's clients with its
retry handlers. Each message carries its delivery's tag in Slack message metadata, so a
send whose answer was lost can be found again; a digest or flood message lists every
alert it stands for in its thread, in pages Slack accepts.
"""

from __future__ import annotations

import http.client
import logging
import re
from datetime import datetime
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient

from monitor.alert.blocks import message, pages, render
from monitor.errors import AlertError
from monitor.models import DeliveryKind, Outgoing, Sent

log = logging.getLogger(__name__)

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
_CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{8,}$")


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
        sent = Sent(ts=str(resp.get("ts") or "") or None, channel_id=channel_id)
        if out.kind in (DeliveryKind.DIGEST, DeliveryKind.FLOOD) and sent.ts:
            self._list_in_thread(out, channel_id or out.channel, sent.ts)
        return sent

    def _list_in_thread(self, out: Outgoing, channel: str, ts: str) -> None:
        """Every alert a digest or flood stands for, in its thread. The message itself is
        already posted, so a page that fails is logged, never raised: raising would send
        the message again."""
        listing = pages(out.stories)
        for number, (text, blocks) in enumerate(listing, 1):
            try:
                self._client.chat_postMessage(
                    channel=channel,
                    thread_ts=ts,
                    text=text,
                    blocks=blocks,
                    unfurl_links=False,
                    unfurl_media=False,
                )
            except (SlackClientError, OSError) as exc:
                log.warning(
                    "thread listing page not posted",
                    extra={
                        "delivery_id": out.delivery_id,
                        "page": f"{number}/{len(listing)}",
                        "error": str(_failure(exc, out.channel)),
                    },
                )
                return

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

"""The Slack app: Slack talking back to the service.

    app.py     the listeners (buttons, the why shortcut, /monitor) on a slack-bolt App
    access.py  who may act: the workspace, the watchlist's channel, its feedback_from
    stored.py  the match or article a question is about, read back from the database

Two ways in, both built here: Socket Mode (SLACK_APP_TOKEN; the service dials out, so
it works behind a firewall), through slack-sdk's builtin Socket Mode client; and Slack's
HTTP requests on `monitor run --http` at /slack/events, each verified with the signing
secret and refused, logged, when its signature is wrong or its timestamp is more than
5 minutes off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from slack_bolt import App, BoltResponse
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.socket_mode.internals import run_bolt_app, send_response
from slack_bolt.request import BoltRequest
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

from monitor.errors import MonitorError

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"  # the request URL's path (deploy/slack-app.yaml)
MAX_AGE = 5 * 60  # seconds a signed request's timestamp may be off


class _Socket(SocketModeHandler):
    """Bolt's Socket Mode adapter, acknowledging every envelope: one bolt has no listener
    for is answered too (else Slack would retry it, then give up on the app)."""

    def handle(self, client: BaseSocketModeClient, req: SocketModeRequest) -> None:
        started = time.time()
        resp: BoltResponse = run_bolt_app(self.app, req)
        if resp.status != 200:
            log.info("slack envelope not handled", extra={"type": req.type, "status": resp.status})
            resp = BoltResponse(status=200)
        send_response(client, req, resp, started)


class SlackApp:
    """The bolt App and its ways in; `start` dials Socket Mode when there is an app token.
    `catch_up(everything)` renders the messages clicks left owed (slackapp/app.py)."""

    def __init__(
        self,
        app: App,
        app_token: str | None,
        signing_secret: str | None,
        catch_up: Callable[[bool], None],
    ) -> None:
        self.app = app
        self._app_token = app_token
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self._socket: _Socket | None = None
        self._catch_up = catch_up

    def start(self) -> None:
        """Renders every message a previous run left owed, then opens Socket Mode
        (apps.connections.open, then the websocket it names)."""
        self._catch_up(True)
        if not self._app_token:
            return
        self._socket = _Socket(self.app, self._app_token, logger=self.app.logger)
        try:
            self._socket.client.connect()
        except SlackApiError as exc:
            code = exc.response.get("error") if exc.response is not None else "error"
            raise MonitorError(
                f"slack: apps.connections.open refused: {code} (check SLACK_APP_TOKEN and "
                "that Socket Mode is on)"
            ) from exc
        except (SlackClientError, OSError) as exc:
            raise MonitorError(f"slack: cannot open Socket Mode: {exc}") from exc
        log.info("slack socket mode connected")

    def catch_up(self, everything: bool = False) -> None:
        """Renders the owed messages that are due (after a delivery pass), or all."""
        self._catch_up(everything)

    def http(
        self, body: bytes, headers: Mapping[str, str], query: str, peer: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        """One request to the request URL: (status, headers, body)."""
        if self._verifier is None:
            return 404, {}, b"the Slack request URL is off: set SLACK_SIGNING_SECRET\n"
        # header names are case-insensitive (HTTP/2 and many proxies send them lowercased)
        named = {name.lower(): value for name, value in headers.items()}
        stamp = named.get("x-slack-request-timestamp") or ""
        signature = named.get("x-slack-signature") or ""
        if not self._verifier.is_valid(body, stamp, signature):
            stale = stamp.isdigit() and abs(time.time() - int(stamp)) > MAX_AGE
            log.warning(
                "slack request refused",
                extra={
                    "reason": "stale timestamp" if stale else "bad signature",
                    "ts": stamp,
                    "peer": peer,
                },
            )
            return 401, {}, b"invalid request\n"
        req = BoltRequest(body=body.decode("utf-8", "replace"), query=query, headers=dict(named))
        resp = self.app.dispatch(req)
        return resp.status, resp.first_headers(), (resp.body or "").encode()

    def close(self, grace: float = 5.0) -> None:
        """Closes Socket Mode, waiting no longer than `grace`: slack-sdk joins its threads,
        and one stuck on a dead socket must not hold up the service's stop."""
        if self._socket is None:
            return
        closing = threading.Thread(
            target=self._socket.client.close, name="slack-close", daemon=True
        )
        closing.start()
        closing.join(grace)
        if closing.is_alive():
            log.warning("slack socket mode still closing; leaving it", extra={"grace": grace})

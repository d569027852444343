"""The Slack app's listeners (slack-bolt): the `Not relevant` and `Mute story` buttons,
the `Why this alert?` message shortcut and `/monitor why <link>`.

Every listener acknowledges first, then works: Slack wants its answer within 3 s, and
a click's work (the feedback stored, the message updated) may take longer. A click is
applied (feedback.toggle, one transaction) before the message is updated, and the
update is rendered from the stored marks: if the process dies in between, the click is
kept and the next click on that message shows the whole state. Deliveries are not
touched here, so the outbox's once-only sending is whatever it was.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from sqlalchemy import Engine

from monitor import feedback
from monitor.alert.blocks import BUTTONS, explanation, marked, plain
from monitor.errors import FeedbackError
from monitor.models import utcnow
from monitor.slackapp.access import Access, Actor
from monitor.slackapp.stored import Stored, by_link, by_match, match_of_message

log = logging.getLogger(__name__)

VERDICTS = {action_id: verdict for verdict, (action_id, _) in BUTTONS.items()}
WHY = "monitor_why"  # the message shortcut's callback_id (deploy/slack-app.yaml)
COMMAND = "/monitor"
USAGE = "Usage: `/monitor why <link to an article>`"

# `monitor explain`'s text for a stored article, for the watchlists it names
Explainer = Callable[[Stored], str]


def _actor(body: dict[str, Any]) -> Actor:
    """Who and where, from a block_actions or message_action payload."""
    user = body.get("user") or {}
    channel = body.get("channel") or {}
    return Actor(
        user_id=str(user.get("id") or ""),
        user_name=str(user.get("username") or user.get("name") or user.get("id") or ""),
        team_id=str((body.get("team") or {}).get("id") or user.get("team_id") or ""),
        channel_id=str(channel.get("id") or (body.get("container") or {}).get("channel_id") or ""),
        channel_name=str(channel.get("name") or ""),
        enterprise_id=str((body.get("enterprise") or {}).get("id") or ""),
    )


def _button_value(blocks: list[dict[str, Any]] | None) -> int | None:
    """The match id our buttons carry, in a message of ours."""
    for block in blocks or []:
        for element in block.get("elements") or []:
            if element.get("action_id") in VERDICTS and str(element.get("value", "")).isdigit():
                return int(element["value"])
    return None


def _click_key(user_id: str, action: dict[str, Any], body: dict[str, Any]) -> str:
    """What names one click, so the same click delivered again (a retried envelope) does
    not undo itself: its action_ts and trigger_id (Slack's own, new for every click),
    hashed to the stored key's size whatever their length; "" if it has neither."""
    stamp, trigger = str(action.get("action_ts") or ""), str(body.get("trigger_id") or "")
    if not (stamp or trigger):
        return ""
    return hashlib.sha256(f"{user_id}\n{stamp}\n{trigger}".encode()).hexdigest()


class Listeners:
    """What the app does with what Slack sends; bolt calls these on its worker threads."""

    def __init__(self, engine: Engine, access: Access, explain: Explainer) -> None:
        self._engine = engine
        self._access = access
        self._explain = explain
        # Clicks are applied one at a time, in order (each update shows all before it), on
        # a thread of their own: bolt runs listeners on a few threads and answers an
        # envelope only once its listener acks, so a click waiting on a slow chat.update
        # must not hold one of them.
        self._clicks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slack-click")

    def click(self, ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        self._clicks.submit(self._applied, body, client, respond, utcnow())

    def _applied(
        self, body: dict[str, Any], client: WebClient, respond: Respond, at: datetime
    ) -> None:
        """The click's work; a failure is logged (bolt did that for its listeners)."""
        try:
            self._apply(body, client, respond, at)
        except Exception as exc:  # the pool would keep it, unseen
            log.error(
                "feedback click not applied",
                extra={
                    "value": str((body.get("actions") or [{}])[0].get("value")),
                    "error": str(exc),
                },
            )

    def _apply(
        self, body: dict[str, Any], client: WebClient, respond: Respond, at: datetime
    ) -> None:
        action = (body.get("actions") or [{}])[0]
        verdict = VERDICTS[action["action_id"]]
        actor = _actor(body)
        value = str(action.get("value") or "")
        try:
            target = feedback.target(self._engine, int(value))
        except (ValueError, FeedbackError):
            gone = "This alert is no longer stored: nothing was changed."
            self._refuse(client, respond, actor, verdict, value, gone)
            return
        if reason := self._access.refusal(target, actor):
            self._refuse(client, respond, actor, verdict, value, reason)
            return
        click = feedback.Click(
            verdict=verdict,
            match_id=target.match_id,
            user_id=actor.user_id,
            user_name=actor.user_name,
            team_id=actor.team_id,
            channel_id=actor.channel_id,
            at=at,
            key=_click_key(actor.user_id, action, body),
        )
        applied = feedback.toggle(self._engine, click)  # logs the click, once
        self._show(client, body, actor, applied)

    def _show(
        self, client: WebClient, body: dict[str, Any], actor: Actor, applied: feedback.Applied
    ) -> None:
        """chat.update of the clicked message: the alert, who did what (as the click left
        it, read in its own transaction), the buttons."""
        match_id = applied.target.match_id
        message = body.get("message") or {}
        ts = (body.get("container") or {}).get("message_ts") or message.get("ts")
        if not ts:
            log.warning("clicked message not named in the payload", extra={"match_id": match_id})
            return
        text = str(message.get("text") or "")
        shown = message.get("blocks") or plain(text)  # a payload without blocks keeps its text
        blocks = marked(shown, match_id, applied.marks)
        try:
            client.chat_update(channel=actor.channel_id, ts=ts, text=text, blocks=blocks)
        except (SlackClientError, OSError) as exc:
            log.warning(
                "message not updated after a click",
                extra={"match_id": match_id, "channel_id": actor.channel_id, "error": str(exc)},
            )

    def why(self, ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        """The message shortcut: why this alert was posted, as `monitor explain` says."""
        ack()
        actor = _actor(body)
        if reason := self._access.workspace_refusal(actor):
            self._refuse(client, respond, actor, WHY, "", reason)
            return
        message = body.get("message") or {}
        ts = str(body.get("message_ts") or message.get("ts") or "")
        match_id = _button_value(message.get("blocks")) or match_of_message(
            self._engine, actor.channel_id, ts
        )
        found = None if match_id is None else by_match(self._engine, match_id)
        if found is None:
            text = "This message is not one stored alert. " + USAGE
            self._tell(client, respond, actor, text)
            return
        self._answer(client, respond, actor, found)

    def command(
        self, ack: Ack, command: dict[str, Any], client: WebClient, respond: Respond
    ) -> None:
        """`/monitor why <link>`: the same explanation, for a stored article's link."""
        ack()
        actor = Actor(
            user_id=str(command.get("user_id") or ""),
            user_name=str(command.get("user_name") or ""),
            team_id=str(command.get("team_id") or ""),
            channel_id=str(command.get("channel_id") or ""),
            channel_name=str(command.get("channel_name") or ""),
            enterprise_id=str(command.get("enterprise_id") or ""),
        )
        if reason := self._access.workspace_refusal(actor):
            self._refuse(client, respond, actor, COMMAND, "", reason)
            return
        words = str(command.get("text") or "").split()
        if len(words) != 2 or words[0].lower() != "why":
            self._tell(client, respond, actor, USAGE)
            return
        link = words[1].strip("<>").split("|")[0]
        found = by_link(self._engine, link)
        if found is None:
            text = f"No stored article has that link; `monitor explain {link}` reads it anew."
            self._tell(client, respond, actor, text)
            return
        self._answer(client, respond, actor, found)

    def _answer(self, client: WebClient, respond: Respond, actor: Actor, found: Stored) -> None:
        text = self._explain(found)
        self._tell(client, respond, actor, f"Why: {found.item.title}", explanation(text))
        log.info(
            "explanation given",
            extra={"user_id": actor.user_id, "watchlists": ",".join(found.watchlists)},
        )

    def _refuse(
        self,
        client: WebClient,
        respond: Respond,
        actor: Actor,
        what: str,
        value: str,
        reason: str,
    ) -> None:
        log.warning(
            "slack action refused",
            extra={
                "action": what,
                "value": value,
                "user_id": actor.user_id,
                "team_id": actor.team_id,
                "channel_id": actor.channel_id,
                "reason": reason,
            },
        )
        self._tell(client, respond, actor, reason)

    def _tell(
        self,
        client: WebClient,
        respond: Respond,
        actor: Actor,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
    ) -> None:
        """An ephemeral answer: through the payload's response URL, else chat.postEphemeral."""
        try:
            if respond.response_url:
                respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)
            else:
                client.chat_postEphemeral(
                    channel=actor.channel_id, user=actor.user_id, text=text, blocks=blocks
                )
        except (SlackClientError, OSError) as exc:
            log.warning(
                "ephemeral answer not delivered",
                extra={"user_id": actor.user_id, "error": str(exc)},
            )


def build(client: WebClient, bot_token: str, signing_secret: str, listeners: Listeners) -> App:
    """The bolt App. `client` carries the Web API base URL (and no token): bolt gives each
    listener a client on that base with the bot token `authorize` hands it, so nothing
    is asked of Slack before the first envelope."""

    def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=bot_token)

    bolt_log = logging.getLogger("monitor.slackapp.bolt")
    bolt_log.setLevel(logging.ERROR)  # bolt's own chatter; our listeners log what happened
    app = App(
        client=client,
        signing_secret=signing_secret,
        authorize=authorize,
        logger=bolt_log,
        raise_error_for_unhandled_request=False,
    )
    for action_id in VERDICTS:
        app.action(action_id)(listeners.click)
    app.shortcut(WHY)(listeners.why)
    app.command(COMMAND)(listeners.command)
    return app

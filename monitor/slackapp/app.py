"""The Slack app's listeners (slack-bolt): the `Not relevant` and `Mute story` buttons,
the `Why this alert?` message shortcut and `/monitor why <link>`.

Every listener acknowledges first and hands the work to a thread of its own: Slack
wants its answer within 3 s, and bolt runs listeners on only 5 threads, answering an
envelope once its listener acks, so slow work there would delay the next acks.

A click is applied (feedback.toggle, one transaction) with a row saying its message is
owed a render (renders.py); the update is rendered from the stored marks and marked
done in the transaction that records its success. A kill in between leaves it owed: the
service renders it when it starts and after each delivery pass. Deliveries are not
touched here, so the outbox's once-only sending is whatever it was.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy import Engine

from monitor import feedback, retries
from monitor.alert.blocks import BUTTONS, explanation, marked, plain
from monitor.alert.slack import PERMANENT
from monitor.config import DeliverySettings
from monitor.errors import FeedbackError
from monitor.models import utcnow
from monitor.renders import Owed, Renders, Shown
from monitor.slackapp.access import Access, Actor
from monitor.slackapp.stored import Stored, by_link, by_match, match_of_message

log = logging.getLogger(__name__)

VERDICTS = {action_id: verdict for verdict, (action_id, _) in BUTTONS.items()}
WHY = "monitor_why"  # the message shortcut's callback_id (deploy/slack-app.yaml)
COMMAND = "/monitor"
USAGE = "Usage: `/monitor why <link to an article>`"
BUSY = "Busy explaining other alerts: try again in a minute."
WAITING = 4  # questions waiting for the one being explained; more are told BUSY
# chat.update errors no retry can fix, beyond those of a post
GONE = {"message_not_found", "cant_update_message", "edit_window_closed"}

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


def _match_ids(blocks: list[dict[str, Any]] | None) -> list[int]:
    """The match ids our buttons carry in a message of ours, in order."""
    found: list[int] = []
    for block in blocks or []:
        for element in block.get("elements") or []:
            value = str(element.get("value", ""))
            ours = element.get("action_id") in VERDICTS and value.isdigit()
            if ours and int(value) not in found:
                found.append(int(value))
    return found


def _click_key(user_id: str, action: dict[str, Any], body: dict[str, Any]) -> str:
    """What names one click, so the same click delivered again (a retried envelope) does
    not undo itself: its action_ts and trigger_id (Slack's own, new for every click),
    hashed to the stored key's size whatever their length; "" if it has neither."""
    stamp, trigger = str(action.get("action_ts") or ""), str(body.get("trigger_id") or "")
    if not (stamp or trigger):
        return ""
    return hashlib.sha256(f"{user_id}\n{stamp}\n{trigger}".encode()).hexdigest()


def tell(
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
            "ephemeral answer not delivered", extra={"user_id": actor.user_id, "error": str(exc)}
        )


def refuse(
    client: WebClient, respond: Respond, actor: Actor, what: str, value: str, reason: str
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
    tell(client, respond, actor, reason)


class Clicks:
    """The buttons: each click applied, then its message rendered, one at a time and in
    order (each update shows all before it) on a thread of its own, which also renders
    what a kill left owed."""

    def __init__(
        self, engine: Engine, access: Access, client: WebClient, policy: DeliverySettings
    ) -> None:
        self._engine = engine
        self._access = access
        self._client = client  # with the bot token: renders owed since a restart use it
        self._policy = policy
        self._renders = Renders(engine)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slack-click")
        self._sweep_queued = threading.Lock()  # held while a sweep waits its turn

    def click(self, ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        self._worker.submit(self._applied, body, client, respond, utcnow())

    def catch_up(self, everything: bool = False) -> None:
        """Renders (on the click thread) the messages owed: those due, or all of them
        (at start: whoever owed them is gone). One sweep waits at a time."""
        if self._sweep_queued.acquire(blocking=False):
            self._worker.submit(self._sweep, everything)

    def _sweep(self, everything: bool) -> None:
        self._sweep_queued.release()
        try:
            for owed in self._renders.owed(None if everything else utcnow()):
                log.info(
                    "owed message update",
                    extra={"render_id": owed.render_id, "match_id": owed.match_id},
                )
                self._render(owed)
        except Exception as exc:  # the pool would keep it, unseen
            log.error("owed message updates not made", extra={"error": str(exc)})

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
            refuse(client, respond, actor, verdict, value, gone)
            return
        if reason := self._access.refusal(target, actor):
            refuse(client, respond, actor, verdict, value, reason)
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
        message = body.get("message") or {}
        ts = str((body.get("container") or {}).get("message_ts") or message.get("ts") or "")
        text = str(message.get("text") or "")
        # a payload without blocks keeps its text
        shown = Shown(actor.channel_id, ts, text, message.get("blocks") or plain(text))
        if not ts:
            log.warning("clicked message not named in the payload", extra={"match_id": value})
        # logs the click, once; a later sweep takes the render if this process dies first
        applied = feedback.toggle(
            self._engine, click, shown if ts else None, at + self._policy.lease
        )
        if applied.owed is not None:
            self._render(applied.owed)

    def _render(self, owed: Owed) -> None:
        """chat.update of the message: as it was shown, with who did what on each of its
        matches (read now: a click on another of its stories shows too), the buttons."""
        shown = owed.shown
        ids = _match_ids(shown.blocks)
        ids += [owed.match_id] if owed.match_id not in ids else []
        blocks = shown.blocks
        for match_id, marks in feedback.marks_of(self._engine, ids).items():
            blocks = marked(blocks, match_id, marks)
        named = {"render_id": owed.render_id, "match_id": owed.match_id}
        try:
            self._client.chat_update(
                channel=shown.channel_id, ts=shown.ts, text=shown.text, blocks=blocks
            )
        except (SlackClientError, OSError) as exc:
            code = str(exc.response.get("error", "")) if isinstance(exc, SlackApiError) else ""
            attempts = owed.attempts + 1
            dead = code in PERMANENT or code in GONE or attempts >= self._policy.max_attempts
            retry_at = utcnow() + retries.backoff(
                attempts, self._policy.retry_base, self._policy.retry_max
            )
            self._renders.failed(owed, str(exc), attempts=attempts, dead=dead, retry_at=retry_at)
            log.warning(
                "message not updated after a click",
                extra={
                    **named,
                    "channel_id": shown.channel_id,
                    "attempts": attempts,
                    "then": "given up" if dead else f"retry at {retry_at:%H:%M:%S}",
                    "error": str(exc),
                },
            )
            return
        self._renders.done(owed)
        log.info("message updated", extra={**named, "channel_id": shown.channel_id})


class Questions:
    """The why shortcut and `/monitor why <link>`: acknowledged at once, explained one at
    a time on a thread of their own (a matcher run may be slow), at most WAITING waiting:
    one more is told BUSY rather than queued without end."""

    def __init__(self, engine: Engine, access: Access, explain: Explainer) -> None:
        self._engine = engine
        self._access = access
        self._explain = explain
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slack-why")
        self._room = threading.BoundedSemaphore(1 + WAITING)

    def why(self, ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        """The message shortcut: why this alert was posted, as `monitor explain` says."""
        ack()
        actor = _actor(body)
        self._queue(WHY, actor, client, respond, partial(self._why, actor, body, client, respond))

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
        job = partial(self._command, actor, command, client, respond)
        self._queue(COMMAND, actor, client, respond, job)

    def _queue(
        self,
        what: str,
        actor: Actor,
        client: WebClient,
        respond: Respond,
        job: Callable[[], None],
    ) -> None:
        """Another workspace is refused here, before the queue: it takes no room there and
        does not wait behind the explanations under way."""
        if reason := self._access.workspace_refusal(actor):
            refuse(client, respond, actor, what, "", reason)
            return
        if not self._room.acquire(blocking=False):
            log.warning("question refused: busy", extra={"user_id": actor.user_id})
            tell(client, respond, actor, BUSY)
            return
        self._worker.submit(self._answered, actor, job)

    def _answered(self, actor: Actor, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:  # the pool would keep it, unseen
            log.error("question not answered", extra={"user_id": actor.user_id, "error": str(exc)})
        finally:
            self._room.release()

    def _why(self, actor: Actor, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        message = body.get("message") or {}
        ts = str(body.get("message_ts") or message.get("ts") or "")
        ids = _match_ids(message.get("blocks"))
        match_id = ids[0] if ids else match_of_message(self._engine, actor.channel_id, ts)
        found = None if match_id is None else by_match(self._engine, match_id)
        if found is None:
            tell(client, respond, actor, "This message is not one stored alert. " + USAGE)
            return
        self._answer(client, respond, actor, found)

    def _command(
        self, actor: Actor, command: dict[str, Any], client: WebClient, respond: Respond
    ) -> None:
        words = str(command.get("text") or "").split()
        if len(words) != 2 or words[0].lower() != "why":
            tell(client, respond, actor, USAGE)
            return
        link = words[1].strip("<>").split("|")[0]
        found = by_link(self._engine, link)
        if found is None:
            text = f"No stored article has that link; `monitor explain {link}` reads it anew."
            tell(client, respond, actor, text)
            return
        self._answer(client, respond, actor, found)

    def _answer(self, client: WebClient, respond: Respond, actor: Actor, found: Stored) -> None:
        text = self._explain(found)
        tell(client, respond, actor, f"Why: {found.item.title}", explanation(text))
        log.info(
            "explanation given",
            extra={"user_id": actor.user_id, "watchlists": ",".join(found.watchlists)},
        )


def build(
    client: WebClient, bot_token: str, signing_secret: str, clicks: Clicks, questions: Questions
) -> App:
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
        app.action(action_id)(clicks.click)
    app.shortcut(WHY)(questions.why)
    app.command(COMMAND)(questions.command)
    return app

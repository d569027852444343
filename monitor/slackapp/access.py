"""Who may act on an alert from Slack: only the configured workspace, only in the
watchlist's own channel, and, where the watchlist sets `feedback_from`, only those users
or the members of those user groups. A refusal says why in a sentence for the person
who clicked; nothing is applied.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError

from monitor.config import Watchlist
from monitor.feedback import Target

log = logging.getLogger(__name__)
_CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{8,}$")
GROUP_TTL = 60.0  # seconds a user group's members are trusted before they are asked again


@dataclass(frozen=True)
class Actor:
    """Where a click (or a question) came from, as Slack's payload says."""

    user_id: str
    user_name: str
    team_id: str
    channel_id: str
    channel_name: str
    enterprise_id: str = ""  # an Enterprise Grid org's, when the workspace is in one


def same_channel(target: Target, channel_id: str, channel_name: str) -> bool:
    """The channel the alert was sent to: the ID Slack answered the send with, or the
    channel as the watchlist names it, by ID (C0123ABCD) or by name (#china-desk). Once
    an ID is known it decides: a name is only what a channel is called today."""
    if target.channel_id and target.channel_id == channel_id:
        return True
    for known in (target.channel_id or "", target.channel):
        if _CHANNEL_ID.match(known):
            return known == channel_id
    return bool(channel_name) and target.channel.lstrip("#").lower() == channel_name.lower()


class Access:
    """Decides; asks Slack for user groups' members (usergroups:read), briefly cached."""

    def __init__(
        self,
        client: WebClient,
        watchlists: Callable[[], Mapping[str, Watchlist]],
        team_id: str | None,
    ) -> None:
        self._client = client
        self._watchlists = watchlists
        self.team_id = team_id
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def workspace_refusal(self, actor: Actor) -> str | None:
        if self.team_id is not None and self.team_id not in (actor.team_id, actor.enterprise_id):
            return "This app answers only its own workspace: nothing was changed."
        return None

    def refusal(self, target: Target, actor: Actor) -> str | None:
        """None when `actor` may mark `target`, else what to tell them."""
        if wrong := self.workspace_refusal(actor):
            return wrong
        watchlist = self._watchlists().get(target.watchlist)
        if watchlist is None:
            return f"The watchlist {target.watchlist} is no longer configured: nothing was changed."
        if not same_channel(target, actor.channel_id, actor.channel_name):
            return (
                f"Feedback on {target.watchlist} alerts counts only in {target.channel}: "
                "nothing was changed."
            )
        if watchlist.feedback_from and not self._allowed(watchlist.feedback_from, actor.user_id):
            return (
                f"Only the people named in {target.watchlist}'s feedback_from may mark its "
                "alerts: nothing was changed."
            )
        return None

    def _allowed(self, allowed: list[str], user_id: str) -> bool:
        if user_id in allowed:
            return True
        return any(user_id in self._members(g) for g in allowed if g.startswith("S"))

    def _members(self, group: str) -> frozenset[str]:
        """A user group's members; an unanswered question lets no one in."""
        now = time.monotonic()
        with self._lock:
            cached = self._groups.get(group)
            if cached is not None and cached[0] > now:
                return cached[1]
        try:
            resp = self._client.usergroups_users_list(usergroup=group)
        except (SlackClientError, OSError) as exc:
            log.warning("user group unreadable", extra={"usergroup": group, "error": str(exc)})
            return frozenset()
        members = frozenset(str(u) for u in resp.get("users") or [])
        with self._lock:
            self._groups[group] = (now + GROUP_TTL, members)
        return members

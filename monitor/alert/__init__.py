"""Deliver stage: sinks that turn an Outgoing into a message.

A sink raises AlertError on failure (`permanent` when retrying cannot help,
`retry_after` when the service asked for a pause) and never touches the database: the
deliverer in deliver.py records outcomes in the outbox.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from monitor.models import Outgoing, Sent


class Alerter(Protocol):
    name: str
    # whether the deliverer paces its messages (channel_interval, max_per_second, 429
    # pauses): a service with rate limits is; stdout is not
    paced: bool

    def send(self, out: Outgoing) -> Sent:
        """Posts the message and says where it landed."""
        ...

    def find(self, out: Outgoing, since: datetime) -> Sent | None:
        """Looks for a message this sink may have posted for `out` since `since`.

        Used after a crash left the outcome of a send unknown. Sinks that cannot look
        return None, and the message is posted again (at least once, not exactly once).
        """
        ...

"""Deliver stage: sinks that turn a stored Alert into a message.

A sink raises AlertError on failure (with `permanent` when retrying cannot help) and
never touches the database: the pipeline records outcomes in the outbox.
"""

from __future__ import annotations

from typing import Protocol

from monitor.models import Alert


class Alerter(Protocol):
    name: str

    def send(self, alert: Alert) -> str | None:
        """Posts the alert and returns the sink's message id (Slack's `ts`), if any."""
        ...

"""The sink used when no Slack is configured: one line per alert on stdout."""

from __future__ import annotations

import sys
from typing import TextIO

from monitor.models import Alert


class ConsoleAlerter:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, alert: Alert) -> str | None:
        stream = self._stream or sys.stdout
        line = " ".join(f"{alert.title} {alert.url or ''}".split())
        stream.write(
            f"[{alert.watchlist} -> {alert.channel}] {line} "
            f"(matched: {', '.join(alert.matched)}; feed: {alert.feed})\n"
        )
        stream.flush()
        return None

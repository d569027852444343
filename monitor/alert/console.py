"""The sink used when no Slack is configured: one line per alert on stdout, unpaced (a
terminal has no rate limit)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TextIO

from monitor.models import DeliveryKind, Outgoing, Sent


class ConsoleAlerter:
    name = "stdout"
    paced = False

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, out: Outgoing) -> Sent:
        stream = self._stream or sys.stdout
        prefix = f"[{out.watchlist} -> {out.channel}]"
        if out.kind == DeliveryKind.NOTICE:
            stream.write(f"{prefix} {out.label}\n")
        if out.kind == DeliveryKind.DIGEST:
            stream.write(f"{prefix} digest {out.label}: {len(out.stories)} stories\n")
        if out.kind == DeliveryKind.FLOOD:
            stream.write(
                f"{prefix} flood: {out.label}; the first {len(out.stories)}, "
                f"all in `monitor matches`:\n"
            )
        for story in out.stories:
            line = " ".join(f"{story.title} {story.url or ''}".split())
            followup = out.kind == DeliveryKind.FOLLOWUP
            lead = "  also reported by " + story.feed + ":" if followup else ""
            stream.write(
                f"{prefix}{lead} {line} (matched: {', '.join(story.matched)}; "
                f"{story.strength}; feed: {story.feed})\n"
            )
        stream.flush()
        return Sent()

    def find(self, out: Outgoing, since: datetime) -> Sent | None:
        return None

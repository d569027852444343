"""Deliver stage: sends the outbox at Slack's pace, retries what failed, and settles
sends whose outcome a crash or a dropped connection left unknown."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from monitor.alert import Alerter
from monitor.config import DeliverySettings
from monitor.errors import AlertError
from monitor.models import Outgoing, Sent, as_utc, utcnow
from monitor.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    dead: int = 0
    recovered: int = 0  # lost sends found in Slack instead of posted again


def retry_delay(attempts: int, base: timedelta, cap: timedelta) -> timedelta:
    """Exponential backoff with full jitter, so many failed alerts do not retry in step."""
    ceiling = min(cap, base * (1 << min(attempts, 20)))
    return base + (ceiling - base) * random.random()


class Deliverer:
    """Sends due deliveries at Slack's pace: one message per `channel_interval` in each
    channel, `max_per_second` overall, channels taking turns so one busy channel does not
    hold up the others. Keeps its pacing between passes.

    Given a `channel`, it sends to that channel only and starts its pacing from the
    channel's last send in the database: in queue mode the channel's previous message
    may have come from another worker."""

    def __init__(
        self,
        outbox: Outbox,
        alerter: Alerter,
        policy: DeliverySettings,
        channel: str | None = None,
    ) -> None:
        self._outbox = outbox
        self._alerter = alerter
        self._policy = policy
        self._channel = channel
        self._next_in_channel: dict[str, float] = {}
        self._next_any = 0.0
        if channel is not None and (last := outbox.last_sent_at(channel)) is not None:
            wait = self._policy.channel_interval - (utcnow() - as_utc(last))
            self._next_in_channel[channel] = time.monotonic() + wait.total_seconds()

    def run(
        self, stop: threading.Event | None = None, until: float | None = None
    ) -> DeliveryReport:
        """One pass: settles sends a crash left unconfirmed, then sends all that is due
        (or what it can before the monotonic time `until`)."""
        stop = stop or threading.Event()
        report = DeliveryReport()
        self._recover(report)
        while not stop.is_set() and (until is None or time.monotonic() < until):
            batch = self._outbox.due(utcnow(), channel=self._channel)
            if not batch:
                break
            queues: dict[str, deque[Outgoing]] = {}
            for out in batch:
                queues.setdefault(out.channel, deque()).append(out)
            while queues and not stop.is_set():
                channel = min(queues, key=lambda c: self._next_in_channel.get(c, 0.0))
                ready_at = max(self._next_in_channel.get(channel, 0.0), self._next_any)
                if until is not None and ready_at >= until:
                    return report
                if stop.wait(max(0.0, ready_at - time.monotonic())):
                    break
                out = queues[channel].popleft()
                if not queues[channel]:
                    del queues[channel]
                self._deliver(out, report)
        return report

    def _look_for(self, out: Outgoing, since: datetime) -> Sent | None:
        try:
            return self._alerter.find(out, since)
        except AlertError as exc:
            log.warning(
                "cannot check a lost send, posting again",
                extra={**_ids(out), "error": exc},
            )
            return None

    def _recover(self, report: DeliveryReport) -> None:
        outbox = self._outbox
        stale = utcnow() - self._policy.lease
        for out, started in outbox.unconfirmed(stale, channel=self._channel):
            found = self._look_for(out, started)
            if found is not None:
                outbox.sent(out.delivery_id, out.channel, found)
                report.recovered += 1
                log.info(
                    "lost send found in slack",
                    extra={**_ids(out), "ts": found.ts},
                )
            else:
                outbox.release(out.delivery_id)
                log.info(
                    "unconfirmed send will be posted again",
                    extra=_ids(out),
                )

    def _deliver(self, out: Outgoing, report: DeliveryReport) -> None:
        outbox = self._outbox
        if not outbox.claim(out.delivery_id):
            return  # another deliverer took it
        now = time.monotonic()
        self._next_in_channel[out.channel] = now + self._policy.channel_interval.total_seconds()
        self._next_any = now + 1.0 / self._policy.max_per_second
        started = utcnow()
        try:
            sent = self._alerter.send(out)
        except AlertError as exc:
            found = self._look_for(out, started) if exc.unknown_outcome else None
            if found is None:
                self._failed(out, exc, report)
                return
            sent = found
            report.recovered += 1
        outbox.sent(out.delivery_id, out.channel, sent)
        report.sent += 1
        log.info(
            "alert sent",
            extra={**_ids(out), "sink": self._alerter.name, "ts": sent.ts},
        )

    def _failed(self, out: Outgoing, exc: AlertError, report: DeliveryReport) -> None:
        attempts = out.attempts + 1
        dead = exc.permanent or attempts >= self._policy.max_attempts
        delay = retry_delay(attempts, self._policy.retry_base, self._policy.retry_max)
        if exc.retry_after:
            delay = max(delay, timedelta(seconds=exc.retry_after))
            self._next_in_channel[out.channel] = time.monotonic() + exc.retry_after
        retry_at = utcnow() + delay
        self._outbox.failed(out.delivery_id, str(exc), dead=dead, retry_at=retry_at)
        if dead:
            report.dead += 1
            log.error(
                "alert dead",
                extra={**_ids(out), "attempts": attempts, "error": exc},
            )
        else:
            report.failed += 1
            log.warning(
                "alert failed",
                extra={
                    **_ids(out),
                    "attempts": attempts,
                    "retry_at": retry_at.isoformat(timespec="seconds"),
                    "error": exc,
                },
            )


def _ids(out: Outgoing) -> dict[str, object]:
    """What every log line about a delivery names."""
    return {
        "delivery_id": out.delivery_id,
        "kind": out.kind,
        "watchlist": out.watchlist,
        "channel": out.channel,
    }

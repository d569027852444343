"""Deliver stage: sends the outbox at Slack's pace, retries what failed, gathers floods
into one message, and settles sends whose outcome a crash or a dropped connection left
unknown.

How a failed send is retried (dead, rate limited, backed off, probed, due again at
once) is drawn in retries.py, with the retries slack-sdk makes before one fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from monitor import retries
from monitor.alert import Alerter
from monitor.config import DeliverySettings
from monitor.db import Lock, Locks
from monitor.digests import Digests
from monitor.errors import AlertError, DatabaseUnavailable
from monitor.models import Outgoing, Sent, as_utc, utcnow
from monitor.outbox import Outbox
from monitor.retries import Recovery

log = logging.getLogger(__name__)
_FLOOD_LOOK = 1.0  # seconds between looks for a flood while a pass is sending


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    dead: int = 0
    recovered: int = 0  # lost sends found in Slack instead of posted again
    floods: int = 0  # flood messages gathered


@dataclass(frozen=True)
class Orphans:
    """Sends left unconfirmed by senders now known to be dead: settled (looked for in
    Slack, posted if absent) without waiting out `delivery.lease`, once `look_after`
    (monotonic) has come: by then a request such a sender left on the wire has landed."""

    sends: tuple[tuple[Outgoing, datetime], ...] = ()
    look_after: float = 0.0


class Senders:
    """Who may be sending alerts right now, told by locks on the database (db.Locks).

    A process that sends to every channel (`monitor run`, `monitor poll`) holds the
    "sender" lock shared for as long as it lives, and a queue worker "queue-worker". The
    first such process to find both free takes them alone for a moment: no other sender
    is alive, so each send left unconfirmed was left by a dead one. A queue worker's job
    for a channel holds that channel's lock while it sends; a job that takes it, with no
    single-host sender alive, knows the same of the channel's unconfirmed sends: the
    worker that claimed them is dead (procrastinate's stalled-worker detection is what
    handed its job on). A sender that cannot prove it waits out the lease, as before."""

    def __init__(self, outbox: Outbox, locks: Locks, in_flight: timedelta) -> None:
        self._outbox = outbox
        self._locks = locks
        self._in_flight = in_flight.total_seconds()
        self._mutex = threading.Lock()
        self._held: list[Lock] = []
        self._joined = False
        self._enlisted = False

    def join(self) -> Orphans:
        """Joins the senders; the first time, what dead senders left, if that is provable."""
        with self._mutex:
            if self._joined:
                return Orphans()
            self._joined = True
            sender = self._locks.lock("sender")
            if sender is None:
                return Orphans()
            self._held.append(sender)
            # queue workers share only a database server (queue mode needs PostgreSQL)
            workers = self._locks.lock("queue-worker") if self._locks.server else None
            alone = sender.try_exclusive() and (workers is None or workers.try_exclusive())
            try:
                sends = self._outbox.unconfirmed(None) if alone else []
            finally:
                if workers is not None:
                    workers.release()
                sender.share()
            return self._orphans(sends)

    @contextmanager
    def turn(self, channel: str) -> Iterator[Orphans]:
        """A queue worker's turn at a channel, and what dead senders left in it."""
        with self._mutex:
            if not self._enlisted:
                self._enlisted = True
                if (workers := self._locks.lock("queue-worker")) is not None:
                    workers.share()
                    self._held.append(workers)
        lock = self._locks.lock(f"channel:{channel}")
        if lock is None or not lock.try_exclusive():
            yield Orphans()  # someone is still at it: its sends are not orphans
            return
        try:
            yield self._orphans(self._left_in(channel))
        finally:
            lock.release()

    def _left_in(self, channel: str) -> list[tuple[Outgoing, datetime]]:
        if not self._outbox.unconfirmed(None, channel=channel):
            return []  # the usual case, and then no need to ask about other senders
        sender = self._locks.lock("sender")
        if sender is None or not sender.try_exclusive():
            return []  # a single-host sender is alive: it may have claimed them
        try:
            return self._outbox.unconfirmed(None, channel=channel)
        finally:
            sender.release()

    def _orphans(self, sends: Sequence[tuple[Outgoing, datetime]]) -> Orphans:
        if sends:
            log.info("unconfirmed sends left by a dead sender", extra={"sends": len(sends)})
        return Orphans(tuple(sends), time.monotonic() + self._in_flight)

    def keep(self) -> None:
        """Takes again, after a database restart, the locks this process holds."""
        if self._held:
            self._locks.keep()

    def close(self) -> None:
        """Lets go of the locks; those a lost database session held are gone already."""
        with self._mutex:
            try:
                for lock in reversed(self._held):
                    lock.release()
            except DatabaseUnavailable:
                pass  # the session is gone, and its locks with it
            finally:
                self._held.clear()
                self._locks.close()


class Pacing:
    """Slack's pace: one message per `channel_interval` in each channel, `max_per_second`
    overall. The pace runs from the moment each answer came back, so however a loaded
    machine delays a request on its way, two never reach Slack closer together than the
    interval. A sink that is not paced (the console) gets everything at once."""

    def __init__(self, policy: DeliverySettings, paced: bool) -> None:
        self._policy = policy
        self._paced = paced
        self._next_in_channel: dict[str, float] = {}
        self._next_any = 0.0

    def last_sent(self, channel: str, at: datetime) -> None:
        """The channel's last message, from whichever worker sent it."""
        if self._paced:
            wait = self._policy.channel_interval - (utcnow() - as_utc(at))
            self._next_in_channel[channel] = time.monotonic() + wait.total_seconds()

    def next_channel(self, channels: Iterable[str]) -> tuple[str, float]:
        """The channel whose turn comes first, and when (monotonic)."""
        channel = min(channels, key=lambda c: self._next_in_channel.get(c, 0.0))
        return channel, max(self._next_in_channel.get(channel, 0.0), self._next_any)

    def answered(self, channel: str, pause: float | None = None) -> None:
        """The next send's earliest times, from now: an answer has just come back."""
        if not self._paced:
            return
        now = time.monotonic()
        interval = self._policy.channel_interval.total_seconds()
        self._next_in_channel[channel] = now + max(interval, pause or 0.0)
        self._next_any = now + 1.0 / self._policy.max_per_second


class Deliverer:
    """Sends due deliveries at Slack's pace (`Pacing`), channels taking turns so one busy
    channel does not hold up the others; keeps its pacing between passes.

    Given a `channel`, it sends to that channel only and starts its pacing from the
    channel's last send in the database: in queue mode the channel's previous message
    may have come from another worker."""

    def __init__(
        self,
        outbox: Outbox,
        alerter: Alerter,
        policy: DeliverySettings,
        digests: Digests,
        channel: str | None = None,
        orphans: Orphans | None = None,
        recovery: Recovery | None = None,
    ) -> None:
        self._outbox = outbox
        self._recovery = recovery or Recovery(policy.retry_base)
        self._digests = digests
        self._alerter = alerter
        self._policy = policy
        self._channel = channel
        self._orphans = orphans or Orphans()
        self._pacing = Pacing(policy, alerter.paced)
        self._next_flood_look = 0.0
        self._probing = False
        if alerter.paced and channel is not None and (last := outbox.last_sent_at(channel)):
            self._pacing.last_sent(channel, last)

    def run(
        self, stop: threading.Event | None = None, until: float | None = None
    ) -> DeliveryReport:
        """One pass: settles sends a crash left unconfirmed, gathers floods, then sends all
        that is due (or what it can before the monotonic time `until`)."""
        stop = stop or threading.Event()
        report = DeliveryReport()
        self._recovery.write(self._outbox)
        if not self._settle_orphans(stop, until, report):
            return report
        self._recover(report)
        probed = False
        while not stop.is_set() and (until is None or time.monotonic() < until):
            self._gather_floods(report)
            batch = self._outbox.due(utcnow(), channel=self._channel)
            self._probing = False
            if not batch and not probed and self._recovery.may_probe():
                batch = self._outbox.due(utcnow(), limit=1, channel=self._channel, held=True)
                probed = self._probing = bool(batch)
            if not batch:
                break
            queues: dict[str, deque[Outgoing]] = {}
            for out in batch:
                queues.setdefault(out.channel, deque()).append(out)
            while queues and not stop.is_set():
                channel, ready_at = self._pacing.next_channel(queues)
                if until is not None and ready_at >= until:
                    return report
                if stop.wait(max(0.0, ready_at - time.monotonic())):
                    break
                if time.monotonic() >= self._next_flood_look and self._gather_floods(report):
                    break  # a flood message is due: read what is due again
                out = queues[channel].popleft()
                if not queues[channel]:
                    del queues[channel]
                if not self._deliver(out, report):
                    return report  # a fault: the rest waits for the next pass (or probe)
        return report

    def _gather_floods(self, report: DeliveryReport) -> int:
        policy = self._policy
        self._next_flood_look = time.monotonic() + _FLOOD_LOOK
        floods = self._digests.floods(
            utcnow(), policy.flood_threshold, policy.flood_window, channel=self._channel
        )
        for flood in floods:
            log.warning(
                "alert flood gathered into one message",
                extra={
                    "channel": flood.channel,
                    "watchlist": flood.watchlist,
                    "alerts": flood.alerts,
                    "delivery_id": flood.delivery_id,
                },
            )
        report.floods += len(floods)
        return len(floods)

    def _look_for(self, out: Outgoing, since: datetime) -> Sent | None:
        try:
            return self._alerter.find(out, since)
        except AlertError as exc:
            log.warning(
                "cannot check a lost send, posting again",
                extra={**out.ids, "error": exc},
            )
            return None

    def _settle_orphans(
        self, stop: threading.Event, until: float | None, report: DeliveryReport
    ) -> bool:
        """Settles what dead senders left, once it is time; False if stopped meanwhile."""
        orphans = self._orphans
        if not orphans.sends or (until is not None and orphans.look_after >= until):
            return True
        if stop.wait(max(0.0, orphans.look_after - time.monotonic())):
            return False
        for out, started in orphans.sends:
            self._find_or_post_again(out, started, report)
        self._orphans = Orphans()
        return True

    def _recover(self, report: DeliveryReport) -> None:
        """Settles sends unconfirmed for longer than a lease: whoever made them is gone."""
        stale = utcnow() - self._policy.lease
        for out, started in self._outbox.unconfirmed(stale, channel=self._channel):
            self._find_or_post_again(out, started, report)

    def _find_or_post_again(self, out: Outgoing, started: datetime, report: DeliveryReport) -> None:
        """A send whose outcome is unknown: found in the channel, or due to post again."""
        found = self._look_for(out, started)
        if found is not None:
            self._outbox.sent(out.delivery_id, out.channel, found)
            report.recovered += 1
            log.info("lost send found in slack", extra={**out.ids, "ts": found.ts})
        elif self._outbox.release(out.delivery_id, out.attempts):
            log.info("unconfirmed send will be posted again", extra=out.ids)

    def _deliver(self, out: Outgoing, report: DeliveryReport) -> bool:
        """Claims and sends one delivery; False if it failed for a fault of the path."""
        probe, self._probing = self._probing, False
        claimed = self._outbox.claim(out.delivery_id, out.thread_ts)
        if claimed is None:
            return True  # another deliverer took it, or a flood message did
        started = utcnow()
        try:
            sent = self._alerter.send(claimed)
        except AlertError as exc:
            self._pacing.answered(out.channel, exc.retry_after)
            found = self._look_for(claimed, started) if exc.unknown_outcome else None
            if found is None:
                self._failed(claimed, exc, report, probe)
                return exc.permanent or exc.retry_after is not None  # a 429 is the channel's
            sent = found
            report.recovered += 1
        else:
            self._pacing.answered(out.channel)
        try:
            self._outbox.sent(out.delivery_id, out.channel, sent)
        except DatabaseUnavailable:
            self._recovery.keep(claimed, sent)
            raise
        finally:
            log.info(
                "alert sent",
                extra={**claimed.ids, "sink": self._alerter.name, "ts": sent.ts},
            )
        report.sent += 1
        if self._recovery.landed() and (due := self._outbox.retry_now(utcnow())):
            log.info("deliveries held back by a failure are due again", extra={"deliveries": due})
        return True

    def _failed(
        self, out: Outgoing, exc: AlertError, report: DeliveryReport, probe: bool = False
    ) -> None:
        then = retries.after(out, exc, self._policy, probe)
        if not then.dead:
            self._recovery.failed()
        try:
            self._outbox.failed(
                out.delivery_id,
                str(exc),
                dead=then.dead,
                retry_at=then.retry_at,
                refund=then.attempts < out.attempts,
                rate_limited=then.rate_limited,
            )
        except DatabaseUnavailable:
            self._recovery.keep(out, None)
            raise
        if then.dead:
            report.dead += 1
            log.error(
                "alert dead",
                extra={**out.ids, "attempts": then.attempts, "error": exc},
            )
        else:
            report.failed += 1
            log.warning(
                "alert failed",
                extra={
                    **out.ids,
                    "attempts": then.attempts,
                    "retry_at": then.retry_at.isoformat(timespec="seconds"),
                    "error": exc,
                },
            )

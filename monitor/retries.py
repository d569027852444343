"""How a failed send is retried: the one place the policy is written down.

A send goes through two layers of retries, the inner one in the same call, the outer one
across passes of the deliverer (deliver.py):

    Deliverer._deliver ── sink.send ──────────────────────────────> Slack
                           │ layer 1: slack-sdk retry handlers      (alert/slack.py
                           │   a refused connection (nothing sent),  `retry_handlers`,
                           │   429 and 5xx: up to 2 more tries,      given to the clients
                           │   waiting out Retry-After               in service.py)
                           │   a connection dropped after sending:
                           │   never retried here (it could double
                           │   the message); the deliverer looks in
                           │   the channel for it first
                           v
                      AlertError (errors.py): permanent, retry_after, unknown_outcome
                           │
                           │ layer 2: the outbox (`after`, below; outbox.py stores it)
                           v
        permanent, or `delivery.max_attempts` spent ──> dead (`monitor alerts --retry`)
        429 ──> due after Slack's Retry-After, whatever happens meanwhile
        anything else (unreachable, 5xx, a lost send not found) ──> held back with
            exponential backoff and full jitter (`backoff`: `retry_base` doubling per
            attempt up to `retry_max`), which only spaces tries while a fault lasts

- While deliveries are held back, a pass with nothing due probes with the one due
  soonest, at most once a `probe_every` (the service's tick) in each process; a probe
  that fails spends no attempt, so an outage's length never turns alerts dead.
- The first send that lands after a failure (a probe, or any other) makes every held
  delivery due at once (Outbox.retry_now), and the channels' pacing spaces them. So
  once Slack answers again, what it held up goes out within one tick plus pacing,
  never after a backoff that grew during the outage.
- A database that goes away spends no attempt either: nothing can be claimed; and an
  outcome that cannot be written is kept (`Recovery`) and written first thing when the
  database answers, so a send that landed is not looked for after a lease.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from monitor.models import Outgoing, Sent, utcnow

if TYPE_CHECKING:
    from monitor.config import DeliverySettings
    from monitor.errors import AlertError
    from monitor.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Then:
    """What becomes of a delivery whose send failed."""

    dead: bool
    attempts: int  # as counted: a probe's failure is refunded
    retry_at: datetime
    rate_limited: bool  # `retry_at` is Slack's word, kept whatever happens meanwhile


def after(out: Outgoing, exc: AlertError, policy: DeliverySettings, probe: bool) -> Then:
    """Layer 2 for one failed send (see the drawing above)."""
    attempts = out.attempts - 1 if probe and not exc.permanent else out.attempts
    dead = exc.permanent or attempts >= policy.max_attempts
    delay = backoff(attempts, policy.retry_base, policy.retry_max)
    if exc.retry_after:
        delay = max(delay, timedelta(seconds=exc.retry_after))
    return Then(dead, attempts, utcnow() + delay, bool(exc.retry_after))


def backoff(attempts: int, base: timedelta, cap: timedelta) -> timedelta:
    """Exponential backoff with full jitter, so many failed alerts do not retry in step."""
    ceiling = min(cap, base * (1 << min(attempts, 20)))
    return base + (ceiling - base) * random.random()


class Recovery:
    """What this process's deliverers share to come back from faults (layer 2 above):
    outcomes of sends not yet written, whether a failure since the last send
    that landed may hold deliveries back, and when the next probe may go."""

    def __init__(self, probe_every: timedelta) -> None:
        self._probe_every = probe_every.total_seconds()
        self._lock = threading.Lock()
        self._unwritten: dict[int, tuple[Outgoing, Sent | None]] = {}
        self._held = True  # a restart may find deliveries held back: look at the first send
        self._next_probe = 0.0

    def keep(self, out: Outgoing, sent: Sent | None) -> None:
        """An outcome the database could not take: sent (`sent`), or failed (None)."""
        with self._lock:
            self._unwritten[out.delivery_id] = (out, sent)

    def write(self, outbox: Outbox) -> int:
        """Writes what was kept; raises DatabaseUnavailable if it still cannot."""
        with self._lock:
            kept = list(self._unwritten.values())
        for out, sent in kept:
            if sent is not None:
                outbox.sent(out.delivery_id, out.channel, sent)
            else:
                outbox.release(out.delivery_id, out.attempts)
            with self._lock:
                self._unwritten.pop(out.delivery_id, None)
            log.info(
                "delivery outcome written after the outage",
                extra={**out.ids, "outcome": "sent" if sent else "failed, due again"},
            )
        return len(kept)

    def failed(self) -> None:
        with self._lock:
            self._held = True

    def landed(self) -> bool:
        """After a send landed: True (once) if deliveries may be held back by a failure."""
        with self._lock:
            held, self._held = self._held, False
            return held

    def may_probe(self) -> bool:
        """True (and the next probe a `probe_every` later) if a probe may go now."""
        with self._lock:
            now = time.monotonic()
            if now < self._next_probe:
                return False
            self._next_probe = now + self._probe_every
            return True

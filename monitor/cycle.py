"""One cycle of the service, in order: poll, then health, then digests, then deliver.

`monitor poll` runs `once`. The runtimes run the same steps on their own clocks:
runtime/single.py polls each feed as it comes due and runs `health` and `deliver` every
tick; runtime/queue.py polls the feeds of each poll job (a group of feeds) in one
executor per worker, runs `health` when it queues them, `digests` when it queues one
delivery job per channel.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor import health as health_mod
from monitor.models import FeedOutcome, utcnow
from monitor.pipeline import run_feeds

if TYPE_CHECKING:
    from monitor.deliver import Deliverer, DeliveryReport
    from monitor.feeds import FeedState
    from monitor.service import Service


@dataclass(frozen=True)
class Cycle:
    outcomes: list[FeedOutcome]
    report: DeliveryReport


def once(service: Service, stop: threading.Event | None = None) -> Cycle:
    """Every configured feed polled, then health, digests and delivery, once."""
    outcomes = poll(service, service.deps.feeds.states(service.feeds), stop)
    health(service)
    return Cycle(outcomes, deliver(service, service.deliverer(), stop))


def poll(
    service: Service, feeds: Sequence[FeedState], stop: threading.Event | None = None
) -> list[FeedOutcome]:
    """The feeds fetched and, where changed, processed (pipeline.py), many at once."""
    return run_feeds(feeds, service.deps, stop)


def health(service: Service) -> int:
    """Each feed's change of health logged and told to the ops channel; how many told."""
    deps = service.deps
    names = (f.name for f in service.feeds)
    return health_mod.check(deps.feeds, deps.notices, names, deps.settings)


def digests(service: Service) -> int:
    """Held deliveries that are due gathered into digests (digests.py)."""
    return service.deps.digests.make(service.config.watchlists, utcnow())


def deliver(
    service: Service, deliverer: Deliverer, stop: threading.Event | None = None
) -> DeliveryReport:
    """Digests gathered, then everything due sent, then the Slack app's owed message
    updates due handed to it. First this process makes sure it still holds its sender
    lock: a database restart drops it (deliver.Senders)."""
    service.senders.keep()
    digests(service)
    report = deliverer.run(stop)
    if service.slack is not None:
        service.slack.catch_up()
    return report

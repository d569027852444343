"""The one place the stages meet: fetch -> parse -> dedupe -> match -> store -> deliver.

Fetches run concurrently (they wait on the network); parsing, matching and storing
run one feed at a time in the calling thread. A feed that fails is logged with its
id, backed off, and never stops the others.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from monitor import dedupe, parse, poll
from monitor.alert import Alerter
from monitor.config import Settings
from monitor.errors import AlertError, FetchError, MonitorError, StoreError
from monitor.match import Matcher
from monitor.models import Fetched, utcnow
from monitor.store import FeedState, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deps:
    """Everything the stages need, built once by the service."""

    settings: Settings
    client: httpx.Client
    store: Store
    matcher: Matcher
    alerter: Alerter
    fetch_workers: int = 8


@dataclass
class FeedOutcome:
    feed: str
    ok: bool
    status: int | None = None
    new_items: int = 0
    queued: int = 0
    error: str | None = None
    crashed: bool = False  # an unexpected exception, i.e. a bug, not a bad feed


def _fetch(feed: FeedState, deps: Deps) -> Fetched:
    http = deps.settings.http
    return poll.fetch(
        deps.client,
        feed.url,
        etag=feed.etag,
        last_modified=feed.last_modified,
        max_bytes=http.max_body_bytes,
        deadline=(http.connect_timeout + http.read_timeout).total_seconds(),
    )


def next_due(feed: FeedState, now: datetime, errors: int, max_interval: timedelta) -> datetime:
    """The feed's own interval after a success or a first failure (a blip must not cost
    a story); then doubling per error in a row, up to max_interval (or the interval
    itself when that is longer). A failing feed is never given up on."""
    if errors == 0:
        return now + feed.interval
    backoff = min(feed.interval * (1 << min(errors - 1, 16)), max(max_interval, feed.interval))
    return now + backoff


def process(feed: FeedState, fetched: Fetched, deps: Deps) -> FeedOutcome:
    """Everything after the fetch for one feed; raises MonitorError on a bad feed."""
    now = utcnow()
    if fetched.not_modified:
        deps.store.record_fetch(
            feed.id,
            status=304,
            error=None,
            next_due=next_due(feed, now, 0, deps.settings.max_interval),
        )
        return FeedOutcome(feed.name, True, 304)
    parsed = parse.parse(fetched)
    if parsed.warning:
        log.info(
            "feed flawed but usable feed=%s feed_id=%d warning=%s",
            feed.name,
            feed.id,
            parsed.warning[:200],
        )
    entries = [dedupe.identify(item) for item in parsed.items]
    new = dedupe.fresh(entries, deps.store.seen_keys(feed.id, (e.key for e in entries)))
    if feed.last_success_at is None:
        cutoff = now - feed.backfill
        alertable = [e for e in new if e.item.published and e.item.published >= cutoff]
    else:
        alertable = new
    matches = deps.matcher.match(alertable, feed=feed.name)
    queued = deps.store.save(feed.id, new, {e.key for e in alertable}, matches)
    deps.store.record_fetch(
        feed.id,
        status=fetched.status,
        error=None,
        etag=fetched.etag,
        last_modified=fetched.last_modified,
        new_items=len(new),
        next_due=next_due(feed, now, 0, deps.settings.max_interval),
    )
    return FeedOutcome(feed.name, True, fetched.status, len(new), queued)


def _failed(feed: FeedState, exc: BaseException, deps: Deps) -> FeedOutcome:
    errors = feed.errors_in_row + 1
    status = exc.status if isinstance(exc, FetchError) else None
    reason = str(exc)
    due = next_due(feed, utcnow(), errors, deps.settings.max_interval)
    if isinstance(exc, MonitorError):
        log.warning(
            "feed failed feed=%s feed_id=%d errors_in_row=%d retry_at=%s error=%s",
            feed.name,
            feed.id,
            errors,
            due.isoformat(timespec="seconds"),
            reason,
        )
    else:
        log.error("feed crashed feed=%s feed_id=%d error=%r", feed.name, feed.id, exc, exc_info=exc)
    try:
        deps.store.record_fetch(feed.id, status=status, error=reason or repr(exc), next_due=due)
    except StoreError as store_exc:
        log.error("cannot record failure feed_id=%d error=%s", feed.id, store_exc)
    return FeedOutcome(
        feed.name, False, status, error=reason, crashed=not isinstance(exc, MonitorError)
    )


def run_feeds(
    feeds: Sequence[FeedState], deps: Deps, stop: threading.Event | None = None
) -> list[FeedOutcome]:
    """Fetches the feeds concurrently and processes each as its body arrives."""
    outcomes: list[FeedOutcome] = []
    if not feeds:
        return outcomes
    with ThreadPoolExecutor(
        max_workers=min(deps.fetch_workers, len(feeds)), thread_name_prefix="fetch"
    ) as pool:
        futures: dict[Future[Fetched], FeedState] = {
            pool.submit(_fetch, feed, deps): feed for feed in feeds
        }
        for future in as_completed(futures):
            feed = futures[future]
            if stop is not None and stop.is_set():
                for pending in futures:
                    pending.cancel()
                break
            try:
                outcome = process(feed, future.result(), deps)
                if outcome.status != 304:
                    log.info(
                        "feed polled feed=%s feed_id=%d status=%s new=%d alerts_queued=%d",
                        feed.name,
                        feed.id,
                        outcome.status,
                        outcome.new_items,
                        outcome.queued,
                    )
            except Exception as exc:  # noqa: BLE001 - a broken feed must not stop the others
                outcome = _failed(feed, exc, deps)
            outcomes.append(outcome)
    return outcomes


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    dead: int = 0


def retry_delay(attempts: int, base: timedelta, cap: timedelta) -> timedelta:
    """Exponential backoff with full jitter, so many failed alerts do not retry in step."""
    ceiling = min(cap, base * (1 << min(attempts, 20)))
    return base + (ceiling - base) * random.random()


def deliver_pending(deps: Deps, stop: threading.Event | None = None) -> DeliveryReport:
    """Sends every due delivery; a failure is recorded for a later pass, never dropped."""
    report = DeliveryReport()
    policy = deps.settings.delivery
    while stop is None or not stop.is_set():
        batch = deps.store.pending(utcnow())
        if not batch:
            break
        for alert in batch:
            if stop is not None and stop.is_set():
                break
            try:
                ts = deps.alerter.send(alert)
            except AlertError as exc:
                attempts = alert.attempts + 1
                dead = exc.permanent or attempts >= policy.max_attempts
                retry_at = utcnow() + retry_delay(attempts, policy.retry_base, policy.retry_max)
                deps.store.mark_failed(alert.delivery_id, str(exc), dead=dead, retry_at=retry_at)
                if dead:
                    report.dead += 1
                    log.error(
                        "alert dead delivery_id=%d watchlist=%s channel=%s attempts=%d error=%s",
                        alert.delivery_id,
                        alert.watchlist,
                        alert.channel,
                        attempts,
                        exc,
                    )
                else:
                    report.failed += 1
                    log.warning(
                        "alert failed delivery_id=%d watchlist=%s channel=%s "
                        "attempts=%d retry_at=%s error=%s",
                        alert.delivery_id,
                        alert.watchlist,
                        alert.channel,
                        attempts,
                        retry_at.isoformat(timespec="seconds"),
                        exc,
                    )
                continue
            deps.store.mark_sent(alert.delivery_id, ts)
            report.sent += 1
            log.info(
                "alert sent delivery_id=%d watchlist=%s channel=%s sink=%s ts=%s",
                alert.delivery_id,
                alert.watchlist,
                alert.channel,
                deps.alerter.name,
                ts,
            )
    return report

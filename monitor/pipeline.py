"""The one place the stages meet: fetch -> parse -> dedupe -> match -> store -> deliver.

Fetches run concurrently in threads (they wait on the network); parsing, matching and
storing run one feed at a time in the calling thread, and cycles of many feeds are
dealt out to worker processes that each do all of it (workers.py). A feed that fails
is logged with its id, backed off, and never stops the others. The Deliverer sends the
outbox at Slack's pace.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from monitor import dedupe, health, parse, poll
from monitor.alert import Alerter
from monitor.config import Settings
from monitor.errors import AlertError, FetchError, MonitorError, StoreError
from monitor.match import Matcher
from monitor.models import Fetched, FetchResult, Outgoing, Sent, as_utc, utcnow
from monitor.outbox import Outbox, policies
from monitor.store import FeedState, Store

log = logging.getLogger(__name__)
_RECORD_BATCH = 200  # poll results written per transaction


class FeedPool(Protocol):
    """Runs a cycle's feed passes elsewhere (see workers.PassPool)."""

    def wants(self, feeds: int) -> bool: ...

    def run(self, feeds: Sequence[FeedState]) -> list[FeedOutcome]: ...


@dataclass(frozen=True)
class Deps:
    """Everything the stages need, built once by the service."""

    settings: Settings
    client: httpx.Client
    store: Store
    outbox: Outbox
    matcher: Matcher
    alerter: Alerter
    pool: FeedPool | None = None  # worker processes for cycles of many feeds


@dataclass
class FeedOutcome:
    feed: str
    ok: bool
    status: int | None = None
    new_items: int = 0
    queued: int = 0
    error: str | None = None
    crashed: bool = False  # an unexpected exception, i.e. a bug, not a bad feed
    record: FetchResult | None = None  # still to be written (304s and failures are batched)
    elapsed: float | None = None  # seconds the fetch took


class HostLimits:
    """At most `per_host` fetches at once to any one host, however many feeds it serves."""

    def __init__(self, per_host: int) -> None:
        self._per_host = per_host
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    def slot(self, url: str) -> threading.BoundedSemaphore:
        host = (urlsplit(url).hostname or "").lower()
        with self._lock:
            if host not in self._slots:
                self._slots[host] = threading.BoundedSemaphore(self._per_host)
            return self._slots[host]


def _fetch(feed: FeedState, deps: Deps, hosts: HostLimits) -> Fetched:
    http = deps.settings.http
    with hosts.slot(feed.url):
        return poll.fetch(
            deps.client,
            feed.url,
            etag=feed.etag,
            last_modified=feed.last_modified,
            max_bytes=http.max_body_bytes,
            deadline=(http.connect_timeout + http.read_timeout).total_seconds(),
        )


def next_due(
    feed: FeedState,
    now: datetime,
    errors: int,
    max_interval: timedelta,
    hint: timedelta | None = None,
) -> datetime:
    """The feed's own interval after a success or a first failure (a blip must not cost
    a story); then doubling per error in a row, up to max_interval (or the interval
    itself when that is longer). A failing feed is never given up on. The publisher's
    hint (ttl, max-age, Expires, Retry-After) can only lengthen the wait, and never
    beyond max_interval."""
    wait = feed.interval
    if errors:
        wait = min(feed.interval * (1 << min(errors - 1, 16)), max(max_interval, feed.interval))
    if hint is not None:
        wait = max(wait, min(hint, max_interval))
    return now + wait


def _hint(*hints: timedelta | None) -> timedelta | None:
    given = [h for h in hints if h is not None]
    return max(given) if given else None


def process(feed: FeedState, fetched: Fetched, deps: Deps) -> FeedOutcome:
    """Everything after the fetch for one feed; raises MonitorError on a bad feed."""
    now = utcnow()
    if fetched.not_modified:
        record = FetchResult(
            feed.id,
            status=304,
            error=None,
            next_due=next_due(feed, now, 0, deps.settings.max_interval, fetched.hint),
            moved_to=fetched.moved_to,
            elapsed=fetched.elapsed,
        )
        return FeedOutcome(feed.name, True, 304, record=record, elapsed=fetched.elapsed)
    parsed = parse.parse(fetched)
    entries = [dedupe.identify(item) for item in parsed.items]
    if parsed.warning:
        log.info(
            "feed flawed but usable feed=%s feed_id=%d warning=%s",
            feed.name,
            feed.id,
            parsed.warning[:200],
        )
    new = dedupe.fresh(entries, deps.store.seen_keys(feed.id, (e.key for e in entries)))
    if feed.last_success_at is None:
        cutoff = now - feed.backfill
        alertable = [e for e in new if e.item.published and e.item.published >= cutoff]
    elif deps.settings.retention is not None:
        # an item older than retention may be one whose record was pruned: never re-alert it
        cutoff = now - deps.settings.retention
        alertable = [e for e in new if not e.item.published or e.item.published >= cutoff]
    else:
        alertable = new
    matches = [
        (dedupe.fingerprint(e), results)
        for e, results in deps.matcher.match(alertable, feed=feed.name)
    ]
    printed = {e.key: e for e, _ in matches}
    new = [printed.get(e.key, e) for e in new]
    wanted = policies(deps.matcher.watchlists, now)
    record = FetchResult(
        feed.id,
        status=fetched.status,
        error=None,
        etag=fetched.etag,
        last_modified=fetched.last_modified,
        new_items=len(new),
        next_due=next_due(
            feed, now, 0, deps.settings.max_interval, _hint(fetched.hint, parsed.ttl)
        ),
        moved_to=fetched.moved_to,
        elapsed=fetched.elapsed,
    )
    queued = deps.store.save(feed.id, new, {e.key for e in alertable}, matches, wanted, record)
    return FeedOutcome(feed.name, True, fetched.status, len(new), queued, elapsed=fetched.elapsed)


def _failed(feed: FeedState, exc: BaseException, deps: Deps) -> FeedOutcome:
    errors = feed.errors_in_row + 1
    status = exc.status if isinstance(exc, FetchError) else None
    reason = str(exc)
    retry = exc.retry_after if isinstance(exc, FetchError) else None
    due = next_due(feed, utcnow(), errors, deps.settings.max_interval, retry)
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
    record = FetchResult(feed.id, status=status, error=reason or repr(exc), next_due=due)
    return FeedOutcome(
        feed.name,
        False,
        status,
        error=reason,
        crashed=not isinstance(exc, MonitorError),
        record=record,
    )


def run_feeds(
    feeds: Sequence[FeedState], deps: Deps, stop: threading.Event | None = None
) -> list[FeedOutcome]:
    """Fetches the feeds concurrently and processes each as its body arrives; a cycle of
    many feeds is dealt out to worker processes instead (they finish their share even when
    `stop` is set: every write is a transaction)."""
    outcomes: list[FeedOutcome] = []
    if not feeds:
        return outcomes
    if deps.pool is not None and deps.pool.wants(len(feeds)):
        return deps.pool.run(feeds)
    hosts = HostLimits(deps.settings.http.per_host)
    workers = min(deps.settings.http.concurrency, len(feeds))
    unrecorded: list[FetchResult] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        futures: dict[Future[Fetched], FeedState] = {
            pool.submit(_fetch, feed, deps, hosts): feed for feed in feeds
        }
        try:
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
                if outcome.record is not None:
                    unrecorded.append(outcome.record)
                if len(unrecorded) >= _RECORD_BATCH:
                    _record(deps, unrecorded)
        finally:
            _record(deps, unrecorded)
    return outcomes


def _record(deps: Deps, results: list[FetchResult]) -> None:
    try:
        deps.store.record_fetches(results)
    except StoreError as exc:
        log.error("cannot record poll results feeds=%d error=%s", len(results), exc)
    results.clear()


def check_health(deps: Deps, feeds: Sequence[FeedState]) -> int:
    """Logs each feed's change of health and queues one ops message for it."""
    names = {f.name for f in feeds}
    rows = [r for r in deps.store.feeds() if r.name in names]
    found = health.notices(rows, utcnow(), deps.settings)
    for notice in found:
        log.warning(
            "feed health feed=%s state=%s %s", notice.feed, notice.alerted or "ok", notice.text
        )
    return deps.outbox.record_notices(found, deps.settings.ops_channel)


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

    def __init__(self, deps: Deps, channel: str | None = None) -> None:
        self._deps = deps
        self._policy = deps.settings.delivery
        self._channel = channel
        self._next_in_channel: dict[str, float] = {}
        self._next_any = 0.0
        if channel is not None and (last := deps.outbox.last_sent_at(channel)) is not None:
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
            batch = self._deps.outbox.due(utcnow(), channel=self._channel)
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
            return self._deps.alerter.find(out, since)
        except AlertError as exc:
            log.warning(
                "cannot check a lost send, posting again delivery_id=%d channel=%s error=%s",
                out.delivery_id,
                out.channel,
                exc,
            )
            return None

    def _recover(self, report: DeliveryReport) -> None:
        outbox = self._deps.outbox
        stale = utcnow() - self._policy.lease
        for out, started in outbox.unconfirmed(stale, channel=self._channel):
            found = self._look_for(out, started)
            if found is not None:
                outbox.sent(out.delivery_id, out.channel, found)
                report.recovered += 1
                log.info(
                    "lost send found in slack delivery_id=%d channel=%s ts=%s",
                    out.delivery_id,
                    out.channel,
                    found.ts,
                )
            else:
                outbox.release(out.delivery_id)
                log.info(
                    "unconfirmed send will be posted again delivery_id=%d channel=%s",
                    out.delivery_id,
                    out.channel,
                )

    def _deliver(self, out: Outgoing, report: DeliveryReport) -> None:
        outbox = self._deps.outbox
        if not outbox.claim(out.delivery_id):
            return  # another deliverer took it
        now = time.monotonic()
        self._next_in_channel[out.channel] = now + self._policy.channel_interval.total_seconds()
        self._next_any = now + 1.0 / self._policy.max_per_second
        started = utcnow()
        try:
            sent = self._deps.alerter.send(out)
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
            "alert sent delivery_id=%d kind=%s watchlist=%s channel=%s sink=%s ts=%s",
            out.delivery_id,
            out.kind,
            out.watchlist,
            out.channel,
            self._deps.alerter.name,
            sent.ts,
        )

    def _failed(self, out: Outgoing, exc: AlertError, report: DeliveryReport) -> None:
        attempts = out.attempts + 1
        dead = exc.permanent or attempts >= self._policy.max_attempts
        delay = retry_delay(attempts, self._policy.retry_base, self._policy.retry_max)
        if exc.retry_after:
            delay = max(delay, timedelta(seconds=exc.retry_after))
            self._next_in_channel[out.channel] = time.monotonic() + exc.retry_after
        retry_at = utcnow() + delay
        self._deps.outbox.failed(out.delivery_id, str(exc), dead=dead, retry_at=retry_at)
        if dead:
            report.dead += 1
            log.error(
                "alert dead delivery_id=%d watchlist=%s channel=%s attempts=%d error=%s",
                out.delivery_id,
                out.watchlist,
                out.channel,
                attempts,
                exc,
            )
        else:
            report.failed += 1
            log.warning(
                "alert failed delivery_id=%d watchlist=%s channel=%s attempts=%d "
                "retry_at=%s error=%s",
                out.delivery_id,
                out.watchlist,
                out.channel,
                attempts,
                retry_at.isoformat(timespec="seconds"),
                exc,
            )

"""The one place the stages meet: fetch -> parse -> dedupe -> match -> store, for one feed
(`process`) and for one cycle of many (`run_feeds`); deliver.py sends what they stored.

Fetches run concurrently in threads (they wait on the network); parsing, matching and
storing run one feed at a time in the calling thread, and cycles of many feeds are dealt
out to worker processes that each do all of it (runtime/passes.py). A feed that fails is
logged with its id, backed off, and never stops the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import httpx

from monitor import dedupe, fetch, health, parse
from monitor.alert import Alerter
from monitor.config import Config, Settings
from monitor.digests import Digests
from monitor.errors import FetchError, MonitorError, StoreError
from monitor.feeds import FeedState, FeedStore
from monitor.match import Matcher
from monitor.models import Fetched, FetchResult, utcnow
from monitor.notices import Notices
from monitor.outbox import Outbox, policies
from monitor.redact import redact
from monitor.store import Store

log = logging.getLogger(__name__)
_RECORD_BATCH = 200  # poll results written per transaction


class FeedPool(Protocol):
    """Runs a cycle's feed passes elsewhere (see runtime/passes.py)."""

    def wants(self, feeds: int) -> bool: ...

    def start(self) -> object: ...

    def run(self, feeds: Sequence[FeedState]) -> list[FeedOutcome]: ...

    def configure(self, config: Config) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Deps:
    """Everything the stages need, built once by the service."""

    settings: Settings
    client: httpx.Client
    feeds: FeedStore
    store: Store
    outbox: Outbox
    notices: Notices
    digests: Digests
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


def _fetch(feed: FeedState, deps: Deps, hosts: fetch.HostLimits) -> Fetched:
    http = deps.settings.http
    with hosts.slot(feed.url):
        return fetch.fetch(
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
            "feed flawed but usable",
            extra={"feed": feed.name, "feed_id": feed.id, "warning": parsed.warning[:200]},
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
    reason = redact(str(exc))
    retry = exc.retry_after if isinstance(exc, FetchError) else None
    due = next_due(feed, utcnow(), errors, deps.settings.max_interval, retry)
    if isinstance(exc, MonitorError):
        log.warning(
            "feed failed",
            extra={
                "feed": feed.name,
                "feed_id": feed.id,
                "errors_in_row": errors,
                "retry_at": due.isoformat(timespec="seconds"),
                "error": reason,
            },
        )
    else:
        log.error(
            "feed crashed",
            extra={"feed": feed.name, "feed_id": feed.id, "error": redact(repr(exc))},
            exc_info=exc,
        )
    record = FetchResult(feed.id, status=status, error=reason or redact(repr(exc)), next_due=due)
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
    hosts = fetch.HostLimits(deps.settings.http.per_host)
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
                            "feed polled",
                            extra={
                                "feed": feed.name,
                                "feed_id": feed.id,
                                "status": outcome.status,
                                "new": outcome.new_items,
                                "alerts_queued": outcome.queued,
                            },
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
        deps.feeds.record_fetches(results)
    except StoreError as exc:
        log.error("cannot record poll results", extra={"feeds": len(results), "error": exc})
    results.clear()


def check_health(deps: Deps, feeds: Sequence[FeedState]) -> int:
    """Logs each feed's change of health and queues one ops message for it."""
    names = {f.name for f in feeds}
    rows = [r for r in deps.feeds.rows() if r.name in names]
    found = health.notices(rows, utcnow(), deps.settings)
    for notice in found:
        log.warning(
            "feed health",
            extra={"feed": notice.feed, "state": notice.alerted or "ok", "notice": notice.text},
        )
    return deps.notices.record(found, deps.settings.ops_channel)

"""The one place the stages meet: fetch -> parse -> dedupe -> (pages) -> match -> store, for
one feed (`process`) and for one cycle of many (`run_feeds`); deliver.py sends what they
stored.

Fetches run concurrently in threads (they wait on the network); parsing, matching and
storing run one feed at a time in the calling thread, and cycles of many feeds are dealt
out to worker processes that each do all of it (runtime/passes.py). A feed that fails is
logged with its id, backed off, and never stops the others.

Full text (a feed's `full_text`): the feed's fetch thread also parses and dedupes it
(`_read`), which says which items are new and may alert; it hands their links to the
cycle's `pages.Pages` and returns at once. Pages fetches them in threads of its own,
per host in turn, and extracts each as it arrives, in this process (a pass worker's, in
big cycles). When a feed's last page is read, its future completes and the calling
thread matches and stores it like any other (`process`): no thread ever waits on a page,
feeds without full text take exactly the path they took before, and a page that fails
leaves its item matched on the feed's text. The text is stored with the article, and
each page's outcome too (`monitor feeds`, /metrics). Old items (backfill) and items seen
before are never fetched, nor is a link already fetched this cycle or stored with text.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

import httpx

from monitor import dedupe, fetch, health, pages, parse
from monitor.alert import Alerter
from monitor.config import Config, FullText, Settings
from monitor.digests import Digests
from monitor.errors import FetchError, MonitorError, StoreError
from monitor.feeds import FeedState, FeedStore
from monitor.match import Matcher
from monitor.models import Entry, Fetched, FetchResult, Page, utcnow
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
    pages: dict[str, int] = field(default_factory=dict)  # linked pages read, by outcome
    extract_seconds: float = 0.0  # of CPU, spent extracting them


@dataclass(frozen=True)
class Read:
    """A feed's body read: its new entries, those that may alert, and (full text) the
    pages of those, by entry key."""

    parsed: parse.ParsedFeed
    new: list[Entry]
    alertable: list[Entry]
    pages: dict[str, Page] = field(default_factory=dict)


Polled = tuple[Fetched, Read | None]  # what a fetch thread hands to process()


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


def process(feed: FeedState, fetched: Fetched, deps: Deps, read: Read | None = None) -> FeedOutcome:
    """Everything after the fetch for one feed (after `_read` and the pages too, when a
    fetch thread did those); raises MonitorError on a bad feed."""
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
    read = read or _read(feed, fetched, deps)
    parsed = read.parsed
    alertable = [_with_page(e, read.pages.get(e.key)) for e in read.alertable]
    matches = [
        (dedupe.fingerprint(e), results)
        for e, results in deps.matcher.match(alertable, feed=feed.name)
    ]
    latest = {e.key: e for e in alertable} | {e.key: e for e, _ in matches}
    new = [latest.get(e.key, e) for e in read.new]
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
    outcome = FeedOutcome(
        feed.name, True, fetched.status, len(new), queued, elapsed=fetched.elapsed
    )
    if read.pages:
        outcome.pages = dict(Counter(p.outcome for p in read.pages.values()))
        outcome.extract_seconds = sum(p.seconds for p in read.pages.values())
        log.info(
            "pages read",
            extra={
                "feed": feed.name,
                "feed_id": feed.id,
                "pages": len(read.pages),
                "extracted": outcome.pages.get("extracted", 0),
                "outcomes": " ".join(f"{k}:{n}" for k, n in sorted(outcome.pages.items())),
                "extract_ms": round(outcome.extract_seconds * 1000),
            },
        )
    return outcome


def _read(feed: FeedState, fetched: Fetched, deps: Deps) -> Read:
    """Parse and dedupe: the feed's new entries, and those that may alert (on a first
    fetch only those within backfill)."""
    now = utcnow()
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
    return Read(parsed, new, alertable)


def _with_page(entry: Entry, page: Page | None) -> Entry:
    if page is None:
        return entry
    return replace(entry, item=replace(entry.item, article=page.text or ""), page=page.outcome)


def _full_text(feed: FeedState, settings: Settings) -> FullText:
    return settings.full_text if feed.full_text is None else feed.full_text


def _submit(
    pool: ThreadPoolExecutor,
    feed: FeedState,
    deps: Deps,
    hosts: fetch.HostLimits,
    linked: pages.Pages,
) -> Future[Polled]:
    """The feed's fetch, in a fetch thread; with full text, its pages' too (the future
    completes when the last is read)."""
    if _full_text(feed, deps.settings) is False:
        return pool.submit(lambda: (_fetch(feed, deps, hosts), None))
    done: Future[Polled] = Future()
    pool.submit(_fetch_with_pages, feed, deps, hosts, linked, done)
    return done


def _fetch_with_pages(
    feed: FeedState,
    deps: Deps,
    hosts: fetch.HostLimits,
    linked: pages.Pages,
    done: Future[Polled],
) -> None:
    """In a fetch thread: the feed, its `_read`, and its new items' pages handed to
    `linked`, whose threads complete `done` when the last page is read."""
    if not done.set_running_or_notify_cancel():
        return  # the cycle stopped before this feed's turn
    try:
        fetched = _fetch(feed, deps, hosts)
        if fetched.not_modified:
            done.set_result((fetched, None))
            return
        read = _read(feed, fetched, deps)
        settings = deps.settings
        want = pages.wanted(
            read.alertable, _full_text(feed, settings), settings.full_text_min_words
        )
        stored = deps.store.page_texts(e.story_key for e in want) if want else {}
        futures = linked.read(want, stored)
    except BaseException as exc:  # noqa: BLE001 - handed to the thread that processes it
        done.set_exception(exc)
        return
    pages.gather(futures, lambda got: done.set_result((fetched, replace(read, pages=got))))


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
    with (
        pages.Pages(deps.settings, hosts) as linked,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool,
    ):
        futures: dict[Future[Polled], FeedState] = {
            _submit(pool, feed, deps, hosts, linked): feed for feed in feeds
        }
        try:
            for future in as_completed(futures):
                feed = futures[future]
                if stop is not None and stop.is_set():
                    for pending in futures:
                        pending.cancel()
                    break
                try:
                    fetched, read = future.result()
                    outcome = process(feed, fetched, deps, read)
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

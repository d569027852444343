"""The one place the stages meet: fetch -> parse -> dedupe -> match -> store, for one feed
(`process`), for feeds in flight (`Poller`) and for one cycle (`run_feeds`); deliver.py
sends what they stored.

Fetches run concurrently in threads (they wait on the network), and each feed goes on
alone as its answer comes: a 304 or a failure is recorded, a body is processed (parse,
dedupe, match, store) by one thread here, or by pass worker processes
(runtime/passes.py) once more bodies wait than that thread could work through in the
time the workers take to start; while they start, that thread reads (parses and
dedupes: most of a body's work) the bodies waiting for them, which then only match and
store. So a cycle of unchanged feeds starts no process and builds no matcher, no feed
waits for a slower one, and a feed that fails is logged with its id, backed off, and
never stops the others.

Full text (a feed's `full_text`): the feed's fetch thread also parses and dedupes it
(`_read`), which says which items are new and may alert, and hands their links to the
poller's `pages.Pages`, which fetches them in threads of its own, per host in turn. When
a feed's last page has come, the feed goes on like any other, its pages with it: they
are extracted where its body is processed (the processing thread here, or a pass
worker), so extraction, like parsing, uses every core. No thread waits on a page, feeds
without full text take exactly the path they took before, and a page that fails leaves
its item matched on the feed's text. Old items (backfill) and items seen before are
never fetched, nor is a link already asked for or stored with text.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import KeysView, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import httpx

from monitor import dedupe, fetch, health, pages
from monitor.alert import Alerter
from monitor.config import Config, FullText, Settings, Watchlist
from monitor.digests import Digests
from monitor.errors import DatabaseUnavailable, FetchError, MonitorError, StoreError
from monitor.feeds import FeedState, FeedStore
from monitor.models import Entry, Fetched, FetchResult, MatchResult, Page, utcnow
from monitor.notices import Notices
from monitor.outbox import Outbox, policies
from monitor.redact import redact
from monitor.store import Store

if TYPE_CHECKING:
    from monitor.parse import ParsedFeed

log = logging.getLogger(__name__)
_RECORD_BATCH = 200  # poll results written per transaction
_POOL_AFTER = 2.0  # seconds of processing waiting here before pass workers are worth starting
_FIRST_GUESS = 0.02  # seconds a body takes to process, until one has been timed here
_LINGER = 0.05  # seconds a step waits for more answers of a burst before writing them
# A round of page fetches (one pages.Pages: its per-host budgets, its shared answers) takes
# new feeds for at most this long, and ends when its last feed's results are written.
_PAGES_ROUND = 300.0


class Matching(Protocol):
    """The matcher as the stages use it (service.LazyMatcher builds it on first use)."""

    @property
    def watchlists(self) -> list[Watchlist]: ...

    @property
    def built(self) -> bool: ...

    def match(
        self, entries: Sequence[Entry], feed: str | None = None
    ) -> list[tuple[Entry, list[MatchResult]]]: ...


class Processing(Protocol):
    """What taking a fetched feed from parse to store needs, here or in a pass worker."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def matcher(self) -> Matching: ...


class FeedPool(Protocol):
    """Worker processes that take fetched feeds from parse to store (runtime/passes.py)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def started(self) -> bool: ...

    def start(self) -> list[Future[None]]: ...

    def submit(
        self, feed: FeedState, fetched: Fetched, read: Read | None
    ) -> Future[FeedOutcome]: ...

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
    matcher: Matching
    alerter: Alerter
    pool: FeedPool | None = None  # worker processes for cycles with many bodies


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
    held_back: int = 0  # a first fetch's items older than the backfill: stored, not alerted
    held_back_matching: list[str] = field(default_factory=list)  # watchlist of each match
    unavailable: bool = False  # the database was away: the feed stays due, not failed


@dataclass(frozen=True)
class Read:
    """A feed's body read: its new entries, those that may alert, and (full text) the
    pages of those, by entry key."""

    parsed: ParsedFeed
    new: list[Entry]
    alertable: list[Entry]
    pages: dict[str, Page] = field(default_factory=dict)


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


def process(
    feed: FeedState, fetched: Fetched, deps: Processing, read: Read | None = None
) -> FeedOutcome:
    """Everything after the fetch for one feed (after `_read`, when a fetch thread did it
    to read the feed's pages); raises MonitorError on a bad feed. The matcher is built
    only when there is something new to match."""
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
    if read.pages:
        read = replace(read, pages={k: pages.extracted(p) for k, p in read.pages.items()})
    parsed = read.parsed
    alertable = [_with_page(e, read.pages.get(e.key)) for e in read.alertable]
    matches = [
        (dedupe.fingerprint(e), results)
        for e, results in deps.matcher.match(alertable, feed=feed.name)
    ]
    latest = {e.key: e for e in alertable} | {e.key: e for e, _ in matches}
    new = [latest.get(e.key, e) for e in read.new]
    held = _held_back(feed, read, deps) if feed.last_success_at is None else []
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
        held_back=None if feed.last_success_at is not None else len(read.new) - len(alertable),
        held_back_matching=len(held),
    )
    queued = deps.store.save(feed.id, new, {e.key for e in alertable}, matches, wanted, record)
    outcome = FeedOutcome(
        feed.name, True, fetched.status, len(new), queued, elapsed=fetched.elapsed
    )
    if record.held_back:
        outcome.held_back = record.held_back
        outcome.held_back_matching = [results[0].watchlist for _, results in held]
        log.info(
            "first fetch: items older than the backfill kept without alerting",
            extra={
                "feed": feed.name,
                "feed_id": feed.id,
                "backfill": str(feed.backfill),
                "held_back": record.held_back,
                "would_have_matched": len(held),
            },
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


def _read(feed: FeedState, fetched: Fetched, deps: Processing) -> Read:
    """Parse and dedupe: the feed's new entries, and those that may alert (on a first
    fetch only those within backfill)."""
    from monitor import parse  # feedparser: a poll where every feed answers 304 needs none

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


def _held_back(
    feed: FeedState, read: Read, deps: Processing
) -> list[tuple[Entry, list[MatchResult]]]:
    """A first fetch's items too old to alert that a watchlist would have matched: a new
    user whose first poll alerts on nothing is told how much it kept back, and where."""
    keys = {e.key for e in read.alertable}
    old = [e for e in read.new if e.key not in keys]
    return deps.matcher.match(old, feed=feed.name) if old else []


def _with_page(entry: Entry, page: Page | None) -> Entry:
    if page is None:
        return entry
    return replace(entry, item=replace(entry.item, article=page.text or ""), page=page.outcome)


def _full_text(feed: FeedState, settings: Settings) -> FullText:
    return settings.full_text if feed.full_text is None else feed.full_text


def settle(
    feed: FeedState, fetched: Fetched, deps: Processing, read: Read | None = None
) -> FeedOutcome:
    """process(), with a failure turned into the feed's failed outcome."""
    try:
        return process(feed, fetched, deps, read)
    except Exception as exc:  # noqa: BLE001 - a broken feed must not stop the others
        return _failed(feed, exc, deps)


def _failed(feed: FeedState, exc: BaseException, deps: Processing) -> FeedOutcome:
    errors = feed.errors_in_row + 1
    status = exc.status if isinstance(exc, FetchError) else None
    reason = redact(str(exc))
    retry = exc.retry_after if isinstance(exc, FetchError) else None
    due = next_due(feed, utcnow(), errors, deps.settings.max_interval, retry)
    if isinstance(exc, DatabaseUnavailable):  # the outage is logged once (outage.py)
        log.debug("feed poll waits for the database", extra={"feed": feed.name, "feed_id": feed.id})
    elif isinstance(exc, MonitorError):
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
    away = isinstance(exc, DatabaseUnavailable)
    record = FetchResult(feed.id, status=status, error=reason or redact(repr(exc)), next_due=due)
    return FeedOutcome(
        feed.name,
        False,
        status,
        error=reason,
        crashed=not isinstance(exc, MonitorError),
        record=None if away else record,  # not the feed's fault: it stays due
        unavailable=away,
    )


@dataclass(frozen=True)
class _Body:
    feed: FeedState
    fetched: Fetched
    deps: Deps
    read: Read | None = None  # already read (full text: with its pages)


# What comes back for a feed in flight: its fetch's answer (with its pages, for full
# text) or error, its outcome once processed, or None when it was dropped unprocessed
# (at a stop); a bare None wakes `step`.
_Answer = Fetched | tuple[Fetched, Read] | FeedOutcome | BaseException | None
_Event = tuple[FeedState, Deps, _Answer] | None


class _Local:
    """One thread that processes bodies here, in turn, and knows what one costs; or only
    reads them (parse, dedupe) while the pass workers that will process them start."""

    def __init__(self, done: queue.SimpleQueue[_Event]) -> None:
        self._done = done
        self._bodies: deque[tuple[_Body, bool]] = deque()  # and whether only to read it
        self._cond = threading.Condition()
        self._closed = False
        self.cost = _FIRST_GUESS  # seconds per body, once the matcher is built
        self._timed = 0
        self._thread = threading.Thread(target=self._run, name="process", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._bodies)

    def put(self, body: _Body, read_only: bool = False) -> None:
        """Queues a body to process, or (`read_only`) to read and report back read."""
        with self._cond:
            self._bodies.append((body, read_only))
            self._cond.notify()

    def take_all(self) -> list[_Body]:
        """The bodies not yet begun (to hand to the pass workers, or to drop)."""
        with self._cond:
            taken = [body for body, _ in self._bodies]
            self._bodies.clear()
        return taken

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._bodies and not self._closed:
                    self._cond.wait()
                if not self._bodies:
                    return
                body, read_only = self._bodies.popleft()
            if read_only:
                self._done.put((body.feed, body.deps, self._read(body)))
                continue
            timed = body.deps.matcher.built  # the matcher's one-off build is not a body's cost
            started = time.monotonic()
            outcome = settle(body.feed, body.fetched, body.deps, body.read)
            if timed:
                took = time.monotonic() - started
                self.cost = took if not self._timed else 0.7 * self.cost + 0.3 * took
                self._timed += 1
            self._done.put((body.feed, body.deps, outcome))

    @staticmethod
    def _read(body: _Body) -> _Answer:
        try:
            return body.fetched, _read(body.feed, body.fetched, body.deps)
        except Exception as exc:  # noqa: BLE001 - reported as the feed's failure
            return exc


class Poller:
    """Feeds in flight, each going on alone: `add` starts fetching the feeds not already
    in flight, `step` takes what has come back and returns the feeds finished, their
    results written. One thread calls both; the fetch threads, the processing thread
    and the pass workers only report back to it."""

    def __init__(self, deps: Deps, stop: threading.Event | None = None) -> None:
        self.deps = deps  # feeds added from now on use these (the service's current deps)
        self._stop = stop or threading.Event()
        http = deps.settings.http
        self._hosts = fetch.HostLimits(http.per_host)
        self._fetchers = ThreadPoolExecutor(http.concurrency, thread_name_prefix="fetch")
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._flying: dict[int, Future[None]] = {}  # feed id -> its fetch
        self._sure: set[int] = set()  # fetches in flight that will bring a body
        self._local: _Local | None = None
        self._pages_lock = threading.Lock()  # fetch threads open rounds, this thread ends them
        self._pages: pages.Pages | None = None  # the round new feeds join, if one is open
        self._pages_since = 0.0
        self._rounds: dict[pages.Pages, int] = {}  # every round not ended: feeds still in it
        self._reading: dict[int, pages.Pages] = {}  # feed id -> the round of its pages

    @property
    def busy(self) -> bool:
        return bool(self._flying)

    @property
    def in_flight(self) -> KeysView[int]:
        return self._flying.keys()

    def add(self, feeds: Sequence[FeedState]) -> int:
        """Starts fetching each feed not in flight; returns how many it started."""
        added = 0
        for feed in feeds:
            if feed.id in self._flying:
                continue
            if not (feed.etag or feed.last_modified):  # nothing to make the GET conditional
                self._sure.add(feed.id)
            self._flying[feed.id] = self._fetchers.submit(self._fetch, feed, self.deps)
            added += 1
        self._consider_pool()
        return added

    def wake(self) -> None:
        """Makes a waiting `step` return now (at a stop)."""
        self._events.put(None)

    def step(self, timeout: float | None = None) -> list[FeedOutcome]:
        """Takes what has come back, waiting up to `timeout` (None: until something does)
        if nothing has; returns the feeds finished since the last step, their results
        written."""
        finished: list[tuple[FeedState, FeedOutcome]] = []
        if not self._flying and timeout is None:
            return []
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            event = None
        # answers come in bursts: gather a burst (up to _LINGER) so its results take one
        # transaction, not one each
        until = time.monotonic() + _LINGER
        while event is not None:
            self._take(*event, finished)
            if len(finished) >= min(_RECORD_BATCH, len(self._flying)):
                break
            try:
                event = self._events.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
        if self._stop.is_set():
            self._drop_waiting()
        else:
            self._to_ready_pool()
        records = [o.record for _, o in finished if o.record is not None]
        for i in range(0, len(records), _RECORD_BATCH):
            _record(self.deps, records[i : i + _RECORD_BATCH])
        for feed, _ in finished:
            self._land(feed.id)
        return [outcome for _, outcome in finished]

    def close(self) -> None:
        """Stops taking work; fetches still running are not waited for."""
        self._fetchers.shutdown(wait=False, cancel_futures=True)
        with self._pages_lock:
            rounds, self._pages = list(self._rounds), None
            self._rounds.clear()
        for round_ in rounds:
            round_.close()
        if self._local is not None:
            self._local.take_all()
            self._local.close()

    def _fetch(self, feed: FeedState, deps: Deps) -> None:  # in a fetch thread
        try:
            fetched = _fetch(feed, deps, self._hosts)
            mode = _full_text(feed, deps.settings)
            if mode is not False and not fetched.not_modified:
                self._read_pages(feed, deps, fetched, mode)
                return
            answer: _Answer = fetched
        except Exception as exc:  # noqa: BLE001 - reported as the feed's failure
            answer = exc
        self._events.put((feed, deps, answer))

    def _read_pages(self, feed: FeedState, deps: Deps, fetched: Fetched, mode: FullText) -> None:
        """In a fetch thread: the feed read, and its new items' pages asked for; the feed
        is reported back when its last page has come."""
        read = _read(feed, fetched, deps)
        want = pages.wanted(read.alertable, mode, deps.settings.full_text_min_words)
        if not want:
            self._events.put((feed, deps, (fetched, read)))
            return
        stored = deps.store.page_texts(e.story_key for e in want)
        pages.gather(
            self._join_round(feed.id, deps).read(want, stored),
            lambda got: self._events.put((feed, deps, (fetched, replace(read, pages=got)))),
        )

    def _join_round(self, feed_id: int, deps: Deps) -> pages.Pages:
        """In a fetch thread: the round of page fetches this feed's pages go to, opened if
        none is or the open one is too old to take more."""
        with self._pages_lock:
            now = time.monotonic()
            round_ = self._pages
            if round_ is None or now - self._pages_since > _PAGES_ROUND:
                round_ = self._pages = pages.Pages(deps.settings, self._hosts)
                self._pages_since = now
                self._rounds[round_] = 0
            self._rounds[round_] += 1
            self._reading[feed_id] = round_
            return round_

    def _land(self, feed_id: int) -> None:
        """A feed is no longer in flight (its results written, or dropped); the round of
        its pages ends with its last feed, so budgets and answers never outlive it (a
        link asked for later is then found among the stored texts)."""
        self._flying.pop(feed_id, None)
        with self._pages_lock:
            round_ = self._reading.pop(feed_id, None)
            if round_ is None:
                return
            self._rounds[round_] -= 1
            if self._rounds[round_]:
                return
            del self._rounds[round_]
            if round_ is self._pages:
                self._pages = None
        round_.close()  # nothing of it in flight: returns at once

    def _take(
        self,
        feed: FeedState,
        deps: Deps,
        what: _Answer,
        finished: list[tuple[FeedState, FeedOutcome]],
    ) -> None:
        if what is None:  # dropped unprocessed: no result to write, due again as it was
            self._land(feed.id)
            return
        if isinstance(what, FeedOutcome):
            if what.status != 304 and what.ok:
                log.info(
                    "feed polled",
                    extra={
                        "feed": feed.name,
                        "feed_id": feed.id,
                        "status": what.status,
                        "new": what.new_items,
                        "alerts_queued": what.queued,
                    },
                )
            finished.append((feed, what))
            return
        self._sure.discard(feed.id)
        if isinstance(what, BaseException):
            finished.append((feed, _failed(feed, what, deps)))
            return
        fetched, read = what if isinstance(what, tuple) else (what, None)
        if fetched.not_modified:
            finished.append((feed, process(feed, fetched, deps)))
        elif self._stop.is_set():
            self._land(feed.id)
        else:
            self._hand_off(_Body(feed, fetched, deps, read))

    def _hand_off(self, body: _Body) -> None:
        pool = body.deps.pool
        if pool is not None and pool.started:
            if body.read is not None or _ready(pool):
                self._to_pool(pool, body)
            else:  # parsing is most of a body's work: done here while the workers start
                self._local_thread().put(body, read_only=True)
            return
        self._local_thread().put(body)
        self._consider_pool()

    def _local_thread(self) -> _Local:
        if self._local is None:
            self._local = _Local(self._events)
        return self._local

    def _to_ready_pool(self) -> None:
        """Once the pass workers are ready, the bodies still waiting here go to them unread."""
        pool, local = self.deps.pool, self._local
        if pool is None or local is None or not local.waiting or not pool.started:
            return
        if _ready(pool):
            for body in local.take_all():
                self._to_pool(pool, body)

    def _consider_pool(self) -> None:
        """Starts the pass workers once the bodies waiting here, and those sure to come
        (feeds fetched without validators), would take longer here than they take to start."""
        pool = self.deps.pool
        if pool is None or not pool.enabled or pool.started:
            return
        local = self._local
        waiting = len(self._sure) + (local.waiting if local is not None else 0)
        cost = local.cost if local is not None else _FIRST_GUESS
        if waiting * cost < _POOL_AFTER:
            return
        log.info(
            "pass workers starting",
            extra={"bodies_waiting": waiting, "seconds_each": round(cost, 4)},
        )
        pool.start()
        if local is not None:
            for body in local.take_all():
                self._hand_off(body)

    def _to_pool(self, pool: FeedPool, body: _Body) -> None:
        def done(future: Future[FeedOutcome]) -> None:
            exc = None if future.cancelled() else future.exception()
            outcome: FeedOutcome | None
            if future.cancelled() or (exc is not None and self._stop.is_set()):
                outcome = None  # the pool closed, or a stop ended its worker: due again
            elif exc is not None:
                outcome = _failed(body.feed, exc, body.deps)
            else:
                outcome = future.result()
            self._events.put((body.feed, body.deps, outcome))

        pool.submit(body.feed, body.fetched, body.read).add_done_callback(done)

    def _drop_waiting(self) -> None:
        """At a stop: fetches not begun are cancelled, pages not begun are skipped, bodies
        not begun are dropped."""
        for feed_id, fetching in list(self._flying.items()):
            if fetching.cancel():
                self._land(feed_id)
        with self._pages_lock:
            rounds = list(self._rounds)
        for round_ in rounds:
            round_.stop()
        if self._local is not None:
            for body in self._local.take_all():
                self._land(body.feed.id)


def _ready(pool: FeedPool) -> bool:
    """Whether every pass worker of a started pool has started (or failed to)."""
    return all(worker.done() for worker in pool.start())


def run_feeds(
    feeds: Sequence[FeedState], deps: Deps, stop: threading.Event | None = None
) -> list[FeedOutcome]:
    """One cycle: every feed fetched and, if it changed, processed; returns when all are
    done. When `stop` is set, feeds not begun are left for later and what is under way
    finishes (every write is a transaction)."""
    poller = Poller(deps, stop)
    outcomes: list[FeedOutcome] = []
    try:
        poller.add(feeds)
        while poller.busy:
            outcomes += poller.step()
    finally:
        poller.close()
    return outcomes


def _record(deps: Deps, results: list[FetchResult]) -> None:
    try:
        deps.feeds.record_fetches(results)
    except DatabaseUnavailable:
        log.debug("poll results wait for the database", extra={"feeds": len(results)})
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

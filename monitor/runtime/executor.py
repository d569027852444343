"""The executor: many feeds in flight at once, each taken through the stages it is handed
(pipeline.STAGES; it imports no stage itself), none waiting for another. miniflux's
worker pool is the model, grown for Python's GIL: fetching waits on the network, the
rest needs a core.

- Fetches run in threads (`concurrency` of them, at most `per_host` to one host). A 304
  or a failure is written at once; a body goes on to be processed.
- One processing thread here processes bodies in turn and times what one costs. Once
  more bodies wait than it could work through in the time pass worker processes take
  to start (runtime/passes.py), the workers start, and meanwhile that thread only reads
  (parses and dedupes: most of a body's work) the bodies waiting for them, which then
  only match and store. So a cycle of unchanged feeds starts no process and builds no
  matcher.
- Full text: a feed's fetch thread also reads it and asks for its new items' pages in
  the open round of page fetches (one round shares per-host budgets and answers; it
  takes new feeds for at most `_PAGES_ROUND` seconds and ends when its last feed's
  results are written). The feed goes on when its last page has come: no thread waits
  on a page.
- Results come back to the one thread that calls `add` and `step`, which writes them in
  batches (one transaction per burst, not per feed).

A feed that fails is logged with its id, backed off, and never stops the others.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, KeysView, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from monitor.config import Config
    from monitor.feeds import FeedState
    from monitor.models import Body, Entry, FeedOutcome, Page
    from monitor.service import Deps

log = logging.getLogger(__name__)
_BURST = 200  # answers taken in one step at most (their records: one transaction)
_POOL_AFTER = 2.0  # seconds of processing waiting here before pass workers are worth starting
_FIRST_GUESS = 0.02  # seconds a body takes to process, until one has been timed here
_LINGER = 0.05  # seconds a step waits for more answers of a burst before writing them
_PAGES_ROUND = 300.0  # seconds a round of page fetches takes new feeds


class PageRound(Protocol):
    """One round of page fetches (pages.Pages)."""

    def read(
        self, entries: Sequence[Entry], stored: Mapping[str, str]
    ) -> dict[str, Future[Page]]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class Stages(Protocol):
    """One feed's stages as the executor runs them (pipeline.FeedStages), cut where the
    work changes thread: `fetch` in a fetch thread, calling `then` with the body once it
    has come (for full text, read and with its pages from `page_round`); `refresh` in the
    processing thread or a pass worker; `read` alone while the pass workers start."""

    def page_round(self, deps: Deps) -> PageRound: ...

    def fetch(
        self,
        feed: FeedState,
        deps: Deps,
        page_round: Callable[[], PageRound],
        then: Callable[[Body], None],
    ) -> None: ...

    def read(self, feed: FeedState, body: Body, deps: Deps) -> Body: ...

    def refresh(self, feed: FeedState, body: Body, deps: Deps) -> FeedOutcome: ...

    def failed(self, feed: FeedState, exc: BaseException, deps: Deps) -> FeedOutcome: ...

    def matcher_built(self, deps: Deps) -> bool: ...

    def record(self, deps: Deps, outcomes: Sequence[FeedOutcome]) -> None: ...


class FeedPool(Protocol):
    """Worker processes that take fetched feeds from parse to store (runtime/passes.py)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def started(self) -> bool: ...

    def start(self) -> list[Future[None]]: ...

    def submit(self, feed: FeedState, body: Body) -> Future[FeedOutcome]: ...

    def configure(self, config: Config) -> None: ...

    def close(self) -> None: ...


# What the fetch threads, the processing thread and the pass workers report back to the
# thread that calls `step`, one kind a class.


@dataclass(frozen=True)
class Arrived:
    """A fetch's answer: a 304, or a body (for full text, read and with its pages); a
    body waiting to be processed is one too."""

    feed: FeedState
    deps: Deps
    body: Body


@dataclass(frozen=True)
class Broke:
    """A fetch, or reading its body, failed."""

    feed: FeedState
    deps: Deps
    error: BaseException


@dataclass(frozen=True)
class Finished:
    """A feed processed (or failed while processed): its outcome, its record unwritten."""

    feed: FeedState
    outcome: FeedOutcome


@dataclass(frozen=True)
class Dropped:
    """A feed dropped unprocessed at a stop: nothing to write, due again as it was."""

    feed: FeedState


Report = Arrived | Broke | Finished | Dropped


class ProcessingThread:
    """One thread that processes bodies here, in turn, and knows what one costs; or only
    reads them while the pass workers that will process them start."""

    def __init__(self, stages: Stages, reports: queue.SimpleQueue[Report | None]) -> None:
        self._stages = stages
        self._reports = reports
        self._jobs: deque[tuple[Arrived, bool]] = deque()  # (job, read only)
        self._cond = threading.Condition()
        self._closed = False
        self.cost = _FIRST_GUESS  # seconds per body, once the matcher is built
        self._timed = 0
        self._thread = threading.Thread(target=self._run, name="process", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    def put(self, job: Arrived, read_only: bool = False) -> None:
        """Queues a body to process, or (`read_only`) to read and report back `Arrived`."""
        with self._cond:
            self._jobs.append((job, read_only))
            self._cond.notify()

    def take_all(self) -> list[Arrived]:
        """The bodies not yet begun (to hand to the pass workers, or to drop)."""
        with self._cond:
            taken = [job for job, _ in self._jobs]
            self._jobs.clear()
        return taken

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return
                job, read_only = self._jobs.popleft()
            if read_only:
                self._reports.put(self._read(job))
                continue
            timed = self._stages.matcher_built(job.deps)  # its one-off build is no body's cost
            started = time.monotonic()
            outcome = self._stages.refresh(job.feed, job.body, job.deps)
            if timed:
                took = time.monotonic() - started
                self.cost = took if not self._timed else 0.7 * self.cost + 0.3 * took
                self._timed += 1
            self._reports.put(Finished(job.feed, outcome))

    def _read(self, job: Arrived) -> Report:
        try:
            return Arrived(job.feed, job.deps, self._stages.read(job.feed, job.body, job.deps))
        except Exception as exc:  # noqa: BLE001 - reported as the feed's failure
            return Broke(job.feed, job.deps, exc)


class PageRounds:
    """The rounds of page fetches not yet ended, each with a count of its feeds still in
    flight: a round ends with its last feed, so budgets and answers never outlive it (a
    link asked for later is then found among the stored texts). Fetch threads join
    rounds, the stepping thread leaves them."""

    def __init__(self, stages: Stages) -> None:
        self._stages = stages
        self._lock = threading.Lock()
        self._open: PageRound | None = None  # the round new feeds join
        self._opened = 0.0
        self._feeds: dict[PageRound, int] = {}
        self._round_of: dict[int, PageRound] = {}  # feed id -> the round of its pages

    def join(self, feed_id: int, deps: Deps) -> PageRound:
        """In a fetch thread: the round this feed's pages go to, opened if none is or the
        open one is too old to take more."""
        with self._lock:
            now = time.monotonic()
            round_ = self._open
            if round_ is None or now - self._opened > _PAGES_ROUND:
                round_ = self._open = self._stages.page_round(deps)
                self._opened = now
                self._feeds[round_] = 0
            self._feeds[round_] += 1
            self._round_of[feed_id] = round_
            return round_

    def leave(self, feed_id: int) -> None:
        with self._lock:
            round_ = self._round_of.pop(feed_id, None)
            if round_ is None:
                return
            self._feeds[round_] -= 1
            if self._feeds[round_]:
                return
            del self._feeds[round_]
            if round_ is self._open:
                self._open = None
        round_.close()  # nothing of it in flight: returns at once

    def stop(self) -> None:
        """Pages not begun are skipped."""
        with self._lock:
            rounds = list(self._feeds)
        for round_ in rounds:
            round_.stop()

    def close(self) -> None:
        with self._lock:
            rounds, self._open = list(self._feeds), None
            self._feeds.clear()
        for round_ in rounds:
            round_.close()


class Executor:
    """Feeds in flight, each going on alone: `add` starts fetching the feeds not already
    in flight, `step` takes what has come back and returns the feeds finished, their
    results written. One thread calls both; the fetch threads, the processing thread
    and the pass workers only report back to it."""

    def __init__(self, stages: Stages, deps: Deps, stop: threading.Event | None = None) -> None:
        self.deps = deps  # feeds added from now on use these (the service's current deps)
        self._stages = stages
        self._stop = stop or threading.Event()
        self._fetchers = ThreadPoolExecutor(
            deps.settings.http.concurrency, thread_name_prefix="fetch"
        )
        self._reports: queue.SimpleQueue[Report | None] = queue.SimpleQueue()  # None: wake
        self._flying: dict[int, Future[None]] = {}  # feed id -> its fetch
        self._bodies_coming: set[int] = set()  # fetches without validators: a body will come
        self._here: ProcessingThread | None = None
        self._pages = PageRounds(stages)

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
                self._bodies_coming.add(feed.id)
            self._flying[feed.id] = self._fetchers.submit(self._fetch, feed, self.deps)
            added += 1
        self._consider_pool()
        return added

    def wake(self) -> None:
        """Makes a waiting `step` return now (at a stop)."""
        self._reports.put(None)

    def step(self, timeout: float | None = None) -> list[FeedOutcome]:
        """Takes what has come back, waiting up to `timeout` (None: until something does)
        if nothing has; returns the feeds finished since the last step, their results
        written."""
        finished: list[tuple[FeedState, FeedOutcome]] = []
        if not self._flying and timeout is None:
            return []
        try:
            report = self._reports.get(timeout=timeout)
        except queue.Empty:
            report = None
        # answers come in bursts: gather a burst (up to _LINGER) so its results take one
        # transaction, not one each
        until = time.monotonic() + _LINGER
        while report is not None:
            self._on(report, finished)
            if len(finished) >= min(_BURST, len(self._flying)):
                break
            try:
                report = self._reports.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
        if self._stop.is_set():
            self._drop_waiting()
        else:
            self._to_ready_pool()
        outcomes = [outcome for _, outcome in finished]
        if outcomes:
            self._stages.record(self.deps, outcomes)
        for feed, _ in finished:
            self._release(feed.id)
        return outcomes

    def close(self) -> None:
        """Stops taking work; fetches still running are not waited for."""
        self._fetchers.shutdown(wait=False, cancel_futures=True)
        self._pages.close()
        if self._here is not None:
            self._here.take_all()
            self._here.close()

    def _fetch(self, feed: FeedState, deps: Deps) -> None:  # in a fetch thread
        try:
            self._stages.fetch(
                feed,
                deps,
                lambda: self._pages.join(feed.id, deps),
                lambda body: self._reports.put(Arrived(feed, deps, body)),
            )
        except Exception as exc:  # noqa: BLE001 - reported as the feed's failure
            self._reports.put(Broke(feed, deps, exc))

    def _release(self, feed_id: int) -> None:
        """A feed is no longer in flight (its results written, or dropped)."""
        self._flying.pop(feed_id, None)
        self._pages.leave(feed_id)

    def _on(self, report: Report, finished: list[tuple[FeedState, FeedOutcome]]) -> None:
        match report:
            case Dropped(feed):
                self._release(feed.id)
            case Finished(feed, outcome):
                if outcome.status != 304 and outcome.ok:
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
                finished.append((feed, outcome))
            case Broke(feed, deps, error):
                self._bodies_coming.discard(feed.id)
                finished.append((feed, self._stages.failed(feed, error, deps)))
            case Arrived(feed, deps, body):
                self._bodies_coming.discard(feed.id)
                if body.unchanged:
                    finished.append((feed, self._stages.refresh(feed, body, deps)))
                elif self._stop.is_set():
                    self._release(feed.id)
                else:
                    self._hand_off(Arrived(feed, deps, body))

    def _hand_off(self, job: Arrived) -> None:
        pool = job.deps.pool
        if pool is not None and pool.started:
            if job.body.items is not None or _ready(pool):
                self._to_pool(pool, job)
            else:  # parsing is most of a body's work: done here while the workers start
                self._processing_thread().put(job, read_only=True)
            return
        self._processing_thread().put(job)
        self._consider_pool()

    def _processing_thread(self) -> ProcessingThread:
        if self._here is None:
            self._here = ProcessingThread(self._stages, self._reports)
        return self._here

    def _to_ready_pool(self) -> None:
        """Once the pass workers are ready, the bodies still waiting here go to them unread."""
        pool, here = self.deps.pool, self._here
        if pool is None or here is None or not here.waiting or not pool.started:
            return
        if _ready(pool):
            for job in here.take_all():
                self._to_pool(pool, job)

    def _consider_pool(self) -> None:
        """Starts the pass workers once the bodies waiting here, and those sure to come,
        would take longer here than the workers take to start."""
        pool = self.deps.pool
        if pool is None or not pool.enabled or pool.started:
            return
        here = self._here
        waiting = len(self._bodies_coming) + (here.waiting if here is not None else 0)
        cost = here.cost if here is not None else _FIRST_GUESS
        if waiting * cost < _POOL_AFTER:
            return
        log.info(
            "pass workers starting",
            extra={"bodies_waiting": waiting, "seconds_each": round(cost, 4)},
        )
        pool.start()
        if here is not None:
            for job in here.take_all():
                self._hand_off(job)

    def _to_pool(self, pool: FeedPool, job: Arrived) -> None:
        def done(future: Future[FeedOutcome]) -> None:
            exc = None if future.cancelled() else future.exception()
            report: Report
            if future.cancelled() or (exc is not None and self._stop.is_set()):
                report = Dropped(job.feed)  # the pool closed, or a stop ended its worker
            elif exc is not None:
                report = Finished(job.feed, self._stages.failed(job.feed, exc, job.deps))
            else:
                report = Finished(job.feed, future.result())
            self._reports.put(report)

        pool.submit(job.feed, job.body).add_done_callback(done)

    def _drop_waiting(self) -> None:
        """At a stop: fetches not begun are cancelled, pages not begun are skipped, bodies
        not begun are dropped."""
        for feed_id, fetching in list(self._flying.items()):
            if fetching.cancel():
                self._release(feed_id)
        self._pages.stop()
        if self._here is not None:
            for job in self._here.take_all():
                self._release(job.feed.id)


def _ready(pool: FeedPool) -> bool:
    """Whether every pass worker of a started pool has started (or failed to)."""
    return all(worker.done() for worker in pool.start())


def run_feeds(
    stages: Stages, feeds: Sequence[FeedState], deps: Deps, stop: threading.Event | None = None
) -> list[FeedOutcome]:
    """Every feed through `stages`; returns when all are done. When `stop` is set, feeds
    not begun are left for later and what is under way finishes (every write is a
    transaction)."""
    executor = Executor(stages, deps, stop)
    outcomes: list[FeedOutcome] = []
    try:
        executor.add(feeds)
        while executor.busy:
            outcomes += executor.step()
    finally:
        executor.close()
    return outcomes

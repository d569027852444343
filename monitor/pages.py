"""Pages stage (full_text): the pages that new items link to, fetched through the feeds'
fetcher under the feeds' rules and read for their article's text (extract.py), so an
item is matched on what the article says, not only on the feed's teaser.

One `Pages` serves one round of fetches in one process (runtime/executor.py: the feeds that
joined it while it was open, at most a few minutes). Each page is fetched once: a link
already asked for in the round (by another feed) shares that answer, and the caller
hands in the links whose text is stored already, which are not fetched again.

Fetches run in threads of their own, a host's pages queued for at most `per_host`
runners at once (sharing the poller's HostLimits with the feeds' fetches), so a slow
publisher holds only its own pages, never a thread that another host's page or any feed
is waiting for. A host gets one deadline of fetching per connection slot in a round
(`per_host` x (connect + read timeout)); its pages still queued after that are skipped,
which bounds what one slow or dead publisher can cost a feed (about twice the deadline)
without cutting a fast one short (hundreds of pages a cycle). Extraction runs right
after each fetch, one page at a time per process: the GIL would serialise it anyway, a
hostile page can take ~50 MB while extracted, and trafilatura parses every page with
one module-level lxml parser (a pass worker died, in a trial with 16 extractions at
once); so at most `concurrency` fetched bodies wait for their turn. A failure is an
outcome, never an exception: the item is matched on its feed text and, stored as seen,
never tried again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import httpx

from monitor import extract, fetch
from monitor.config import FullText, Settings
from monitor.errors import FetchError, FetchFailure
from monitor.models import Entry, Page, PageOutcome
from monitor.redact import redact

log = logging.getLogger(__name__)
_EXTRACTING = threading.Lock()  # one extraction at a time in this process (see above)
_STOPPED = Page(PageOutcome.SKIPPED, error="the poll stopped")


def wanted(entries: Sequence[Entry], mode: FullText, min_words: int) -> list[Entry]:
    """The entries whose linked page should be read: every one with a link when `mode` is
    true, those whose own text is shorter than `min_words` when it is "auto"."""
    if mode is False:
        return []
    linked = [e for e in entries if e.link]
    if mode == "auto":
        return [e for e in linked if len(e.item.body.split()) < min_words]
    return linked


_FAILED = {
    FetchFailure.TIMEOUT: PageOutcome.TIMEOUT,
    FetchFailure.TOO_LARGE: PageOutcome.TOO_BIG,
    FetchFailure.UNSAFE: PageOutcome.BLOCKED,
}


def outcome(exc: FetchError) -> PageOutcome:
    """What a failed page fetch counts as, by the kind of its failure."""
    if exc.status in (404, 410):
        return PageOutcome.NOT_FOUND
    if exc.status in (401, 402, 403, 451):
        return PageOutcome.FORBIDDEN
    if exc.status is not None:
        return PageOutcome.HTTP_ERROR
    return _FAILED.get(exc.kind, PageOutcome.ERROR)


@dataclass
class _Job:
    url: str
    host: str
    future: Future[Page]


class Pages:
    """The page fetches of one cycle in one process (see the module docstring)."""

    def __init__(
        self, settings: Settings, hosts: fetch.HostLimits, client: Callable[[], httpx.Client]
    ) -> None:
        self._settings = settings
        self._hosts = hosts
        self._new_client = client  # the service's (service.deps_for), made on first use
        http = settings.http
        self._deadline = (http.connect_timeout + http.read_timeout).total_seconds()
        self._budget = self._deadline * http.per_host  # of fetching, per host and round
        self._lock = threading.Lock()
        self._known: dict[str, Future[Page]] = {}  # by canonical link (the story key)
        self._queues: dict[str, deque[_Job]] = {}  # by host
        self._runners: dict[str, int] = {}
        self._spent: dict[str, float] = {}  # seconds of fetching, by host
        self._closed = False
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None

    def read(self, entries: Sequence[Entry], stored: Mapping[str, str]) -> dict[str, Future[Page]]:
        """Each entry's page (by entry key), answered at once for links whose text is
        `stored` (canonical link -> text), else as its fetch and extraction finish."""
        out: dict[str, Future[Page]] = {}
        for entry in entries:
            if entry.story_key in stored:
                out[entry.key] = _done(Page(PageOutcome.REUSED, stored[entry.story_key]))
            elif entry.link:
                out[entry.key] = self._page(entry.link, entry.story_key)
        return out

    def _page(self, url: str, key: str) -> Future[Page]:
        with self._lock:
            known = self._known.get(key)
            if known is not None:
                return _reused(known)
            job = _Job(url, (urlsplit(url).hostname or "").lower(), Future())
            self._known[key] = job.future
            if not self._closed:
                self._queue(job)
                return job.future
        job.future.set_result(_STOPPED)
        return job.future

    def _queue(self, job: _Job) -> None:
        """Queues a job for its host, starting a runner if the host has a free slot; called
        with the lock held."""
        self._queues.setdefault(job.host, deque()).append(job)
        running = self._runners.get(job.host, 0)
        if running < self._settings.http.per_host:
            self._runners[job.host] = running + 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self._settings.http.concurrency, thread_name_prefix="page"
                )
            self._pool.submit(self._run, job.host)

    def _run(self, host: str) -> None:
        """One of a host's runners: reads its queued pages one after another."""
        while True:
            with self._lock:
                queue = self._queues[host]
                if not queue:
                    self._runners[host] -= 1
                    return
                job = queue.popleft()
                spent = self._spent.get(host, 0.0)
            if spent >= self._budget:
                error = f"{host} took {spent:.0f}s of fetching this round"
                page = Page(PageOutcome.SKIPPED, error=error)
            else:
                page = self._fetch(job)
            job.future.set_result(page)

    def _fetch(self, job: _Job) -> Page:
        http = self._settings.http
        try:
            with self._hosts.slot(job.url):
                started = time.monotonic()
                try:
                    fetched = fetch.fetch(
                        self._http(),
                        job.url,
                        max_bytes=http.max_page_bytes,
                        deadline=self._deadline,
                        accept=extract.ACCEPT,
                    )
                finally:
                    with self._lock:
                        spent = self._spent.get(job.host, 0.0)
                        self._spent[job.host] = spent + time.monotonic() - started
            page = Page(PageOutcome.FETCHED, fetched=fetched)
        except FetchError as exc:
            page = Page(outcome(exc), error=exc.reason)
        except Exception as exc:  # noqa: BLE001 - a page must never cost its item
            url, error = redact(job.url), redact(repr(exc))
            log.error("page crashed", extra={"url": url, "error": error}, exc_info=exc)
            page = Page(PageOutcome.ERROR, error=error)
        if page.fetched is None:
            log.debug(
                "page not read",
                extra={"url": redact(job.url), "outcome": page.outcome, "error": page.error},
            )
        return page

    def _http(self) -> httpx.Client:
        """A client of the feeds' kind (timeouts, redirects, the guard, the User-Agent)
        with a connection pool of its own, so slow pages can never keep a feed waiting
        for a connection; the round closes it."""
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def stop(self) -> None:
        """Skips what is still queued, and whatever is asked for from now on; fetches in
        flight go on."""
        with self._lock:
            self._closed = True
            left = [job for queue in self._queues.values() for job in queue]
            for queue in self._queues.values():
                queue.clear()
        for job in left:
            job.future.set_result(_STOPPED)

    def close(self) -> None:
        """Stops, waits for the fetches in flight (each bounded by the deadline) and
        closes the client."""
        self.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._client is not None:
            self._client.close()


def extracted(page: Page) -> Page:
    """A fetched page with its article's text (or why there is none); any other as it is.
    Called where the feed's body is processed: in the processing thread or a pass worker,
    so extraction, like parsing, uses every core."""
    if page.fetched is None:
        return page
    with _EXTRACTING:
        cpu = time.thread_time()  # not wall time: other threads hold the GIL too
        done = extract.page(page.fetched)
        seconds = time.thread_time() - cpu
    if done.outcome != PageOutcome.EXTRACTED:
        log.debug(
            "page not read",
            extra={"url": redact(page.fetched.url), "outcome": done.outcome, "error": done.error},
        )
    # a link another feed asked for first is counted once, as that feed's fetch
    reused = page.outcome == PageOutcome.REUSED and done.text
    outcome = PageOutcome.REUSED if reused else done.outcome
    return Page(outcome, done.text, done.error, seconds)


def gather(futures: Mapping[str, Future[Page]], then: Callable[[dict[str, Page]], None]) -> None:
    """Calls `then` with every page once the last is read (at once when there is none),
    in the thread that read it: nobody waits on a page."""
    if not futures:
        then({})
        return
    lock = threading.Lock()
    left = [len(futures)]

    def one_done(_: Future[Page]) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            then({key: future.result() for key, future in futures.items()})

    for future in futures.values():
        future.add_done_callback(one_done)


def _done(page: Page) -> Future[Page]:
    future: Future[Page] = Future()
    future.set_result(page)
    return future


def _reused(known: Future[Page]) -> Future[Page]:
    """Another feed's answer for the same link, counted as reused, not fetched."""
    future: Future[Page] = Future()
    known.add_done_callback(
        lambda done: future.set_result(
            replace(done.result(), outcome=PageOutcome.REUSED)
            if done.result().fetched
            else done.result()
        )
    )
    return future

"""One feed's stages, in order, the one place they meet (miniflux's RefreshFeed is the
model):

    fetch -> parse -> dedupe -> (full text: pages fetched, extracted) -> match -> store

`refresh` takes one fetched feed through them, top to bottom; deliver.py sends what it
stored. Many feeds at once are the executor's business (runtime/executor.py): it is
handed these stages (`FeedStages`) and runs each part where it belongs, the fetch (and,
for full text, the read and the pages) in a fetch thread, `refresh` in its processing
thread or a pass worker process, so the network and every core are kept busy.

A 304 or a failure is only a record of the fetch (its next due time, feeds.next_due); a
feed that fails never stops the others. Full text: only the pages of new items that may
alert are fetched (pages.py), never old items (backfill), items seen before, or a link
already asked for or stored with text; a page that fails leaves its item matched on the
feed's own text.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from monitor import dedupe, fetch
from monitor.config import FullText, Settings
from monitor.errors import DatabaseUnavailable, FetchError, MonitorError, StoreError
from monitor.feeds import FeedState, next_due
from monitor.models import (
    Body,
    Entry,
    FeedOutcome,
    Fetched,
    FetchResult,
    MatchResult,
    NewItems,
    Page,
    utcnow,
)
from monitor.outbox import policies
from monitor.redact import redact
from monitor.runtime import executor

if TYPE_CHECKING:
    from monitor.service import Deps, Processing

log = logging.getLogger(__name__)
_RECORD_BATCH = 200  # fetch records written per transaction


def refresh(feed: FeedState, body: Body, deps: Processing) -> FeedOutcome:
    """One fetched feed through the stages, in order; a failure is the feed's failed
    outcome, never an exception. The matcher is built only when something new is to be
    matched."""
    try:
        now = utcnow()
        fetched = body.fetched
        max_interval = deps.settings.max_interval
        if fetched.not_modified:
            return _unchanged(feed, fetched, next_due(feed, now, 0, max_interval, fetched.hint))
        items = body.items or read(feed, fetched, deps)  # parse, dedupe
        if items.pages:  # extract
            from monitor import pages  # full text only (see fetch_feed)

            items = replace(items, pages={k: pages.extracted(p) for k, p in items.pages.items()})
        alertable = [_with_page(e, items.pages.get(e.key)) for e in items.alertable]
        matches = [  # match
            (dedupe.fingerprint(e), results)
            for e, results in deps.matcher.match(alertable, feed=feed.name)
        ]
        latest = {e.key: e for e in alertable} | {e.key: e for e, _ in matches}
        new = [latest.get(e.key, e) for e in items.new]
        first = feed.last_success_at is None
        held = _held_back(feed, items, deps) if first else []
        record = FetchResult(
            feed.id,
            status=fetched.status,
            error=None,
            etag=fetched.etag,
            last_modified=fetched.last_modified,
            new_items=len(new),
            next_due=next_due(feed, now, 0, max_interval, _hint(fetched.hint, items.parsed.ttl)),
            moved_to=fetched.moved_to,
            elapsed=fetched.elapsed,
            held_back=len(items.new) - len(alertable) if first else None,
            held_back_matching=len(held),
        )
        wanted = policies(deps.matcher.watchlists, now)
        alerting = {e.key for e in alertable}
        queued = deps.store.save(feed.id, new, alerting, matches, wanted, record)  # store
        outcome = FeedOutcome(
            feed.name, True, fetched.status, len(new), queued, elapsed=fetched.elapsed
        )
        _tell(feed, outcome, record, held, items)
        return outcome
    except Exception as exc:  # noqa: BLE001 - a broken feed must not stop the others
        return failed(feed, exc, deps)


def fetch_feed(
    feed: FeedState,
    deps: Deps,
    hosts: fetch.HostLimits,
    page_round: Callable[[], executor.PageRound],
    then: Callable[[Body], None],
) -> None:
    """In a fetch thread: the feed fetched and, for full text, read and its new items'
    pages asked for (in `page_round`); `then` gets the body, once its last page has come.
    Raises on a failed fetch or read."""
    http = deps.settings.http
    with hosts.slot(feed.url):
        fetched = fetch.fetch(
            deps.client,
            feed.url,
            etag=feed.etag,
            last_modified=feed.last_modified,
            max_bytes=http.max_body_bytes,
            deadline=(http.connect_timeout + http.read_timeout).total_seconds(),
        )
    mode = _full_text(feed, deps.settings)
    if mode is False or fetched.not_modified:
        then(Body(fetched))
        return
    items = read(feed, fetched, deps)
    # imported for full text only: pages.py and extract.py are a hundredth of a second of
    # a poll with nothing new, which never reads a page
    from monitor import pages

    want = pages.wanted(items.alertable, mode, deps.settings.full_text_min_words)
    if not want:
        then(Body(fetched, items))
        return
    stored = deps.store.page_texts(e.story_key for e in want)
    pages.gather(
        page_round().read(want, stored),
        lambda got: then(Body(fetched, replace(items, pages=got))),
    )


def read(feed: FeedState, fetched: Fetched, deps: Processing) -> NewItems:
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
    return NewItems(parsed, new, alertable)


def _unchanged(feed: FeedState, fetched: Fetched, due: datetime) -> FeedOutcome:
    record = FetchResult(
        feed.id,
        status=304,
        error=None,
        next_due=due,
        moved_to=fetched.moved_to,
        elapsed=fetched.elapsed,
    )
    return FeedOutcome(feed.name, True, 304, record=record, elapsed=fetched.elapsed)


def _tell(
    feed: FeedState,
    outcome: FeedOutcome,
    record: FetchResult,
    held: list[tuple[Entry, list[MatchResult]]],
    items: NewItems,
) -> None:
    """The outcome's news for its log lines: what a first fetch kept back, pages read."""
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
    if items.pages:
        outcome.pages = dict(Counter(p.outcome for p in items.pages.values()))
        outcome.extract_seconds = sum(p.seconds for p in items.pages.values())
        log.info(
            "pages read",
            extra={
                "feed": feed.name,
                "feed_id": feed.id,
                "pages": len(items.pages),
                "extracted": outcome.pages.get("extracted", 0),
                "outcomes": " ".join(f"{k}:{n}" for k, n in sorted(outcome.pages.items())),
                "extract_ms": round(outcome.extract_seconds * 1000),
            },
        )


def _hint(*hints: timedelta | None) -> timedelta | None:
    given = [h for h in hints if h is not None]
    return max(given) if given else None


def _held_back(
    feed: FeedState, items: NewItems, deps: Processing
) -> list[tuple[Entry, list[MatchResult]]]:
    """A first fetch's items too old to alert that a watchlist would have matched: a new
    user whose first poll alerts on nothing is told how much it kept back, and where."""
    keys = {e.key for e in items.alertable}
    old = [e for e in items.new if e.key not in keys]
    return deps.matcher.match(old, feed=feed.name) if old else []


def _with_page(entry: Entry, page: Page | None) -> Entry:
    if page is None:
        return entry
    return replace(entry, item=replace(entry.item, article=page.text or ""), page=page.outcome)


def _full_text(feed: FeedState, settings: Settings) -> FullText:
    return settings.full_text if feed.full_text is None else feed.full_text


def failed(feed: FeedState, exc: BaseException, deps: Processing) -> FeedOutcome:
    """The outcome of a feed that failed: logged with its id, and backed off."""
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


class FeedStages:
    """The stages as the executor is handed them (runtime/executor.Stages), with the
    per-host limit that one executor's feeds and pages share."""

    def __init__(self, settings: Settings) -> None:
        self._hosts = fetch.HostLimits(settings.http.per_host)

    def page_round(self, deps: Deps) -> executor.PageRound:
        from monitor import pages  # full text only (see fetch_feed)

        return pages.Pages(deps.settings, self._hosts, deps.page_client)

    def fetch(
        self,
        feed: FeedState,
        deps: Deps,
        page_round: Callable[[], executor.PageRound],
        then: Callable[[Body], None],
    ) -> None:
        fetch_feed(feed, deps, self._hosts, page_round, then)

    def read(self, feed: FeedState, body: Body, deps: Deps) -> Body:
        return replace(body, items=read(feed, body.fetched, deps))

    def refresh(self, feed: FeedState, body: Body, deps: Deps) -> FeedOutcome:
        return refresh(feed, body, deps)

    def failed(self, feed: FeedState, exc: BaseException, deps: Deps) -> FeedOutcome:
        return failed(feed, exc, deps)

    def matcher_built(self, deps: Deps) -> bool:
        return deps.matcher.built

    def record(self, deps: Deps, outcomes: Sequence[FeedOutcome]) -> None:
        """Writes the fetch records of finished feeds, `_RECORD_BATCH` a transaction."""
        results = [o.record for o in outcomes if o.record is not None]
        for i in range(0, len(results), _RECORD_BATCH):
            batch = results[i : i + _RECORD_BATCH]
            try:
                deps.feeds.record_fetches(batch)
            except DatabaseUnavailable:
                log.debug("poll results wait for the database", extra={"feeds": len(batch)})
            except StoreError as exc:
                log.error("cannot record poll results", extra={"feeds": len(batch), "error": exc})


def run_feeds(
    feeds: Sequence[FeedState], deps: Deps, stop: threading.Event | None = None
) -> list[FeedOutcome]:
    """One cycle: every feed fetched and, if it changed, processed; returns when all are
    done. When `stop` is set, feeds not begun are left for later and what is under way
    finishes (every write is a transaction)."""
    return executor.run_feeds(FeedStages(deps.settings), feeds, deps, stop)

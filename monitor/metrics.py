"""The optional HTTP endpoint of `monitor run --http ADDR`: /healthz and /metrics, and
Slack's request URL (/slack/events) when the Slack app takes its requests here.

/metrics is prometheus_client's exposition of one registry per service: what only the
running process knows (fetch latencies and outcomes, and linked pages' outcomes, reported
back by pass workers in their FeedOutcomes; cycle times; the standard process_* metrics),
and counts that live in the database (feeds by state, articles, matches, deliveries),
read when scraped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col

from monitor.errors import StoreError
from monitor.health import assess
from monitor.models import PAGE_OUTCOMES, ArticleRow, DeliveryRow, MatchRow, utcnow
from monitor.outage import watch_of
from monitor.redact import redact

if TYPE_CHECKING:
    from monitor.models import FeedOutcome

log = logging.getLogger(__name__)

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STATES = ("ok", "slow", "failing", "stale", "redirected")
MAX_REQUEST = 1 << 20  # bytes of a request to /slack/events


class Metrics:
    """What the running process measures, in a registry of its own (two services in one
    process, as in tests, never share counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._fetch_seconds = Histogram(
            "monitor_fetch_seconds",
            "Feed fetch latency in this process.",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._fetches = Counter(
            "monitor_fetches",
            "Fetches in this process by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._pages = Counter(
            "monitor_pages",
            "Linked pages read for full text in this process (pass workers included), by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in PAGE_OUTCOMES:
            self._pages.labels(outcome=outcome)
        self._last_cycle = Gauge(
            "monitor_last_cycle_seconds", "Duration of the last poll cycle.", registry=self.registry
        )
        ProcessCollector(registry=self.registry)
        self.last_cycle_at: float | None = None  # monotonic

    def polled(self, outcomes: Iterable[FeedOutcome]) -> None:
        for outcome in outcomes:
            kind = "error" if not outcome.ok else "not_modified" if outcome.status == 304 else "ok"
            self._fetch_seconds.observe(outcome.elapsed or 0.0)
            self._fetches.labels(outcome=kind).inc()
            for page, count in outcome.pages.items():
                self._pages.labels(outcome=page).inc(count)

    def cycle(self, seconds: float) -> None:
        self._last_cycle.set(seconds)
        self.last_cycle_at = time.monotonic()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StoredCounts(Collector):
    """Counts read from the database at each scrape, so every worker reports the same."""

    def __init__(self, service: Any) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The counts, or none when the database cannot give them: the scrape keeps the
        process's own metrics, and /healthz says what is wrong with the database."""
        try:
            families = list(self._counts())
        except (SQLAlchemyError, StoreError) as exc:
            log.warning("stored counts unavailable", extra={"error": redact(str(exc))})
            return
        yield from families

    def _counts(self) -> Iterator[GaugeMetricFamily]:
        service = self._service
        deps, settings = service.deps, service.config.settings
        now = utcnow()
        configured = {f.name for f in service.feeds}
        states = Tally(
            assess(r, now, settings).state for r in deps.feeds.rows() if r.name in configured
        )
        feeds = GaugeMetricFamily(
            "monitor_feeds", "Configured feeds by health state.", labels=["state"]
        )
        for state in _STATES:
            feeds.add_metric([state], states.get(state, 0))
        yield feeds
        with deps.store.engine.connect() as conn:
            articles = conn.execute(select(func.count()).select_from(ArticleRow)).scalar_one()
            by_watchlist = conn.execute(
                select(col(MatchRow.watchlist), func.count()).group_by(col(MatchRow.watchlist))
            ).all()
            by_status = conn.execute(
                select(col(DeliveryRow.status), func.count()).group_by(col(DeliveryRow.status))
            ).all()
        yield GaugeMetricFamily("monitor_articles", "Articles stored.", value=articles)
        matches = GaugeMetricFamily(
            "monitor_matches", "Matches stored, by watchlist.", labels=["watchlist"]
        )
        for watchlist, count in by_watchlist:
            matches.add_metric([watchlist], count)
        yield matches
        deliveries = GaugeMetricFamily(
            "monitor_deliveries", "Deliveries by status (pending is the queue).", labels=["status"]
        )
        for status, count in by_status:
            deliveries.add_metric([status], count)
        yield deliveries


def health(service: Any, metrics: Metrics, scheduler_alive: Callable[[], bool]) -> dict[str, Any]:
    """/healthz: the scheduler runs, the database answers, and a cycle ran recently."""
    report: dict[str, Any] = {"scheduler": "running" if scheduler_alive() else "stopped"}
    try:
        with service.deps.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        report["database"] = "ok"
        now = utcnow()
        report.update(service.deps.feeds.schedule(service.feeds, now).describe(now))
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy, and says why
        report["database"] = f"error: {type(exc).__name__}"
    down = watch_of(service.deps.store.engine).down_for
    if down is not None:
        report["database_down_seconds"] = round(down, 1)
    age = None if metrics.last_cycle_at is None else time.monotonic() - metrics.last_cycle_at
    report["last_cycle_age_seconds"] = None if age is None else round(age, 1)
    limit = 3 * service.config.settings.tick.total_seconds() + 60
    fresh = age is not None and age <= limit
    report["ok"] = report["scheduler"] == "running" and report["database"] == "ok" and fresh
    return report


def serve(
    address: str, service: Any, metrics: Metrics, scheduler_alive: Callable[[], bool]
) -> ThreadingHTTPServer:
    """Starts the endpoint on a daemon thread; the caller shuts it down."""
    host, _, port = address.rpartition(":")
    metrics.registry.register(StoredCounts(service))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, metrics.render().decode())
            elif self.path == "/healthz":
                report = health(service, metrics, scheduler_alive)
                self._send(200 if report["ok"] else 503, "application/json", json.dumps(report))
            else:
                self._send(404, "text/plain", "not found\n")

        def do_POST(self) -> None:
            """Slack's requests, verified and answered by the Slack app (monitor/slackapp)."""
            from monitor.slackapp import EVENTS_PATH

            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            if path != EVENTS_PATH or service.slack is None:
                self._send(404, "text/plain", "not found\n")
                return
            if length > MAX_REQUEST:  # Slack's payloads are a few kilobytes
                self._send(413, "text/plain", "too large\n")
                return
            body = self.rfile.read(length)
            peer = str(self.client_address[0])
            status, headers, answer = service.slack.http(body, dict(self.headers), query, peer)
            kind = headers.pop("content-type", "text/plain; charset=utf-8")
            self._send(status, kind, answer.decode())

        def _send(self, status: int, kind: str, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    bound = server.server_address
    log.info("http endpoint listening", extra={"address": f"{bound[0]!s}:{bound[1]}"})
    return server

"""The optional HTTP endpoint of `monitor run --http ADDR`: /healthz and /metrics.

Counts that live in the database (feeds by state, articles, matches, deliveries) are read
when scraped; what only the running process knows (fetch latencies, cycle times) is
kept here. The text format is Prometheus' exposition format 0.0.4.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlmodel import col

from monitor.health import assess
from monitor.models import ArticleRow, DeliveryRow, MatchRow, utcnow

if TYPE_CHECKING:
    from monitor.pipeline import FeedOutcome

log = logging.getLogger(__name__)

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Metrics:
    """What the running process measures; thread-safe."""

    fetch_counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    fetch_sum: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    last_cycle_seconds: float | None = None
    last_cycle_at: float | None = None  # monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fetched(self, seconds: float, outcome: str) -> None:
        with self._lock:
            index = next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))
            self.fetch_counts[index] += 1
            self.fetch_sum += seconds
            self.outcomes[outcome] += 1

    def polled(self, outcomes: Iterable[FeedOutcome]) -> None:
        for outcome in outcomes:
            kind = "error" if not outcome.ok else "not_modified" if outcome.status == 304 else "ok"
            self.fetched(outcome.elapsed or 0.0, kind)

    def cycle(self, seconds: float) -> None:
        with self._lock:
            self.last_cycle_seconds = seconds
            self.last_cycle_at = time.monotonic()


def render(service: Any, metrics: Metrics) -> str:
    """The /metrics page."""
    store, settings = service.deps.store, service.config.settings
    now = utcnow()
    lines: list[str] = []

    def family(name: str, kind: str, doc: str) -> None:
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")

    configured = {f.name for f in service.feeds}
    states = Counter(assess(r, now, settings).state for r in store.feeds() if r.name in configured)
    family("monitor_feeds", "gauge", "Configured feeds by health state.")
    for state in ("ok", "slow", "failing", "stale", "redirected"):
        lines.append(f'monitor_feeds{{state="{state}"}} {states.get(state, 0)}')
    with store.engine.connect() as conn:
        articles = conn.execute(select(func.count()).select_from(ArticleRow)).scalar_one()
        by_watchlist = conn.execute(
            select(col(MatchRow.watchlist), func.count()).group_by(col(MatchRow.watchlist))
        ).all()
        by_status = conn.execute(
            select(col(DeliveryRow.status), func.count()).group_by(col(DeliveryRow.status))
        ).all()
    family("monitor_articles", "gauge", "Articles stored.")
    lines.append(f"monitor_articles {articles}")
    family("monitor_matches", "gauge", "Matches stored, by watchlist.")
    lines += [f'monitor_matches{{watchlist="{_label(w)}"}} {n}' for w, n in by_watchlist]
    family("monitor_deliveries", "gauge", "Deliveries by status (pending is the queue).")
    lines += [f'monitor_deliveries{{status="{_label(s)}"}} {n}' for s, n in by_status]
    with metrics._lock:
        family("monitor_fetch_seconds", "histogram", "Feed fetch latency in this process.")
        total = 0
        for bound, count in zip((*BUCKETS, "+Inf"), metrics.fetch_counts, strict=True):
            total += count
            lines.append(f'monitor_fetch_seconds_bucket{{le="{bound}"}} {total}')
        lines.append(f"monitor_fetch_seconds_sum {metrics.fetch_sum:.6f}")
        lines.append(f"monitor_fetch_seconds_count {total}")
        family("monitor_fetches", "counter", "Fetches in this process by outcome.")
        lines += [
            f'monitor_fetches_total{{outcome="{o}"}} {n}'
            for o, n in sorted(metrics.outcomes.items())
        ]
        family("monitor_last_cycle_seconds", "gauge", "Duration of the last poll cycle.")
        lines.append(f"monitor_last_cycle_seconds {metrics.last_cycle_seconds or 0:.3f}")
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def health(service: Any, metrics: Metrics, scheduler_alive: Callable[[], bool]) -> dict[str, Any]:
    """/healthz: the scheduler runs, the database answers, and a cycle ran recently."""
    report: dict[str, Any] = {"scheduler": "running" if scheduler_alive() else "stopped"}
    try:
        with service.deps.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        report["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy, and says why
        report["database"] = f"error: {type(exc).__name__}"
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

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, "text/plain; version=0.0.4", render(service, metrics))
            elif self.path == "/healthz":
                report = health(service, metrics, scheduler_alive)
                self._send(200 if report["ok"] else 503, "application/json", json.dumps(report))
            else:
                self._send(404, "text/plain", "not found\n")

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
    log.info("http endpoint listening address=%s:%d", *server.server_address[:2])
    return server

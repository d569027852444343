"""Drives the pipeline on a clock with APScheduler 3.x.

Feed due times live in the database, not in the scheduler: two jobs wake every
`tick`, one polls the feeds that are due and one delivers pending alerts. A restart
therefore loses no schedule, and a job that overruns is never run twice at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from monitor import metrics as metrics_mod
from monitor.metrics import Metrics
from monitor.models import utcnow
from monitor.pipeline import Deliverer, check_health, run_feeds
from monitor.service import Service
from monitor.workers import PassPool

log = logging.getLogger(__name__)


class Activity:
    """Counts running jobs so shutdown can wait for them, and no longer than it must."""

    def __init__(self) -> None:
        self._count = 0
        self._cond = threading.Condition()

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._cond:
            self._count += 1
        try:
            yield
        finally:
            with self._cond:
                self._count -= 1
                self._cond.notify_all()

    def guard(self, name: str, job: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with self.running():
                try:
                    job()
                except Exception:
                    log.exception("job failed job=%s", name)

        return run

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._count == 0, timeout=timeout)


def run(
    service: Service,
    stop: threading.Event,
    grace: float = 5.0,
    reload: threading.Event | None = None,
    http: str | None = None,
) -> bool:
    """Runs until `stop` is set; returns False if jobs were still busy after `grace` seconds.

    Every tick it also looks at the config files, and reloads them when they changed or
    `reload` is set (SIGHUP)."""
    reload = reload or threading.Event()
    activity = Activity()
    metrics = Metrics()
    scheduler = BackgroundScheduler(
        timezone=UTC,
        job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
    )

    def poll_due() -> None:
        started = time.monotonic()
        service.refresh(reload)
        deps = service.deps
        due = deps.store.states(service.feeds, due_by=utcnow())
        if not due or stop.is_set():
            metrics.cycle(time.monotonic() - started)
            return
        outcomes = run_feeds(due, deps, stop)
        metrics.polled(outcomes)
        metrics.cycle(time.monotonic() - started)
        notices = check_health(deps, service.feeds)
        if (notices or any(o.queued for o in outcomes)) and not stop.is_set():
            scheduler.modify_job("deliver", next_run_time=datetime.now(UTC))

    deliverer = Deliverer(service.deps)

    def deliver() -> None:
        service.deliver(deliverer, stop)

    pool = service.deps.pool
    if isinstance(pool, PassPool) and pool.wants(len(service.feeds)):
        pool.start()

    tick = service.config.settings.tick.total_seconds()
    now = datetime.now(UTC)
    scheduler.add_job(
        activity.guard("poll", poll_due), "interval", seconds=tick, id="poll", next_run_time=now
    )
    scheduler.add_job(
        activity.guard("deliver", deliver),
        "interval",
        seconds=tick,
        id="deliver",
        next_run_time=now,
    )
    scheduler.add_job(
        activity.guard("prune", service.prune),
        "interval",
        hours=6,
        id="prune",
        next_run_time=now + timedelta(minutes=1),
    )
    scheduler.start()
    endpoint = (
        metrics_mod.serve(http, service, metrics, lambda: scheduler.running) if http else None
    )
    log.info("scheduler started tick=%ss feeds=%d", tick, len(service.feeds))
    stop.wait()
    log.info("stopping: waiting up to %.0fs for running jobs", grace)
    scheduler.shutdown(wait=False)
    if endpoint is not None:
        endpoint.shutdown()
    return activity.wait_idle(grace)

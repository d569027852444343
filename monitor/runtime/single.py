"""Drives the pipeline on a clock: one host, APScheduler 3.x for the periodic jobs.

Feed due times live in the database, not in the scheduler. Polling is continuous: every
`tick` the poll loop looks for due feeds and starts those not already in flight, and
each feed's results are written and its alerts handed to delivery as they come, so a
slow feed holds up nobody, and a feed is never polled twice at once. Delivery and
pruning are scheduler jobs; a restart loses no schedule.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from monitor import cycle
from monitor import metrics as metrics_mod
from monitor.errors import DatabaseUnavailable
from monitor.metrics import Metrics
from monitor.models import utcnow
from monitor.pipeline import FeedStages
from monitor.runtime import Activity, Control
from monitor.runtime.executor import Executor
from monitor.service import Service

log = logging.getLogger(__name__)


class _Kick:
    """Runs the deliver job now, or, while it runs, once more right after: an alert
    stored while a delivery pass is finishing never waits for the next tick."""

    def __init__(self, scheduler: BackgroundScheduler, job: str) -> None:
        self._scheduler = scheduler
        self._job = job
        self._lock = threading.Lock()
        self._running = False
        self._again = False

    def __call__(self) -> None:
        with self._lock:
            if self._running:
                self._again = True
                return
        self._scheduler.modify_job(self._job, next_run_time=datetime.now(UTC))

    def begin(self) -> None:
        with self._lock:
            self._running, self._again = True, False

    def more(self) -> bool:
        """After a pass: True (and run again) if it was kicked meanwhile."""
        with self._lock:
            again, self._again = self._again, False
            self._running = again
            return again


def run(service: Service, control: Control) -> bool:
    """The single-host Runtime. Every tick it also looks at the config files, and reloads
    them when they changed or `reload` is set (SIGHUP)."""
    stop, reload, grace, http = control.stop, control.reload, control.grace, control.http
    activity = Activity()
    metrics = Metrics()
    scheduler = BackgroundScheduler(
        timezone=UTC,
        job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
    )
    tick = service.config.settings.tick.total_seconds()
    kick = _Kick(scheduler, "deliver")
    deliverer = service.deliverer()

    def deliver() -> None:
        kick.begin()
        cycle.deliver(service, deliverer, stop)
        while kick.more() and not stop.is_set():
            cycle.deliver(service, deliverer, stop)

    executor = Executor(FeedStages(service.deps.settings), service.deps, stop)

    def look() -> None:
        """Due feeds not in flight start now; the health of what finished is checked."""
        started = time.monotonic()
        service.refresh(reload)
        executor.deps = service.deps
        due = service.deps.feeds.states(service.feeds, due_by=utcnow())
        executor.add([f for f in due if f.id not in executor.in_flight])
        metrics.cycle(time.monotonic() - started)

    def poll() -> None:
        next_look = time.monotonic()
        finished_since_look = False
        while not stop.is_set():
            try:
                if time.monotonic() >= next_look:
                    if finished_since_look and cycle.health(service):
                        kick()
                    finished_since_look = False
                    look()
                    next_look = time.monotonic() + tick
                outcomes = executor.step(max(0.0, next_look - time.monotonic()))
                if outcomes:
                    finished_since_look = True
                    metrics.polled(outcomes)
                    if any(o.queued for o in outcomes) and not stop.is_set():
                        kick()
            except DatabaseUnavailable:  # logged once, by the database's watch
                log.debug("poll loop waits for the database")
                next_look = time.monotonic() + tick
                stop.wait(tick)
            except Exception:
                log.exception("poll loop failed, trying again next tick")
                next_look = time.monotonic() + tick
                stop.wait(tick)
        while executor.busy:  # fetches under way finish (or the grace period ends first)
            executor.step(0.5)
        executor.close()

    poll_thread = threading.Thread(target=activity.guard("poll", poll), name="poll", daemon=True)
    now = datetime.now(UTC)
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
    poll_thread.start()
    endpoint = (
        metrics_mod.serve(http, service, metrics, lambda: scheduler.running) if http else None
    )
    log.info("scheduler started", extra={"tick": f"{tick:g}s", "feeds": len(service.feeds)})
    stop.wait()
    log.info("stopping: waiting up to %.0fs for running jobs", grace)
    executor.wake()
    scheduler.shutdown(wait=False)
    if endpoint is not None:
        endpoint.shutdown()
    return activity.wait_idle(grace)

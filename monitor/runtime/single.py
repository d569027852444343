"""Drives the pipeline on a clock with APScheduler 3.x.

Feed due times live in the database, not in the scheduler: two jobs wake every
`tick`, one polls the feeds that are due and one delivers pending alerts. A restart
therefore loses no schedule, and a job that overruns is never run twice at once.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from monitor import metrics as metrics_mod
from monitor.metrics import Metrics
from monitor.models import utcnow
from monitor.pipeline import check_health, run_feeds
from monitor.runtime import Activity, Control
from monitor.service import Service

log = logging.getLogger(__name__)


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

    def poll_due() -> None:
        started = time.monotonic()
        service.refresh(reload)
        deps = service.deps
        due = deps.feeds.states(service.feeds, due_by=utcnow())
        if not due or stop.is_set():
            metrics.cycle(time.monotonic() - started)
            return
        outcomes = run_feeds(due, deps, stop)
        metrics.polled(outcomes)
        metrics.cycle(time.monotonic() - started)
        notices = check_health(deps, service.feeds)
        if (notices or any(o.queued for o in outcomes)) and not stop.is_set():
            scheduler.modify_job("deliver", next_run_time=datetime.now(UTC))

    deliverer = service.deliverer()

    def deliver() -> None:
        service.deliver(deliverer, stop)

    pool = service.deps.pool
    if pool is not None and pool.wants(len(service.feeds)):
        pool.start()  # its workers import and build their matcher while the first cycle fetches

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
    log.info("scheduler started", extra={"tick": f"{tick:g}s", "feeds": len(service.feeds)})
    stop.wait()
    log.info("stopping: waiting up to %.0fs for running jobs", grace)
    scheduler.shutdown(wait=False)
    if endpoint is not None:
        endpoint.shutdown()
    return activity.wait_idle(grace)

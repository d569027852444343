"""Queue mode: several `monitor run` processes, on one host or many, share one PostgreSQL
through procrastinate's job queue (workers take jobs with SELECT ... FOR UPDATE SKIP LOCKED).

- Every tick one periodic job (procrastinate defers it once across all workers) claims
  the due feeds, moving each one's due time a lease ahead in the same UPDATE, and queues
  one poll job per feed, locked by the feed: no feed is polled by two workers at once.
- Another gathers digests and queues one delivery job per channel with something due,
  locked by the channel: one worker at a time posts to a channel, and it paces itself
  from the channel's last send, whoever made it.
- A worker that dies stops its heartbeat; after `queue.stalled_after` the recovery job
  puts its jobs back in the queue for the others. Taking over is safe: a poll job whose
  feed was polled since it was queued does nothing, and the outbox keeps alerts
  exactly-once (claim before send, look for a lost send before posting again). A
  delivery job holds its channel's lock while it sends, so the worker that takes over a
  dead one's channel knows the sends it left unconfirmed are nobody's, and settles them
  at once (see deliver.Senders).

The database stays the source of truth (feed due times, the outbox); the queue only says
who does what now, so jobs carry ids, never data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import procrastinate
from procrastinate import exceptions as queue_errors
from procrastinate.job_context import JobContext
from procrastinate.jobs import Status
from procrastinate.schema import SchemaManager
from sqlalchemy import Engine, text

from monitor import metrics as metrics_mod
from monitor.config import Settings
from monitor.db import conninfo, take_turns
from monitor.feeds import FeedState
from monitor.metrics import Metrics
from monitor.models import utcnow
from monitor.pipeline import check_health, run_feeds
from monitor.runtime import Activity, Control
from monitor.service import Service

log = logging.getLogger(__name__)

POLL = "monitor:poll_feed"
DELIVER = "monitor:deliver_channel"
SCHEDULE = "monitor:schedule_feeds"
DISPATCH = "monitor:dispatch_deliveries"
RECOVER = "monitor:recover_stalled"
PRUNE = "monitor:prune"
FORGET = "monitor:forget_old_jobs"
_KEEP_FINISHED_JOBS = 72  # hours a failed job stays in the queue's tables, for a look
_SCHEMA_LOCK = 0x6D6F6E71  # PostgreSQL advisory lock held while creating the queue's tables
_BATCH = 500  # jobs deferred in one round trip
_VERSION_TABLE = "monitor_queue_schema"  # the procrastinate version its tables are at


def prepare(engine: Engine) -> None:
    """Creates procrastinate's tables and functions beside ours, or brings them up to the
    installed procrastinate with its own migration files, once, even when several workers
    start together (they take turns on an advisory lock). Upgrade all workers together:
    a migration may drop what an older worker still calls."""
    installed = _version(procrastinate.__version__)
    with engine.begin() as conn:
        take_turns(conn, _SCHEMA_LOCK)
        conn.execute(text(f"CREATE TABLE IF NOT EXISTS {_VERSION_TABLE} (version text NOT NULL)"))
        recorded = conn.execute(text(f"SELECT version FROM {_VERSION_TABLE}")).scalar()
        fresh = conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is None
        if fresh:
            steps = [SchemaManager.get_schema()]
        elif recorded is not None and _version(recorded) < installed:
            steps = [
                path.read_text()
                for path in sorted(Path(SchemaManager.get_migrations_path()).glob("*.sql"))
                if _version(recorded) < _version(path.name.split("_")[0]) <= installed
            ]
        else:
            steps = []
        cursor = conn.connection.cursor()
        for sql in steps:
            cursor.execute(sql)  # no parameters: a file of many statements
        cursor.close()
        conn.execute(text(f"DELETE FROM {_VERSION_TABLE}"))
        conn.execute(
            text(f"INSERT INTO {_VERSION_TABLE} VALUES (:v)"), {"v": procrastinate.__version__}
        )
    if fresh:
        log.info("job queue tables created", extra={"procrastinate": procrastinate.__version__})
    elif steps:
        log.info(
            "job queue tables migrated",
            extra={"from": recorded, "to": procrastinate.__version__, "files": len(steps)},
        )


def _version(value: str) -> tuple[int, ...]:
    """'3.10.0' and a migration file's '03.10.00' alike."""
    return tuple(int(part) for part in value.split(".")[:3] if part.isdigit())


def every(tick: timedelta) -> str:
    """A cron line (with procrastinate's sixth column, seconds) firing every tick."""
    seconds = max(1, round(tick.total_seconds()))
    if seconds < 60:
        return f"* * * * * */{seconds}"
    return f"*/{max(1, seconds // 60)} * * * *"


def make_app(settings: Settings) -> procrastinate.App:
    """The job queue with our tasks: the same in every worker, so any worker runs any job."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=conninfo(settings.effective_database_url()), min_size=1, max_size=4
        )
    )
    app.task(name=POLL, pass_context=True)(_poll_feed)
    app.task(name=DELIVER, pass_context=True)(_deliver_channel)
    tick = every(settings.tick)
    for name, func in ((SCHEDULE, _schedule_feeds), (DISPATCH, _dispatch_deliveries)):
        app.periodic(cron=tick)(
            app.task(name=name, pass_context=True, lock=name, queueing_lock=name)(func)
        )
    # no lock: a recovery job left by a dead worker must not block the one that frees it
    app.periodic(cron=tick)(
        app.task(name=RECOVER, pass_context=True, queueing_lock=RECOVER)(_recover_stalled)
    )
    app.periodic(cron="17 */6 * * *")(
        app.task(name=PRUNE, pass_context=True, lock=PRUNE, queueing_lock=PRUNE)(_prune)
    )
    app.periodic(cron="43 3 * * *")(
        app.task(name=FORGET, pass_context=True, queueing_lock=FORGET)(_forget_old_jobs)
    )
    return app


def _job(context: JobContext, work: Callable[[QueueWorker], None]) -> None:
    """Runs a job with this process's worker, counted so shutdown knows when it is idle."""
    worker: QueueWorker = context.additional_context["monitor"]
    with worker.activity.running():
        work(worker)


def _poll_feed(context: JobContext, feed_id: int, queued_at: str) -> None:
    _job(context, lambda w: w.poll(feed_id, datetime.fromisoformat(queued_at)))


def _deliver_channel(context: JobContext, channel: str) -> None:
    _job(context, lambda w: w.deliver(channel))


def _schedule_feeds(context: JobContext, timestamp: int) -> None:
    _job(context, lambda w: w.schedule())


def _dispatch_deliveries(context: JobContext, timestamp: int) -> None:
    _job(context, lambda w: w.dispatch())


def _prune(context: JobContext, timestamp: int) -> None:
    _job(context, lambda w: w.service.prune())


async def _forget_old_jobs(context: JobContext, timestamp: int) -> None:
    """Successful jobs are deleted as they finish; failed ones are kept a while, then go."""
    await context.app.job_manager.delete_old_jobs(
        nb_hours=_KEEP_FINISHED_JOBS,
        include_failed=True,
        include_cancelled=True,
        include_aborted=True,
    )


async def _recover_stalled(context: JobContext, timestamp: int) -> None:
    """Jobs of workers silent for `stalled_after` go back to the queue. One that cannot
    (a newer job for the same feed or channel is already waiting) is dropped: the newer
    one does its work."""
    manager = context.app.job_manager
    worker: QueueWorker = context.additional_context["monitor"]
    wait = worker.service.config.settings.queue.stalled_after.total_seconds()
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=wait):
        try:
            await manager.retry_job(job)
            action = "requeued"
        except queue_errors.ConnectorException:
            await manager.finish_job(job, status=Status.FAILED, delete_job=True)
            action = "dropped for the newer job queued"
        log.warning(
            "stalled job",
            extra={
                "action": action,
                "job_id": job.id,
                "task": job.task_name,
                "lock": job.lock,
                "dead_worker_id": job.worker_id,
            },
        )


class QueueWorker:
    """One worker process in queue mode: the service its jobs run with."""

    def __init__(self, service: Service, stop: threading.Event) -> None:
        self.service = service
        self.stop = stop
        self.metrics = Metrics()
        self.activity = Activity()
        self.app = make_app(service.config.settings)
        self._by_id: tuple[list[FeedState], dict[int, FeedState]] = ([], {})

    def _feed(self, feed_id: int) -> FeedState | None:
        feeds = self.service.feeds
        if self._by_id[0] is not feeds:
            self._by_id = (feeds, {f.id: f for f in feeds})
        return self._by_id[1].get(feed_id)

    def _queue(self, task: str, lock: str, **kwargs: Any) -> bool:
        """Defers a job unless one with the same lock is already waiting."""
        try:
            self.app.tasks[task].configure(lock=lock, queueing_lock=lock).defer(**kwargs)
        except queue_errors.AlreadyEnqueued:
            return False
        return True

    def _queue_many(self, task: str, jobs: list[tuple[str, dict[str, Any]]]) -> int:
        """Defers jobs in one round trip; when one of them is already waiting (queued
        before, and not yet run), one by one."""
        deferrer = self.app.tasks[task]
        try:
            self.app.job_manager.batch_defer_jobs(
                [
                    deferrer.configure(lock=lock, queueing_lock=lock).make_new_job(**kwargs)
                    for lock, kwargs in jobs
                ]
            )
        except queue_errors.AlreadyEnqueued:
            return sum(self._queue(task, lock, **kwargs) for lock, kwargs in jobs)
        return len(jobs)

    def schedule(self) -> None:
        service = self.service
        deps, settings = service.deps, service.config.settings
        now = utcnow()
        claimed = deps.feeds.claim_due(service.feeds, now, settings.queue.feed_lease)
        polls = [(f"feed:{f.id}", {"feed_id": f.id, "queued_at": now.isoformat()}) for f in claimed]
        queued = sum(
            self._queue_many(POLL, polls[i : i + _BATCH]) for i in range(0, len(polls), _BATCH)
        )
        if claimed:
            log.info("feeds queued", extra={"due": len(claimed), "queued": queued})
        check_health(deps, service.feeds)

    def poll(self, feed_id: int, queued_at: datetime) -> None:
        deps = self.service.deps
        feed = self._feed(feed_id)
        if feed is None:
            log.info("queued feed no longer configured", extra={"feed_id": feed_id})
            return
        state = deps.feeds.states([feed], unpolled_since=queued_at)
        if not state:
            log.debug(
                "feed already polled since queued", extra={"feed": feed.name, "feed_id": feed_id}
            )
            return
        self.metrics.polled(run_feeds(state, deps, self.stop))

    def dispatch(self) -> None:
        service = self.service
        outbox, settings = service.deps.outbox, service.config.settings
        now = utcnow()
        service.deps.digests.make(service.config.watchlists, now)
        for channel in outbox.channels_due(now, now - settings.delivery.lease):
            self._queue(DELIVER, f"channel:{channel}", channel=channel)

    def deliver(self, channel: str) -> None:
        """This worker's turn at a channel. Sends its dead predecessor left unconfirmed
        are settled at once: the turn proves that worker is gone (see deliver.Senders)."""
        budget = self.service.config.settings.queue.delivery_budget.total_seconds()
        with self.service.senders.turn(channel) as orphans:
            deliverer = self.service.deliverer(channel=channel, orphans=orphans)
            report = deliverer.run(self.stop, time.monotonic() + budget)
        if report.sent or report.failed or report.dead or report.recovered:
            log.info(
                "channel delivered",
                extra={
                    "channel": channel,
                    "sent": report.sent,
                    "retry_later": report.failed,
                    "dead": report.dead,
                    "recovered": report.recovered,
                },
            )

    async def serve(self, control: Control) -> bool:
        """Works jobs until `stop`; True if every job had finished within the grace time."""
        reload, grace, http = control.reload, control.grace, control.http
        settings = self.service.config.settings
        name = f"{socket.gethostname()}-{os.getpid()}"
        async with self.app.open_async():
            worker = asyncio.create_task(
                self.app.run_worker_async(
                    name=name,
                    concurrency=settings.queue.concurrency,
                    additional_context={"monitor": self},
                    delete_jobs="successful",
                    install_signal_handlers=False,
                    update_heartbeat_interval=settings.queue.heartbeat.total_seconds(),
                    stalled_worker_timeout=settings.queue.stalled_after.total_seconds(),
                    shutdown_graceful_timeout=grace,
                )
            )
            endpoint = (
                metrics_mod.serve(http, self.service, self.metrics, lambda: not worker.done())
                if http
                else None
            )
            log.info(
                "queue worker started", extra={"worker": name, "feeds": len(self.service.feeds)}
            )
            tick = settings.tick.total_seconds()
            next_look = 0.0
            while not self.stop.is_set() and not worker.done():
                if time.monotonic() >= next_look:
                    self.metrics.cycle(0.0)
                    await asyncio.to_thread(self.service.refresh, reload)
                    next_look = time.monotonic() + tick
                await asyncio.sleep(0.2)
            log.info("stopping: waiting up to %.0fs for running jobs", grace)
            started = time.monotonic()
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            if endpoint is not None:
                endpoint.shutdown()
            return self.activity.wait_idle(max(0.0, grace - (time.monotonic() - started)))


def run(service: Service, control: Control) -> bool:
    """The queue-mode Runtime: this process as one worker of several."""
    settings = service.config.settings
    prepare(service.deps.store.engine)
    worker = QueueWorker(service, control.stop)
    loop = asyncio.new_event_loop()
    # sync jobs run on the loop's default executor: one thread per concurrent job
    loop.set_default_executor(ThreadPoolExecutor(settings.queue.concurrency + 2, "job"))
    try:
        idle = loop.run_until_complete(worker.serve(control))
        if idle:
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    return idle

"""Queue mode: several `monitor run` processes, on one host or many, share one PostgreSQL
through procrastinate's job queue (workers take jobs with SELECT ... FOR UPDATE SKIP LOCKED).

- Every tick one periodic job (procrastinate defers it once across all workers) claims
  the due feeds, marking each queued and moving its due time a lease ahead in the same
  UPDATE, and queues one poll job per group of feeds with one claimed (a feed's group is
  its id modulo `queue.feed_groups`), locked by the group: no feed is polled by two
  workers at once, and a group has at most one job waiting. A poll job polls every feed
  of its group still marked queued when it starts, including those claimed after it was
  queued, in its worker's one executor (`Polls`: one read for the group, records a
  burst at a time, as a single host polls a cycle); a feed's record clears its mark. So
  a cycle of many due feeds costs at most `feed_groups` jobs, not one job (its queue
  round trips and transactions) per feed.
- Another gathers digests and queues one delivery job per channel with something due,
  locked by the channel: one worker at a time posts to a channel, and it paces itself
  from the channel's last send, whoever made it. It then hands the Slack app's owed
  message updates that are due to its click thread: once a tick, not once a channel.
- A worker that dies stops its heartbeat; after `queue.stalled_after` the recovery job
  puts its jobs back in the queue for the others. Taking over is safe: a poll job polls
  only the feeds still marked queued (not those recorded before the worker died), and
  the outbox keeps alerts exactly-once (claim before send, look for a lost send before
  posting again). A delivery job holds its channel's lock while it sends, so the worker
  that takes over a dead one's channel knows the sends it left unconfirmed are nobody's,
  and settles them at once (see deliver.Senders).

The database stays the source of truth (feed due times, the outbox); the queue only says
who does what now, so jobs carry ids, never data.

A database that goes away (a restart, an outage of minutes) does not end the process.
procrastinate's worker stops when its connection fails; this process waits for the
database with backoff (outage.DatabaseWatch), then starts a new one, whose stalled-job
recovery puts back the jobs the old one left. A poll or delivery job that meets the
outage raises DatabaseUnavailable, which procrastinate retries (`_WEATHER`). The watch
logs the outage once; procrastinate's own reports of it are passed to the watch instead
of logged (`_Outage`), and a background task that fails is logged once, in one line
(`_unhandled`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import procrastinate
import psycopg
from procrastinate import exceptions as queue_errors
from procrastinate.job_context import JobContext
from procrastinate.jobs import Status
from procrastinate.schema import SchemaManager
from sqlalchemy import Engine, text

from monitor import cycle
from monitor import metrics as metrics_mod
from monitor.config import Settings
from monitor.db import conninfo, take_turns
from monitor.errors import DatabaseUnavailable
from monitor.feeds import FeedState
from monitor.metrics import Metrics
from monitor.models import FeedOutcome, utcnow
from monitor.outage import DatabaseWatch, first_line, unavailable, watch_of
from monitor.pipeline import FeedStages
from monitor.runtime import Activity, Control
from monitor.runtime.executor import Executor
from monitor.service import Service

log = logging.getLogger(__name__)

POLL = "monitor:poll_feeds"
DELIVER = "monitor:deliver_channel"
SCHEDULE = "monitor:schedule_feeds"
DISPATCH = "monitor:dispatch_deliveries"
RECOVER = "monitor:recover_stalled"
PRUNE = "monitor:prune"
FORGET = "monitor:forget_old_jobs"
_KEEP_FINISHED_JOBS = 72  # hours a failed job stays in the queue's tables, for a look
_SCHEMA_LOCK = 0x6D6F6E71  # PostgreSQL advisory lock held while creating the queue's tables
_VERSION_TABLE = "monitor_queue_schema"  # the procrastinate version its tables are at
# a job that met the database away is tried again (it has no other fault)
_WEATHER = procrastinate.RetryStrategy(wait=2, retry_exceptions={DatabaseUnavailable})
_RESTART_FIRST = 1.0  # seconds before restarting a worker that stopped soon after its start
_RESTART_MOST = 30.0
_STEADY = 60.0  # a worker that ran this long stopped for a new reason: restart at once
# where procrastinate reports a failed connection (the worker's own logger is a child of
# procrastinate.worker named after it), and psycopg's pool its attempts to reconnect
_QUIET_LOGGERS = (
    "procrastinate.worker",
    "procrastinate.periodic",
    "procrastinate.manager",
    "procrastinate.utils",
    "psycopg.pool",
)
_JOB_WAIT = 60.0  # seconds a stopped worker's jobs get to finish before a new one starts


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
            conninfo=conninfo(settings.effective_database_url()),
            min_size=1,
            max_size=4,
            configure=_autocommit,
        )
    )
    app.task(name=POLL, pass_context=True, retry=_WEATHER)(_poll_feeds)
    app.task(name=DELIVER, pass_context=True, retry=_WEATHER)(_deliver_channel)
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


def _autocommit(
    connection: psycopg.AsyncConnection[Any] | psycopg.Connection[Any],
) -> Awaitable[None] | None:
    """Each of the queue's calls is one statement (a function of its schema): a
    transaction around it would only add a BEGIN and a COMMIT round trip to every fetch,
    finish and defer. Its pool opens connections without autocommit; this sets it on
    each, for the async pool (which awaits it) and the sync one (`App.open`) alike."""
    if isinstance(connection, psycopg.AsyncConnection):
        return connection.set_autocommit(True)
    connection.autocommit = True
    return None


def _job(context: JobContext, work: Callable[[QueueWorker], None]) -> None:
    """Runs a job with this process's worker, counted so shutdown knows when it is idle."""
    worker: QueueWorker = context.additional_context["monitor"]
    with worker.activity.running():
        work(worker)


def _poll_feeds(context: JobContext, group: int) -> None:
    _job(context, lambda w: w.poll(group))


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
    (a newer job for the same group of feeds or channel is already waiting) is dropped:
    the newer one does its work."""
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


class _Batch:
    """A poll job's feeds, handed to this worker's executor: done when each has its
    outcome, or left without one (dropped unbegun at a stop: still queued)."""

    def __init__(self, feeds: list[FeedState]) -> None:
        self.feeds = feeds
        self.pending = {f.name: f.id for f in feeds}
        self.outcomes: list[FeedOutcome] = []
        self.done = threading.Event()

    def settle(self, name: str, outcome: FeedOutcome | None) -> None:
        self.pending.pop(name, None)
        if outcome is not None:
            self.outcomes.append(outcome)
        if not self.pending:
            self.done.set()


class Polls:
    """One executor for all of this worker's poll jobs, as a single host has for its
    cycle: one set of fetch threads and its per-host limits, one processing thread, and
    the records of feeds finished together written in one transaction whichever jobs
    they came from. A job hands its feeds to the thread that steps the executor and
    waits for their outcomes. No pass workers: queue mode grows by workers."""

    def __init__(self, service: Service, stop: threading.Event) -> None:
        self._service = service
        self._stop = stop
        self._executor = self._new_executor()
        self._cond = threading.Condition()
        self._handed: list[_Batch] = []
        self._closed = False
        self._waiting: dict[str, _Batch] = {}  # feed name -> its job's batch (stepping thread)
        self._thread = threading.Thread(target=self._run, name="polls", daemon=True)
        self._thread.start()

    def poll(self, feeds: list[FeedState]) -> list[FeedOutcome]:
        """In a job's thread: the feeds polled, their records written; returns their
        outcomes (none for a feed dropped unbegun at a stop)."""
        batch = _Batch(feeds)
        with self._cond:
            if self._closed or not feeds:
                return []
            self._handed.append(batch)
            self._cond.notify()
        self._executor.wake()
        batch.done.wait()
        return batch.outcomes

    def close(self) -> None:
        """Stops stepping; jobs still waiting return with what they have."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._executor.wake()
        self._thread.join()
        self._executor.close()
        self._release(self._handed)

    def _release(self, handed: list[_Batch]) -> None:
        """Ends the jobs of these batches and of every feed in flight, with what they have."""
        for batch in {id(b): b for b in [*handed, *self._waiting.values()]}.values():
            batch.done.set()
        self._waiting.clear()

    def _new_executor(self) -> Executor:
        deps = replace(self._service.deps, pool=None)
        return Executor(FeedStages(deps.settings), deps, self._stop)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._handed or self._executor.busy or self._closed):
                    self._cond.wait()
                if self._closed:
                    return
                handed, self._handed = self._handed, []
            try:
                self._step(handed)
            except Exception:  # a bug: the jobs must not wait forever, nor the feeds stay stuck
                log.exception("poll executor failed: its jobs end, their feeds stay queued")
                self._executor.close()
                self._executor = self._new_executor()
                self._release(handed)

    def _step(self, handed: list[_Batch]) -> None:
        executor = self._executor
        executor.deps = replace(self._service.deps, pool=None)  # as last reloaded
        for batch in handed:
            self._add(batch)
        for outcome in executor.step():
            self._waiting.pop(outcome.feed).settle(outcome.feed, outcome)
        if self._stop.is_set():  # what was dropped unbegun has left without an outcome
            for name, batch in list(self._waiting.items()):
                if batch.pending.get(name) not in executor.in_flight:
                    del self._waiting[name]
                    batch.settle(name, None)

    def _add(self, batch: _Batch) -> None:
        fresh = []
        for feed in batch.feeds:
            if feed.name in self._waiting:  # in flight for another job: it has the outcome
                batch.settle(feed.name, None)
            else:
                self._waiting[feed.name] = batch
                fresh.append(feed)
        self._executor.add(fresh)


def _defer(app: procrastinate.App, task: str, lock: str, **kwargs: Any) -> bool:
    """Defers a job unless one with the same lock is already waiting."""
    try:
        app.tasks[task].configure(lock=lock, queueing_lock=lock).defer(**kwargs)
    except queue_errors.AlreadyEnqueued:
        return False
    return True


def _defer_many(app: procrastinate.App, task: str, jobs: list[tuple[str, dict[str, Any]]]) -> int:
    """Defers jobs in one round trip; when one of them is already waiting (queued
    before, and not yet run), one by one."""
    deferrer = app.tasks[task]
    try:
        app.job_manager.batch_defer_jobs(
            [
                deferrer.configure(lock=lock, queueing_lock=lock).make_new_job(**kwargs)
                for lock, kwargs in jobs
            ]
        )
    except queue_errors.AlreadyEnqueued:
        return sum(_defer(app, task, lock, **kwargs) for lock, kwargs in jobs)
    return len(jobs)


class QueueWorker:
    """One worker process in queue mode: the service its jobs run with."""

    def __init__(self, service: Service, stop: threading.Event) -> None:
        self.service = service
        self.stop = stop
        self.halt = threading.Event()  # this worker's jobs end: the process stops, or the
        # procrastinate worker they ran under has (a new one runs them again)
        self.metrics = Metrics()
        self.activity = Activity()
        self.app = make_app(service.config.settings)
        self.working = False  # a procrastinate worker is running (for /healthz)
        self.restarts = 0
        self.polls = Polls(service, self.halt)
        self.groups = service.config.settings.queue.feed_groups
        self._groups: tuple[list[FeedState], dict[int, list[FeedState]]] = ([], {})

    def _group(self, group: int) -> list[FeedState]:
        """The configured feeds of a group (the config's, as last reloaded)."""
        feeds = self.service.feeds
        if self._groups[0] is not feeds:
            groups: dict[int, list[FeedState]] = {}
            for feed in feeds:
                groups.setdefault(feed.id % self.groups, []).append(feed)
            self._groups = (feeds, groups)
        return self._groups[1].get(group, [])

    def schedule(self) -> None:
        service = self.service
        deps, settings = service.deps, service.config.settings
        now = utcnow()
        claimed = deps.feeds.claim_due(service.feeds, now, settings.queue.feed_lease)
        groups = sorted({feed_id % self.groups for feed_id in claimed})
        queued = _defer_many(self.app, POLL, [(f"feeds:{g}", {"group": g}) for g in groups])
        if claimed:
            log.info("feeds queued", extra={"due": len(claimed), "jobs": queued})
        cycle.health(service)

    def poll(self, group: int) -> None:
        """The group's feeds still queued, polled together. One that met the database
        away stays queued, and the job is tried again for it."""
        queued = self.service.deps.feeds.states(self._group(group), queued=True)
        if not queued:
            log.debug("feeds already polled since queued", extra={"group": group})
            return
        outcomes = self.polls.poll(queued)
        self.metrics.polled(outcomes)
        waiting = sum(o.unavailable for o in outcomes)
        if waiting:
            raise DatabaseUnavailable(f"{waiting} feeds of group {group} wait for the database")

    def dispatch(self) -> None:
        service = self.service
        outbox, settings = service.deps.outbox, service.config.settings
        cycle.digests(service)
        now = utcnow()
        for channel in outbox.channels_due(now, now - settings.delivery.lease, held=True):
            _defer(self.app, DELIVER, f"channel:{channel}", channel=channel)
        if service.slack is not None:
            service.slack.catch_up()  # the owed message updates, on the click thread

    def deliver(self, channel: str) -> None:
        """This worker's turn at a channel. Sends its dead predecessor left unconfirmed
        are settled at once: the turn proves that worker is gone (see deliver.Senders)."""
        budget = self.service.config.settings.queue.delivery_budget.total_seconds()
        with self.service.senders.turn(channel) as orphans:
            deliverer = self.service.deliverer(channel=channel, orphans=orphans)
            report = deliverer.run(self.halt, time.monotonic() + budget)
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
        """Works jobs until `stop`, with a new procrastinate worker whenever the last one
        stopped by itself (its database went away); True if every job had finished
        within the grace time."""
        name = worker_name()
        http = control.http
        endpoint = (
            metrics_mod.serve(http, self.service, self.metrics, lambda: self.working)
            if http
            else None
        )
        log.info("queue worker started", extra={"worker": name, "feeds": len(self.service.feeds)})
        threading.Thread(target=self._ready_to_match, name="matcher", daemon=True).start()
        engine = self.service.deps.store.engine
        watch = watch_of(engine)
        pause = _RESTART_FIRST
        try:
            while not self.stop.is_set():
                self.halt.clear()
                started = time.monotonic()
                ended = await self._work(control, name)
                if self.stop.is_set():
                    break
                self.halt.set()  # what still runs under the stopped worker ends now
                await asyncio.to_thread(self.activity.wait_idle, _JOB_WAIT)
                if ended is not None and unavailable(ended):
                    watch.lost(ended)
                outage = watch.down_for is not None
                if not await asyncio.to_thread(watch.wait_back, engine, self.stop):
                    break
                self.restarts += 1
                fields = {"worker": name, "restarts": self.restarts}
                if outage:  # said by the watch; this is the usual way back from it
                    log.info("queue worker resumed after the database outage", extra=fields)
                    pause = _RESTART_FIRST
                    continue
                log.warning(
                    "queue worker stopped by itself, starting another",
                    extra={**fields, "error": first_line(ended) if ended else None},
                )
                if time.monotonic() - started < _STEADY:  # not in a tight loop, though
                    if await _sleep_unless(self.stop, pause):
                        break
                    pause = min(_RESTART_MOST, pause * 2)
                else:
                    pause = _RESTART_FIRST
        finally:
            self.halt.set()
            if endpoint is not None:
                endpoint.shutdown()
        idle = self.activity.wait_idle(control.grace)
        self.polls.close()
        return idle

    def _ready_to_match(self) -> None:
        """The matcher built and the meaning model loaded as the worker starts, beside its
        first jobs rather than within the first that matches (each job then waits
        seconds on them). The worker takes jobs meanwhile: a worker that started later
        than the others would find their cycle's jobs all taken."""
        try:
            self.service.deps.matcher.build()
        except Exception as exc:  # noqa: BLE001 - the first job to match tries again, and says why
            log.warning("matcher not built at start", extra={"error": first_line(exc)})

    async def _work(self, control: Control, name: str) -> BaseException | None:
        """One procrastinate worker, from its start until `stop` or until it stops by
        itself; what it failed with, if anything."""
        settings = self.service.config.settings
        grace = control.grace
        try:
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
                    ),
                    name="procrastinate worker",
                )
                self.working = True
                tick = settings.tick.total_seconds()
                next_look = 0.0
                while not self.stop.is_set() and not worker.done():
                    if time.monotonic() >= next_look:
                        self.metrics.cycle(0.0)
                        await asyncio.to_thread(self.service.refresh, control.reload)
                        next_look = time.monotonic() + tick
                    await asyncio.sleep(0.2)
                self.working = False
                if self.stop.is_set():
                    log.info("stopping: waiting up to %.0fs for running jobs", grace)
                    self.halt.set()
                    worker.cancel()
                (outcome,) = await asyncio.gather(worker, return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - opening or closing the queue failed
            outcome = exc
        finally:
            self.working = False
        if isinstance(outcome, asyncio.CancelledError) or not isinstance(outcome, BaseException):
            return None
        return outcome


async def _sleep_unless(stop: threading.Event, seconds: float) -> bool:
    """Sleeps `seconds`; True if `stop` came meanwhile."""
    return await asyncio.to_thread(stop.wait, seconds)


def worker_name() -> str:
    """This process as a queue worker, in procrastinate's tables and its logger's name."""
    return f"{socket.gethostname()}-{os.getpid()}"


class _Outage(logging.Filter):
    """procrastinate's own reports of a lost database (a side task failed, a job to be
    retried, with a traceback each) go to the database's watch, which says it once; so
    do the pool's, one per attempt to reconnect."""

    def __init__(self, watch: DatabaseWatch) -> None:
        super().__init__()
        self._watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "psycopg.pool":
            return not record.getMessage().startswith("error connecting")
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not unavailable(exc):
            return True
        self._watch.lost(exc)
        return False


def _unhandled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A background task failed and nobody awaited it: one line, not asyncio's dump."""
    exc = context.get("exception")
    task = context.get("task") or context.get("future")
    log.warning(
        "background task failed",
        extra={
            "task": task.get_name() if isinstance(task, asyncio.Task) else None,
            "error": first_line(exc) if exc is not None else context.get("message"),
        },
    )


def run(service: Service, control: Control) -> bool:
    """The queue-mode Runtime: this process as one worker of several."""
    settings = service.config.settings
    prepare(service.deps.store.engine)
    worker = QueueWorker(service, control.stop)
    quiet = _Outage(watch_of(service.deps.store.engine))
    names = (*_QUIET_LOGGERS, f"procrastinate.worker.{worker_name()}")
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(quiet)
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_unhandled)
    # sync jobs run on the loop's default executor: one thread per concurrent job
    loop.set_default_executor(ThreadPoolExecutor(settings.queue.concurrency + 2, "job"))
    try:
        idle = loop.run_until_complete(worker.serve(control))
        if idle:
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
        for logger in loggers:
            logger.removeFilter(quiet)
    return idle

"""Pass worker processes: each takes fetched feeds from parse to store (parse, dedupe,
match, store) one at a time, so a cycle with many changed feeds uses every core: one
process's GIL cannot parse, match and write fast enough for thousands of feeds. The
service fetches; a worker is handed a body when it is free, and fetches nothing.

The workers start only when a cycle has more bodies than the service could process in
the time they take to start (runtime/executor.py decides), forked from a server that
has imported the pipeline and spaCy once and built the pool's matcher once
(runtime/warm.py: the workers share it copy-on-write; a worker whose config was reloaded
since builds its own on first need). A worker's process argument is its config without
the watchlists, and their digest: it takes its fork server's watchlists when the digest
is theirs, and asks for its own over its pipe only when not (a reloaded config), so a
config of 50,000 entities (86 MB of objects, a second to unpickle) is not copied into
every worker. The service only ever sees this pool through executor.FeedPool.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import queue
import signal
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor import logs
from monitor.config import Config, MeaningSettings, Watchlist
from monitor.errors import WorkerDied
from monitor.feeds import FeedState
from monitor.heap import collector_paused
from monitor.models import Body, FeedOutcome
from monitor.pipeline import refresh
from monitor.service import processor_for, tables_file

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

log = logging.getLogger(__name__)
# What the fork server imports once, so that a worker starts in milliseconds, not seconds.
_PRELOAD = [
    "monitor.runtime.passes",
    "monitor.parse",
    "numpy",
    "monitor.match",
    "spacy.lang.en",
    "monitor.runtime.warm",
]
_READY = "ready"
_WATCHLISTS = "watchlists?"  # a worker's ask for its config's own (not its fork server's)
# The environment variable naming the file of the pool's Handover, for the fork server
# (runtime/warm.py) to build the workers' matcher once.
HANDOVER = "MONITOR_PASS_HANDOVER"
_STOP_WAIT = 10.0  # seconds a closing pool waits for a worker to finish its feed


@dataclass(frozen=True)
class Handover:
    """What a matcher is built from: the watchlists, and the meaning model's setting and
    the directory it is found from; and their digest, which the workers are given; and
    where its phrase tables are kept between processes (service.tables_file)."""

    root: Path
    watchlists: tuple[Watchlist, ...]
    meaning: MeaningSettings
    digest: str
    tables: Path

    @classmethod
    def of(cls, config: Config) -> Handover:
        settings = config.settings
        return cls(
            config.root, config.watchlists, settings.meaning, digest(config), tables_file(settings)
        )


def digest(config: Config) -> str:
    """What a config's matcher is built from (a Handover's parts), as a SHA-256: equal
    configs give equal digests (a JSON dump of each part: 0.07 s for 50,000 entities)."""
    parts = [str(config.root).encode(), config.settings.meaning.model_dump_json().encode()]
    parts += [w.model_dump_json().encode() for w in config.watchlists]
    out = hashlib.sha256()
    for part in parts:  # each one's length first, so no two lists of parts run together
        out.update(len(part).to_bytes(8, "big") + part)
    return out.hexdigest()


def _work(bare: Config, digest: str, conn: Connection, log_setup: tuple[str, str] | None) -> None:
    """A worker process: answers each (feed, body) it is sent with the feed's outcome,
    until the service closes the connection. `bare` is its config without watchlists:
    it takes its fork server's if `digest` is theirs, else asks for its own."""
    # Ctrl-C reaches the whole process group: the service decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_setup is not None:
        logs.setup(*log_setup)
    from monitor.runtime.warm import shared  # the fork server's: imported there

    found = shared(digest)
    if found is not None:
        watchlists, matcher = found
        log.info("matcher shared", extra={"pid": os.getpid(), "built_by": os.getppid()})
    else:
        conn.send(_WATCHLISTS)
        with collector_paused():  # 50,000 entities unpickle in 0.3 s instead of 1.7: heap.py
            watchlists, matcher = conn.recv(), None
        log.info("watchlists received", extra={"pid": os.getpid(), "watchlists": len(watchlists)})
    processor = processor_for(replace(bare, watchlists=watchlists), matcher)
    conn.send(_READY)
    while True:
        try:
            feed, body = conn.recv()
        except EOFError:
            return
        conn.send(refresh(feed, body, processor))


def _log_setup() -> tuple[str, str] | None:
    """The service's log level and form, for its workers to log alike."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, logs.TextFormatter | logs.JsonFormatter):
            form = "json" if isinstance(handler.formatter, logs.JsonFormatter) else "text"
            level = logging.getLevelName(logging.getLogger("monitor").getEffectiveLevel())
            return str(level), form
    return None


class _Worker:
    """One worker process and the service's end of its pipe."""

    def __init__(self, context: Any, config: Config, digest: str, generation: int) -> None:
        self.generation = generation
        self.ready = False
        self._watchlists = config.watchlists  # sent only if it asks (not its fork server's)
        self.conn, child = context.Pipe()
        bare = replace(config, watchlists=())
        self.process = context.Process(
            target=_work, args=(bare, digest, child, _log_setup()), name="monitor-pass", daemon=True
        )
        try:
            self.process.start()
        except Exception as exc:  # noqa: BLE001 - whatever it is, this worker is not there
            raise WorkerDied(f"pass worker could not start: {exc!r}") from exc
        finally:
            child.close()

    def wait_ready(self) -> None:
        if self._answer() == _WATCHLISTS:
            self._send(self._watchlists)
            self._answer()
        self.ready = True

    def run(self, feed: FeedState, body: Body) -> FeedOutcome:
        self._send((feed, body))
        outcome: FeedOutcome = self._answer()
        return outcome

    def _send(self, message: Any) -> None:
        try:
            self.conn.send(message)
        except OSError as exc:
            raise self._died() from exc

    def _answer(self) -> Any:
        try:
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died() from exc

    def _died(self) -> WorkerDied:
        self.process.join(1)
        return WorkerDied(f"pass worker {self.process.pid} exited ({self.process.exitcode})")

    def stop(self) -> None:
        """Closes the pipe (the worker exits when idle), or kills it if it does not."""
        self.conn.close()
        self.process.join(_STOP_WAIT)
        if self.process.is_alive():
            self.kill()

    def kill(self) -> None:
        """For a worker that has written nothing (still starting) or will not stop."""
        self.process.kill()
        self.process.join()
        self.conn.close()


@dataclass
class _Job:
    feed: FeedState
    body: Body
    future: Future[FeedOutcome]


class PassPool:
    """Worker processes, started on first need and kept until closed. Each has a thread
    here that takes the next waiting job when its worker is free, so a busy or slow
    worker never holds up jobs another could take, and a worker that dies costs only its
    own feed (it is started again for the next)."""

    def __init__(self, workers: int | None, config: Config) -> None:
        self._size = workers if workers is not None else (os.cpu_count() or 1)
        self._config = config
        self._digest: str | None = None  # the config's (digest()), once a worker needs it
        self._generation = 0  # bumped by configure(): workers of an older one restart
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._ready: list[Future[None]] = []
        self._workers: dict[int, _Worker] = {}  # by thread, while it has one
        self._closing = False
        self._handover: Path | None = None  # the file of the matcher's Handover

    @property
    def enabled(self) -> bool:
        return self._size > 1

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def start(self) -> list[Future[None]]:
        """Starts the workers now (if not yet) and returns futures that finish as each is
        ready; nobody need wait for them."""
        with self._lock:
            if not self._threads:
                self._hand_over()
                self._closing = False
                self._ready = [Future() for _ in range(self._size)]
                self._threads = [
                    threading.Thread(target=self._serve, args=(i,), name=f"pass-{i}", daemon=True)
                    for i in range(self._size)
                ]
                for thread in self._threads:
                    thread.start()
            return list(self._ready)

    def _hand_over(self) -> None:
        """Tells a fork server not yet started what to build the workers' matcher from
        (runtime/warm.py); one already running (an earlier pool's) is not told."""
        if self._handover is not None or self._size < 2:
            return
        handover = Handover.of(self._config)
        self._digest = handover.digest
        fd, name = tempfile.mkstemp(prefix="monitor-handover-")  # mode 0600
        with os.fdopen(fd, "wb") as out:
            pickle.dump(handover, out)
        self._handover = Path(name)
        os.environ[HANDOVER] = name

    def submit(self, feed: FeedState, body: Body) -> Future[FeedOutcome]:
        self.start()
        future: Future[FeedOutcome] = Future()
        self._jobs.put(_Job(feed, body, future))
        return future

    def configure(self, config: Config) -> None:
        """A reloaded config: each worker restarts with it before its next feed."""
        with self._lock:
            self._config = config
            self._digest = None
            self._generation += 1

    def close(self) -> None:
        """Waiting jobs are cancelled, idle workers stop, a worker still starting is
        killed (it has written nothing), a busy one finishes its feed first."""
        with self._lock:
            threads, self._threads = self._threads, []
            self._closing = True
            starting = [w for w in self._workers.values() if not w.ready]
        if not threads:
            return
        for worker in starting:
            worker.kill()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.future.cancel()
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join(_STOP_WAIT)
        with self._lock:
            stuck = list(self._workers.values())
        for worker in stuck:  # a feed that will not finish: its transaction rolls back
            worker.kill()
        for thread in threads:
            thread.join()
        if self._handover is not None:  # the fork server never started to read it
            self._handover.unlink(missing_ok=True)
            if os.environ.get(HANDOVER) == str(self._handover):
                del os.environ[HANDOVER]  # no later fork server looks for it
            self._handover = None

    def _launch(self, index: int) -> _Worker:
        # forked from a fork server, not from here: the service has threads (scheduler,
        # fetchers) whose locks a child forked from it could inherit held
        import multiprocessing  # here: a poll that starts no worker never needs it

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        with self._lock:
            if self._digest is None:
                self._digest = digest(self._config)
            config, digested, generation = self._config, self._digest, self._generation
        worker = _Worker(context, config, digested, generation)
        with self._lock:
            self._workers[index] = worker
            closing = self._closing
        try:
            if closing:
                raise WorkerDied("the pool is closing")
            worker.wait_ready()
        except WorkerDied:
            worker.kill()
            with self._lock:
                self._workers.pop(index, None)
            raise
        return worker

    def _serve(self, index: int) -> None:
        """One worker's thread: starts it, then hands it one waiting job at a time."""
        worker: _Worker | None = None
        ready = self._ready[index]
        try:
            worker = self._launch(index)
            ready.set_result(None)
        except WorkerDied as exc:
            ready.set_exception(exc)
            if not self._closing:
                log.error("pass worker failed to start", extra={"error": str(exc)})
        while (job := self._jobs.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                if worker is not None and worker.generation != self._generation:
                    worker.stop()
                    worker = None
                if worker is None:
                    worker = self._launch(index)
                job.future.set_result(worker.run(job.feed, job.body))
            except Exception as exc:  # noqa: BLE001 - the job fails, the thread goes on
                job.future.set_exception(exc)
                if worker is not None:  # in an unknown state: a fresh one for the next job
                    worker.kill()
                worker = None
        if worker is not None:
            worker.stop()
        with self._lock:
            self._workers.pop(index, None)

"""Whole feed passes (fetch -> parse -> dedupe -> match -> store) in worker processes, each
taking a share of a cycle's feeds, so a cycle of many feeds uses every core: one
process's GIL cannot fetch, parse, match and write fast enough for thousands of feeds.

A worker process builds its own clients, engine and matcher (service.deps_for); the
service only ever sees this pool through pipeline.FeedPool.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from monitor.config import Config
from monitor.feeds import FeedState
from monitor.pipeline import Deps, FeedOutcome, run_feeds
from monitor.service import deps_for

POOL_FROM = 20  # feeds in a cycle before worker processes are worth their start-up
_deps: Deps | None = None  # each worker process's own clients, database engine and matcher


def _start_worker(config: Config) -> None:
    global _deps
    _deps = deps_for(config)


def _run_share(feeds: Sequence[FeedState]) -> list[FeedOutcome]:
    assert _deps is not None, "worker started without its dependencies"
    return run_feeds(feeds, _deps)


def _ready() -> None:
    """Nothing: submitting it makes a worker start."""


class PassPool:
    """Worker processes, started on first use and kept until the config changes."""

    def __init__(self, workers: int | None, config: Config) -> None:
        self._workers = workers if workers is not None else (os.cpu_count() or 1)
        self._config = config
        self._pool: ProcessPoolExecutor | None = None

    @property
    def enabled(self) -> bool:
        return self._workers > 1

    def wants(self, feeds: int) -> bool:
        return self.enabled and feeds >= POOL_FROM

    def start(self) -> list[Future[None]]:
        """Starts the workers now (they take a moment to import and build their matcher)
        and returns futures that finish when each is ready; callers need not wait."""
        if self._pool is None:
            # spawn, not fork: the parent has threads (scheduler, fetchers) whose locks a
            # forked child could inherit held.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(self._config,),
            )
        return [self._pool.submit(_ready) for _ in range(self._workers)]

    def run(self, feeds: Sequence[FeedState]) -> list[FeedOutcome]:
        """Every feed's pass, the feeds dealt out to the workers in turn."""
        if self._pool is None:
            self.start()
        assert self._pool is not None
        shares = [list(feeds[i :: self._workers]) for i in range(self._workers)]
        futures = [self._pool.submit(_run_share, share) for share in shares if share]
        return [outcome for future in futures for outcome in future.result()]

    def configure(self, config: Config) -> None:
        """A reloaded config: workers restart with it on next use."""
        self._config = config
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

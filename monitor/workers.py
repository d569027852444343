"""The CPU-heavy part of a feed's pass (parse, then identify each entry), runnable in
worker processes so a cycle of many feeds uses every core despite the GIL.

Kept apart from pipeline.py so a worker process imports only what it needs.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor

from monitor import dedupe, parse
from monitor.models import Entry, Fetched
from monitor.parse import ParsedFeed

POOL_FROM = 20  # feeds in a cycle before worker processes are worth their start-up


def parse_entries(fetched: Fetched) -> tuple[ParsedFeed, list[Entry]]:
    parsed = parse.parse(fetched)
    return parsed, [dedupe.identify(item) for item in parsed.items]


def _ready() -> None:
    """Nothing: submitting it makes a worker start and import this module."""


class ParsePool:
    """Worker processes, started on first use and kept for the service's life."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = workers if workers is not None else (os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None

    @property
    def enabled(self) -> bool:
        return self._workers > 1

    def start(self) -> list[Future[None]]:
        """Starts the workers now (they take a second to import) and returns futures that
        finish when each is ready; callers need not wait."""
        if self._pool is None:
            # spawn, not fork: the parent has threads (scheduler, fetchers) whose locks a
            # forked child could inherit held.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self._workers, mp_context=context)
        return [self._pool.submit(_ready) for _ in range(self._workers)]

    def run(self, fetched: Fetched) -> tuple[ParsedFeed, list[Entry]]:
        if self._pool is None:
            self.start()
        assert self._pool is not None
        return self._pool.submit(parse_entries, fetched).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

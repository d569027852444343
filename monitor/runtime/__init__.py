"""What drives the pipeline, kept apart from it. `monitor run` picks one runtime:

    single.py  one host: APScheduler 3.x wakes every tick, polls what is due, delivers
    queue.py   one of several workers sharing a PostgreSQL job queue (procrastinate)

and both (and `monitor poll`) hand cycles of many feeds to passes.py's worker processes.
Each runtime is a function of the same shape (`Runtime`); the CLI imports only the one
it runs.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

from monitor.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from monitor.service import Service

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Control:
    """What the CLI hands a runtime: when to stop, when to reload (SIGHUP), how long to
    wait for running jobs at the stop, and where to serve /healthz and /metrics."""

    stop: threading.Event
    reload: threading.Event = field(default_factory=threading.Event)
    grace: float = 5.0
    http: str | None = None


class Runtime(Protocol):
    def __call__(self, service: Service, control: Control) -> bool:
        """Runs until `control.stop` is set; returns False if jobs were still busy
        `control.grace` seconds after it."""
        ...


def pick(mode: str) -> Runtime:
    """The runtime for `workers_mode`: "single" or "queue"."""
    module = importlib.import_module(f"monitor.runtime.{mode}")
    return cast(Runtime, module.run)


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
                except DatabaseUnavailable:  # logged once, by the database's watch
                    log.debug("job waits for the database", extra={"job": name})
                except Exception:
                    log.exception("job failed", extra={"job": name})

        return run

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._count == 0, timeout=timeout)

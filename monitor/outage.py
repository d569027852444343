"""Riding out a database that goes away: a restart, an outage of minutes, a SQLite file
locked longer than its busy timeout.

Each engine has one DatabaseWatch (`watch_of`), fed by SQLAlchemy's own events: an error
that means the database cannot be reached (`unavailable`) marks it down, the next
statement that succeeds marks it up again. The watch logs one line for each change:

    database unreachable database=postgresql://... error="connection refused ..."
    database back database=postgresql://... down_seconds=12.4

so nothing else need log an outage: code that meets `DatabaseUnavailable` skips its turn
quietly (debug) and tries again on its next tick; the process never exits for it. What
the outage held up is resumed by the ones who own it: feeds still due are polled at the
next tick (their due times were never moved), deliveries whose outcome could not be
written are written when the database answers (retries.Recovery), and queue-mode jobs
are retried by procrastinate (runtime/queue.py). How deliveries that failed because
Slack was down are retried is retries.py's rule.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time
import weakref
from enum import Enum
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError

from monitor.errors import DatabaseUnavailable
from monitor.redact import redact

log = logging.getLogger(__name__)

# SQLite's words for a file it cannot use right now (locked past the busy timeout, gone
# with its disk), as opposed to a bad statement or schema
_SQLITE_AWAY = ("database is locked", "unable to open database file", "disk i/o error")
# PostgreSQL's SQLSTATEs for a server shutting down or starting up; class 08 is a lost
# or refused connection, and a psycopg error with no SQLSTATE never reached a server
_PG_AWAY = frozenset({"57P01", "57P02", "57P03"})
_PROBE_FIRST = 0.5  # seconds between the first probes of a database that went away
_PROBE_MOST = 5.0  # and at most between later ones: a database back is seen within this


class DbState(Enum):
    UP = "up"
    DOWN = "down"


def unavailable(exc: BaseException | None) -> bool:
    """Whether an error (or one it wraps) means the database cannot be reached now, as
    opposed to a statement it refused: only the first is weathered by waiting."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DatabaseUnavailable | DisconnectionError):
            return True
        if isinstance(exc, sqlite3.OperationalError):
            return any(words in str(exc).lower() for words in _SQLITE_AWAY)
        if _psycopg_away(exc):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False


def _psycopg_away(exc: BaseException) -> bool:
    # psycopg and its pool are imported only by a process that uses PostgreSQL
    pool = sys.modules.get("psycopg_pool")
    if pool is not None and isinstance(exc, pool.PoolTimeout | pool.PoolClosed):
        return True
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state in _PG_AWAY


def first_line(exc: BaseException) -> str:
    """The driver's own words (the innermost cause's: wrappers such as procrastinate's
    say only "Database error."), without a statement dump or a password."""
    seen = {id(exc)}
    while (inner := getattr(exc, "orig", None) or exc.__cause__) is not None:
        if id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    lines = str(exc).strip().splitlines()
    return redact(lines[0] if lines else type(exc).__name__)


class DatabaseWatch:
    """Whether a database answers, as its engine last found; says so once per change."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = DbState.UP
        self._since = 0.0  # monotonic time it went down
        self._lock = threading.Lock()

    def lost(self, exc: BaseException) -> None:
        with self._lock:
            if self.state is DbState.DOWN:
                return
            self.state, self._since = DbState.DOWN, time.monotonic()
        log.warning("database unreachable", extra={"database": self.name, "error": first_line(exc)})

    def answered(self) -> None:
        if self.state is DbState.DOWN:  # every statement comes here: no lock unless down
            self._back()

    def _back(self) -> None:
        with self._lock:
            if self.state is DbState.UP:
                return
            self.state, gone = DbState.UP, time.monotonic() - self._since
        log.info("database back", extra={"database": self.name, "down_seconds": round(gone, 1)})

    @property
    def down_for(self) -> float | None:
        """Seconds since it went away, or None while it answers."""
        if self.state is DbState.UP:
            return None
        return time.monotonic() - self._since

    def probe(self, engine: Engine) -> bool:
        """One round trip; the events it raises keep the state."""
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            if unavailable(exc):
                self.lost(exc)
            return False
        return True

    def wait_back(self, engine: Engine, stop: threading.Event) -> bool:
        """Probes with backoff until the database answers; False if stopped first."""
        pause = _PROBE_FIRST
        while not stop.is_set():
            if self.probe(engine):
                return True
            stop.wait(pause)
            pause = min(_PROBE_MOST, pause * 2)
        return False


_WATCHES: weakref.WeakKeyDictionary[Engine, DatabaseWatch] = weakref.WeakKeyDictionary()


def watch_of(engine: Engine) -> DatabaseWatch:
    """The engine's watch, made (and hooked to its events) on first need."""
    found = _WATCHES.get(engine)
    if found is not None:
        return found
    watch = DatabaseWatch(engine.url.render_as_string(hide_password=True))
    _WATCHES[engine] = watch

    sqlite = engine.dialect.name == "sqlite"

    @event.listens_for(engine, "handle_error")
    def _error(context: Any) -> None:
        # A server connection that died (a restart) fails its next statement whether or
        # not the server is back, and the caller tries again on a new one: only failing
        # to get a new one says the server is away. A SQLite file is locked or lost
        # under a connection it has.
        if context.is_pre_ping or (context.connection is not None and not sqlite):
            return
        if unavailable(context.original_exception):
            watch.lost(context.original_exception)

    @event.listens_for(engine, "after_cursor_execute")
    def _answered(*_args: Any) -> None:
        watch.answered()

    return watch

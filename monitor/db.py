"""The database connection every SQL-speaking module shares (store.py, outbox.py)."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel

from monitor.errors import DatabaseUnavailable, StoreError, UsageError
from monitor.outage import first_line, unavailable, watch_of

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig


def make_engine(url: str) -> Engine:
    """SQLite gets WAL and a busy timeout so the scheduler's jobs and CLI readers coexist;
    a plain postgresql:// URL means psycopg 3, the driver we ship, with a connect timeout
    so a host gone silent fails a connection in seconds. Every engine has its outage
    watch (outage.watch_of)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"data directory {folder}: cannot create it ({exc.strerror or exc}); "
                    "set data_dir in monitor.yaml or MONITOR_DATABASE_URL"
                ) from exc
        engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    else:
        engine = create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    watch_of(engine)
    return engine


def conninfo(database_url: str) -> str:
    """libpq's form of our SQLAlchemy URL: procrastinate talks to psycopg directly."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise UsageError(
            f"queue mode needs PostgreSQL, not {url.get_backend_name()}: set "
            "MONITOR_DATABASE_URL=postgresql://user@host/db (or database_url in monitor.yaml)"
        )
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


CHUNK = 400  # values in one IN (...) list
MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATE_LOCK = 0x6D6F6E69  # "moni": PostgreSQL advisory lock held while migrating
_REVISION = re.compile(r"^(down_revision|revision)\b[^=\n]*=(.*)$", re.MULTILINE)


def _alembic(connection: Connection) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def take_turns(connection: Connection | Session, key: int) -> None:
    """Waits until no other process is setting up, and holds that to the end of the
    transaction: processes starting together (a cron poll beside a service, workers)
    then read what the one before wrote instead of writing it again. On PostgreSQL an
    advisory lock on `key`; on SQLite, which runs one writer at a time, the write lock
    taken now (BEGIN IMMEDIATE) instead of at the transaction's first write, after its
    reads."""
    conn = connection if isinstance(connection, Connection) else connection.connection()
    if conn.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif conn.dialect.name == "sqlite":
        raw = conn.connection.driver_connection
        if raw is not None and not raw.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


@functools.cache
def head() -> str | None:
    """The newest revision, read from the migration files' `revision` and `down_revision`
    lines without importing Alembic (a start-up cost); None when that is not one plain
    answer, and then Alembic itself decides."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for name, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            found = re.findall(r"[\"']([^\"']+)[\"']", value)
            (revisions if name == "revision" else parents).update(found)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(engine: Engine) -> bool:
    """One query: is the stored revision the newest? (False for a new database.)"""
    newest = head()
    if newest is None:
        return False
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:
        return False
    return [row[0] for row in stored] == [newest]


def migrate(engine: Engine, revision: str = "head", *, dispose: bool = False) -> None:
    """Brings the schema to `revision` with Alembic, in one transaction that holds the
    schema to itself: several processes starting at once on a new database take turns
    (take_turns), and the later ones find the schema current. Safe to run at every
    start: a database already at head costs one query, and Alembic is not imported."""
    try:
        _reach(engine)
        if revision == "head" and _at_head(engine):
            return
        from alembic import command

        with engine.connect() as connection:
            # on SQLite too the DDL then commits with the version stamp, or not at all: a
            # crash mid-migration leaves no half-made schema behind
            take_turns(connection, _MIGRATE_LOCK)
            command.upgrade(_alembic(connection), revision)
            connection.commit()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot migrate database {engine.url!r}: {cause(exc)}") from exc
    finally:
        if dispose:
            engine.dispose()


def _reach(engine: Engine) -> None:
    """Connects once, so a database that cannot be opened or reached says so, in the
    driver's words, rather than as a failed migration."""
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        hint = ""
        if engine.dialect.name == "sqlite":
            hint = " (is the path a writable file, and is it a SQLite database?)"
        raise StoreError(f"cannot open database {engine.url!r}: {cause(exc)}{hint}") from exc


def cause(exc: SQLAlchemyError) -> str:
    """The driver's own first line, without SQLAlchemy's statement dump and links."""
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def revision_of(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def new_revision(engine: Engine, message: str) -> None:
    """For developers: writes a migration for the difference between models and schema."""
    from alembic import command

    with engine.begin() as connection:
        command.revision(_alembic(connection), message=message, autogenerate=True)


class Database:
    """An engine whose schema is in place (see migrate), and transactions that raise
    StoreError."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise _store_error("database error", exc) from exc

    def _insert(self, model: type[SQLModel] | Table) -> Any:
        """INSERT that understands ON CONFLICT DO NOTHING on both databases (from the
        engine's own dialect: importing PostgreSQL's for SQLite costs start-up time)."""
        name = "postgresql" if self.engine.dialect.name == "postgresql" else "sqlite"
        return importlib.import_module(f"sqlalchemy.dialects.{name}").insert(model)


def _store_error(what: str, exc: SQLAlchemyError) -> StoreError:
    """DatabaseUnavailable when the database is away (waited out, quietly), else StoreError."""
    if unavailable(exc):
        return DatabaseUnavailable(f"{what}: database unavailable: {first_line(exc)}")
    return StoreError(f"{what}: {exc}")


class Lock(Protocol):
    """A lock between processes, released by the operating system or the database when
    its process dies, however it dies."""

    def try_exclusive(self) -> bool:
        """Takes the lock alone if no process holds it in any way; never waits."""
        ...

    def share(self) -> None:
        """Holds the lock shared with others (waiting out a moment's exclusive hold);
        an exclusive hold of this process becomes a shared one."""
        ...

    def release(self) -> None: ...


class FileLock:
    """flock(2) on a file: what a SQLite database beside it can offer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0  # the process that opened _fd

    def _file(self) -> int:
        if self._fd is not None and self._pid != os.getpid():
            # a forked child's copy of its parent's descriptor shares the parent's hold
            # (and would keep it past the parent's release): the child opens its own
            os.close(self._fd)
            self._fd = None
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:  # a read-only or vanished data dir: one line, no traceback
                raise StoreError(f"cannot open the lock file {self.path}: {exc.strerror}") from exc
            self._pid = os.getpid()
        return self._fd

    def try_exclusive(self) -> bool:
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def share(self) -> None:
        fcntl.flock(self._file(), fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops its lock
            self._fd = None

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held alone for as long as the block runs, waiting for it if need be; the file
        stays open for the next hold."""
        fd = self._file()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


class WriteTurn:
    """Turns at writing one SQLite file, taken on a flock(2) file beside it. SQLite runs
    one writer at a time, and a writer that finds the write lock taken sleeps in its busy
    handler in steps of up to 100 ms, however soon the holder lets go: two pass workers
    saving at once lost over a second of a cold poll so (docs/speed.md). Waiting on the
    file instead, the next writer is woken the moment the last one is done. Nothing to
    take for PostgreSQL (row locks) or SQLite in memory (one process)."""

    def __init__(self, engine: Engine) -> None:
        database = engine.url.database
        sqlite = engine.dialect.name == "sqlite" and database and database != ":memory:"
        self._lock = FileLock(Path(f"{database}.write.lock")) if sqlite else None
        self._mutex = threading.Lock()  # flock(2) does not part threads sharing a file

    @property
    def path(self) -> Path | None:
        """The lock file, if there is one to take."""
        return None if self._lock is None else self._lock.path

    @contextmanager
    def held(self) -> Iterator[None]:
        """This process's turn, for as long as the block runs."""
        if self._lock is None:
            yield
            return
        with self._mutex, self._lock.exclusive():
            yield


class LockSession:
    """One PostgreSQL session holding this process's advisory locks: they last as long as
    the session, so they end when the process dies. Advisory locks belong to a whole
    database, so their keys are named within our schema: deployments in other schemas of
    the same database never meet. Threads share the session, one statement at a time.
    Should the connection drop, the next call opens another and first takes again the
    shared locks it held."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._schema = ""
        self._mutex = threading.Lock()
        self._shared: list[str] = []  # names held shared, to take again on a new session

    def _key(self, name: str) -> int:
        digest = hashlib.blake2b(f"monitor:{self._schema}:{name}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)

    def _open(self) -> Connection:
        if self._connection is None:
            self._connection = self._engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
            self._schema = str(self._connection.execute(text("SELECT current_schema()")).scalar())
            for held in self._shared:
                self._connection.execute(
                    text("SELECT pg_advisory_lock_shared(:key)"), {"key": self._key(held)}
                )
        return self._connection

    def _execute(self, function: str | None, name: str) -> bool:
        if function is None:
            self._open().execute(text("SELECT 1"))
            return True
        result = self._open().execute(text(f"SELECT {function}(:key)"), {"key": self._key(name)})
        return result.scalar() is not False

    def call(self, function: str | None, name: str) -> bool:
        """`function` on the lock `name`; None: only a round trip."""
        with self._mutex:
            try:
                done = self._execute(function, name)
            except SQLAlchemyError as exc:
                if self._connection is not None:
                    self._connection.invalidate()
                    self._connection = None
                raise _store_error("database error taking a lock", exc) from exc
            if function == "pg_advisory_lock_shared":
                self._shared.append(name)
            elif function == "pg_advisory_unlock_shared" and name in self._shared:
                self._shared.remove(name)
            return done

    def keep(self) -> None:
        """A round trip on the session: one a database restart dropped is opened again
        now, and its shared locks taken again, not at its next use."""
        self.call(None, "")

    def close(self) -> None:
        with self._mutex:
            self._shared.clear()
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class AdvisoryLock:
    """A session advisory lock on PostgreSQL, named by a string."""

    def __init__(self, session: LockSession, name: str) -> None:
        self._session = session
        self._name = name
        self._held: list[str] = []  # how it is held: "exclusive", "shared"

    def try_exclusive(self) -> bool:
        if self._session.call("pg_try_advisory_lock", self._name):
            self._held.append("exclusive")
            return True
        return False

    def share(self) -> None:
        self._session.call("pg_advisory_lock_shared", self._name)
        if "exclusive" in self._held:  # shared first, then let go: never unheld between
            self._session.call("pg_advisory_unlock", self._name)
            self._held.remove("exclusive")
        self._held.append("shared")

    def release(self) -> None:
        while self._held:
            held = self._held.pop()
            unlock = "pg_advisory_unlock" if held == "exclusive" else "pg_advisory_unlock_shared"
            self._session.call(unlock, self._name)


class Locks:
    """Named locks between the processes that share this database: flock(2) files beside
    a SQLite file, advisory locks on PostgreSQL. None where neither exists (SQLite in
    memory): then nothing can be proven about other processes."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._session = LockSession(engine) if engine.dialect.name == "postgresql" else None

    @property
    def server(self) -> bool:
        """Whether processes on other hosts see these locks (a database server's)."""
        return self._session is not None

    def lock(self, name: str) -> Lock | None:
        if self._session is not None:
            return AdvisoryLock(self._session, name)
        database = self._engine.url.database
        if self._engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return None
        return FileLock(Path(f"{database}.{name}.lock"))

    def keep(self) -> None:
        """See LockSession.keep; raises StoreError (DatabaseUnavailable) if it cannot."""
        if self._session is not None:
            self._session.keep()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

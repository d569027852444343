"""The database connection every SQL-speaking module shares (store.py, outbox.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel

from monitor.errors import StoreError


def make_engine(url: str) -> Engine:
    """SQLite gets WAL and a busy timeout so the scheduler's jobs and CLI readers coexist."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


class Database:
    """An engine with the schema in place, and transactions that raise StoreError."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        try:
            SQLModel.metadata.create_all(engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open database {engine.url!r}: {exc}") from exc

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc}") from exc

    def _insert(self, model: type[SQLModel]) -> Any:
        """INSERT that understands ON CONFLICT DO NOTHING on both databases."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(model)

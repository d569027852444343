"""Alembic environment: runs against the connection monitor hands it (see db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import monitor.models  # noqa: F401 - registers the tables on SQLModel.metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite rebuilds tables to alter
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

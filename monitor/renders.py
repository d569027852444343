"""Messages whose marks Slack still owes the desk: a click's chat.update, made durable.

A click is stored (feedback.toggle) with a row saying its message must be rendered
again (`owe`, in the click's transaction). The Slack app renders it at once and marks
it `done` in the transaction that records the success; a kill in between leaves it
owed, and the service renders what is owed when it starts and after each delivery pass
(slackapp/app.py). A failed update waits out delivery's backoff (retries.backoff).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session, col

from monitor.db import Database
from monitor.models import RenderRow, RenderStatus


@dataclass(frozen=True)
class Shown:
    """A clicked message as the click's payload showed it."""

    channel_id: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]


@dataclass(frozen=True)
class Owed:
    """One message to render again: `serial` names the newest click it shows."""

    render_id: int
    serial: int
    attempts: int
    match_id: int
    shown: Shown


def owe(s: Session, shown: Shown, match_id: int, at: datetime, due_at: datetime) -> Owed:
    """Records, in the caller's transaction, that the message must show the stored marks
    since the click at `at`; a sweep takes it from `due_at` (the clicking process renders
    it at once; only one that died leaves it to others)."""
    row = s.execute(
        select(RenderRow).where(
            col(RenderRow.channel_id) == shown.channel_id, col(RenderRow.ts) == shown.ts
        )
    ).scalar()
    values: dict[str, Any] = {
        "match_id": match_id,
        "text": shown.text,
        "blocks": shown.blocks,
        "status": RenderStatus.OWED,
        "attempts": 0,
        "next_attempt_at": due_at,
        "last_error": None,
        "owed_at": at,
    }
    if row is None:
        row = RenderRow(channel_id=shown.channel_id, ts=shown.ts, serial=1, **values)
        s.add(row)
    else:
        for name, value in values.items():
            setattr(row, name, value)
        row.serial += 1
    s.flush()
    return Owed(row.id or 0, row.serial, 0, match_id, shown)


class Renders(Database):
    def owed(self, now: datetime | None) -> list[Owed]:
        """Messages still owed (those due by `now`; all of them if None), oldest first."""
        stmt = select(RenderRow).where(col(RenderRow.status) == RenderStatus.OWED)
        if now is not None:
            stmt = stmt.where(col(RenderRow.next_attempt_at) <= now)
        with self._session() as s:
            rows = s.execute(stmt.order_by(col(RenderRow.id))).scalars().all()
            return [
                Owed(
                    r.id or 0,
                    r.serial,
                    r.attempts,
                    r.match_id,
                    Shown(r.channel_id, r.ts, r.text, list(r.blocks)),
                )
                for r in rows
            ]

    def done(self, owed: Owed) -> None:
        """chat.update answered ok: done, unless a newer click owes the message again."""
        self._settle(owed, {"status": RenderStatus.DONE, "last_error": None})

    def failed(
        self, owed: Owed, error: str, *, attempts: int, dead: bool, retry_at: datetime
    ) -> None:
        """A failed update, `attempts` made in all (the caller's policy counted them):
        tried again from `retry_at`, or given up (`dead`)."""
        values = {
            "status": RenderStatus.DEAD if dead else RenderStatus.OWED,
            "attempts": attempts,
            "next_attempt_at": retry_at,
            "last_error": error[:2000],
        }
        self._settle(owed, values)

    def _settle(self, owed: Owed, values: dict[str, Any]) -> None:
        """Writes the outcome unless a newer click owes the message again (`serial`)."""
        with self._session() as s:
            s.execute(
                update(RenderRow)
                .where(
                    col(RenderRow.id) == owed.render_id,
                    col(RenderRow.serial) == owed.serial,
                    col(RenderRow.status) == RenderStatus.OWED,
                )
                .values(values)
            )

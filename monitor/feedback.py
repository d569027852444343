"""Feedback: the desk's clicks on alerts, stored, listed, undone, and taught to the matcher.

A click names a stored match (the one an alert or follow-up stands for) and a verdict:
Not relevant (this hit is wrong for this watchlist) or Mute story (no more follow-ups in
its thread). The same user clicking the same verdict on the same match again undoes it.
Rows are never deleted: an undo stamps `undone_at`, so the history of who said what
stays. The Slack app reads a click's `target` to authorise it, `toggle`s it, and shows
the `marks` in force on the message.

What is in force teaches: Not relevant clicks become `lessons` for the matcher
(match/lessons.py), and a muted story gets no more follow-ups (`muted`, read where
outbox.queue makes them).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select, update
from sqlmodel import Session, col

from monitor.db import Database, take_turns
from monitor.errors import FeedbackError
from monitor.models import (
    ArticleRow,
    ChannelRow,
    DeliveryKind,
    DeliveryRow,
    FeedbackRow,
    FeedbackSource,
    MatchRow,
    Verdict,
    as_utc,
    iso,
)
from monitor.renders import Owed, Shown, owe

if TYPE_CHECKING:
    from monitor.match.lessons import Example, Lessons

__all__ = [
    "Applied",
    "Click",
    "FeedbackSource",
    "Mark",
    "Target",
    "Verdict",
    "lessons",
    "listing",
    "marks",
    "marks_of",
    "muted",
    "stamp",
    "target",
    "toggle",
    "undo",
]

log = logging.getLogger(__name__)

_LOCK = 0x6D6F6662  # "mofb": one click applied at a time, so a double click cannot count twice
_RECENT = 2000  # a watchlist's newest matches looked through for the alerts the desk kept


@dataclass(frozen=True)
class Click:
    """One click on a message, as the Slack app (or the CLI) received it."""

    verdict: Verdict
    match_id: int  # the stored match the alert or follow-up stands for
    user_id: str
    user_name: str
    team_id: str
    channel_id: str
    at: datetime  # aware UTC
    source: FeedbackSource = FeedbackSource.SLACK
    # what names this click for its sender (Slack: a hash of the user, the action's
    # action_ts and the trigger_id): the same click delivered again changes nothing
    key: str = ""


@dataclass(frozen=True)
class Target:
    """What a click would act on, read before authorising it."""

    match_id: int
    watchlist: str
    channel: str  # the watchlist's channel as its delivery stored it ("" if none)
    channel_id: str | None = None  # Slack's ID of that channel, once learnt from a send
    story_key: str = ""


@dataclass(frozen=True)
class Mark:
    """One verdict in force, to show on the message."""

    verdict: Verdict
    user_id: str
    user_name: str
    at: datetime


@dataclass(frozen=True)
class Applied:
    """What a click did: `on` True if its verdict is now in force, False if it undid it."""

    on: bool
    target: Target
    marks: tuple[Mark, ...]  # every verdict in force on the match (and its story's mutes)
    feedback_id: int = 0
    owed: Owed | None = None  # the message's render, owed with the click (renders.py)


def target(engine: Engine, match_id: int) -> Target:
    """The match a click names, its watchlist and channel; FeedbackError if not stored."""
    with _Feedback(engine).session() as s:
        return _target(s, match_id)


def toggle(
    engine: Engine, click: Click, shown: Shown | None = None, due_at: datetime | None = None
) -> Applied:
    """Puts the click's verdict in force, or, when this user's same verdict on this match
    is in force already, undoes it. Stored before it returns: it survives a restart.
    `shown`: the clicked message, owed a render from `due_at` in the same transaction."""
    with _Feedback(engine).session() as s:
        take_turns(s, _LOCK)
        goal = _target(s, click.match_id)
        owed = None
        if shown is not None:
            owed = owe(s, shown, click.match_id, click.at, due_at or click.at)
        seen = _seen(s, click)
        if seen is not None:  # delivered before: applied then, shown as it stands now
            marked = _marks(s, goal.match_id, goal.watchlist, goal.story_key)
            return Applied(seen, goal, marked, _in_force(s, click) or 0, owed)
        active = (
            s.execute(
                select(FeedbackRow).where(
                    col(FeedbackRow.match_id) == click.match_id,
                    col(FeedbackRow.verdict) == click.verdict,
                    col(FeedbackRow.user_id) == click.user_id,
                    col(FeedbackRow.undone_at).is_(None),
                )
            )
            .scalars()
            .all()
        )
        if active:
            for row in active:
                row.undone_at, row.undone_by = click.at, click.user_id
                row.undo_key = click.key or None
            feedback_id = active[0].id or 0
        else:
            row = _new_row(s, click, goal)
            s.add(row)
            s.flush()
            feedback_id = row.id or 0
        marked = _marks(s, goal.match_id, goal.watchlist, goal.story_key)
    log.info(
        "feedback undone" if active else "feedback applied",
        extra={
            "feedback_id": feedback_id,
            "match_id": click.match_id,
            "verdict": str(click.verdict),
            "watchlist": goal.watchlist,
            "user_id": click.user_id,
            "channel_id": click.channel_id,
            "source": str(click.source),
        },
    )
    return Applied(not active, goal, marked, feedback_id, owed)


def marks(engine: Engine, match_id: int) -> tuple[Mark, ...]:
    """The verdicts in force on a match and its story, to render its message again."""
    with _Feedback(engine).session() as s:
        goal = _target(s, match_id)
        return _marks(s, goal.match_id, goal.watchlist, goal.story_key)


def marks_of(engine: Engine, match_ids: Iterable[int]) -> dict[int, tuple[Mark, ...]]:
    """The marks of each stored match of a message (a pruned one is left out). Marks
    need only a match's watchlist and story, read for all of them in one query: not its
    channel, as a click's `target` reads it."""
    ids = list(match_ids)
    stmt = select(col(MatchRow.id), col(MatchRow.watchlist), col(MatchRow.story_key))
    with _Feedback(engine).session() as s:
        stories = {
            match_id: (watchlist, story_key)
            for match_id, watchlist, story_key in s.execute(stmt.where(col(MatchRow.id).in_(ids)))
        }
        return {
            match_id: _marks(s, match_id, *stories[match_id])
            for match_id in ids
            if match_id in stories
        }


def undo(engine: Engine, feedback_id: int, by: str, at: datetime) -> dict[str, Any]:
    """Withdraws one piece of feedback by its id (the CLI's undo); the row as listed.
    FeedbackError if there is none; one already withdrawn stays as it was."""
    with _Feedback(engine).session() as s:
        row = s.get(FeedbackRow, feedback_id)
        if row is None:
            raise FeedbackError(f"no feedback with id {feedback_id} (monitor feedback lists them)")
        if row.undone_at is None:
            s.execute(
                update(FeedbackRow)
                .where(col(FeedbackRow.id) == feedback_id)
                .values(undone_at=at, undone_by=by)
            )
            row.undone_at, row.undone_by = at, by
            log.info(
                "feedback undone",
                extra={"feedback_id": feedback_id, "match_id": row.match_id, "user_id": by},
            )
        return _listed(row)


def listing(engine: Engine, watchlist: str | None) -> list[dict[str, Any]]:
    """Every piece of feedback, newest first, withdrawn ones too (`undone_at` set)."""
    stmt = select(FeedbackRow).order_by(col(FeedbackRow.id).desc())
    if watchlist:
        stmt = stmt.where(col(FeedbackRow.watchlist) == watchlist)
    with _Feedback(engine).session() as s:
        return [_listed(r) for r in s.execute(stmt).scalars()]


def stamp(engine: Engine) -> tuple[int, int, int]:
    """The feedback's version: any click or undo changes it (one small query)."""
    top = func.coalesce(func.max(col(FeedbackRow.id)), 0)
    stmt = select(func.count(), top, func.count(col(FeedbackRow.undone_at)))
    with _Feedback(engine).session() as s:
        n, newest, undone = s.execute(stmt).one()
    return int(n), int(newest), int(undone)


def lessons(engine: Engine) -> Lessons:
    """The Not relevant clicks in force, by (watchlist, term), each with the newest alerts
    of its term the desk let stand (none of a rejected story: its follow-ups were judged
    with it): what the matcher is taught (match/lessons.py)."""
    from monitor.match.lessons import STANDING, Example, Lesson, Lessons  # numpy: matching only

    version = stamp(engine)
    examples: dict[tuple[str, str], list[Example]] = defaultdict(list)
    with _Feedback(engine).session() as s:
        rows = s.execute(
            select(FeedbackRow)
            .where(
                col(FeedbackRow.verdict) == Verdict.NOT_RELEVANT,
                col(FeedbackRow.undone_at).is_(None),
            )
            .order_by(col(FeedbackRow.id))
        ).scalars()
        # the stories the desk rejected: their follow-ups were never let stand either
        rejected: set[tuple[str, str]] = set()
        for row in rows:
            rejected.add((row.watchlist, row.story_key))
            for term, text in row.contexts.items():
                at = as_utc(row.created_at)
                who = row.user_name or row.user_id
                examples[(row.watchlist, term)].append(Example(row.id or 0, text, who, at))
        standing: dict[tuple[str, str], list[str]] = defaultdict(list)
        for name in {w for w, _ in examples}:
            stmt = (
                select(col(MatchRow.story_key), col(MatchRow.contexts))
                .where(
                    col(MatchRow.watchlist) == name,
                    col(MatchRow.held).is_(None),
                    col(MatchRow.contexts).is_not(None),
                )
                .order_by(col(MatchRow.id).desc())
                .limit(_RECENT)
            )
            for story_key, contexts in s.execute(stmt):
                if (name, story_key) in rejected:
                    continue
                for term, text in (contexts or {}).items():
                    kept = standing[(name, term)]
                    if (name, term) in examples and len(kept) < STANDING:
                        kept.append(text)
    return Lessons(
        {k: Lesson(tuple(v), tuple(standing.get(k, ()))) for k, v in examples.items()}, version
    )


def muted(s: Session, watchlist: str, story_key: str) -> FeedbackRow | None:
    """The Mute story in force on the story (on any of its matches), if there is one."""
    stmt = (
        select(FeedbackRow)
        .where(
            col(FeedbackRow.verdict) == Verdict.MUTE_STORY,
            col(FeedbackRow.watchlist) == watchlist,
            col(FeedbackRow.story_key) == story_key,
            col(FeedbackRow.undone_at).is_(None),
        )
        .order_by(col(FeedbackRow.id))
        .limit(1)
    )
    return s.execute(stmt).scalar()


class _Feedback(Database):
    """The database's transactions (StoreError when it fails) for the functions above."""

    def session(self) -> AbstractContextManager[Session]:
        return self._session()


def _target(s: Session, match_id: int) -> Target:
    match = s.get(MatchRow, match_id)
    if match is None:
        raise FeedbackError(f"no stored match with id {match_id} (pruned, or never stored)")
    delivery = s.execute(
        select(DeliveryRow)
        .where(
            col(DeliveryRow.watchlist) == match.watchlist,
            col(DeliveryRow.story_key) == match.story_key,
            col(DeliveryRow.kind).in_((DeliveryKind.ALERT, DeliveryKind.FOLLOWUP)),
        )
        .order_by((col(DeliveryRow.match_id) == match_id).desc(), col(DeliveryRow.id))
        .limit(1)
    ).scalar()
    if delivery is None:
        return Target(match_id, match.watchlist, "", None, match.story_key)
    # an alert that went out in a flood or digest was never posted itself: its channel's
    # ID is the one Slack answered a send to that channel with
    known = (
        delivery.channel_id
        or s.execute(
            select(col(ChannelRow.channel_id)).where(col(ChannelRow.name) == delivery.channel)
        ).scalar()
    )
    return Target(match_id, match.watchlist, delivery.channel, known, match.story_key)


def _seen(s: Session, click: Click) -> bool | None:
    """Whether a click with this key was applied already: True if it put its verdict in
    force, False if it undid it; None if it is new (or has no key)."""
    if not click.key:
        return None
    same = (col(FeedbackRow.match_id) == click.match_id) & (
        col(FeedbackRow.verdict) == click.verdict
    )
    for column, on in ((FeedbackRow.click_key, True), (FeedbackRow.undo_key, False)):
        stmt = select(col(FeedbackRow.id)).where(same, col(column) == click.key).limit(1)
        if s.execute(stmt).scalar() is not None:
            return on
    return None


def _in_force(s: Session, click: Click) -> int | None:
    """The id of the user's verdict in force on the match, if there is one."""
    stmt = select(col(FeedbackRow.id)).where(
        col(FeedbackRow.match_id) == click.match_id,
        col(FeedbackRow.verdict) == click.verdict,
        col(FeedbackRow.user_id) == click.user_id,
        col(FeedbackRow.undone_at).is_(None),
    )
    return s.execute(stmt.limit(1)).scalar()


def _new_row(s: Session, click: Click, goal: Target) -> FeedbackRow:
    """The click's row, with what the hit read like: the context each term's first hit
    was read in (or, for a match stored before contexts were kept, its snippet)."""
    match = s.get(MatchRow, click.match_id)
    assert match is not None  # _target found it in this transaction
    title = s.execute(
        select(col(ArticleRow.title)).where(col(ArticleRow.id) == match.article_id)
    ).scalar()
    contexts = match.contexts or {term: f"{title}. {match.snippet}" for term in match.matched}
    return FeedbackRow(
        match_id=click.match_id,
        verdict=click.verdict,
        watchlist=goal.watchlist,
        story_key=goal.story_key,
        terms=list(match.matched),
        contexts=dict(contexts),
        title=title or "",
        user_id=click.user_id,
        user_name=click.user_name,
        team_id=click.team_id,
        channel_id=click.channel_id,
        source=click.source,
        created_at=click.at,
        click_key=click.key or None,
    )


def _marks(s: Session, match_id: int, watchlist: str, story_key: str) -> tuple[Mark, ...]:
    """The verdicts in force on the match, and the mutes of its story."""
    on_match = col(FeedbackRow.match_id) == match_id
    on_story = (
        (col(FeedbackRow.verdict) == Verdict.MUTE_STORY)
        & (col(FeedbackRow.watchlist) == watchlist)
        & (col(FeedbackRow.story_key) == story_key)
    )
    rows = s.execute(
        select(FeedbackRow)
        .where(on_match | on_story, col(FeedbackRow.undone_at).is_(None))
        .order_by(col(FeedbackRow.id))
    ).scalars()
    return tuple(
        Mark(Verdict(r.verdict), r.user_id, r.user_name, as_utc(r.created_at)) for r in rows
    )


def _listed(r: FeedbackRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "verdict": r.verdict,
        "watchlist": r.watchlist,
        "match_id": r.match_id,
        "terms": list(r.terms),
        "title": r.title,
        "context": r.contexts,
        "user_id": r.user_id,
        "user_name": r.user_name,
        "source": r.source,
        "created_at": iso(r.created_at),
        "undone_at": iso(r.undone_at),
        "undone_by": r.undone_by,
    }

"""The desk's feedback (issue 21): clicks stored, listed and undone, learnt by the matcher,
and muted stories; on a real SQLite file (and PostgreSQL where it runs), through the real
matcher and meaning model and the real CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import spacy
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from monitor import feedback
from monitor.config import Watchlist
from monitor.db import make_engine, migrate
from monitor.dedupe import fingerprint, identify
from monitor.errors import FeedbackError
from monitor.feedback import Click, Verdict
from monitor.match import Matcher
from monitor.models import DeliveryRow, Item, MatchRow, utcnow
from monitor.outbox import Outbox, Policy
from monitor.service import teach
from monitor.store import Store
from tests.test_store import feeds

NOW = datetime(2026, 2, 16, 9, tzinfo=UTC)
THREAD = Policy(hold=False, followups="thread")

CYBER = {
    "name": "cyber",
    "channel": "#cyber",
    "topics": [{"name": "hacking", "phrases": ["hack*"]}],
}
TECH = {"name": "tech", "channel": "#tech", "topics": [{"name": "hacking", "phrases": ["hack*"]}]}


def watchlist(spec: dict[str, Any]) -> Watchlist:
    return Watchlist.model_validate(spec)


def article(title: str, body: str, link: str, hours: float = 0) -> Item:
    return Item(title, link, link, body, "", NOW + timedelta(hours=hours))


class Desk:
    """A store on a real SQLite (or PostgreSQL) database, the articles a desk sees put
    through the real matcher (taught the stored feedback, as the service's is) and store."""

    def __init__(self, url: str, *specs: dict[str, Any]) -> None:
        self.engine: Engine = make_engine(url)
        migrate(self.engine)
        self.store = Store(self.engine)
        self.wls = [watchlist(s) for s in specs or (CYBER,)]
        self.feed_a, self.feed_b = feeds(self.store, "a", "b")
        self.matcher = Matcher(self.wls, spacy.blank("en"), lambda: None)

    def post(self, item: Item, feed: int | None = None) -> dict[str, MatchRow]:
        """Polls one article: matched, stored, queued. Its match rows, by watchlist."""
        teach(self.matcher, self.engine)
        e = fingerprint(identify(item))
        policies = {w.name: THREAD for w in self.wls}
        self.store.save(feed or self.feed_a, [e], {e.key}, self.matcher.match([e]), policies)
        with Session(self.engine) as s:
            rows = s.exec(select(MatchRow).order_by(col(MatchRow.id).desc())).scalars().all()
            return {r.watchlist: r for r in rows if r.story_key.endswith(item.link or "")}

    def click(
        self, match_id: int, verdict: Verdict = Verdict.NOT_RELEVANT, user: str = "U1"
    ) -> feedback.Applied:
        return feedback.toggle(
            self.engine,
            Click(verdict, match_id, user, f"name-{user}", "T1", "C1", NOW + timedelta(hours=1)),
        )

    def deliveries(self, match_id: int) -> list[DeliveryRow]:
        with Session(self.engine) as s:
            stmt = select(DeliveryRow).where(col(DeliveryRow.match_id) == match_id)
            return list(s.exec(stmt).scalars().all())


PODCAST = article(
    "Episode 212: our favourite productivity hacks",
    "This week on the show we share the life hacks that save us an hour a day: "
    "batching email, a standing desk and a kitchen timer.",
    "https://pod.example/212",
)
PODCAST_AGAIN = article(
    "Episode 213: more productivity hacks from listeners",
    "Listeners wrote in with the life hacks that save them time every day: meal "
    "planning on Sunday, a timer for email and a tidy desk.",
    "https://pod.example/213",
    hours=30,
)
BREACH = article(
    "Hackers break into city council email system",
    "Hackers broke into the city council's email servers and stole residents' "
    "personal data, officials said, in an attack blamed on a ransomware gang.",
    "https://news.example/breach",
    hours=31,
)


@pytest.fixture
def desk(any_db_url: str) -> Iterator[Desk]:
    made = Desk(any_db_url)
    yield made
    made.engine.dispose()


def test_a_click_is_stored_shown_and_undone_by_the_same_click(desk: Desk) -> None:
    match = desk.post(PODCAST)["cyber"]
    assert match.id is not None
    target = feedback.target(desk.engine, match.id)
    assert (target.watchlist, target.channel) == ("cyber", "#cyber")
    applied = desk.click(match.id)
    assert applied.on and applied.target == target
    [mark] = applied.marks
    assert (mark.verdict, mark.user_id, mark.user_name) == (Verdict.NOT_RELEVANT, "U1", "name-U1")
    assert feedback.marks(desk.engine, match.id) == applied.marks
    other = desk.click(match.id, user="U2")  # another user's click is their own
    assert other.on and len(other.marks) == 2
    undone = desk.click(match.id)
    assert not undone.on and [m.user_id for m in undone.marks] == ["U2"]
    assert desk.click(match.id).on  # and again: in force once more, a row of its own
    [latest, second, first] = feedback.listing(desk.engine, None)
    assert first["undone_at"] and first["undone_by"] == "U1" and not second["undone_at"]
    assert first["terms"] == ["hacking"] and "[MASK]" in first["context"]["hacking"]
    assert latest["verdict"] == "not_relevant" and latest["user_id"] == "U1"
    assert latest["undone_at"] is None  # clicked again: a third row, in force


def test_a_click_on_a_match_not_stored_is_refused(desk: Desk) -> None:
    with pytest.raises(FeedbackError, match="no stored match with id 999"):
        feedback.target(desk.engine, 999)
    with pytest.raises(FeedbackError, match="999"):
        desk.click(999)
    with pytest.raises(FeedbackError, match="no feedback with id 5"):
        feedback.undo(desk.engine, 5, "cli:me", NOW)


def test_feedback_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    first = Desk(url)
    match_id = first.post(PODCAST)["cyber"].id
    assert match_id is not None
    first.click(match_id, Verdict.MUTE_STORY)
    first.engine.dispose()
    again = make_engine(url)
    [mark] = feedback.marks(again, match_id)
    assert mark.verdict is Verdict.MUTE_STORY and mark.at == NOW + timedelta(hours=1)
    again.dispose()


def test_an_alert_names_the_match_a_click_on_it_acts_on(desk: Desk) -> None:
    match = desk.post(PODCAST)["cyber"]
    [out] = Outbox(desk.engine).due(utcnow() + timedelta(days=1))
    assert [s.match_id for s in out.stories] == [match.id]

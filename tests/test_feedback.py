"""The desk's feedback (issue 21): clicks stored, listed and undone, learnt by the matcher,
and muted stories; on a real SQLite file (and PostgreSQL where it runs), through the real
matcher and meaning model and the real CLI."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import spacy
import yaml
from sqlalchemy import Engine, event, select
from sqlmodel import Session, col

from monitor import feedback
from monitor.config import Watchlist
from monitor.db import make_engine, migrate
from monitor.dedupe import fingerprint, identify
from monitor.errors import FeedbackError
from monitor.events import reader
from monitor.feedback import Click, Verdict
from monitor.match import Matcher
from monitor.match.matcher import default_meaning
from monitor.models import (
    ArticleRow,
    DeliveryRow,
    Entry,
    Item,
    MatchHold,
    MatchResult,
    MatchRow,
    utcnow,
)
from monitor.outbox import Outbox, Policy
from monitor.service import teach
from monitor.store import Store
from tests.conftest import SHARED
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
        self.store = Store(self.engine, reader(default_meaning))
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
            stmt = (
                select(MatchRow)
                .join(ArticleRow, col(ArticleRow.id) == MatchRow.article_id)
                .where(col(ArticleRow.url) == item.link)
            )
            return {r.watchlist: r for r in s.exec(stmt).scalars().all()}

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


def test_a_click_delivered_twice_is_applied_once(desk: Desk) -> None:
    """Slack may deliver one click again (a retried envelope after a crash): its key, the
    action's ts, makes the second delivery change nothing, for a click as for an undo."""
    match_id = desk.post(PODCAST)["cyber"].id or 0

    def click(key: str) -> feedback.Applied:
        at = NOW + timedelta(hours=1)
        return feedback.toggle(
            desk.engine, Click(Verdict.MUTE_STORY, match_id, "U1", "ana", "T1", "C1", at, key=key)
        )

    assert click("1.1").on and click("1.1").on
    assert len(feedback.listing(desk.engine, None)) == 1
    assert not click("2.2").on and not click("2.2").on
    assert feedback.marks(desk.engine, match_id) == ()
    assert click("3.3").on and len(feedback.listing(desk.engine, None)) == 2


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


def test_retention_keeps_the_matches_feedback_was_given_on(desk: Desk) -> None:
    """What the desk taught outlives retention; a match nobody clicked does not (the trap)."""
    from sqlalchemy import update

    from monitor.archive import Archive

    clicked = desk.post(PODCAST)["cyber"].id or 0
    other = desk.post(BREACH)["cyber"].id or 0
    desk.click(clicked)
    with Session(desk.engine) as s, s.begin():
        s.execute(update(DeliveryRow).values(status="sent"))
    Archive(desk.engine).prune(utcnow() + timedelta(days=1))
    with Session(desk.engine) as s:
        left = set(s.exec(select(col(MatchRow.id))).scalars().all())
    assert left == {clicked} and other != clicked
    assert feedback.target(desk.engine, clicked).watchlist == "cyber"


def test_an_alert_names_the_match_a_click_on_it_acts_on(desk: Desk) -> None:
    match = desk.post(PODCAST)["cyber"]
    [out] = Outbox(desk.engine).due(utcnow() + timedelta(days=1))
    assert [s.match_id for s in out.stories] == [match.id]


# It learns.


def podcast(n: int, hours: float) -> Item:
    """Another episode of the show whose "hacks" the desk said are not hacking."""
    return article(
        f"Episode {n}: the productivity hacks listeners sent us",
        "On this week's show, the life hacks that save our listeners time every day: "
        f"meal planning, a tidy desk and fewer meetings (episode {n}).",
        f"https://pod.example/{n}",
        hours=hours,
    )


def test_a_hit_like_one_marked_not_relevant_is_stored_suppressed_and_undone(
    tmp_path: Path,
) -> None:
    desk = Desk(f"sqlite:///{tmp_path / 'monitor.db'}", CYBER, TECH)
    clicked = desk.post(PODCAST)["cyber"]
    assert clicked.id is not None and desk.deliveries(clicked.id)
    applied = desk.click(clicked.id)
    later = desk.post(PODCAST_AGAIN)
    cyber, tech = later["cyber"], later["tech"]
    assert cyber.held == MatchHold.SUPPRESSED and cyber.id is not None
    assert not desk.deliveries(cyber.id), "suppressed: stored, never posted"
    why = cyber.held_why or ""
    assert f"feedback #{applied.feedback_id}" in why and "name-U1" in why, why
    assert "2026-02-16 10:00 UTC" in why and "resembles" in why, why
    # The traps: another watchlist's same hit, and another sense of the term, still alert.
    assert tech.held is None and tech.id is not None and desk.deliveries(tech.id)
    breach = desk.post(BREACH)["cyber"]
    assert breach.held is None and breach.id is not None and desk.deliveries(breach.id)
    # Undone, it teaches nothing more: the matcher takes in the change at its next batch.
    assert not desk.click(clicked.id).on
    again = desk.post(podcast(214, hours=40))["cyber"]
    assert again.held is None and again.id is not None and desk.deliveries(again.id)
    desk.engine.dispose()


def test_follow_ups_of_a_rejected_alert_are_not_counted_as_kept(tmp_path: Path) -> None:
    """The desk judges a story by its alert: the near-copies threaded under it were never
    let stand, and must not outweigh the click as alerts the desk kept."""
    desk = Desk(f"sqlite:///{tmp_path / 'monitor.db'}")
    clicked = desk.post(PODCAST)["cyber"]
    copy = desk.post(copy_of(PODCAST, 1), desk.feed_b)["cyber"]
    assert [d.kind for d in desk.deliveries(copy.id or 0)] == ["followup"]
    desk.click(clicked.id or 0)
    later = desk.post(PODCAST_AGAIN)["cyber"]
    assert later.held == MatchHold.SUPPRESSED, later.held_why
    # trap: the term's alert the desk did let stand (another story) still counts as kept
    breach = desk.post(BREACH)["cyber"]
    assert breach.held is None and desk.deliveries(breach.id or 0)
    desk.engine.dispose()


def test_a_match_with_no_term_read_is_never_suppressed() -> None:
    """The trap of "every term resembles a rejected hit": with no term read, none does."""
    from monitor.match.lessons import Example, Lesson, Lessons

    lessons = Lessons({("cyber", "hacking"): Lesson((Example(1, "a podcast", "ana", NOW),))})
    assert lessons.hold(lambda: pytest.fail("nothing to compare"), "cyber", {}, {}) == ([], None)


def test_the_services_matcher_takes_in_clicks_and_undos_without_a_restart(
    tmp_path: Path,
) -> None:
    from monitor.match.matcher import default_meaning
    from monitor.service import LazyMatcher

    desk = Desk(f"sqlite:///{tmp_path / 'monitor.db'}")
    service = LazyMatcher(desk.wls, default_meaning, desk.engine)
    later = fingerprint(identify(PODCAST_AGAIN))
    [(_, [before])] = service.match([later])
    clicked = desk.post(PODCAST)["cyber"].id or 0
    desk.click(clicked)
    [(_, [after])] = service.match([later])
    desk.click(clicked)
    [(_, [undone])] = service.match([later])
    assert (before.held, after.held, undone.held) == (None, MatchHold.SUPPRESSED, None)
    desk.engine.dispose()


def test_a_hit_of_another_term_in_the_same_article_still_alerts(tmp_path: Path) -> None:
    """The trap: a lesson is the (watchlist, term) clicked; an article whose other term
    hit too is carried by that term."""
    both = {**CYBER, "topics": [*CYBER["topics"], {"name": "meetings", "phrases": ["meetings"]}]}
    desk = Desk(f"sqlite:///{tmp_path / 'monitor.db'}", both)
    clicked = desk.post(PODCAST)["cyber"]
    assert clicked.id is not None and clicked.matched == ["hacking"]
    desk.click(clicked.id)
    later = desk.post(podcast(214, hours=40))["cyber"]
    assert later.matched == ["hacking", "meetings"] and later.held is None, later.held_why
    desk.engine.dispose()


def test_explain_names_the_feedback_that_decided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.cli import main
    from tests.conftest import write_config
    from tests.servers import rss

    db = f"sqlite:///{tmp_path / 'monitor.db'}"
    desk = Desk(db)
    clicked = desk.post(PODCAST)["cyber"]
    assert clicked.id is not None
    applied = desk.click(clicked.id)
    desk.engine.dispose()
    monkeypatch.setenv("MONITOR_DATABASE_URL", db)
    cfg = write_config(tmp_path / "c", [], [CYBER])
    feed = tmp_path / "feed.xml"
    episode = podcast(214, hours=40)
    feed.write_bytes(rss([{"title": episode.title, "description": episode.summary}]))
    assert main(["--config", str(cfg), "explain", str(feed)]) == 0
    out = capsys.readouterr().out
    assert "cyber: MATCH (about) -> #cyber, but SUPPRESSED" in out, out
    assert f"feedback on 'hacking': suppressed: resembles feedback #{applied.feedback_id}" in out
    assert "by name-U1, 2026-02-16 10:00 UTC) at 0." in out, out


# Mute story.


def copy_of(item: Item, n: int) -> Item:
    """Another outlet's near-copy of the article: the same story, a follow-up."""
    return article(item.title, item.summary, f"https://copy{n}.example/story", hours=32 + n)


def test_a_muted_story_gets_no_follow_ups_until_undone(desk: Desk) -> None:
    first = desk.post(BREACH)["cyber"]
    assert first.id is not None
    kinds = [
        d.kind for d in desk.deliveries(desk.post(copy_of(BREACH, 1), desk.feed_b)["cyber"].id or 0)
    ]
    assert kinds == ["followup"]
    applied = desk.click(first.id, Verdict.MUTE_STORY)
    assert applied.on and [m.verdict for m in applied.marks] == [Verdict.MUTE_STORY]
    muted = desk.post(copy_of(BREACH, 2), desk.feed_b)["cyber"]
    assert muted.held == MatchHold.MUTED and muted.id is not None
    assert not desk.deliveries(muted.id)
    assert f"story muted by feedback #{applied.feedback_id} (name-U1" in (muted.held_why or "")
    assert not desk.click(first.id, Verdict.MUTE_STORY).on
    again = desk.post(copy_of(BREACH, 3), desk.feed_b)["cyber"]
    assert again.held is None and [d.kind for d in desk.deliveries(again.id or 0)] == ["followup"]


def test_follow_ups_gathered_together_read_each_storys_mute_once(desk: Desk) -> None:
    """A digest or flood may gather many follow-ups of one story: every one of a muted
    story goes to muted, another story's stay, and each story's mute is read once."""
    from monitor.outbox import mute_followups

    first = desk.post(BREACH)["cyber"].id or 0
    copies = [desk.post(copy_of(BREACH, n), desk.feed_b)["cyber"].id or 0 for n in (1, 2, 3)]
    desk.post(PODCAST)
    podcast_copy = desk.post(copy_of(PODCAST, 4), desk.feed_b)["cyber"].id or 0
    desk.click(first, Verdict.MUTE_STORY)
    asked: list[str] = []

    def counted(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM feedback" in statement:
            asked.append(statement)

    with Session(desk.engine) as s, s.begin():
        rows = s.exec(select(DeliveryRow).order_by(col(DeliveryRow.id))).scalars().all()
        event.listen(desk.engine, "before_cursor_execute", counted)
        try:
            moved = mute_followups(s, rows)
        finally:
            event.remove(desk.engine, "before_cursor_execute", counted)
    assert [m["match_id"] for m in moved] == copies
    assert len(asked) == 2  # the two stories with follow-ups; no alert asks
    assert [d.status for d in desk.deliveries(podcast_copy)] == ["pending"]
    assert [d.status for d in desk.deliveries(first)] == ["pending"]  # its own alert


def test_a_messages_marks_are_read_with_one_query_for_its_matches(desk: Desk) -> None:
    """A thread page shows up to 15 stories: their marks (a story's mute shown on each of
    its matches) take one query for the matches and one each for their marks, not the
    three or four a click's `target` costs; a match no longer stored is left out."""
    first = desk.post(BREACH)["cyber"].id or 0
    followup = desk.post(copy_of(BREACH, 1), desk.feed_b)["cyber"].id or 0
    other = desk.post(PODCAST)["cyber"].id or 0
    desk.click(first, Verdict.MUTE_STORY)
    desk.click(other, user="U2")
    selects: list[str] = []

    def counted(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(desk.engine, "before_cursor_execute", counted)
    try:
        found = feedback.marks_of(desk.engine, [followup, 999, other, first])
    finally:
        event.remove(desk.engine, "before_cursor_execute", counted)
    assert list(found) == [followup, other, first]
    assert found == {m: feedback.marks(desk.engine, m) for m in (followup, other, first)}
    assert [m.verdict for m in found[followup]] == [Verdict.MUTE_STORY]  # the story's
    assert [m.user_id for m in found[other]] == ["U2"]
    assert len(selects) == 1 + 3


# The command line.


def test_feedback_is_listed_and_undone_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.cli import main
    from tests.conftest import write_config

    db = f"sqlite:///{tmp_path / 'monitor.db'}"
    desk = Desk(db, CYBER, TECH)
    rows = desk.post(PODCAST)
    desk.click(rows["cyber"].id or 0)
    desk.click(rows["tech"].id or 0, Verdict.MUTE_STORY, user="U2")
    desk.post(PODCAST_AGAIN)
    desk.engine.dispose()
    monkeypatch.setenv("MONITOR_DATABASE_URL", db)
    cfg = write_config(tmp_path / "c", [], [CYBER, TECH])
    run = ["--config", str(cfg)]
    assert main([*run, "feedback"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "WHEN", "(UTC)", "VERDICT", "WATCHLIST", "BY", "STATE"]
    assert out[1].split()[3:] == ["mute_story", "tech", "name-U2", "in", "force"]
    assert "hacking: Episode 212: our favourite productivity hacks (match 2)" in out[2]
    assert out[3].split()[3:] == ["not_relevant", "cyber", "name-U1", "in", "force"]
    assert all(len(line) <= 100 for line in out)
    assert main([*run, "feedback", "--watchlist", "cyber", "--json"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["id"] == 1 and row["verdict"] == "not_relevant" and row["undone_at"] is None
    assert "[MASK]" in row["context"]["hacking"] and row["user_id"] == "U1"
    assert main([*run, "feedback", "undo", "1"]) == 0
    assert capsys.readouterr().out.startswith("feedback 1 (not_relevant on 'Episode 212")
    assert main([*run, "feedback", "--json"]) == 0
    undone = [json.loads(line) for line in capsys.readouterr().out.splitlines()][-1]
    assert undone["undone_at"] and undone["undone_by"].startswith("cli:")
    assert main([*run, "feedback", "undo", "77"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == "no feedback with id 77 (monitor feedback lists them)"
    assert main([*run, "matches", "--watchlist", "cyber"]) == 0
    listed = capsys.readouterr().out
    assert "suppressed" in listed and "suppressed: 'hacking' suppressed: resembles" in listed


# The replay on hand-labelled real news (issue 21's evidence).

DATA = Path(__file__).parent / "data" / "realworld"
CORPUS = SHARED / "corpus" / "realworld"
# Reached on the replay (the target is the strict xfail below): the first half's 12 false
# alarms clicked (podcasts, French and Hebrew tech news of 2011-2019) are kin to none of the
# second half's 7 (2026 news: other nuclear deals, sanctions on migrants), which all stay;
# no true alert is lost. No more false alarms may come, and at most one true alert be lost.
REPLAY_FLOOR = (0.0, 0.003)  # share of the second half's false alarms removed; recall lost
# Interleaved (a second look, not the protocol): 7 clicks, false alarms 13 -> 10
# (the same article in another feed, the same podcast's other episode), recall 0.963 kept.
INTERLEAVED_FLOOR = (0.23, 0.003)
# A desk's stream (stream.yaml: 480 alerts of 14 Jan-18 Feb 2026 judged, 6 wrong): the first
# half's 3 false alarms clicked (a Davos speech's link to a Gaza story for "Gaza ceasefire",
# Myanmar's cease-fire for "peace talks", the Doomsday Clock for "Iran nuclear talks") are
# kin to none of the second half's 3 (Merz on nuclear deterrence, a US-Hungary civil nuclear
# deal, Rubio naming the war in Gaza): each reads nearer an alert the desk kept than any
# click (cosine 0.22 against 0.33; 0.36 against 0.46), so all stay, and no true alert is lost.
STREAM_FLOOR = (0.0, 0.0)


@dataclass(frozen=True)
class Unit:
    """One judgement: an item, a watchlist, and for a sense judgement the term judged."""

    key: tuple[str, str]  # (file, entry key)
    watchlist: str
    term: str | None
    expect: bool


# The judgements a replay reads: the labelled sets (items from every feed and year, each
# judged for a watchlist or, in senses.yaml, for one term), or a desk's stream (every alert
# of four watchlists over the 2026 feeds of the event sets, judged for its watchlist).
LABELS = ("labelled.yaml", "senses.yaml")
STREAM = ("stream.yaml",)


@cache
def _units(labels: tuple[str, ...]) -> tuple[list[Unit], dict[tuple[str, str], Entry]]:
    from tests.test_realworld_labelled import find

    units: list[Unit] = []
    entries: dict[tuple[str, str], Entry] = {}
    for name in labels:
        for j in yaml.safe_load((DATA / name).read_text(encoding="utf-8"))["judgements"]:
            if j["expect"] is None:  # left unclear by its reader: neither clicked nor counted
                continue
            item = find(j)
            assert item is not None, j
            e = fingerprint(identify(item))
            entries.setdefault((j["file"], e.key), e)
            units.append(Unit((j["file"], e.key), j["watchlist"], j.get("term"), j["expect"]))
    return units, entries


def _alerted(unit: Unit, results: dict[tuple[str, str], list[MatchResult]]) -> bool:
    for r in results.get(unit.key, []):
        if r.watchlist == unit.watchlist and r.held is None:
            return unit.term is None or unit.term in r.matched
    return False


def _score(
    units: list[Unit], results: dict[tuple[str, str], list[MatchResult]]
) -> tuple[int, float]:
    """False alarms, and recall."""
    alarms = sum(1 for u in units if not u.expect and _alerted(u, results))
    true = [u for u in units if u.expect]
    return alarms, sum(1 for u in true if _alerted(u, results)) / max(1, len(true))


def stored_alerts(
    stored: dict[tuple[int, str, str], int | None], ids: dict[str, int], keys: set[tuple[str, str]]
) -> list[tuple[tuple[str, str], str, int]]:
    """(item, watchlist, match id) of the stored matches of these items."""
    by_feed = {v: k for k, v in ids.items()}
    return [
        ((by_feed[feed], key), wl, match_id)
        for (feed, key, wl), match_id in stored.items()
        if (by_feed[feed], key) in keys and match_id is not None
    ]


def wrong_alert(units: list[Unit], results: dict[tuple[str, str], list[MatchResult]]) -> bool:
    """Whether a desk reading this alert sees it is wrong, as the labels say: judged wrong
    for the watchlist, or every term it names judged another sense; and no judgement says
    it is right. An alert the labels do not settle is left alone."""
    if not units or any(u.expect and _alerted(u, results) for u in units):
        return False
    [result] = [r for r in results[units[0].key] if r.watchlist == units[0].watchlist]
    if any(u.term is None for u in units):
        return True
    judged_wrong = {u.term for u in units if not u.expect}
    return set(result.matched) <= judged_wrong


def _match(
    matcher: Matcher | Any, keys: list[tuple[str, str]], entries: dict[tuple[str, str], Entry]
) -> dict[tuple[str, str], list[MatchResult]]:
    """Each item's results, the items of one feed in one batch (as a poll matches them)."""
    by_file: dict[str, list[Entry]] = defaultdict(list)
    for f, k in keys:
        by_file[f].append(entries[(f, k)])
    return {
        (f, e.key): results
        for f, batch in by_file.items()
        for e, results in matcher.match(batch, feed=f)
    }


@cache
def _unclicked(labels: tuple[str, ...]) -> dict[tuple[str, str], list[MatchResult]]:
    """Every labelled item's results with no feedback given: what the first half is
    polled with and what the second half is measured against, in every replay (a
    matcher with no clicks stored matches as a plain one does)."""
    from monitor.service import load_ner
    from tests.test_realworld_labelled import watchlists

    _, entries = _units(labels)
    return _match(Matcher(watchlists(), spacy.blank("en"), load_ner), list(entries), entries)


@cache
def replay(labels: tuple[str, ...], interleaved: bool = False) -> tuple[float, float, str]:
    """The labelled items in publication order: the first half polled and alerted, its
    false alarms clicked Not relevant (and nothing else), a restart, then the second
    half measured against the same replay without clicks. `interleaved`: every other
    item in that order is polled first instead, so both halves span every feed's years."""
    import tempfile

    from monitor.match.matcher import default_meaning
    from monitor.service import LazyMatcher
    from tests.test_realworld_labelled import watchlists

    units, entries = _units(labels)
    dated = sorted(entries, key=lambda k: (entries[k].item.published or NOW, k))
    if interleaved:
        dated = dated[0::2] + dated[1::2]
    half = len(dated) // 2
    first, second = set(dated[:half]), set(dated[half:])
    wls = watchlists()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/replay.db")
        migrate(engine)
        store = Store(engine, reader(default_meaning))
        files = sorted({f for f, _ in entries})
        ids = dict(zip(files, feeds(store, *files), strict=True))
        policies = {w.name: THREAD for w in wls}
        polled = {k: r for k, r in _unclicked(labels).items() if k in first}
        for key in dated[:half]:  # stored in the order they were published
            e = entries[key]
            found = [(e, polled[key])] if key in polled else []
            store.save(ids[key[0]], [e], {e.key}, found, policies)
        # The desk: Not relevant on each first-half alert judged wrong (nothing else).
        clicks = 0
        with Session(engine) as s:
            stored = {
                (a.feed_id, a.key, m.watchlist): m.id
                for m, a in s.exec(
                    select(MatchRow, ArticleRow).join(
                        ArticleRow, col(ArticleRow.id) == MatchRow.article_id
                    )
                ).all()
            }
        for key, wl, match_id in sorted(stored_alerts(stored, ids, first)):
            if wrong_alert([u for u in units if (u.key, u.watchlist) == (key, wl)], polled):
                feedback.toggle(
                    engine,
                    Click(Verdict.NOT_RELEVANT, match_id, "U1", "desk", "T1", "C1", NOW),
                )
                clicks += 1
        restarted = LazyMatcher(wls, default_meaning, engine)
        taught = _match(restarted, dated[half:], entries)
        without = {k: r for k, r in _unclicked(labels).items() if k in second}
        engine.dispose()
    rest = [u for u in units if u.key in second]
    fa_with, recall_with = _score(rest, taught)
    fa_without, recall_without = _score(rest, without)
    fewer = 1 - fa_with / max(1, fa_without)
    lost = recall_without - recall_with
    report = (
        f"replay: {len(first)} items polled first, {clicks} false alarms clicked; "
        f"{len(second)} items after the restart ({len(rest)} judgements)\n"
        f"second half without clicks: {fa_without} false alarms, recall {recall_without:.3f}\n"
        f"second half with clicks:    {fa_with} false alarms, recall {recall_with:.3f}\n"
        f"false alarms removed {fewer:.2f}, recall lost {lost:.3f}"
    )
    return fewer, lost, report


@pytest.mark.slow
@pytest.mark.corpus
@pytest.mark.timeout(900)  # the labelled set matched three times over
@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no shared corpus at {CORPUS}")
def test_clicked_false_alarms_teach_the_second_half() -> None:
    fewer, lost, report = replay(LABELS)
    print(report)
    assert fewer >= REPLAY_FLOOR[0] and lost <= REPLAY_FLOOR[1], report


@pytest.mark.slow
@pytest.mark.corpus
@pytest.mark.timeout(900)
@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no shared corpus at {CORPUS}")
def test_clicks_teach_an_interleaved_replay() -> None:
    """Where the same kinds of false alarm recur in both halves, clicks remove some."""
    fewer, lost, report = replay(LABELS, interleaved=True)
    print(report)
    assert fewer >= INTERLEAVED_FLOOR[0] and lost <= INTERLEAVED_FLOOR[1], report


@pytest.mark.slow
@pytest.mark.corpus
@pytest.mark.timeout(900)
@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no shared corpus at {CORPUS}")
def test_clicks_on_a_desks_stream() -> None:
    """The protocol on the alerts one desk read over five weeks, every one judged."""
    fewer, lost, report = replay(STREAM)
    print(report)
    assert fewer >= STREAM_FLOOR[0] and lost <= STREAM_FLOOR[1], report


@pytest.mark.slow
@pytest.mark.corpus
@pytest.mark.timeout(900)
@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no shared corpus at {CORPUS}")
@pytest.mark.xfail(
    strict=True, reason="issue 21's target: 70% fewer false alarms at a recall loss of 0.02"
)
def test_clicks_meet_the_target() -> None:
    fewer, lost, report = replay(LABELS)
    assert fewer >= 0.70 and lost <= 0.02, report

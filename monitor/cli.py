"""The `monitor` command. Exit codes: 0 ok, 1 runtime failure, 2 bad config or usage."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import monitor
from monitor import heap, logs
from monitor.errors import (
    ConfigError,
    FeedbackError,
    MonitorError,
    ParseError,
    UnsafeDocument,
    UsageError,
)

# Everything else (pydantic, SQLAlchemy, httpx, spaCy, ...) is imported inside the command
# that needs it: `monitor --help` and `--version` answer about as fast as Python starts.
if TYPE_CHECKING:
    from sqlalchemy import Engine

    from monitor.config import Config, Watchlist
    from monitor.match import Verdict
    from monitor.models import FeedOutcome, Fetched, Item
    from monitor.service import Service

log = logging.getLogger("monitor.cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="monitor", description=__doc__)
    p.add_argument("--version", action="version", version=f"monitor {monitor.__version__}")
    p.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("MONITOR_CONFIG", "config")),
        help="config directory (env MONITOR_CONFIG, default ./config)",
    )
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="log lines as text (default) or JSON objects",
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the service until SIGTERM/SIGINT")
    r.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve /healthz, /metrics and Slack's request URL (/slack/events, with "
        "SLACK_SIGNING_SECRET) here, e.g. 127.0.0.1:9310 (off by default)",
    )
    r.add_argument(
        "--workers-mode",
        choices=("single", "queue"),
        help="single: this process does everything (default); queue: one of several workers "
        "sharing a PostgreSQL job queue (overrides workers_mode in monitor.yaml)",
    )
    sub.add_parser("poll", help="fetch every feed once, match, store, deliver, exit")
    sub.add_parser("check", help="validate the config directory")
    m = sub.add_parser("matches", help="list stored matches")
    m.add_argument("--watchlist")
    m.add_argument("--since", help="only matches newer than this, e.g. 2d")
    m.add_argument("--json", action="store_true", help="one JSON object per line")
    f = sub.add_parser("feeds", help="feed health table")
    f.add_argument("--json", action="store_true", help="one JSON object per line")
    a = sub.add_parser("alerts", help="list deliveries; retry dead ones")
    a.add_argument("--failed", action="store_true", help="only dead deliveries")
    a.add_argument("--pending", action="store_true", help="only deliveries not yet sent")
    a.add_argument("--retry", action="store_true", help="queue every dead delivery again")
    a.add_argument("--watchlist")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    e = sub.add_parser("explain", help="show why an article matches a watchlist or not")
    e.add_argument("source", help="a feed URL, a feed file, or a plain-text article file")
    e.add_argument("--watchlist", help="only this watchlist")
    i = sub.add_parser("init", help="write the example config to a new directory")
    i.add_argument("directory", type=Path, nargs="?", default=Path("config"))
    d = sub.add_parser("db", help="database upkeep")
    dsub = d.add_subparsers(dest="action", required=True)
    dsub.add_parser("upgrade", help="migrate the schema to the newest revision")
    pr = dsub.add_parser("prune", help="delete matches and articles past retention")
    pr.add_argument("--older-than", help="override `retention`, e.g. 90d")
    pr.add_argument("--dry-run", action="store_true", help="only count what would go")
    s = sub.add_parser("schema", help="write JSON Schemas of the config files")
    s.add_argument("--out", type=Path, help="directory (default: the config's schema/)")
    fb = sub.add_parser("feedback", help="list the desk's feedback on alerts; undo one")
    fb.add_argument("--watchlist")
    fb.add_argument("--json", action="store_true", help="one JSON object per line")
    fbsub = fb.add_subparsers(dest="action")
    undo = fbsub.add_parser("undo", help="withdraw one piece of feedback, by its ID")
    undo.add_argument("id", type=int, help="its ID, as `monitor feedback` lists it")
    b = sub.add_parser("backtest", help="run a watchlist over stored articles, without alerting")
    b.add_argument("--watchlist", required=True)
    b.add_argument("--since", default="30d", help="how far back, e.g. 30d (default)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except BrokenPipeError:
        # the reader went away (`monitor matches | head`): what it wanted it has
        _silence_stdout()
        return 0


def _left_behind(old: Path, cfg: Config) -> None:
    """One line naming a database that relative paths used to lead to."""
    from sqlalchemy.engine import make_url

    now = Path(make_url(cfg.settings.effective_database_url()).database or "")
    log.warning(
        "a database is left at the old place: data_dir is now read from the config "
        "directory; move it to keep its history",
        extra={
            "old": str(old),
            "now": str(now),
            "fix": f"mkdir -p {now.parent} && mv {old}* {now.parent}/",
        },
    )


def _silence_stdout() -> None:
    """Points stdout at /dev/null so the interpreter's last flush cannot fail again."""
    with suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _main(args: argparse.Namespace) -> int:
    if args.command in _WITHOUT_CONFIG:
        heap.started()
        logs.setup((args.log_level or "INFO").upper(), args.log_format)
        return _WITHOUT_CONFIG[args.command](args)
    from monitor import config as config_mod

    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stdout if args.command == "check" else sys.stderr)
        return 2
    if args.command not in ("run", "poll"):  # theirs ends once the service is built
        heap.started()
    logs.setup(
        args.log_level.upper() if args.log_level else cfg.settings.log_level, args.log_format
    )
    if cfg.left_behind is not None:
        _left_behind(cfg.left_behind, cfg)
    for warning in cfg.warnings:
        if args.command == "check":
            print(f"warning: {warning}")
        elif args.command in ("run", "poll"):
            log.warning("config warning", extra={"warning": str(warning)})
    try:
        return _COMMANDS[args.command](cfg, args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except MonitorError as exc:
        log.error("command failed", extra={"command": args.command, "error": str(exc)})
        return 1


def run() -> NoReturn:
    """The `monitor` command as a process: `main`, then out at once. By then the service
    is closed (every transaction committed, pools, workers and locks let go), so the
    interpreter's own teardown of hundreds of modules (a tenth of a second, much of a
    poll with nothing new) buys nothing; output is flushed first. Start-up runs without
    the garbage collector (heap.start_up)."""
    heap.start_up()
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe: nothing more can be said there
            stream.flush()
    os._exit(code)


def _init(args: argparse.Namespace) -> int:
    """Copies the bundled example configuration, refusing to overwrite anything."""
    from importlib import resources

    target: Path = args.directory
    if target.exists() and any(target.iterdir()):
        print(f"{target}: not empty; choose a new directory", file=sys.stderr)
        return 2
    example = resources.files("monitor") / "example"
    for folder in ("", "watchlists", "schema"):
        (target / folder).mkdir(parents=True, exist_ok=True)
        for item in (example / folder if folder else example).iterdir():
            if item.is_file() and item.name.endswith((".yaml", ".yml", ".json")):
                (target / folder / item.name).write_text(item.read_text())
    print(f"{target}: example config written; edit it, then `monitor --config {target} check`")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from monitor import config as config_mod

    out: Path = args.out or args.config / "schema"
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in config_mod.json_schemas().items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        print(path)
    return 0


def _database(cfg: Config) -> AbstractContextManager[Engine]:
    """The configured database, migrated, for one command (built by the service)."""
    from monitor.service import database

    return database(cfg)


def _db(cfg: Config, args: argparse.Namespace) -> int:
    from monitor.archive import Archive
    from monitor.db import revision_of
    from monitor.models import utcnow

    with _database(cfg) as engine:
        if args.action == "upgrade":
            print(f"database at revision {revision_of(engine)}")
            return 0
        age = args.older_than or cfg.settings.retention
        if age is None:
            raise UsageError(
                "no retention configured: set `retention` in monitor.yaml or pass --older-than"
            )
        cutoff = utcnow() - _duration("--older-than", age)
        counts = Archive(engine).prune(cutoff, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {counts['matches']} matches, {counts['articles']} articles and "
        f"{counts['renders']} settled message updates older than {cutoff:%Y-%m-%d %H:%M} UTC"
    )
    return 0


def _duration(flag: str, value: str | timedelta) -> timedelta:
    """A command line's duration, or a one-line error naming it and the accepted forms."""
    from monitor.config import parse_duration

    try:
        return parse_duration(value)
    except ValueError:
        raise UsageError(
            f"{flag} {value!r}: not a duration; write it like 30m, 12h, 2d or 1w "
            "(units ms, s, m, h, d, w; sums like 1h30m)"
        ) from None


def _check(cfg: Config, args: argparse.Namespace) -> int:
    from monitor.errors import MeaningError
    from monitor.meaning import locate

    try:
        locate(cfg.settings.meaning.model, cfg.settings.meaning.sha256, cfg.root)
    except MeaningError as exc:
        print(f"{cfg.root / 'monitor.yaml'}: {exc}")
        return 2
    print(f"ok: {cfg.root}: {len(cfg.feeds)} feeds, {len(cfg.watchlists)} watchlists")
    slack = cfg.settings.slack
    if slack.interactive:
        ways = [
            way
            for way, on in (
                ("Socket Mode (SLACK_APP_TOKEN)", slack.app_token),
                (
                    "/slack/events on `monitor run --http` (SLACK_SIGNING_SECRET)",
                    slack.signing_secret,
                ),
            )
            if on
        ]
        print(f"slack app: {' and '.join(ways)}; workspace {slack.team_id or 'of the bot token'}")
    return 0


def _poll(cfg: Config, args: argparse.Namespace) -> int:
    from monitor import cycle
    from monitor.runtime.passes import PassPool
    from monitor.service import build

    service = build(cfg, pool=PassPool(cfg.settings.poll_processes, cfg))
    heap.started()
    try:
        done = cycle.once(service)
    finally:
        service.close()
    outcomes, report = done.outcomes, done.report
    failed = [o for o in outcomes if not o.ok]
    log.info(
        "poll done",
        extra={
            "feeds": len(outcomes),
            "failed": len(failed),
            "new_items": sum(o.new_items for o in outcomes),
            "queued": sum(o.queued for o in outcomes),
            "sent": report.sent,
            "retry_later": report.failed,
            "dead": report.dead,
        },
    )
    _held_back(outcomes)
    return 0


def _held_back(outcomes: Sequence[FeedOutcome]) -> None:
    """After a first poll that alerted on little, says why: items older than the backfill
    were kept without alerting, how many of those matched, and the command listing them."""
    held = sum(o.held_back for o in outcomes)
    if not held:
        return
    matching = Counter(w for o in outcomes for w in o.held_back_matching)
    fields: dict[str, Any] = {"held_back": held, "would_have_matched": matching.total()}
    if matching:  # backtest reads what was stored since: these were stored just now
        fields["list_them"] = "; ".join(
            f"monitor backtest --watchlist {w} --since 1d" for w in sorted(matching)
        )
    log.info("items older than the backfill were stored without alerting", extra=fields)


def _run(cfg: Config, args: argparse.Namespace) -> int:
    from monitor import runtime
    from monitor.db import conninfo
    from monitor.runtime.passes import PassPool
    from monitor.service import build, slack_app

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    reload = threading.Event()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        log.info("signal received", extra={"signal": "SIGHUP", "then": "reload the config"})
        reload.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    mode = args.workers_mode or cfg.settings.workers_mode
    if mode == "queue":
        conninfo(cfg.settings.effective_database_url())  # PostgreSQL, or say so now
    runner = runtime.pick(mode)
    service = build(cfg, pool=PassPool(cfg.settings.poll_processes, cfg))
    heap.started()
    try:
        _announce(service)
        service.slack = slack_app(service, _describe)
        if service.slack is not None:
            service.slack.start()
        idle = runner(service, runtime.Control(stop, reload, http=args.http))
    except BaseException:
        service.close()
        raise
    if not idle:
        # A fetch is still waiting on the network. Every write is a committed or
        # rolled-back transaction, so leaving now cannot half-write anything.
        log.warning("jobs still running after the grace period; exiting anyway")
        logging.shutdown()
        os._exit(0)
    service.close()
    log.info("stopped")
    return 0


def _announce(service: Service) -> None:
    """Says when fetching starts: after a restart no feed may be due for minutes, and a
    silent service looks hung."""
    from monitor.models import utcnow

    now = utcnow()
    when = service.deps.feeds.schedule(service.feeds, now).describe(now)
    if when["feeds_due_now"]:
        log.info("fetching the feeds that are due now", extra=when)
    elif when["next_fetch_at"]:
        log.info("no feed is due yet: the first fetch is at next_fetch_at", extra=when)


def _matches(cfg: Config, args: argparse.Namespace) -> int:
    from monitor.archive import Archive
    from monitor.models import utcnow

    since = utcnow() - _duration("--since", args.since) if args.since else None
    with _database(cfg) as engine:
        rows = Archive(engine).matches(args.watchlist, since)
    if args.watchlist and not rows:
        _pick(cfg, args.watchlist)  # a name not configured (nor stored): say which are
    return _listing(
        rows,
        args.json,
        f"{'PUBLISHED (UTC)':<16}  {'WATCHLIST':<15} {'STATE':<9} {'FEED':<15} TITLE",
        lambda row: (
            f"{_when(row['published_at']):<16}  {_cut(row['watchlist'], 15):<15} "
            f"{row['held'] or row['delivery'] or '-':<9} {_cut(row['feed'], 15):<15} "
            f"{_cut(row['title'], 40)}\n"
            f"{'':<18}{', '.join(row['matched'])}  <{row['url'] or 'no link'}>"
            + (f"\n{'':<18}joined: {row['joined']}" if row.get("joined") else "")
            + ("\n" + _wrapped(f"{row['held']}: {row['held_why']}", 18) if row["held"] else "")
        ),
        "no matches yet" + (" in that time" if since else ""),
    )


def _alerts(cfg: Config, args: argparse.Namespace) -> int:
    from monitor.models import DeliveryStatus
    from monitor.outbox import Deliveries

    with _database(cfg) as engine:
        deliveries = Deliveries(engine)
        if args.retry:
            count = deliveries.retry_dead(args.watchlist)
            if args.watchlist and not count:
                _pick(cfg, args.watchlist)
            print(f"{count} dead deliveries queued again")
            return 0
        statuses = [DeliveryStatus.DEAD] if args.failed else None
        if args.pending:
            statuses = [DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.HELD]
        rows = deliveries.listing(statuses, args.watchlist)
    if args.watchlist and not rows:
        _pick(cfg, args.watchlist)
    return _listing(
        rows,
        args.json,
        f"{'ID':>6}  {'CREATED (UTC)':<16}  {'KIND':<8} {'STATUS':<9} {'TRIES':>5}  "
        f"{'WATCHLIST':<15} CHANNEL",
        lambda row: "\n".join(
            [
                f"{row['id']:>6}  {_when(row['created_at']):<16}  {row['kind']:<8} "
                f"{row['status']:<9} {row['attempts']:>5}  {_cut(row['watchlist'], 15):<15} "
                f"{row['channel']}",
                _wrapped((row["title"] or "-") + (f"  <{row['url']}>" if row["url"] else ""), 8),
            ]
            + ([_wrapped(f"error: {row['last_error']}", 8)] if row["last_error"] else [])
        ),
        "no dead deliveries"
        if args.failed
        else "no deliveries waiting"
        if args.pending
        else "no deliveries yet",
    )


def _listing(
    rows: list[dict[str, Any]],
    as_json: bool,
    header: str,
    line: Callable[[dict[str, Any]], str],
    empty: str,
) -> int:
    """Rows as JSON objects, one a line, or under a header as the command's own text
    lines; with no rows, a line that says so (on stderr, so JSON readers get none)."""
    if not rows:
        print(empty, file=sys.stderr if as_json else sys.stdout)
        return 0
    if not as_json:
        print(header)
    for row in rows:
        print(json.dumps(row, ensure_ascii=False) if as_json else line(row))
    return 0


def _cut(text: str, width: int) -> str:
    """The text, or as much as fits with an ellipsis saying there was more."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(iso: str | None) -> str:
    """A stored ISO time (2024-05-01T09:30:00Z) as a person reads it: 2024-05-01 09:30."""
    return iso[:16].replace("T", " ") if iso else "-"


def _wrapped(text: str, indent: int, width: int = 100) -> str:
    """Text shown whole, wrapped to the listing's width under the row it belongs to."""
    import textwrap

    pad = " " * indent
    return textwrap.fill(
        text, width, initial_indent=pad, subsequent_indent=pad + "  ", break_on_hyphens=False
    )


def _feeds(cfg: Config, args: argparse.Namespace) -> int:
    from monitor.feeds import FeedStore
    from monitor.health import assess
    from monitor.models import PageOutcome, as_utc, iso, utcnow

    now = utcnow()
    with _database(cfg) as engine:
        feed_store = FeedStore(engine)
        feed_store.sync(cfg.feeds, cfg.interval, cfg.backfill)
        rows = feed_store.rows()
        pages = feed_store.page_counts(now - timedelta(days=1))
    configured = {f.name for f in cfg.feeds}
    held = {r.name: (r.held_back, r.held_back_matching, r.created_at) for r in rows}
    feeds = [(assess(r, now, cfg.settings), pages.get(r.id or 0, {})) for r in rows]
    feeds = [(f, p) for f, p in feeds if f.name in configured]

    def when(value: datetime | None) -> str:
        return value.strftime("%m-%d %H:%M") if value else "never"

    if args.json:
        for f, outcomes in feeds:
            print(
                json.dumps(
                    {
                        "name": f.name,
                        "state": f.state,
                        "url": f.url,
                        "last_fetch_at": iso(f.last_fetch_at),
                        "last_success_at": iso(f.last_success_at),
                        "last_status": f.last_status,
                        "errors_in_row": f.errors_in_row,
                        "items_seen": f.items_seen,
                        "items_per_day": round(f.items_per_day, 1),
                        "next_due_at": iso(f.next_due_at),
                        "last_error": f.last_error,
                        "pages_fetched_1d": _fetched(outcomes),
                        "pages_extracted_1d": outcomes.get(PageOutcome.EXTRACTED, 0),
                        "pages_1d": dict(sorted(outcomes.items())),
                        "held_back": held[f.name][0],
                        "held_back_matching": held[f.name][1],
                    }
                )
            )
        return 0
    if not feeds:
        print("no feeds configured: add them to feeds.yaml")
        return 0
    print(
        f"{'FEED':<18} {'STATE':<10} {'FETCHED UTC':<11}  {'HTTP':>4} {'ITEMS':>6} "
        f"{'/DAY':>5} {'ERRORS':>6}  {'NEXT UTC':<11}  {'PAGES 1D':>9}"
    )
    for f, outcomes in feeds:
        extracted = outcomes.get(PageOutcome.EXTRACTED, 0)
        read = f"{extracted}/{_fetched(outcomes)}" if outcomes else "-"
        print(
            f"{_cut(f.name, 18):<18} {f.state:<10} {when(f.last_fetch_at):<11}  "
            f"{f.last_status or '-':>4} {f.items_seen:>6} {f.items_per_day:>5.1f} "
            f"{f.errors_in_row:>6}  {when(f.next_due_at):<11}  {read:>9}"
        )
        if f.last_error:  # whole, below its row: the reason is what there is to fix
            print(_wrapped(f"error: {f.last_error}", 4))
        count, matching, since = held[f.name]
        if count:
            days = 1 + (now - as_utc(since)).days
            names = [w.name for w in cfg.watchlists]
            name = names[0] if len(names) == 1 else "NAME"
            print(
                _wrapped(
                    f"first fetch: {count} items older than the backfill kept without "
                    f"alerting; {matching} of them matched a watchlist "
                    f"(`monitor backtest --watchlist {name} --since {days}d` lists them)",
                    4,
                )
            )
    return 0


def _fetched(outcomes: dict[str, int]) -> int:
    """Pages fetched: every outcome but those that asked no publisher (pages.Pages)."""
    from monitor.models import PageOutcome

    unasked = (PageOutcome.REUSED, PageOutcome.SKIPPED)
    return sum(n for kind, n in outcomes.items() if kind not in unasked)


def _load_items(source: str, cfg: Config) -> list[Item]:
    """A feed's items, an article page's text (read as full_text reads one), or a plain
    text file as one article."""
    from monitor import extract, fetch, parse  # feedparser, for this command only
    from monitor.models import Fetched, Item
    from monitor.redact import redact

    url = source.startswith(("http://", "https://"))
    if url:
        http = cfg.settings.http
        with fetch.http_client(cfg.settings) as client:
            fetched = fetch.fetch(
                client,
                source,
                max_bytes=http.max_body_bytes,
                deadline=(http.connect_timeout + http.read_timeout).total_seconds(),
            )
    else:
        path = Path(source)
        try:
            fetched = Fetched(str(path), 200, path.read_bytes(), {})
        except OSError as exc:
            raise MonitorError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        items = parse.parse(fetched).items
    except UnsafeDocument:
        raise  # a hostile document is not an article either
    except ParseError:
        if url and not _is_page(fetched):
            raise
        items = []
    if items:
        return items
    if _is_page(fetched):
        page = extract.page(fetched)
        if page.text is None:
            raise MonitorError(f"{redact(source)}: an HTML page, but {page.error}")
        content_type = fetched.headers.get("content-type")
        return [
            Item(
                title=extract.title(fetched.body, extract.charset_of(content_type)) or source,
                link=fetched.url if url else None,
                guid=None,
                summary="",
                content="",
                published=None,
                article=page.text,
            )
        ]
    return [
        Item(
            title=Path(source).name,
            link=None,
            guid=None,
            summary="",
            content=parse.tidy(fetched.body.decode("utf-8", errors="replace")),
            published=None,
        )
    ]


def _is_page(fetched: Fetched) -> bool:
    from monitor import extract

    return extract.is_html(fetched.headers.get("content-type"), fetched.body)


def _pick(cfg: Config, name: str | None) -> list[Watchlist]:
    picked = [w for w in cfg.watchlists if not name or w.name == name]
    if not picked:
        known = ", ".join(w.name for w in cfg.watchlists)
        raise UsageError(f"no watchlist named {name!r} (known: {known})")
    return picked


def _explain(cfg: Config, args: argparse.Namespace) -> int:
    from monitor.service import matcher_for, meaning_for, teach

    matcher = matcher_for(_pick(cfg, args.watchlist), meaning_for(cfg))
    try:
        with _database(cfg) as engine:
            teach(matcher, engine)  # what the desk's feedback would hold back
    except MonitorError as exc:
        log.warning("explaining without the desk's feedback", extra={"error": str(exc)})
    for item in _load_items(args.source, cfg):
        print(f"== {item.title}" + (f"  <{item.link}>" if item.link else ""))
        if item.article:
            print(f"  (the page's article text: {len(item.article):,} characters)")
        for verdict in matcher.explain(item):
            print(_describe(verdict))
    return 0


def _describe(verdict: Verdict) -> str:
    """Each hit with its rule and what decided it (the variant, the title, the prior and
    the votes), then the finds that did not count and why."""
    text = verdict.text
    wl = verdict.watchlist
    head = f"  {wl.name}: " + (
        f"MATCH ({verdict.strength}) -> {wl.channel}" if verdict.matched else "no match"
    )
    if verdict.held is not None:
        head += f", but {verdict.held.upper()}: not posted, the desk's feedback decided it"
    lines = [head]
    for hit in verdict.hits:
        before = " ".join(text[max(0, hit.start - 40) : hit.start].split())
        after = " ".join(text[hit.end : hit.end + 40].split())
        lines.append(
            f"    [{hit.kind} {hit.term!r} by {hit.rule}] {hit.field} @{hit.start}: "
            f"…{before} »{hit.text}« {after}…"
        )
        if hit in verdict.reasons:
            lines.append(f"        because: {verdict.reasons[hit]}")
    lines += [f"    evidence: {note}" for note in verdict.notes]
    return "\n".join(lines)


def _backtest(cfg: Config, args: argparse.Namespace) -> int:
    from monitor.archive import Archive
    from monitor.models import Entry, utcnow
    from monitor.service import matcher_for, meaning_for, teach

    [watchlist] = _pick(cfg, args.watchlist)
    since = utcnow() - _duration("--since", args.since)
    matcher = matcher_for([watchlist], meaning_for(cfg))
    per_day: Counter[str] = Counter()
    stories: set[str] = set()
    with _database(cfg) as engine:
        teach(matcher, engine)
        archive = Archive(engine)
        total = archive.count_articles(since)
        progress = _Progress(total, "backtest")
        for batch in archive.iter_articles(since):
            by_feed: dict[str, list[Entry]] = defaultdict(list)
            for feed, entry in batch:
                by_feed[feed].append(entry)
            for feed, entries in by_feed.items():
                for entry, [result] in matcher.match(entries, feed=feed):
                    if entry.story_key in stories or result.held is not None:
                        continue
                    stories.add(entry.story_key)
                    when = entry.item.published or utcnow()
                    day = when.strftime("%Y-%m-%d")
                    per_day[day] += 1
                    print(
                        f"{day}  {result.strength:<7}  {feed[:18]:<18}  "
                        f"{entry.item.title[:70]}  [{', '.join(result.matched)}]"
                    )
            progress.advance(len(batch))
        progress.done()
    print(
        f"\n{len(stories)} stories would have alerted {watchlist.name} in {watchlist.channel}, "
        f"out of {total} articles since {since:%Y-%m-%d}:"
    )
    peak = max(per_day.values(), default=0)
    for day in sorted(per_day):
        bar = "█" * max(1, round(40 * per_day[day] / peak))
        print(f"  {day}  {per_day[day]:>5}  {bar}")
    return 0


def _feedback(cfg: Config, args: argparse.Namespace) -> int:
    from monitor import feedback
    from monitor.models import utcnow

    with _database(cfg) as engine:
        if args.action == "undo":
            try:
                row = feedback.undo(engine, args.id, f"cli:{getpass.getuser()}", utcnow())
            except FeedbackError as exc:
                raise UsageError(str(exc)) from exc
            print(
                f"feedback {row['id']} ({row['verdict']} on {row['title']!r}) undone at "
                f"{_when(row['undone_at'])} UTC by {row['undone_by']}"
            )
            return 0
        rows = feedback.listing(engine, args.watchlist)
    if args.watchlist and not rows:
        _pick(cfg, args.watchlist)
    return _listing(
        rows,
        args.json,
        f"{'ID':>6}  {'WHEN (UTC)':<16}  {'VERDICT':<12} {'WATCHLIST':<15} {'BY':<20} STATE",
        lambda row: "\n".join(
            [
                f"{row['id']:>6}  {_when(row['created_at']):<16}  {row['verdict']:<12} "
                f"{_cut(row['watchlist'], 15):<15} "
                f"{_cut(row['user_name'] or row['user_id'], 20):<20} "
                + (f"undone {_when(row['undone_at'])}" if row["undone_at"] else "in force"),
                _wrapped(f"{', '.join(row['terms'])}: {row['title']} (match {row['match_id']})", 8),
            ]
        ),
        "no feedback yet",
    )


class _Progress:
    """A progress bar on stderr for long runs: redrawn on a terminal, every quarter elsewhere."""

    def __init__(self, total: int, label: str, minimum: int = 500) -> None:
        self.total, self.label, self.done_count = total, label, 0
        self.enabled = total >= minimum
        self.tty = sys.stderr.isatty()
        self._quarter = 0

    def advance(self, n: int) -> None:
        self.done_count += n
        if not self.enabled:
            return
        share = self.done_count / self.total
        if self.tty:
            filled = int(30 * share)
            sys.stderr.write(
                f"\r{self.label} [{'#' * filled}{'-' * (30 - filled)}] "
                f"{self.done_count}/{self.total}"
            )
            sys.stderr.flush()
        elif int(share * 4) > self._quarter:
            self._quarter = int(share * 4)
            sys.stderr.write(f"{self.label}: {self.done_count}/{self.total} articles\n")

    def done(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


_COMMANDS = {
    "run": _run,
    "poll": _poll,
    "check": _check,
    "matches": _matches,
    "feeds": _feeds,
    "alerts": _alerts,
    "explain": _explain,
    "backtest": _backtest,
    "feedback": _feedback,
    "db": _db,
}
_WITHOUT_CONFIG = {"schema": _schema, "init": _init}

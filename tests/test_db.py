"""Schema migrations and retention, on SQLite and (where it runs) PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import Session, SQLModel, select

from monitor.archive import Archive
from monitor.cli import main
from monitor.db import head, make_engine, migrate, revision_of
from monitor.errors import StoreError
from monitor.events import reader
from monitor.feeds import FeedStore
from monitor.match.matcher import default_meaning
from monitor.models import RenderRow, RenderStatus, Sent, utcnow
from monitor.outbox import Outbox
from monitor.store import Store
from tests.conftest import write_config
from tests.servers import FakeSlack, FeedServer, Route, rss
from tests.test_store import entry, feeds, save

FIRST_RELEASE = "0001"


def test_the_models_and_the_migrations_agree(any_db_url: str) -> None:
    engine = make_engine(any_db_url)
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert diff == [], "models changed without a migration: monitor.db.new_revision"


def test_upgrade_keeps_a_database_of_the_first_schema(any_db_url: str) -> None:
    engine = make_engine(any_db_url)
    migrate(engine, FIRST_RELEASE)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO feed (name, url, errors_in_row, items_seen, next_due_at, created_at) "
                "VALUES ('old', 'https://old.example/rss', 0, 7, '2023-07-24 00:00:00', "
                "'2023-07-24 00:00:00')"
            )
        )
    migrate(engine)
    assert revision_of(engine) == _head()
    [row] = FeedStore(engine).rows()
    assert (row.name, row.items_seen) == ("old", 7)
    engine.dispose()


def _head() -> str:
    from alembic.script import ScriptDirectory

    from monitor.db import _alembic

    engine = make_engine("sqlite://")
    with engine.connect() as conn:
        head = ScriptDirectory.from_config(_alembic(conn)).get_current_head()
    return str(head)


def test_the_head_read_from_the_files_is_alembics() -> None:
    assert head() == _head()


def test_a_failed_migration_leaves_no_half_made_schema(tmp_path: Path) -> None:
    """On SQLite too the migration is one transaction: what a crash (or an error) stops
    half-way is rolled back whole, so the next start migrates from scratch."""
    engine = make_engine(f"sqlite:///{tmp_path / 'half.db'}")
    with engine.begin() as conn:  # in the way of the first schema's last table
        conn.execute(text("CREATE TABLE delivery (id INTEGER PRIMARY KEY)"))
    with pytest.raises(StoreError, match="cannot migrate database"):
        migrate(engine)
    with engine.connect() as conn:
        tables = {
            row[0]
            for row in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
        }
    assert tables == {"delivery"}, "tables made before the error were kept"
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE delivery"))
    migrate(engine)
    assert revision_of(engine) == _head()
    engine.dispose()


# Two `monitor poll` started at the same moment: each imports, then waits for the other.
AT_ONCE = """
import os, sys, time
from monitor.cli import main
go = sys.argv[1]
open(f"{go}.{os.getpid()}", "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
sys.exit(main(["--config", sys.argv[2], "poll"]))
"""


@pytest.mark.slow  # two polls as processes
def test_two_polls_started_at_once_on_a_new_database(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.routes["/f.xml"] = Route(
        rss([{"title": "Qin Gang returns", "guid": "1", "link": "https://n.example/1"}])
    )
    feeds = [{"name": "f", "url": feed_server.url("/f.xml")}]
    for f in range(30):  # more to sync: both processes add the feeds of a new database
        feed_server.routes[f"/quiet{f}.xml"] = Route(rss([]))
        feeds.append({"name": f"quiet{f}", "url": feed_server.url(f"/quiet{f}.xml")})
    cfg = write_config(tmp_path / "c", feeds)
    for attempt in range(4):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
        env["MONITOR_DATABASE_URL"] = f"sqlite:///{tmp_path / f'new{attempt}.db'}"
        go = tmp_path / f"go{attempt}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", AT_ONCE, str(go), str(cfg)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        while len(list(tmp_path.glob(f"go{attempt}.*"))) < 2:
            assert all(p.poll() is None for p in procs), procs[0].communicate()
            time.sleep(0.01)
        go.touch()
        results = [p.communicate(timeout=60) for p in procs]
        for proc, (_, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, err
            assert "cannot migrate" not in err
        # the schema is current, and the one alert went out once between them
        assert [line for out, _ in results for line in out.splitlines()] == [
            "[us-china -> #china-desk] Qin Gang returns https://n.example/1 "
            "(matched: Qin Gang; about; feed: f)"
        ]


def test_prune_keeps_what_dedupe_and_delivery_need(any_db_url: str) -> None:
    engine = make_engine(any_db_url)
    migrate(engine)
    store, archive, outbox = Store(engine, reader(default_meaning)), Archive(engine), Outbox(engine)
    [feed] = feeds(store, "world")
    for i in range(4):
        save(store, feed, entry(str(i), f"https://n.example/{i}", title=f"Qin Gang {i}"))
    due = outbox.due(utcnow())
    for out in due[:2]:  # two sent, two still pending
        outbox.claim(out.delivery_id)
        outbox.sent(out.delivery_id, out.channel, Sent("1.1", "C1"))
    with engine.begin() as conn:
        conn.execute(text("UPDATE match SET created_at = '2020-01-01 00:00:00'"))
        conn.execute(text("UPDATE article SET seen_at = '2020-01-01 00:00:00'"))
    cutoff = utcnow() - timedelta(days=30)
    assert archive.prune(cutoff, dry_run=True) == {"matches": 2, "articles": 2, "renders": 0}
    assert archive.prune(cutoff) == {"matches": 2, "articles": 2, "renders": 0}
    assert archive.prune(cutoff) == {"matches": 0, "articles": 0, "renders": 0}
    # pending deliveries, their matches and articles are untouched
    rest = outbox.due(utcnow())
    assert [o.delivery_id for o in rest] == [o.delivery_id for o in due[2:]]
    for out in rest:
        outbox.claim(out.delivery_id)
        outbox.sent(out.delivery_id, out.channel, Sent("1.2", "C1"))
    with engine.begin() as conn:
        conn.execute(text("UPDATE match SET created_at = '2020-01-01 00:00:00'"))
    assert archive.prune(cutoff) == {"matches": 2, "articles": 1, "renders": 0}
    # the feed's newest article stays, so the item still in the feed is not taken for new
    newest = entry("3", "https://n.example/3", title="Qin Gang 3")
    assert store.seen_keys(feed, [newest.key]) == {newest.key}
    engine.dispose()


def test_prune_deletes_settled_message_updates_and_keeps_those_owed(any_db_url: str) -> None:
    """A click's render row is kept while its message is owed an update, whatever its
    age; once shown (or given up) it is retention's like a match."""
    engine = make_engine(any_db_url)
    migrate(engine)
    old, recent = utcnow() - timedelta(days=60), utcnow() - timedelta(days=1)
    rows = {
        "old done": (RenderStatus.DONE, old),
        "old dead": (RenderStatus.DEAD, old),
        "old owed": (RenderStatus.OWED, old),
        "recent done": (RenderStatus.DONE, recent),
    }
    with Session(engine) as s:
        for ts, (status, at) in rows.items():
            s.add(RenderRow(channel_id="C1", ts=ts, match_id=1, status=status, owed_at=at))
        s.commit()
    cutoff = utcnow() - timedelta(days=30)
    archive = Archive(engine)
    assert archive.prune(cutoff, dry_run=True)["renders"] == 2
    assert archive.prune(cutoff)["renders"] == 2
    with Session(engine) as s:
        left = {r.ts for r in s.exec(select(RenderRow))}
    assert left == {"old owed", "recent done"}
    engine.dispose()


def test_db_commands(
    feed_server: FeedServer,
    slack_env: FakeSlack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed_server.routes["/f.xml"] = Route(
        rss([{"title": "Qin Gang", "guid": "1", "link": "https://n.example/1"}])
    )
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    assert main(["--config", str(cfg), "db", "upgrade"]) == 0
    assert f"database at revision {_head()}" in capsys.readouterr().out
    assert main(["--config", str(cfg), "db", "prune", "--dry-run"]) == 2
    assert "no retention configured" in capsys.readouterr().err
    main(["--config", str(cfg), "poll"])
    capsys.readouterr()
    assert main(["--config", str(cfg), "db", "prune", "--older-than", "1d", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith(
        "would delete 0 matches, 0 articles and 0 settled message updates older than"
    )


def test_an_item_older_than_retention_never_alerts_again(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    old = {
        "title": "Qin Gang profile",
        "guid": "old",
        "link": "https://n.example/old",
        "published": datetime(2020, 1, 1, tzinfo=UTC),
    }
    fresh = {"title": "Qin Gang today", "guid": "new", "link": "https://n.example/new"}
    feed_server.routes["/f.xml"] = Route(rss([fresh]))
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml")}],
        settings={"retention": "30d"},
    )
    main(["--config", str(cfg), "poll"])
    feed_server.routes["/f.xml"] = Route(rss([fresh, old]))  # e.g. its record was pruned
    main(["--config", str(cfg), "poll"])
    assert [m["text"].split(" https")[0] for m in slack_env.messages] == ["Qin Gang today"]


def test_a_lock_file_that_cannot_be_opened_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender lock lives beside the SQLite file; where it cannot be made (here a
    directory stands in its place), `monitor poll` says so in one line, exit 1."""
    db = tmp_path / "m.db"
    (tmp_path / "m.db.sender.lock").mkdir()
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{db}")
    cfg = write_config(tmp_path / "c", [])
    assert main(["--config", str(cfg), "poll"]) == 1
    err = capsys.readouterr().err
    assert "cannot open the lock file" in err and "m.db.sender.lock" in err, err
    assert "Traceback" not in err

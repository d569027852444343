"""The first ten minutes (issue 22): what a new user meets at the command line, run as a
user runs it (the `monitor` process, or its entry function) on real SQLite files and the
test servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import main
from tests.conftest import write_config
from tests.servers import FakeSlack, FeedServer, Route, rss

ROOT = Path(__file__).resolve().parents[1]


def monitor(*args: str, db: Path | None = None, **kw: object) -> subprocess.Popen[str]:
    """`python -m monitor ARGS` as its own process, with our package first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MONITOR_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if db is not None:
        env["MONITOR_DATABASE_URL"] = f"sqlite:///{db}"
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", *args],
        env=env,
        text=True,
        stderr=subprocess.PIPE,
        **kw,  # type: ignore[call-overload]
    )


def qin_items(n: int) -> list[dict[str, object]]:
    return [
        {
            "title": f"Qin Gang story {i}",
            "link": f"https://n.example/{i}",
            "guid": f"g{i}",
            "description": f"Foreign minister Qin Gang said something on day {i}.",
        }
        for i in range(n)
    ]


# 7: `--help` and `--version` answer as fast as Python starts.

HEAVY = ("pydantic", "sqlalchemy", "yaml", "httpx", "spacy", "sqlmodel", "monitor.config")
HELP = f"""
import sys
from monitor.cli import main
for argv in (["--help"], ["--version"], ["matches", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
print("LOADED=" + ",".join(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_help_and_version_import_nothing_heavy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HELP], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "usage: monitor" in done.stdout and "monitor 0.1.0" in done.stdout
    assert done.stdout.rsplit("LOADED=", 1)[1].strip() == ""


def test_version_as_a_command() -> None:
    proc = monitor("--version", stdout=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "monitor 0.1.0", err


# 4: one-line errors for bad durations; a closed pipe ends the command quietly.


@pytest.mark.parametrize(
    "argv",
    [
        ["matches", "--since", "yesterday"],
        ["db", "prune", "--older-than", "soon"],
        ["backtest", "--watchlist", "us-china", "--since", "last week"],
    ],
)
def test_a_bad_duration_is_a_one_line_error(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{tmp_path / 'm.db'}")
    cfg = write_config(tmp_path / "c", [])
    assert main(["--config", str(cfg), *argv]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert f"{argv[-2]} {argv[-1]!r}: not a duration; write it like 30m, 12h, 2d or 1w" in line


def _closed_early(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Closes the reading end at once, as `| head -1` does before the output comes."""
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_explain_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_bytes(rss(qin_items(300)))
    cfg = write_config(tmp_path / "c", [])
    code, err = _closed_early(
        monitor("--config", str(cfg), "explain", str(feed), stdout=subprocess.PIPE)
    )
    assert (code, err) == (0, "")


def test_matches_into_a_closed_pipe_ends_quietly(
    tmp_path: Path, feed_server: FeedServer, slack_env: FakeSlack
) -> None:
    feed_server.routes["/f.xml"] = Route(rss(qin_items(300)))
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    assert main(["--config", str(cfg), "poll"]) == 0
    db = Path(os.environ["MONITOR_DATABASE_URL"].removeprefix("sqlite:///"))
    code, err = _closed_early(
        monitor("--config", str(cfg), "matches", db=db, stdout=subprocess.PIPE)
    )
    assert (code, err) == (0, "")


# 8: words for people who are not developers.


def test_yaml_syntax_errors_say_what_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path / "c", [])
    (cfg / "feeds.yaml").write_text(
        "feeds:\n  - name: a\n    url: https://a.example/\n   interval: 5m\n"
    )
    (cfg / "watchlists" / "tabs.yaml").write_text("channel: '#x'\nentities:\n\t- name: Qin Gang\n")
    assert main(["--config", str(cfg), "check"]) == 2
    out = capsys.readouterr().out
    assert f"{cfg / 'feeds.yaml'}:4:4: YAML syntax: this line does not line up" in out
    assert (
        f"{cfg / 'watchlists' / 'tabs.yaml'}:3:1: YAML syntax: a tab: YAML indents with spaces only"
        in out
    )
    assert "<block" not in out


def test_an_unknown_key_says_which_was_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path / "c", [])
    (cfg / "watchlists" / "desk.yaml").write_text(
        "channel: '#desk'\nmin_strenght: about\nentities:\n"
        "  - name: Lloyd Austin\n    title: [defense secretary]\n    colour: red\n"
    )
    assert main(["--config", str(cfg), "check"]) == 2
    out = capsys.readouterr().out.splitlines()
    desk = cfg / "watchlists" / "desk.yaml"
    assert f"{desk}:2:1: unknown key 'min_strenght'; did you mean 'min_strength'?" in out
    assert f"{desk}:5:5: unknown key 'title'; did you mean 'titles'?" in out
    assert any(
        line.startswith(f"{desk}:6:5: unknown key 'colour' (keys here: name, aliases,")
        for line in out
    )


@pytest.mark.parametrize("command", ["matches", "alerts"])
def test_an_unknown_watchlist_is_named_with_those_that_exist(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{tmp_path / 'm.db'}")
    cfg = write_config(tmp_path / "c", [])
    assert main(["--config", str(cfg), command, "--watchlist", "nosuch"]) == 2
    assert (
        capsys.readouterr().err.splitlines()[-1] == "no watchlist named 'nosuch' (known: us-china)"
    )


# 6: `check` catches what would fail later; the database names its real trouble.


def test_check_catches_what_would_fail_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(
        tmp_path / "c",
        [{"name": "npr", "url": "https://feeds.npr.org:99999/1004/rss.xml"}],
        settings={"database_url": "sqlite:///"},
    )
    assert main(["--config", str(cfg), "check"]) == 2
    out = capsys.readouterr().out.replace(f"{cfg}/", "")
    assert (
        "feeds.yaml:3:8: feeds.url: bad URL 'https://feeds.npr.org:99999/1004/rss.xml': "
        "Port out of range 0-65535" in out.splitlines()
    )
    line = next(line for line in out.splitlines() if "database_url" in line)
    assert line.startswith("monitor.yaml:") and "'sqlite:///' names no file" in line


def test_check_warns_of_an_empty_feeds_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path / "c", [])
    (cfg / "feeds.yaml").write_text("# nothing yet\n")
    assert main(["--config", str(cfg), "check"]) == 0
    out = capsys.readouterr().out
    assert f"warning: {cfg / 'feeds.yaml'}:1:1: no feeds: nothing will be fetched" in out


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (lambda p: p.mkdir(), "unable to open database file"),
        (
            lambda p: p.write_bytes(b"not a database, a note to self\n" * 100),
            "file is not a database",
        ),
    ],
    ids=["a-directory", "not-sqlite"],
)
def test_a_database_that_cannot_be_opened_says_why(
    make: object,
    cause: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "monitor.db"
    make(db)  # type: ignore[operator]
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{db}")
    cfg = write_config(tmp_path / "c", [])
    assert main(["--config", str(cfg), "poll"]) == 1
    err = capsys.readouterr().err
    assert f"cannot open database sqlite:///{db}: {cause}" in err
    assert "cannot migrate" not in err and "[SQL" not in err


# 2: relative paths in config files read from the config directory.


def test_two_configs_keep_two_databases_and_an_old_one_is_named(
    tmp_path: Path,
    feed_server: FeedServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("MONITOR_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    feed_server.routes["/a.xml"] = Route(rss(qin_items(2)))
    feed_server.routes["/b.xml"] = Route(rss(qin_items(3)))
    a = write_config(tmp_path / "a", [{"name": "f", "url": feed_server.url("/a.xml")}])
    b = write_config(tmp_path / "b", [{"name": "f", "url": feed_server.url("/b.xml")}])
    assert main(["--config", "a", "poll"]) == 0
    assert main(["--config", str(b), "poll"]) == 0
    assert (a / "data" / "monitor.db").is_file() and (b / "data" / "monitor.db").is_file()
    assert not (tmp_path / "data").exists()
    capsys.readouterr()
    assert main(["--config", "a", "feeds", "--json"]) == 0
    assert '"items_seen": 2' in capsys.readouterr().out  # not b's feed, nor b's count

    (tmp_path / "data").mkdir()  # where data_dir: data led before: the old database
    (tmp_path / "data" / "monitor.db").write_bytes((b / "data" / "monitor.db").read_bytes())
    assert main(["--config", "a", "feeds"]) == 0
    [hint] = [line for line in capsys.readouterr().err.splitlines() if "old place" in line]
    assert "old=data/monitor.db" in hint and f"now={a / 'data' / 'monitor.db'}" in hint
    monkeypatch.chdir(a)  # from the config directory itself both readings are one file
    assert main(["--config", ".", "feeds"]) == 0
    assert "old place" not in capsys.readouterr().err


def test_a_relative_sqlite_url_in_monitor_yaml_reads_from_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.config import load

    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path / "c", [], settings={"database_url": "sqlite:///state/m.db"})
    url = load(cfg, env={}).settings.effective_database_url()
    assert url == f"sqlite:///{cfg / 'state' / 'm.db'}"
    from_env = load(cfg, env={"MONITOR_DATABASE_URL": "sqlite:///here.db"})
    assert from_env.settings.effective_database_url() == "sqlite:///here.db"  # as the shell meant


# 3: after a restart, `monitor run` says when the next fetches are due.


def test_a_restarted_service_says_when_it_fetches_next(
    tmp_path: Path, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import signal
    import socket
    import time
    import urllib.request

    feed_server.routes["/f.xml"] = Route(rss(qin_items(2)))
    db = tmp_path / "m.db"
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{db}")
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    assert main(["--config", str(cfg), "poll"]) == 0  # the feed is next due in 10 minutes
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = monitor("--config", str(cfg), "run", "--http", f"127.0.0.1:{port}", db=db)
    try:
        report: dict[str, object] = {}
        deadline = time.monotonic() + 60
        while not report and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    report = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert report["feeds_due_now"] == 0 and str(report["next_fetch_in"]).startswith("9m")
    [line] = [line for line in err.splitlines() if "no feed is due yet" in line]
    assert f"next_fetch_at={report['next_fetch_at']}" in line and "next_fetch_in=9m" in line
    assert feed_server.hits["/f.xml"] == 1  # the service waited, as it said it would


# 5: listings a person can read: headers, the times people mean, title and link, 100 columns.


def test_listings_have_headers_titles_links_and_fit_100_columns(
    tmp_path: Path,
    feed_server: FeedServer,
    slack_env: FakeSlack,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from datetime import UTC, datetime, timedelta

    published = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    long_title = "Qin Gang " + "and a headline that goes on and on " * 3
    feed_server.routes["/a.xml"] = Route(
        rss([{"title": long_title, "link": "https://n.example/long", "published": published}])
    )
    broken = "/gone/" + "x" * 120 + ".xml"
    feed_server.routes[broken] = Route(b"", status=503)
    cfg = write_config(
        tmp_path / "c",
        [
            {"name": "a", "url": feed_server.url("/a.xml")},
            {"name": "b", "url": feed_server.url(broken)},
        ],
    )

    def listing(*argv: str) -> list[str]:
        capsys.readouterr()
        assert main(["--config", str(cfg), *argv]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert all(len(line) <= 100 for line in lines), "\n".join(lines)
        return lines

    assert listing("matches") == ["no matches yet"]
    assert listing("alerts") == ["no deliveries yet"]
    assert main(["--config", str(cfg), "poll"]) == 0

    header, row, detail = listing("matches")
    assert header.split() == ["PUBLISHED", "(UTC)", "WATCHLIST", "STATE", "FEED", "TITLE"]
    assert row.startswith(f"{published:%Y-%m-%d %H:%M}  us-china        sent ")  # not when stored
    assert row.endswith("…") and row.split("sent")[1].split()[1:4] == ["Qin", "Gang", "and"]
    assert detail.split() == ["Qin", "Gang", "<https://n.example/long>"]

    header, row, *story = listing("alerts")
    assert header.split()[:4] == ["ID", "CREATED", "(UTC)", "KIND"]
    assert (
        " ".join(" ".join(story).split())
        == f"{' '.join(long_title.split())} <https://n.example/long>"
    )

    header, a, b, *error = listing("feeds")
    assert header.split()[:3] == ["FEED", "STATE", "FETCHED"] and b.split()[1] == "failing"
    reason = f"error: {feed_server.url(broken)}: HTTP 503 Service Unavailable"
    assert "".join("".join(error).split()) == "".join(reason.split())  # whole, wrapped below


# 1: a first poll that alerts on little says what it kept back, and where to see it.


def test_a_first_poll_says_what_the_backfill_kept_back(
    tmp_path: Path,
    feed_server: FeedServer,
    slack_env: FakeSlack,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json
    from datetime import UTC, datetime, timedelta

    old = datetime.now(UTC) - timedelta(days=3)
    items = qin_items(4) + [{"title": "Rain all week", "link": "https://n.example/rain"}]
    for i, item in enumerate(items):
        item["published"] = old if i else datetime.now(UTC)  # one fresh story, four old
    feed_server.routes["/f.xml"] = Route(rss(items))
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    assert main(["--config", str(cfg), "poll"]) == 0
    assert len(slack_env.messages) == 1
    [said] = [
        line
        for line in capsys.readouterr().err.splitlines()
        if "older than the backfill were" in line
    ]
    assert "held_back=4 would_have_matched=3" in said
    command = said.split('list_them="', 1)[1].rstrip('"')
    assert command == "monitor backtest --watchlist us-china --since 1d"

    assert main(["--config", str(cfg), "feeds", "--json"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["held_back"], row["held_back_matching"]) == (4, 3)
    assert main(["--config", str(cfg), "feeds"]) == 0
    table = " ".join(capsys.readouterr().out.split())
    assert "first fetch: 4 items older than the backfill kept without alerting; 3 of them" in table
    assert f"`{command}` lists them" in table

    assert main(["--config", str(cfg), *command.split()[1:]]) == 0  # the command named
    listed = capsys.readouterr().out
    assert all(f"Qin Gang story {i}" in listed for i in range(4)) and "Rain" not in listed

    assert main(["--config", str(cfg), "poll"]) == 0  # the next poll has nothing to say
    assert "older than the backfill" not in capsys.readouterr().err

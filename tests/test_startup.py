"""`monitor poll` as cron runs it: a whole process that starts only what the cycle needs.

A poll where every feed answers 304 builds no matcher, imports neither spaCy nor Alembic
nor slack-sdk, and starts no worker process; a poll with many changed feeds hands them
to pass workers, and every alert still goes out once, whatever is killed when. (How
fast is bench/poll.py's.)
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.servers import FakeSlack, FeedServer, Route, rss

# What a cycle with nothing new must not load: the matcher's spaCy, the migrations'
# Alembic, queue mode's procrastinate, the parsers of feeds and pages and full text's
# page reader, httpx's own command line (rich, click), and multiprocessing (loaded when
# the pass workers start).
HEAVY = (
    "spacy",
    "monitor.pages",
    "multiprocessing",
    "rich",
    "click",
    "alembic",
    "feedparser",
    "trafilatura",
    "numpy",
    "slack_sdk",
    "procrastinate",
    "multiprocessing.popen_fork",
    "multiprocessing.popen_forkserver",
    "multiprocessing.popen_spawn_posix",
)
POLL = f"""
import sys
from monitor import models
from monitor.cli import main
code = main(sys.argv[1:])
built = [t.__name__ for t in vars(models).values() if getattr(t, "__pydantic_complete__", 0) is True and getattr(t, "__table__", None) is not None]
print("VALIDATORS=" + ",".join(built), file=sys.stderr)
print("LOADED=" + ",".join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def poll(cfg: Path, db: Path) -> tuple[list[str], str, list[str]]:
    """One `monitor poll` process: its stdout lines (console alerts), its log, and the
    heavy modules it loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env["MONITOR_DATABASE_URL"] = f"sqlite:///{db}"
    done = subprocess.run(
        [sys.executable, "-c", POLL, "--config", str(cfg), "poll"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded = done.stderr.rsplit("LOADED=", 1)[1].strip()
    return done.stdout.splitlines(), done.stderr, [m for m in loaded.split(",") if m]


def serve(feed_server: FeedServer, tmp_path: Path, feeds: int, matching_every: int) -> Path:
    """`feeds` feeds of three items, with ETags; in every `matching_every`-th feed one
    item names Qin Gang. Returns their config (two pass workers)."""
    out = []
    for f in range(feeds):
        items = [
            {
                "title": f"Qin Gang visit {f}" if f % matching_every == i == 0 else f"Rain {f}-{i}",
                "link": f"https://n{f}.example/{i}",
                "guid": f"{f}-{i}",
                "description": f"Showers all week in town {f} ({i}).",
            }
            for i in range(3)
        ]
        feed_server.routes[f"/f{f}.xml"] = Route(rss(items), etag=f'"{f}"')
        out.append({"name": f"f{f}", "url": feed_server.url(f"/f{f}.xml")})
    return write_config(tmp_path / "c", out, settings={"poll_processes": 2})


# A `monitor` process as cli.run makes it, saying at its exit whether the garbage
# collector is on and how many objects it has frozen.
AS_PROCESS = """
import gc, os, sys
from monitor.cli import run
leave = os._exit
def report(code):
    print(f"COLLECTOR {gc.isenabled()} {gc.get_freeze_count()}", file=sys.stderr)
    leave(code)
os._exit = report
run()
"""


@pytest.mark.parametrize("command", ["poll", "check"])
def test_a_process_starts_up_without_the_collector_and_then_runs_it(
    feed_server: FeedServer, tmp_path: Path, command: str
) -> None:
    """Start-up (to the service built, or the config loaded) makes objects that live as
    long as the process: they are frozen, and the collector runs again after, for all
    that the command then makes."""
    cfg = serve(feed_server, tmp_path, 3, matching_every=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env["MONITOR_DATABASE_URL"] = f"sqlite:///{tmp_path / 'poll.db'}"
    done = subprocess.run(
        [sys.executable, "-c", AS_PROCESS, "--config", str(cfg), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    enabled, frozen = done.stderr.rsplit("COLLECTOR ", 1)[1].split()
    assert enabled == "True"
    assert int(frozen) > 10_000  # the modules, the config (and the service) of start-up


@pytest.mark.slow
def test_a_poll_with_nothing_new_starts_nothing_it_does_not_need(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    cfg, db = serve(feed_server, tmp_path, 30, matching_every=10), tmp_path / "poll.db"
    alerts, _, _ = poll(cfg, db)
    assert len(alerts) == 3  # f0, f10, f20: each story once
    alerts, log, loaded = poll(cfg, db)
    assert alerts == []
    assert loaded == [], f"a poll of 30 unchanged feeds loaded {loaded}"
    # rows are made by SQLAlchemy or by keyword: no table's pydantic validator is built
    assert "VALIDATORS=\n" in log
    assert "matcher built" not in log and "pass workers starting" not in log
    assert "feeds=30 failed=0 new_items=0" in log


@pytest.mark.slow
def test_a_poll_with_many_changed_feeds_hands_them_to_pass_workers(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    cfg, db = serve(feed_server, tmp_path, 150, matching_every=25), tmp_path / "poll.db"
    alerts, log, loaded = poll(cfg, db)
    assert "pass workers starting" in log
    assert "multiprocessing.popen_forkserver" in loaded
    assert sorted(a.split(" https")[0] for a in alerts) == [
        f"[us-china -> #china-desk] Qin Gang visit {f}" for f in sorted(range(0, 150, 25), key=str)
    ]
    # the workers log like the service, in the same format: the matcher built once, in
    # their fork server before they were forked, and shared by both
    assert log.count("INFO monitor.runtime.passes: matcher shared") == 2
    assert "feeds=150 failed=0 new_items=450 queued=6 sent=6" in log
    alerts, log, loaded = poll(cfg, db)
    assert alerts == [] and loaded == [] and "pass workers starting" not in log


@pytest.mark.slow  # polls as processes, killed and run again
def test_polls_killed_at_random_moments_lose_and_double_nothing(
    feed_server: FeedServer, slack: FakeSlack, tmp_path: Path
) -> None:
    """SIGKILL while migrating a new database, fetching, processing in pass workers or
    delivering: the database stays sound and every story is posted exactly once."""
    rng = random.Random(13)
    feeds = []
    for f in range(110):  # no ETags: every poll brings 110 bodies, enough for the workers
        items = [{"title": f"Qin Gang in town {f}" if f % 5 == 0 else f"Rain {f}", "guid": f"{f}"}]
        feed_server.routes[f"/f{f}.xml"] = Route(rss(items))
        feeds.append({"name": f"f{f}", "url": feed_server.url(f"/f{f}.xml")})
    settings = {"poll_processes": 2, "delivery": {"flood_threshold": 1000}}  # one by one
    cfg = write_config(tmp_path / "c", feeds, settings=settings)
    db = tmp_path / "kill.db"
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_URL": slack.api_url,
        "MONITOR_DATABASE_URL": f"sqlite:///{db}",
    }
    command = [sys.executable, "-m", "monitor", "--config", str(cfg), "poll"]
    for _ in range(6):
        proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    time.sleep(1.1)  # delivery.lease: a send left unconfirmed is looked up after it
    subprocess.run(command, env=env, stderr=subprocess.DEVNULL, check=True, timeout=120)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM article").fetchone() == (110,)
    titles = sorted(str(m["text"]).split(" http")[0] for m in slack.messages)
    assert titles == sorted(f"Qin Gang in town {f}" for f in range(0, 110, 5))


def pass_workers(root: int) -> list[int]:
    """The pass worker processes under `root`: the fork server's children."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"forkserver" in cmdline:
                parents[int(entry.name)] = int(fields[1])
    servers = {pid for pid, ppid in parents.items() if ppid == root}
    return [pid for pid, ppid in parents.items() if ppid in servers]


@pytest.mark.slow  # polls as processes, killed and run again
def test_a_pass_worker_killed_mid_poll_costs_only_its_own_feed(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feeds = []
    for f in range(150):  # no ETags: 150 bodies, enough for the workers
        items = [{"title": f"Qin Gang in town {f}" if f % 10 == 0 else f"Rain {f}", "guid": f"{f}"}]
        # the last few answer late, so the cycle (and its pass workers) outlasts the kill
        feed_server.routes[f"/f{f}.xml"] = Route(rss(items), delay=1.5 if f >= 145 else 0.02)
        feeds.append({"name": f"f{f}", "url": feed_server.url(f"/f{f}.xml")})
    cfg = write_config(tmp_path / "c", feeds, settings={"poll_processes": 2})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env["MONITOR_DATABASE_URL"] = f"sqlite:///{tmp_path / 'poll.db'}"
    command = [sys.executable, "-m", "monitor", "--config", str(cfg), "poll"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with proc:  # reaped and its pipes closed even when an assertion fails
        deadline = time.monotonic() + 60
        while (
            len(workers := pass_workers(proc.pid)) < 2 or len(feed_server.requests) < 100
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers, "no pass worker started"
        os.kill(workers[0], signal.SIGKILL)  # bodies are being handed to them
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    log = err.decode()
    failed = [line for line in log.splitlines() if "feed failed" in line]
    assert len(failed) <= 1 and all("pass worker" in line for line in failed), failed
    again = subprocess.run(command, env=env, capture_output=True, timeout=120, check=True)
    assert "feeds=150 failed=0" in again.stderr.decode()
    alerts = (out + again.stdout).decode().splitlines()
    assert sorted(a.split("] ")[1].split(" http")[0] for a in alerts) == sorted(
        f"Qin Gang in town {f}" for f in range(0, 150, 10)
    )

"""Feeds polled per second by one single-host `monitor run` and by 1, 2 and 4 queue-mode
workers (`monitor run --workers-mode queue`) on one PostgreSQL and one feed server, in one
run.

    python bench/scale.py [--feeds 1000] [--items 20] [--workers 1,2,4] [--no-single]
                          [--against TREE] [--runs 1]

Each round gets a fresh schema with the feeds synced but not due, starts the processes
and waits until they are ready (queue workers registered with the queue, the single
host's /healthz answering); then it makes every feed due at once and times until each
has been polled: cold (every item new: fetch, parse, dedupe, match, store) and then warm
(nothing changed: every feed answers 304). Besides the wall time it counts the CPU
seconds of the processes' trees and of PostgreSQL, per feed: on a shared machine those
move far less with the other load than the wall time does. `--against` runs the same
rounds with another tree's `monitor` (PYTHONPATH), alternated with this one's, `--runs`
times. The feed server runs in its own process. PostgreSQL: MONITOR_BENCH_PG_URL, or the
local one.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, create_engine, text  # noqa: E402

from bench.figures import record  # noqa: E402
from bench.poll import items, proc_tree, start_server  # noqa: E402
from monitor import config as config_mod  # noqa: E402
from monitor.db import make_engine, migrate  # noqa: E402
from monitor.feeds import FeedStore  # noqa: E402
from monitor.runtime.queue import prepare  # noqa: E402
from tests.conftest import US_CHINA, write_config  # noqa: E402
from tests.servers import rss  # noqa: E402

PG_URL = os.environ.get("MONITOR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def scalar(engine: Engine, sql: str, **params: object) -> object:
    with engine.begin() as conn:
        return conn.execute(text(sql), params).scalar()


def execute(engine: Engine, sql: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql))


def wait(engine: Engine, sql: str, want: int, timeout: float, **params: object) -> None:
    deadline = time.monotonic() + timeout
    while scalar(engine, sql, **params) != want:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {sql!r} == {want}")
        time.sleep(0.05)


def cpu_seconds(roots: set[int]) -> tuple[float, float]:
    """CPU time used so far by these processes and their descendants (with the children
    they have reaped), and by every PostgreSQL process (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    ours = sum(
        sum(int(f) for f in fields[11:15]) / tick for root in roots for _, fields in proc_tree(root)
    )
    postgres = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, rest = stat.read_text().rpartition(")")
        except OSError:
            continue
        if head.split("(", 1)[1].startswith("postgres"):
            fields = rest.split()
            postgres += (int(fields[11]) + int(fields[12])) / tick
    return ours, postgres


@dataclass
class Phase:
    seconds: float
    worker_cpu: float
    postgres_cpu: float


def polled_in(engine: Engine, feeds: int, pids: set[int]) -> Phase:
    """Makes every feed due now; times until every one has been polled."""
    started = scalar(engine, "SELECT now()")
    ours, postgres = cpu_seconds(pids)
    t0 = time.perf_counter()
    execute(engine, "UPDATE feed SET next_due_at = now()")
    wait(engine, "SELECT count(*) FROM feed WHERE last_fetch_at >= :t", feeds, 600, t=started)
    took = time.perf_counter() - t0
    ours_after, postgres_after = cpu_seconds(pids)
    return Phase(took, ours_after - ours, postgres_after - postgres)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(port: int, timeout: float) -> None:
    """Waits until the single host's /healthz answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit("timed out waiting for the single host's /healthz")


def round_with(workers: int, tree: str, cfg: Path, feeds: int, tmp: Path) -> tuple[Phase, Phase]:
    """`workers` queue workers, or (0) one single-host `monitor run`, of `tree`."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    execute(admin, f"CREATE SCHEMA {schema}")
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    path = os.pathsep.join([tree, *filter(None, [os.environ.get("PYTHONPATH")])])  # tree first
    env = {**os.environ, "MONITOR_DATABASE_URL": url, "PYTHONPATH": path}
    env.pop("SLACK_BOT_TOKEN", None)
    port = free_port()
    mode = ["--workers-mode", "queue"] if workers else ["--http", f"127.0.0.1:{port}"]
    procs: list[subprocess.Popen[bytes]] = []
    engine = make_engine(url)
    try:
        migrate(engine)
        prepare(engine)
        config = config_mod.load(cfg)
        FeedStore(engine).sync(config.feeds, config.interval, config.backfill)
        execute(engine, "UPDATE feed SET next_due_at = now() + interval '1 day'")
        for n in range(max(workers, 1)):
            with (Path(os.environ.get("BENCH_LOGS") or tmp) / f"w{workers}-{n}.log").open(
                "wb"
            ) as log:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "monitor",
                            "--config",
                            str(cfg),
                            "--log-level",
                            os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
                            "run",
                            *mode,
                        ],
                        env=env,
                        cwd=tree,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )
        if workers:
            wait(engine, "SELECT count(*) FROM procrastinate_workers", workers, 120)
            time.sleep(1.0)  # each worker's periodic deferrer is up
        else:
            healthy(port, 120)
        pids = {p.pid for p in procs}
        return polled_in(engine, feeds, pids), polled_in(engine, feeds, pids)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
        engine.dispose()
        execute(admin, f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def line(label: str, phase: Phase, feeds: int) -> str:
    return (
        f"{label}: {phase.seconds:6.2f} s = {feeds / phase.seconds:5.0f} feeds/s; CPU a feed: "
        f"processes {1000 * phase.worker_cpu / feeds:5.1f} ms, PostgreSQL "
        f"{1000 * phase.postgres_cpu / feeds:4.1f} ms; cores: "
        f"{phase.worker_cpu / phase.seconds:4.2f} + {phase.postgres_cpu / phase.seconds:4.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=1000)
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument(
        "--single", action=argparse.BooleanOptionalAction, default=True, help="a single host too"
    )
    ap.add_argument("--concurrency", type=int, default=16, help="jobs at once in each worker")
    ap.add_argument("--against", default=None, help="another tree, alternated with this one")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    counts = ([0] if args.single else []) + [int(n) for n in args.workers.split(",")]
    trees = {"this tree": str(Path(__file__).resolve().parents[1])}
    if args.against:
        trees["against"] = str(Path(args.against).resolve())
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        www = tmp / "www"
        www.mkdir()
        for f in range(args.feeds):
            (www / f"feed{f}.xml").write_bytes(rss(items(rng, f, 0, args.items)))
        server, port = start_server(www)
        cfg = write_config(
            tmp / "config",
            [
                {"name": f"feed{f}", "url": f"http://127.0.0.1:{port}/feed{f}.xml"}
                for f in range(args.feeds)
            ],
            # matches are stored but held for a daily digest: the figures are polling's, not
            # Slack pacing's
            [{**US_CHINA, "delivery": "digest", "digest": "daily 23:59"}],
            {"http": {"per_host": 16}, "queue": {"concurrency": args.concurrency}},
        )
        print(
            f"{args.feeds} feeds x {args.items} items, {os.cpu_count()} cores, one PostgreSQL, "
            f"one feed server; each worker runs {args.concurrency} jobs at once",
            flush=True,
        )
        for run in range(args.runs):
            for label, tree in trees.items():  # alternated, so both see the same drift
                results: dict[int, tuple[Phase, Phase]] = {}
                for n in counts:
                    results[n] = round_with(n, tree, cfg, args.feeds, tmp)
                    who = "single host" if not n else f"{n} worker{'s' if n > 1 else ''}"
                    for kind, phase in zip(("cold", "warm"), results[n], strict=True):
                        print(line(f"{label}, run {run + 1}, {who:11} {kind}", phase, args.feeds))
                summary(label, results, counts)
        server.terminate()


def summary(label: str, results: dict[int, tuple[Phase, Phase]], counts: list[int]) -> None:
    """Each queue round against the single host (per feed: > 1 is slower) and against the
    first queue round (speed-up)."""
    queue = [n for n in counts if n]
    if 0 in results and queue:
        single = results[0]
        one = results[queue[0]]
        cells = ", ".join(
            f"{kind} {q.seconds / s.seconds:.2f}x wall, {q.worker_cpu / s.worker_cpu:.2f}x CPU"
            for kind, s, q in zip(("cold", "warm"), single, one, strict=True)
        )
        print(f"{label}: {queue[0]} queue worker vs the single host, time a feed: {cells}")
        record("scale", f"queue mode, {queue[0]} worker vs single host, time a feed", cells)
    base_cold, base_warm = results[queue[0]] if queue else results[0]
    for n in queue[1:]:
        cold, warm = results[n]
        ratios = (
            f"cold {base_cold.seconds / cold.seconds:.2f}x, "
            f"warm {base_warm.seconds / warm.seconds:.2f}x"
        )
        print(f"{label}: {n} workers vs {queue[0]}: {ratios}")
        record("scale", f"queue mode, {n} workers vs {queue[0]}", ratios)


if __name__ == "__main__":
    main()

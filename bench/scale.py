"""Feeds polled per second by 1, 2 and 4 queue-mode workers (`monitor run --workers-mode
queue`) on one PostgreSQL and one feed server, in one run.

    python bench/scale.py [--feeds 1000] [--items 20] [--workers 1,2,4]

Each round gets a fresh schema with the feeds synced but not due, starts N worker
processes and waits until all have registered with the queue; then it makes every feed
due at once and times until each has been polled: cold (every item new: fetch, parse,
dedupe, match, store) and then warm (nothing changed: every feed answers 304). The feed
server runs in its own process. PostgreSQL: MONITOR_BENCH_PG_URL, or the local one.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, create_engine, text  # noqa: E402

from bench.figures import record  # noqa: E402
from bench.poll import items, start_server  # noqa: E402
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


def cpu_seconds(pids: set[int]) -> tuple[float, float]:
    """CPU time used so far by these processes, and by every PostgreSQL process (Linux)."""
    ours = postgres = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, rest = stat.read_text().rpartition(")")
        except OSError:
            continue
        fields = rest.split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(stat.parent.name) in pids:
            ours += used
        elif head.split("(", 1)[1].startswith("postgres"):
            postgres += used
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


def round_with(workers: int, cfg: Path, feeds: int, tmp: Path) -> tuple[Phase, Phase]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    execute(admin, f"CREATE SCHEMA {schema}")
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    env = {**os.environ, "MONITOR_DATABASE_URL": url}
    env.pop("SLACK_BOT_TOKEN", None)
    procs: list[subprocess.Popen[bytes]] = []
    engine = make_engine(url)
    try:
        migrate(engine)
        prepare(engine)
        config = config_mod.load(cfg)
        FeedStore(engine).sync(config.feeds, config.interval, config.backfill)
        execute(engine, "UPDATE feed SET next_due_at = now() + interval '1 day'")
        for n in range(workers):
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
                            "--workers-mode",
                            "queue",
                        ],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )
        wait(engine, "SELECT count(*) FROM procrastinate_workers", workers, 120)
        time.sleep(1.0)  # each worker's periodic deferrer is up
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=1000)
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--concurrency", type=int, default=16, help="jobs at once in each worker")
    args = ap.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
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
        results: dict[int, tuple[Phase, Phase]] = {}
        for n in counts:
            results[n] = round_with(n, cfg, args.feeds, tmp)
            for label, phase in zip(("cold", "warm"), results[n], strict=True):
                print(
                    f"{n} worker{'s' if n > 1 else ' '} {label}: {phase.seconds:6.2f} s = "
                    f"{args.feeds / phase.seconds:5.0f} feeds/s; CPU: workers "
                    f"{phase.worker_cpu / phase.seconds:4.2f} cores, PostgreSQL "
                    f"{phase.postgres_cpu / phase.seconds:4.2f} cores",
                    flush=True,
                )
        server.terminate()
    base_cold, base_warm = results[counts[0]]
    for n in counts[1:]:
        cold, warm = results[n]
        ratios = (
            f"cold {base_cold.seconds / cold.seconds:.2f}x, "
            f"warm {base_warm.seconds / warm.seconds:.2f}x"
        )
        print(f"{n} workers vs {counts[0]}: {ratios}")
        record("scale", f"queue mode, {n} workers vs {counts[0]}", ratios)


if __name__ == "__main__":
    main()

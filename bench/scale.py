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
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, create_engine, text  # noqa: E402

from bench.poll import items, serve  # noqa: E402
from monitor import config as config_mod  # noqa: E402
from monitor.db import make_engine, migrate  # noqa: E402
from monitor.queue_mode import prepare  # noqa: E402
from monitor.store import Store  # noqa: E402
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


def polled_in(engine: Engine, feeds: int) -> float:
    """Makes every feed due now; seconds until every one has been polled."""
    started = scalar(engine, "SELECT now()")
    t0 = time.perf_counter()
    execute(engine, "UPDATE feed SET next_due_at = now()")
    wait(engine, "SELECT count(*) FROM feed WHERE last_fetch_at >= :t", feeds, 600, t=started)
    return time.perf_counter() - t0


def round_with(workers: int, cfg: Path, feeds: int, tmp: Path) -> tuple[float, float]:
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
        Store(engine).sync_feeds(config.feeds, config.interval, config.backfill)
        execute(engine, "UPDATE feed SET next_due_at = now() + interval '1 day'")
        for n in range(workers):
            with (tmp / f"w{workers}-{n}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "monitor",
                            "--config",
                            str(cfg),
                            "--log-level",
                            "WARNING",
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
        cold = polled_in(engine, feeds)
        warm = polled_in(engine, feeds)
        return cold, warm
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
    args = ap.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        www = tmp / "www"
        www.mkdir()
        for f in range(args.feeds):
            (www / f"feed{f}.xml").write_bytes(rss(items(rng, f, 0, args.items)))
        port = multiprocessing.Value("i", 0)
        server = multiprocessing.Process(target=serve, args=(str(www), port), daemon=True)
        server.start()
        while not port.value:
            time.sleep(0.01)
        cfg = write_config(
            tmp / "config",
            [
                {"name": f"feed{f}", "url": f"http://127.0.0.1:{port.value}/feed{f}.xml"}
                for f in range(args.feeds)
            ],
            [US_CHINA],
            {"http": {"per_host": 16}, "queue": {"concurrency": 16}},
        )
        print(
            f"{args.feeds} feeds x {args.items} items, {os.cpu_count()} cores, one PostgreSQL, "
            "one feed server; each worker runs 16 jobs at once",
            flush=True,
        )
        results: dict[int, tuple[float, float]] = {}
        for n in counts:
            cold, warm = round_with(n, cfg, args.feeds, tmp)
            results[n] = (cold, warm)
            print(
                f"{n} worker{'s' if n > 1 else ' '}: cold {cold:6.2f} s = "
                f"{args.feeds / cold:6.0f} feeds/s   warm {warm:6.2f} s = "
                f"{args.feeds / warm:6.0f} feeds/s",
                flush=True,
            )
        server.terminate()
    base_cold, base_warm = results[counts[0]]
    for n in counts[1:]:
        cold, warm = results[n]
        ratios = f"cold {base_cold / cold:.2f}x, warm {base_warm / warm:.2f}x"
        print(f"{n} workers vs {counts[0]}: {ratios}")


if __name__ == "__main__":
    main()

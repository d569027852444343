"""Times `monitor poll` cycles over N generated feeds served on 127.0.0.1, beside a naive
peer and the parse floor, in one run.

    python bench/poll.py [--feeds 1000] [--items 50]

- cold: every item new (fetch, parse, dedupe, match, store);
- warm: nothing changed, every feed answers 304 to the conditional GET;
- 10% changed: one feed in ten has five new items;
- naive peer: sequential feedparser.parse(url) on every feed, no conditional GET, as
  simple bots do;
- floor: feedparser.parse on the same bytes read from disk, no HTTP.

Targets (issue 5): warm at least 20x faster than the naive peer; cold within 1.5x of the
parse floor on 2 cores. The feed server runs in its own process so it does not share a
GIL with the code being timed. All feeds sit on one host here, so the per-host limit is
raised to the fetch concurrency: the bench stands one server in for many publishers.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import feedparser  # noqa: E402

from monitor import config as config_mod  # noqa: E402
from monitor.pipeline import run_feeds  # noqa: E402
from monitor.service import build  # noqa: E402
from tests.conftest import US_CHINA, write_config  # noqa: E402
from tests.servers import rss  # noqa: E402

COMMON = (
    "the a of to and in said on for with was that by he it as at from his her an were are "
    "which this be has have had not but after"
).split()


def _vocabulary(size: int, rng: random.Random) -> list[str]:
    """Made-up words, so unrelated articles share few phrases, as real ones do."""
    return [
        "".join(
            rng.choice("bcdfghjklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4))
        )
        for _ in range(size)
    ]


WORDS = _vocabulary(3000, random.Random(1))
TERMS = ["Qin Gang", "Wang Yi", "military dialogue", "fentanyl", "export controls"]


# what a file is served as, by its suffix (bench/fulltext.py serves article pages too)
_TYPES = {".html": "text/html"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def serve(root: str, port: Any) -> None:
    """A static server with ETag and If-None-Match, as a well-behaved publisher runs."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = Path(root) / self.path.lstrip("/")
            try:
                stat = path.stat()
            except OSError:
                self.send_error(404)
                return
            etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = path.read_bytes()
            self.send_response(200)
            kind = _TYPES.get(path.suffix, "application/rss+xml; charset=utf-8")
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(body)

    httpd = _Server(("127.0.0.1", 0), Handler)
    port.value = httpd.server_address[1]
    httpd.serve_forever()


def start_server(root: Path) -> tuple[multiprocessing.Process, int]:
    """serve() in its own process, so it shares no GIL with what is timed; and its port."""
    port = multiprocessing.Value("i", 0)
    server = multiprocessing.Process(target=serve, args=(str(root), port), daemon=True)
    server.start()
    while not port.value:
        time.sleep(0.01)
    return server, port.value


def items(rng: random.Random, feed: int, start: int, count: int) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    out = []
    for i in range(start, start + count):
        words = [rng.choice(COMMON) if rng.random() < 0.4 else rng.choice(WORDS) for _ in range(60)]
        if rng.random() < 0.05:
            words.insert(rng.randrange(len(words)), rng.choice(TERMS))
        out.append(
            {
                "title": " ".join(words[:8]).capitalize(),
                "guid": f"{feed}-{i}",
                "link": f"https://news{feed}.example/{i}",
                "description": " ".join(words),
                "published": now - timedelta(minutes=i),
            }
        )
    return out


def timed(label: str, fn: Any) -> float:
    started = time.perf_counter()
    fn()
    took = time.perf_counter() - started
    print(f"{label:<34} {took:8.2f} s", flush=True)
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=1000)
    ap.add_argument("--items", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    rng = random.Random(5)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "www"
        root.mkdir()
        for f in range(args.feeds):
            (root / f"feed{f}.xml").write_bytes(rss(items(rng, f, 0, args.items)))
        server, port = start_server(root)
        urls = [f"http://127.0.0.1:{port}/feed{f}.xml" for f in range(args.feeds)]
        cfg = write_config(
            Path(tmp) / "config",
            [{"name": f"feed{f}", "url": u} for f, u in enumerate(urls)],
            [US_CHINA],
            {"http": {"concurrency": args.concurrency, "per_host": args.concurrency}},
        )
        os.environ["MONITOR_DATABASE_URL"] = f"sqlite:///{tmp}/bench.db"
        os.environ.pop("SLACK_BOT_TOKEN", None)
        service = build(config_mod.load(cfg))
        started = time.perf_counter()
        for ready in service.deps.pool.start():  # type: ignore[union-attr]
            # as `monitor run` does at start-up
            ready.result()
        startup = time.perf_counter() - started

        def cycle() -> None:
            outcomes = run_feeds(service.deps.feeds.states(service.feeds), service.deps)
            assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]

        print(
            f"{args.feeds} feeds x {args.items} items, {os.cpu_count()} cores, "
            f"fetch concurrency {args.concurrency}; parse workers started in "
            f"{startup:.1f} s (once per service, not per cycle)"
        )
        bodies = [(root / f"feed{f}.xml").read_bytes() for f in range(args.feeds)]

        def floor_parse() -> None:
            for body in bodies:
                feedparser.parse(body)

        # the floor just before and just after the cold cycle: this machine's speed drifts
        # by a fifth over a minute, so a floor timed at another moment skews the ratio
        floor_before = timed("floor: feedparser.parse(bytes)", floor_parse)
        cold = timed("monitor poll, cold (all new)", cycle)
        floor_after = timed("floor again, just after", floor_parse)
        floor = (floor_before + floor_after) / 2
        warm = timed("monitor poll, warm (all 304)", cycle)
        for f in range(0, args.feeds, 10):
            path = root / f"feed{f}.xml"
            path.write_bytes(rss(items(rng, f, args.items, 5) + items(rng, f, 0, args.items)))
        changed = timed("monitor poll, 10% changed", cycle)
        service.close()
        naive = timed(
            "naive peer: feedparser.parse(url)", lambda: [feedparser.parse(u) for u in urls]
        )
        server.terminate()
    print(f"warm cycle is {naive / warm:.0f}x faster than the naive peer (target >= 20x)")
    print(f"cold cycle is {cold / floor:.2f}x the parse floor, the mean of both (target <= 1.5x)")
    print(f"10%-changed cycle is {naive / changed:.0f}x faster than the naive peer")
    digest = hashlib.sha256(b"".join(bodies)).hexdigest()[:8]
    print(f"(corpus {digest}: {sum(map(len, bodies)) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
